//! One producer: its own connection (the raw client in `wire`), publishing in batches.
//!
//! The producer task encodes publishes into one buffer and writes it when the batch is
//! full (`--pipeline` messages or 64 KiB), when the confirm window is full, or at once
//! when rate-limited; with `--unbatched` every publish is its own write. A listener task owns the read half: it settles confirms (which
//! tags were acked, nacked, or returned first) and wakes the producer when the window
//! has room.

use crate::args::Args;
use crate::body::{self, Stamp};
use crate::stats::Shared;
use crate::tracker::Bitset;
use crate::wire::{self, id, Conn, Content, Reader};
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

/// Bytes buffered before a write, whatever the batch size.
const MAX_BATCH_BYTES: usize = 64 * 1024;

#[derive(Debug, Default)]
pub struct ProducerResult {
    pub sent: u64,
    /// Sequences that must reach every queue: confirmed (ack, not returned) with
    /// confirms on, written to the socket without.
    pub expected: Bitset,
    /// Time from first to last publish.
    pub elapsed: Duration,
}

/// What the listener and the producer share.
#[derive(Default)]
struct Window {
    /// Publishes settled by an ack or a nack.
    settled: AtomicU64,
    /// The listener stopped (error or close-ok).
    closed: AtomicBool,
    wake: Notify,
}

/// What the listener saw over the run.
#[derive(Default)]
struct Heard {
    acked: Bitset,
    returned: Bitset,
    error: Option<String>,
}

pub async fn run(
    args: Arc<Args>,
    shared: Arc<Shared>,
    id: u16,
    exchange: String,
    routing_key: String,
) -> ProducerResult {
    let mut result = ProducerResult::default();
    let who = format!("producer {id}");
    let confirms = args.confirm.is_some();
    let Conn { reader, mut tx } = match open(&args.uri, confirms).await {
        Ok(c) => c,
        Err(e) => {
            shared.error(&who, e);
            return result;
        }
    };
    let window = Arc::new(Window::default());
    let listener = tokio::spawn(listen(reader, confirms, shared.clone(), window.clone()));
    let batch = if args.unbatched {
        1
    } else if confirms {
        args.confirm.unwrap_or(1)
    } else {
        args.pipeline
    } as u64;
    let (mandatory, persistent) = (args.mandatory(), args.persistent());
    let limit = args.pmessages.unwrap_or(u64::MAX).min(u64::from(u32::MAX));
    let interval = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));
    let mut body = vec![0u8; args.size];
    let mut write_error = None;
    let start = tokio::time::Instant::now();
    let mut seq: u64 = 0;
    let mut batched: u64 = 0;
    while seq < limit && !shared.stopping() && !window.closed.load(Relaxed) {
        if confirms {
            let cap = args.confirm.unwrap_or(1) as u64;
            if seq - window.settled.load(Relaxed) >= cap {
                if let Err(e) = tx.flush().await {
                    write_error = Some(e);
                    break;
                }
                batched = 0;
                while seq - window.settled.load(Relaxed) >= cap && !window.closed.load(Relaxed) {
                    window.wake.notified().await;
                }
                continue;
            }
        }
        if let Some(interval) = interval {
            let due = start + interval.mul_f64(seq as f64);
            if due > tokio::time::Instant::now() {
                tokio::time::sleep_until(due).await;
                if shared.stopping() {
                    break;
                }
            }
        }
        body::encode(
            &mut body,
            Stamp {
                sent_ns: shared.now_ns(),
                producer: id,
                seq: seq as u32,
            },
        );
        tx.out.publish(
            &exchange,
            &routing_key,
            mandatory,
            persistent,
            &body,
            tx.frame_max,
        );
        seq += 1;
        batched += 1;
        shared.sent.fetch_add(1, Relaxed);
        if interval.is_some() || batched >= batch || tx.out.buf.len() >= MAX_BATCH_BYTES {
            if let Err(e) = tx.flush().await {
                write_error = Some(e);
                break;
            }
            batched = 0;
        }
    }
    if write_error.is_none() {
        if let Err(e) = tx.flush().await {
            write_error = Some(e);
        }
    }
    result.elapsed = start.elapsed();
    result.sent = seq;
    if let Some(e) = write_error {
        shared.error(&who, e);
    }
    // Wait for the outstanding confirms (bounded by --drain), then close.
    if confirms {
        let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(args.drain);
        while window.settled.load(Relaxed) < seq && !window.closed.load(Relaxed) {
            if tokio::time::timeout_at(deadline, window.wake.notified())
                .await
                .is_err()
            {
                shared.error(
                    &who,
                    format!("{} confirms never came", seq - window.settled.load(Relaxed)),
                );
                break;
            }
        }
    }
    tx.out.connection_close();
    let _ = tx.flush().await;
    let heard = match tokio::time::timeout(Duration::from_secs(5), listener).await {
        Ok(Ok(h)) => h,
        _ => Heard::default(),
    };
    if let Some(e) = heard.error {
        shared.error(&who, e);
    }
    let mut expected = if confirms {
        heard.acked
    } else {
        let mut all = Bitset::default();
        for s in 0..seq {
            all.set(s as u32);
        }
        all
    };
    expected.remove_all(&heard.returned);
    result.expected = expected;
    let _ = tx.writer.shutdown().await;
    result
}

async fn open(uri: &str, confirms: bool) -> io::Result<Conn> {
    let mut conn = Conn::open(uri).await?;
    if confirms {
        conn.tx.out.confirm_select();
        conn.tx.flush().await?;
        conn.reader.expect(id::SELECT_OK).await?;
    }
    Ok(conn)
}

/// Reads the producer's connection until close-ok or an error: confirms, returns,
/// and whatever closes the connection.
async fn listen(
    mut reader: Reader,
    confirms: bool,
    shared: Arc<Shared>,
    window: Arc<Window>,
) -> Heard {
    let mut heard = Heard::default();
    let mut pending = Pending::default();
    if let Err(e) = listen_loop(
        &mut reader,
        confirms,
        &shared,
        &window,
        &mut heard,
        &mut pending,
    )
    .await
    {
        heard.error = Some(e.to_string());
    }
    window.closed.store(true, Relaxed);
    window.wake.notify_one();
    heard
}

async fn listen_loop(
    reader: &mut Reader,
    confirms: bool,
    shared: &Shared,
    window: &Window,
    heard: &mut Heard,
    pending: &mut Pending,
) -> io::Result<()> {
    let mut content = Content::default();
    let mut returning = false;
    loop {
        let mut settled = 0;
        while let Some(f) = reader.try_frame()? {
            match f.method() {
                Some(m @ (id::ACK | id::NACK)) if confirms => {
                    let mut a = f.args();
                    let tag = a.u64().unwrap_or(0);
                    let multiple = a.u8().unwrap_or(0) & 1 == 1;
                    let ack = m == id::ACK;
                    let n = pending.settle(tag, multiple, |seq| {
                        if ack {
                            heard.acked.set(seq);
                        }
                    });
                    settled += n;
                    if ack {
                        shared.confirmed.fetch_add(n, Relaxed);
                    } else {
                        shared.nacked.fetch_add(n, Relaxed);
                    }
                }
                Some(id::RETURN) => returning = true,
                Some(id::CONNECTION_CLOSE_OK) => {
                    window.settled.fetch_add(settled, Relaxed);
                    return Ok(());
                }
                Some(id::CONNECTION_CLOSE | id::CHANNEL_CLOSE) => {
                    return Err(wire::bad(format!(
                        "closed by the broker: {}",
                        f.close_reason()
                    )))
                }
                _ if returning && f.is_header() => {
                    content.start(f.body_size().unwrap_or(0));
                    if let Some(head) = content.finish_if_done() {
                        returning = false;
                        note_return(head.bytes(), heard, shared);
                    }
                }
                _ if returning && f.is_body() && content.active() => {
                    if let Some(head) = content.add(f.payload) {
                        returning = false;
                        note_return(head.bytes(), heard, shared);
                    }
                }
                _ => {}
            }
        }
        if settled > 0 {
            window.settled.fetch_add(settled, Relaxed);
            window.wake.notify_one();
        }
        reader.fill().await?;
    }
}

fn note_return(head: &[u8], heard: &mut Heard, shared: &Shared) {
    if let Some(stamp) = body::decode(head) {
        heard.returned.set(stamp.seq);
    }
    shared.returned.fetch_add(1, Relaxed);
}

/// Unsettled publishes by delivery tag (tag = sequence + 1 on a fresh channel).
#[derive(Default)]
struct Pending {
    /// Tag of `settled[0]`.
    base: u64,
    settled: VecDeque<bool>,
}

impl Pending {
    /// Settles `tag` (and every earlier one with `multiple`); calls `each` with the
    /// sequence of every newly settled publish and returns how many there were.
    fn settle(&mut self, tag: u64, multiple: bool, mut each: impl FnMut(u32)) -> u64 {
        if self.base == 0 {
            self.base = 1;
        }
        if tag < self.base {
            return 0;
        }
        let idx = (tag - self.base) as usize;
        if idx >= self.settled.len() {
            self.settled.resize(idx + 1, false);
        }
        let from = if multiple { 0 } else { idx };
        let mut n = 0;
        for i in from..=idx {
            if !self.settled[i] {
                self.settled[i] = true;
                n += 1;
                each((self.base + i as u64 - 1) as u32);
            }
        }
        while self.settled.front() == Some(&true) {
            self.settled.pop_front();
            self.base += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirms_settle_single_and_multiple() {
        let mut p = Pending::default();
        let mut seen = Vec::new();
        assert_eq!(p.settle(2, false, |s| seen.push(s)), 1);
        assert_eq!(p.settle(3, true, |s| seen.push(s)), 2);
        assert_eq!(p.settle(3, true, |s| seen.push(s)), 0);
        assert_eq!(p.settle(5, false, |s| seen.push(s)), 1);
        assert_eq!(seen, vec![1, 0, 2, 4]);
        assert_eq!((p.base, p.settled.len()), (4, 2));
    }
}
