//! Delayed messages: the store behind `x-delayed-message` exchanges (the
//! rabbitmq-delayed-message-exchange plugin's type).
//!
//! A message published to such an exchange with `0 < x-delay <= 2^32 - 1` is not routed:
//! its record goes to the delay store's own files ([`files`], written and fdatasynced by
//! the message log's writer thread in its group commit, so the publisher confirm waits
//! until it is on disk), and only a 32-byte entry stays in memory ([`due::Schedule`]: due
//! time, sequence, place on disk, exchange). One timer task sleeps until the first entry
//! is due, reads the due messages back from disk in order, sets their `x-delay` header to
//! minus the delay (as the plugin does) and routes them through the exchange as it is
//! then (its bindings, exchange-to-exchange bindings, alternate exchange); then a del
//! record marks them done. A segment file goes once all its messages are done.
//!
//! Ownership: [`Delayed`] owns the schedule, the file placement and the per-exchange
//! counts behind one short lock; the message log's writer owns the writing; the timer task
//! owns the firing. It reaches vhosts and exchanges through a [`Lookup`] handle, not the
//! broker.
//!
//! Guarantees: every delayed message of a durable exchange is on disk before its confirm
//! and survives a restart or `kill -9`. Its routing at the due time and its del record
//! are not atomic: a crash between them routes it again after the restart (at least
//! once). The del record is written after the message log has synced the routed copy, so
//! a confirmed delayed message is never lost between the two.

pub mod due;
pub mod files;

use crate::message::Message;
use crate::protocol::codec::ShortStr;
use crate::protocol::properties;
use crate::store::log::{now_ms, MessageLog};
use crate::vhost::{Exchange, VHost};
use due::{Entry, Loc, Schedule};
use files::{encode_del, encode_put, place, Files, Put};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// Finds an exchange (and its vhost) by name when a delayed message is due.
pub type Lookup = Box<dyn Fn(&str, &str) -> Option<(Arc<VHost>, Arc<Exchange>)> + Send + Sync>;

/// Messages fired per round of the timer (then it looks at the clock again).
const FIRE_BATCH: usize = 512;
/// How long a message whose record cannot be read yet (its write failed) waits to retry.
const RETRY_MS: u64 = 1000;
/// Segments are at most this big, so that an offset fits in 32 bits.
const MAX_SEGMENT: u64 = 1 << 30;

/// A segment's bookkeeping: puts not yet done, and the older segments holding puts that
/// its del records remove (it must outlive them, or those puts would come back).
#[derive(Debug, Default)]
struct Seg {
    live: u64,
    refs: HashSet<u32>,
}

#[derive(Debug, Default)]
struct State {
    schedule: Schedule,
    /// The segment records are placed in, and its length so far.
    head: u32,
    head_len: u64,
    segs: BTreeMap<u32, Seg>,
    /// Exchange ids: "vhost\0exchange" → id, and pending messages per id.
    ids: HashMap<String, u32>,
    counts: Vec<u64>,
}

impl State {
    fn intern(&mut self, vhost: &str, exchange: &str) -> u32 {
        let key = format!("{vhost}\0{exchange}");
        if let Some(id) = self.ids.get(&key) {
            return *id;
        }
        let id = self.counts.len() as u32;
        self.ids.insert(key, id);
        self.counts.push(0);
        id
    }

    fn track(&mut self, e: Entry) -> bool {
        self.counts[e.exchange as usize] += 1;
        self.segs.entry(e.loc.segment).or_default().live += 1;
        self.schedule.push(e)
    }
}

/// What recovery found.
#[derive(Debug, Default, Clone)]
pub struct Recovery {
    pub pending: u64,
    pub segments: usize,
    pub damaged: usize,
}

#[derive(Debug)]
pub struct Delayed {
    files: Arc<Files>,
    log: Arc<MessageLog>,
    segment_size: u64,
    next_seq: AtomicU64,
    /// Schedule, placement and counts: held only for pushes, pops and lookups.
    state: Mutex<State>,
    /// Wakes the timer when a message is due earlier than everything before it.
    wake: Notify,
    recovery: Recovery,
}

impl Delayed {
    /// Opens `data_dir/delayed`, recovering the pending messages; records are written
    /// through `log`.
    pub fn open(
        data_dir: &Path,
        segment_size: u64,
        log: Arc<MessageLog>,
    ) -> std::io::Result<Arc<Delayed>> {
        let dir = data_dir.join("delayed");
        let scan = files::scan(&dir)?;
        for (seg, at, why) in &scan.damage {
            tracing::error!(
                segment = seg,
                offset = at,
                why,
                "delay store: damaged record; the rest of the segment is dropped"
            );
        }
        let mut st = State::default();
        let present: HashSet<u32> = scan.segments.iter().map(|(n, _)| *n).collect();
        for (n, refs) in &scan.segments {
            st.segs.entry(*n).or_default().refs = refs & &present;
        }
        let recovery = Recovery {
            pending: scan.pending.len() as u64,
            segments: scan.segments.len(),
            damaged: scan.damage.len(),
        };
        let ids: Vec<u32> = scan
            .exchanges
            .iter()
            .map(|(v, x)| st.intern(v, x))
            .collect();
        for f in scan.pending {
            let exchange = ids[f.exchange as usize];
            st.track(Entry {
                due: f.due,
                seq: f.seq,
                loc: Loc {
                    segment: f.segment,
                    offset: f.offset,
                    len: f.len,
                },
                exchange,
            });
        }
        // New records go to a fresh segment, never after a possibly torn tail.
        st.head = scan.segments.last().map_or(0, |(n, _)| n + 1);
        let d = Arc::new(Delayed {
            files: Arc::new(Files::new(dir, st.head)),
            log,
            segment_size: segment_size.clamp(1, MAX_SEGMENT),
            next_seq: AtomicU64::new(scan.max_seq + 1),
            state: Mutex::new(st),
            wake: Notify::new(),
            recovery,
        });
        d.reclaim();
        Ok(d)
    }

    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Holds `msg`, published to `exchange` in `vhost`, for `delay` milliseconds. Returns
    /// the message log sequence number after which it is on disk (for the confirm).
    pub fn schedule(&self, vhost: &str, exchange: &str, msg: &Message, delay: u64) -> u64 {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let due = now_ms().saturating_add(delay);
        let bytes = encode_put(&Put {
            seq,
            due,
            delay,
            vhost: vhost.to_string(),
            exchange: exchange.to_string(),
            routing_key: msg.routing_key.as_str().to_string(),
            properties: msg.properties.clone(),
            body: msg.body.clone(),
        });
        let mut st = self.state.lock();
        let known = st.counts.len();
        let exchange = st.intern(vhost, exchange);
        if st.counts.len() > known {
            // A first delayed message for this exchange: the definitions file is written
            // before the batch holding it is synced, so a confirmed delayed message never
            // outlives an exchange declared just before it.
            self.log.definitions_changed();
        }
        let (loc, lsn) = self.append(&mut st, bytes);
        let earlier = st.track(Entry {
            due,
            seq,
            loc,
            exchange,
        });
        drop(st);
        if earlier {
            self.wake.notify_one();
        }
        lsn
    }

    /// Places a record in the head segment (starting a new one when it would grow past
    /// the segment size) and hands it to the log's writer. Under the state lock, so that
    /// records reach the writer in the order they were placed.
    fn append(&self, st: &mut State, bytes: Vec<u8>) -> (Loc, u64) {
        let len = bytes.len() as u64;
        if st.head_len > 0 && st.head_len + len > self.segment_size {
            st.head += 1;
            st.head_len = 0;
        }
        let loc = Loc {
            segment: st.head,
            offset: st.head_len as u32,
            len: len as u32,
        };
        st.head_len += len;
        st.segs.entry(loc.segment).or_default();
        let side: Arc<dyn crate::store::log::SideLog> = self.files.clone();
        let lsn = self
            .log
            .append_side(side, place(loc.segment, loc.offset), bytes);
        (loc, lsn)
    }

    /// Messages waiting in `exchange` of `vhost` (management's `messages_delayed`).
    pub fn count(&self, vhost: &str, exchange: &str) -> u64 {
        let st = self.state.lock();
        st.ids
            .get(&format!("{vhost}\0{exchange}"))
            .map_or(0, |id| st.counts[*id as usize])
    }

    /// Messages waiting in all exchanges.
    pub fn len(&self) -> usize {
        self.state.lock().schedule.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Segment files on disk (for tests and reports).
    pub fn segments(&self) -> usize {
        self.state.lock().segs.len()
    }

    /// The timer: fires due messages until the broker shuts down.
    pub async fn run(self: Arc<Self>, lookup: Lookup, mut shutdown: watch::Receiver<bool>) {
        let lookup = Arc::new(lookup);
        loop {
            if *shutdown.borrow() {
                return;
            }
            let now = now_ms();
            let (batch, next) = {
                let mut st = self.state.lock();
                let batch = st.schedule.pop_due(now, FIRE_BATCH);
                (batch, st.schedule.next_due())
            };
            if !batch.is_empty() {
                let me = self.clone();
                let lookup = lookup.clone();
                let _ = tokio::task::spawn_blocking(move || me.fire(batch, &lookup)).await;
                continue;
            }
            let sleep = next.map_or(Duration::from_secs(3600), |due| {
                Duration::from_millis(due.saturating_sub(now).max(1))
            });
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Routes due messages in order, then records them as done.
    fn fire(&self, batch: Vec<Entry>, lookup: &Lookup) {
        let mut done = Vec::with_capacity(batch.len());
        let mut retry = Vec::new();
        for e in batch {
            let put = match self.files.read_put(e.loc.segment, e.loc.offset, e.loc.len) {
                Ok(p) => p,
                Err(err) => {
                    // Not written yet (the disk failing): try again later.
                    tracing::warn!(error = %err, seq = e.seq, "delay store: cannot read a due message; retrying");
                    retry.push(e);
                    continue;
                }
            };
            if let Some((vhost, x)) = lookup(&put.vhost, &put.exchange) {
                route(&vhost, &x, put);
            }
            done.push(e);
        }
        let mut st = self.state.lock();
        for mut e in retry {
            e.due = now_ms() + RETRY_MS;
            st.schedule.push(e);
        }
        if done.is_empty() {
            return;
        }
        let seqs: Vec<u64> = done.iter().map(|e| e.seq).collect();
        let (del, _) = self.append(&mut st, encode_del(&seqs));
        for e in &done {
            st.counts[e.exchange as usize] -= 1;
            if let Some(s) = st.segs.get_mut(&e.loc.segment) {
                s.live -= 1;
            }
            if e.loc.segment != del.segment {
                st.segs
                    .entry(del.segment)
                    .or_default()
                    .refs
                    .insert(e.loc.segment);
            }
        }
        drop(st);
        self.reclaim();
    }

    /// Deletes the segments nobody needs: all their messages done, every segment their
    /// dels refer to gone, and fully written.
    fn reclaim(&self) {
        let written = self.files.written_segment();
        let mut st = self.state.lock();
        let head = st.head;
        let mut gone = Vec::new();
        loop {
            let dead: Vec<u32> = st
                .segs
                .iter()
                .filter(|(n, s)| {
                    **n < head
                        && **n < written
                        && s.live == 0
                        && s.refs.iter().all(|r| !st.segs.contains_key(r))
                })
                .map(|(n, _)| *n)
                .collect();
            if dead.is_empty() {
                break;
            }
            for n in dead {
                st.segs.remove(&n);
                gone.push(n);
            }
        }
        drop(st);
        for n in &gone {
            if let Err(e) = self.files.delete(*n) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(segment = n, error = %e, "delay store: cannot delete a segment");
                }
            }
        }
        if !gone.is_empty() {
            let _ = self.files.sync_dir();
        }
    }
}

/// Routes a due message through its exchange as a publish would, with `x-delay` set to
/// minus the delay.
fn route(vhost: &Arc<VHost>, x: &Arc<Exchange>, put: Put) {
    let mut headers = properties::headers(&put.properties).unwrap_or_default();
    headers.insert("x-delay".into(), due::swapped_delay(put.delay));
    let props =
        properties::with_headers(&put.properties, headers.clone()).unwrap_or(put.properties);
    let msg = Arc::new(Message::new(
        ShortStr::copy_from(&put.exchange),
        ShortStr::copy_from(&put.routing_key),
        props,
        put.body,
    ));
    let mut queues = Vec::new();
    vhost.route_message(
        x,
        &put.routing_key,
        Some(&headers),
        Some(&msg.properties),
        &mut queues,
    );
    crate::queue::enqueue(msg, &mut queues, None, None, None);
}
