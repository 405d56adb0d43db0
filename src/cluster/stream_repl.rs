//! Stream replication between nodes (after RabbitMQ's osiris and stream coordinator).
//!
//! A replicated stream's placement (leader, members, epoch: [`Placement`]) is recorded by
//! the metadata group ([`MetaCmd::Stream`]). On the cluster port, a connection that opens
//! with [`MAGIC`] speaks this module's binary frames instead of the Raft JSON:
//!
//! - **Fetch**: each follower asks the leader for the records after its synced tail (a
//!   long poll). Asking again after writing and syncing what it got is its ack: the leader
//!   counts the tails and moves the committed offset to what a majority has, and answers
//!   with the committed offset, which the follower's readers then read up to. A follower
//!   that wrote records in an older epoch is told where to cut first.
//! - **Publish**: a publish on a node that does not lead is forwarded (in order, by one
//!   forwarder task per stream); the leader answers once it is committed, then the
//!   publisher's confirm goes out on its node (a nack when the leader could not be reached).
//! - **Tail**: how far a member has synced (for choosing a new leader).
//!
//! The **coordinator** runs on the metadata group's leader: when a stream's leader stops
//! answering the liveness probes, it asks the reachable members for their tails and, with
//! a majority of them, makes the one with the highest tail leader in the next epoch.
//!
//! Frames: `[len u32][kind u8][fields]`; strings `[u16 len][bytes]`, byte strings
//! `[u32 len][bytes]`, numbers big-endian. Record bodies travel as they are in the files.

use super::handle::{MetaCmd, MetaHandle};
use super::transport::{Conn, Transport};
use crate::message::Message;
use crate::protocol::codec::ShortStr;
use crate::queue::stream::replica::{truncate_point, Forward, Placement};
use crate::queue::stream::{Chunk, Stream};
use crate::queue::Queue;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// First bytes of a stream-replication connection (never a valid JSON frame length:
/// 0x57535231 is past [`super::network::MAX_FRAME`]).
pub const MAGIC: [u8; 4] = *b"WSR1";
const MAX_FRAME: usize = 64 << 20;
/// Bytes of records one fetch answer carries at most.
const FETCH_BYTES: usize = 1 << 20;
/// How long the leader holds a fetch with nothing new.
const LONG_POLL: Duration = Duration::from_millis(500);
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a forwarded publish may wait for the commit.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
const RETRY: Duration = Duration::from_millis(100);
const COORDINATE_EVERY: Duration = Duration::from_millis(300);
/// Forwarded publishes sent in one request at most.
const FORWARD_BATCH: usize = 2000;

/// One replicated stream on this node.
#[derive(Debug)]
struct Entry {
    queue: Arc<Queue>,
    stream: Arc<Stream>,
}

/// The node's replicated streams, their follower and forwarder tasks, the coordinator.
#[derive(Debug)]
pub struct StreamRepl {
    me: String,
    /// Cluster address of every configured node, by name.
    addrs: HashMap<String, String>,
    streams: Mutex<HashMap<(String, String), Arc<Entry>>>,
    meta: OnceLock<MetaHandle>,
    /// How replication links connect (plain TCP or TLS).
    transport: Transport,
}

impl StreamRepl {
    pub fn new(me: String, nodes: &[super::Member], transport: Transport) -> Arc<StreamRepl> {
        Arc::new(StreamRepl {
            me,
            addrs: nodes
                .iter()
                .map(|m| (m.name.clone(), m.addr.clone()))
                .collect(),
            streams: Mutex::new(HashMap::new()),
            meta: OnceLock::new(),
            transport,
        })
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// Starts the coordinator (it acts while this node leads the metadata group).
    pub fn start(self: &Arc<Self>, meta: MetaHandle, stop: tokio::sync::watch::Receiver<bool>) {
        let _ = self.meta.set(meta);
        tokio::spawn(coordinate(Arc::downgrade(self), stop));
    }

    /// The placement a new stream declared on this node gets.
    pub fn initial(&self, vhost: &str, name: &str, size: Option<u64>) -> Placement {
        let nodes: Vec<String> = self.addrs.keys().cloned().collect();
        Placement::initial(&self.me, &nodes, vhost, name, size)
    }

    /// A committed placement (or one saved here, at start): the stream replicates from
    /// now on, as leader or follower; a newer epoch replaces the old.
    pub fn place(self: &Arc<Self>, queue: Arc<Queue>, p: Placement) {
        let Some(stream) = queue.stream().cloned() else {
            return;
        };
        let key = (p.vhost.clone(), p.name.clone());
        let fresh = stream.replica().is_none();
        let r = stream
            .enable_replication(self.me.clone(), p.clone())
            .clone();
        let changed = fresh || r.update(p.clone(), stream.committed());
        if !changed {
            return;
        }
        if r.is_leader() && !fresh {
            // Leader in a new epoch: records past where it starts were never committed.
            let start = p.epochs.last().map_or(0, |e| e.1);
            if let Err(e) = stream.truncate(start) {
                tracing::error!(stream = %p.name, error = %e, "cannot cut a stream's uncommitted records");
            }
            r.set_written_epoch(p.epoch);
            stream.set_committed(r.committed());
        }
        stream.save_placement();
        let mut map = self.streams.lock();
        let same = map
            .get(&key)
            .is_some_and(|e| Arc::ptr_eq(&e.stream, &stream));
        if !same {
            let e = Arc::new(Entry { queue, stream });
            map.insert(key, e.clone());
            drop(map);
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            r.set_forwarder(tx);
            tokio::spawn(follow(Arc::downgrade(self), e.clone()));
            tokio::spawn(forward(Arc::downgrade(self), Arc::downgrade(&e), rx));
        }
        tracing::info!(stream = %p.name, leader = %p.leader, epoch = p.epoch, "stream placement");
    }

    fn entry(&self, vhost: &str, name: &str) -> Option<Arc<Entry>> {
        self.streams
            .lock()
            .get(&(vhost.to_string(), name.to_string()))
            .cloned()
    }

    /// Serves a peer's replication connection (after [`MAGIC`]).
    pub async fn serve_link(self: Arc<Self>, mut sock: Conn) {
        loop {
            let Ok(req) = read_frame(&mut sock).await else {
                return;
            };
            let resp = self.handle(req).await;
            if write_frame(&mut sock, &resp).await.is_err() {
                return;
            }
        }
    }

    async fn handle(&self, req: Vec<u8>) -> Vec<u8> {
        let mut r = Reader(&req);
        let kind = r.u8();
        let (Some(vhost), Some(name)) = (r.str(), r.str()) else {
            return err("malformed request");
        };
        let Some(e) = self.entry(&vhost, &name) else {
            return err("no such replicated stream here");
        };
        let Some(rep) = e.stream.replica().cloned() else {
            return err("not replicated");
        };
        match kind {
            Some(KIND_TAIL) => ok(rep.tail()),
            Some(KIND_FETCH) => {
                let (Some(node), Some(from), Some(written), Some(known)) =
                    (r.str(), r.u64(), r.u64(), r.u64())
                else {
                    return err("malformed fetch");
                };
                if !rep.is_leader() {
                    return err("not the leader");
                }
                let p = rep.placement();
                let cut = truncate_point(&p.epochs, written, from);
                if cut < from {
                    return chunk(e.stream.committed(), cut, p.epoch, &Chunk::default());
                }
                // Subscribed before looking, so a change in between wakes the poll.
                let mut tail = rep.subscribe_tail();
                let mut comm = e.stream.subscribe();
                let committed = rep.ack(&node, from);
                e.stream.set_committed(committed);
                if from >= rep.tail() && e.stream.committed() == known {
                    let _ = tokio::time::timeout(LONG_POLL, async {
                        tokio::select! {
                            _ = tail.changed() => {}
                            _ = comm.changed() => {}
                        }
                    })
                    .await;
                }
                let s = e.stream.clone();
                let read = tokio::task::spawn_blocking(move || s.read_raw(from, FETCH_BYTES)).await;
                match read {
                    Ok(Ok(c)) => chunk(e.stream.committed(), u64::MAX, p.epoch, &c),
                    Ok(Err(er)) => err(&format!("read: {er}")),
                    Err(_) => err("read failed"),
                }
            }
            Some(KIND_PUBLISH) => {
                let Some(n) = r.u32() else {
                    return err("malformed publish");
                };
                let mut msgs = Vec::new();
                for _ in 0..n.min(100_000) {
                    let (Some(x), Some(rk), Some(props), Some(body)) =
                        (r.str(), r.str(), r.bytes(), r.bytes())
                    else {
                        return err("malformed publish");
                    };
                    msgs.push(message(&x, &rk, props, body));
                }
                match publish_here(&e, msgs).await {
                    Ok(o) => ok(o),
                    Err(er) => err(&er),
                }
            }
            _ => err("unknown request"),
        }
    }

    fn addr(&self, node: &str) -> Option<String> {
        self.addrs.get(node).cloned()
    }
}

fn message(x: &str, rk: &str, props: Vec<u8>, body: Vec<u8>) -> Message {
    let short = |s: &str| ShortStr::from_bytes(bytes::Bytes::copy_from_slice(s.as_bytes()));
    Message {
        exchange: short(x).unwrap_or_else(|_| ShortStr::from_static("")),
        routing_key: short(rk).unwrap_or_else(|_| ShortStr::from_static("")),
        properties: props.into(),
        body: body.into(),
        priority: 0,
        expiration: None,
        persistent: true,
        persist_id: 0,
    }
}

/// On the leader: appends `msgs` and waits until a majority has them; the offset after.
async fn publish_here(e: &Entry, msgs: Vec<Message>) -> Result<u64, String> {
    let rep = e.stream.replica().cloned().ok_or("not replicated")?;
    if !rep.is_leader() {
        return Err("not the leader".into());
    }
    for m in msgs {
        e.queue.publish(Arc::new(m));
    }
    let target = e.stream.next_offset();
    let mut comm = e.stream.subscribe();
    let r = tokio::time::timeout(COMMIT_TIMEOUT, comm.wait_for(|c| *c >= target)).await;
    match r {
        Ok(Ok(_)) if rep.is_leader() => Ok(target),
        Ok(Ok(_)) => Err("leadership lost".into()),
        _ => Err("not committed in time".into()),
    }
}

/// A follower's loop: fetch from the leader after the synced tail, write, sync, repeat.
async fn follow(repl: Weak<StreamRepl>, e: Arc<Entry>) {
    let Some(rep) = e.stream.replica().cloned() else {
        return;
    };
    let mut changes = rep.subscribe_changes();
    let mut link: Option<(String, Conn)> = None;
    loop {
        let Some(me) = repl.upgrade() else { return };
        let transport = me.transport.clone();
        if e.stream.is_deleted() || e.queue.is_deleted() {
            // Gone: the registry lets go of it (and the forwarder ends with it).
            let key = (e.queue.config.vhost.clone(), e.queue.name().to_string());
            let mut map = me.streams.lock();
            if map.get(&key).is_some_and(|x| Arc::ptr_eq(x, &e)) {
                map.remove(&key);
            }
            return;
        }
        let p = rep.placement();
        if p.leader == me.me || !p.members.contains(&me.me) {
            drop(me);
            link = None;
            if changes.changed().await.is_err() {
                return;
            }
            continue;
        }
        let Some(addr) = me.addr(&p.leader) else {
            drop(me);
            let _ = tokio::time::timeout(RETRY * 10, changes.changed()).await;
            continue;
        };
        let mut req = Vec::new();
        req.push(KIND_FETCH);
        put_str(&mut req, &p.vhost);
        put_str(&mut req, &p.name);
        put_str(&mut req, &me.me);
        req.extend_from_slice(&rep.tail().to_be_bytes());
        req.extend_from_slice(&rep.written_epoch().to_be_bytes());
        req.extend_from_slice(&e.stream.committed().to_be_bytes());
        drop(me);
        let resp = call(&mut link, &transport, &addr, &req).await;
        let Ok(resp) = resp else {
            link = None;
            let _ = tokio::time::timeout(RETRY, changes.changed()).await;
            continue;
        };
        let mut r = Reader(&resp);
        match r.u8() {
            Some(KIND_CHUNK) => {
                let Some((committed, cut, epoch, c)) = read_chunk(&mut r) else {
                    link = None;
                    continue;
                };
                if cut != u64::MAX {
                    let s = e.stream.clone();
                    let _ = tokio::task::spawn_blocking(move || s.truncate(cut)).await;
                    rep.set_written_epoch(epoch);
                    e.stream.save_placement();
                    continue;
                }
                if !c.records.is_empty() {
                    let s = e.stream.clone();
                    let w = tokio::task::spawn_blocking(move || s.write_replica(&c)).await;
                    if !matches!(w, Ok(Ok(()))) {
                        tracing::error!(stream = %p.name, "cannot write replicated records; retrying");
                        tokio::time::sleep(RETRY).await;
                        continue;
                    }
                    if rep.written_epoch() != epoch {
                        rep.set_written_epoch(epoch);
                        e.stream.save_placement();
                    }
                }
                e.stream.set_committed(committed);
            }
            _ => {
                // Not the leader (yet, or any more): wait for the placement to change.
                let _ = tokio::time::timeout(RETRY * 2, changes.changed()).await;
            }
        }
    }
}

/// The forwarder: publishes made on this node go to the leader, in order, in batches.
async fn forward(
    repl: Weak<StreamRepl>,
    entry: Weak<Entry>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Forward>,
) {
    let mut link: Option<(String, Conn)> = None;
    while let Some(first) = rx.recv().await {
        let Some(e) = entry.upgrade() else { return };
        let Some(rep) = e.stream.replica().cloned() else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < FORWARD_BATCH {
            match rx.try_recv() {
                Ok(f) => batch.push(f),
                Err(_) => break,
            }
        }
        let (from, to) = (batch[0].seq, batch[batch.len() - 1].seq + 1);
        let Some(me) = repl.upgrade() else { return };
        let p = rep.placement();
        let r = if p.leader == me.me {
            publish_here(&e, batch.into_iter().map(|f| f.msg).collect())
                .await
                .map(|_| ())
        } else {
            match me.addr(&p.leader) {
                None => Err("leader unknown".to_string()),
                Some(addr) => {
                    let mut req = vec![KIND_PUBLISH];
                    put_str(&mut req, &p.vhost);
                    put_str(&mut req, &p.name);
                    req.extend_from_slice(&(batch.len() as u32).to_be_bytes());
                    for f in &batch {
                        put_str(&mut req, f.msg.exchange.as_str());
                        put_str(&mut req, f.msg.routing_key.as_str());
                        put_bytes(&mut req, &f.msg.properties);
                        put_bytes(&mut req, &f.msg.body);
                    }
                    match call(&mut link, &me.transport, &addr, &req).await {
                        Ok(resp) if resp.first() == Some(&KIND_OK) => Ok(()),
                        Ok(resp) => {
                            Err(Reader(&resp[1.min(resp.len())..]).str().unwrap_or_default())
                        }
                        Err(er) => {
                            link = None;
                            Err(er.to_string())
                        }
                    }
                }
            }
        };
        if let Err(er) = &r {
            tracing::warn!(stream = %p.name, error = %er, n = to - from, "forwarded stream publishes nacked");
        }
        rep.forwarded.settle(from, to, r.is_err());
    }
}

/// On the metadata group's leader: streams whose leader is down get a new one.
async fn coordinate(repl: Weak<StreamRepl>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(COORDINATE_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let Some(me) = repl.upgrade() else { return };
        let Some(meta) = me.meta.get().cloned() else {
            continue;
        };
        let status = meta.status();
        if status.leader.as_deref() != Some(me.me.as_str()) {
            continue;
        }
        let running: Vec<String> = status
            .members
            .iter()
            .filter(|m| m.running)
            .map(|m| m.name.clone())
            .collect();
        let entries: Vec<Arc<Entry>> = me.streams.lock().values().cloned().collect();
        for e in entries {
            let Some(rep) = e.stream.replica().cloned() else {
                continue;
            };
            let p = rep.placement();
            if running.contains(&p.leader) || e.stream.is_deleted() {
                continue;
            }
            let mut tails: Vec<(u64, String)> = Vec::new();
            for m in p.members.iter().filter(|m| running.contains(m)) {
                let tail = if *m == me.me {
                    Some(rep.tail())
                } else {
                    tail_of(&me, m, &p).await
                };
                if let Some(t) = tail {
                    tails.push((t, m.clone()));
                }
            }
            if tails.len() < p.majority() {
                tracing::warn!(stream = %p.name, reachable = tails.len(), "stream leader down and no majority of its members reachable");
                continue;
            }
            // Highest tail; among equals, the first name.
            tails.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            let (start, leader) = tails[0].clone();
            let mut next = p.clone();
            next.leader = leader;
            next.epoch = p.epoch + 1;
            next.epochs.push((next.epoch, start));
            if next.epochs.len() > 64 {
                next.epochs.remove(0);
            }
            tracing::info!(stream = %p.name, leader = %next.leader, epoch = next.epoch, start, "stream leader down: choosing a new one");
            if let Err(er) = meta
                .replicate(MetaCmd::Stream {
                    defs: None,
                    placement: next,
                })
                .await
            {
                tracing::warn!(stream = %p.name, error = %er, "stream leader change not committed");
            }
        }
    }
}

async fn tail_of(me: &StreamRepl, node: &str, p: &Placement) -> Option<u64> {
    let addr = me.addr(node)?;
    let mut req = vec![KIND_TAIL];
    put_str(&mut req, &p.vhost);
    put_str(&mut req, &p.name);
    let mut link = None;
    let call = call(&mut link, &me.transport, &addr, &req);
    let resp = tokio::time::timeout(Duration::from_millis(500), call)
        .await
        .ok()?
        .ok()?;
    let mut r = Reader(&resp);
    (r.u8()? == KIND_OK).then(|| r.u64()).flatten()
}

/// Sends `req` over `link` (connecting to `addr` first, or again when the leader moved)
/// and reads the answer.
async fn call(
    link: &mut Option<(String, Conn)>,
    transport: &Transport,
    addr: &str,
    req: &[u8],
) -> io::Result<Vec<u8>> {
    if link.as_ref().is_none_or(|(a, _)| a != addr) {
        let mut s = transport.connect(addr, Duration::from_millis(500)).await?;
        s.write_all(&MAGIC).await?;
        *link = Some((addr.to_string(), s));
    }
    let Some((_, s)) = link.as_mut() else {
        return Err(io::Error::other("no link"));
    };
    let r = tokio::time::timeout(CALL_TIMEOUT, async {
        write_frame(s, req).await?;
        read_frame(s).await
    })
    .await
    .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "peer timed out")));
    if r.is_err() {
        *link = None;
    }
    r
}

const KIND_FETCH: u8 = 1;
const KIND_PUBLISH: u8 = 2;
const KIND_TAIL: u8 = 3;
const KIND_CHUNK: u8 = 10;
const KIND_OK: u8 = 11;
const KIND_ERR: u8 = 12;

async fn write_frame(w: &mut Conn, payload: &[u8]) -> io::Result<()> {
    if payload.len() > MAX_FRAME {
        return Err(io::Error::other("stream frame too large"));
    }
    let mut buf = Vec::with_capacity(4 + payload.len());
    buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    buf.extend_from_slice(payload);
    w.write_all(&buf).await?;
    w.flush().await
}

async fn read_frame(r: &mut Conn) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "stream frame too large",
        ));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

fn ok(v: u64) -> Vec<u8> {
    let mut o = vec![KIND_OK];
    o.extend_from_slice(&v.to_be_bytes());
    o
}

fn err(why: &str) -> Vec<u8> {
    let mut o = vec![KIND_ERR];
    put_str(&mut o, why);
    o
}

fn chunk(committed: u64, cut: u64, epoch: u64, c: &Chunk) -> Vec<u8> {
    let mut o = Vec::with_capacity(40 + c.records.len() * 24 + c.bytes.len());
    o.push(KIND_CHUNK);
    for v in [committed, cut, epoch] {
        o.extend_from_slice(&v.to_be_bytes());
    }
    o.extend_from_slice(&(c.records.len() as u32).to_be_bytes());
    for &(off, ts, len) in &c.records {
        for v in [off, ts, len] {
            o.extend_from_slice(&v.to_be_bytes());
        }
    }
    put_bytes(&mut o, &c.bytes);
    o
}

/// (committed, cut, epoch, records) of a chunk answer (after its kind byte); `None` when
/// malformed, or when the record lengths do not add up to the bytes.
fn read_chunk(r: &mut Reader<'_>) -> Option<(u64, u64, u64, Chunk)> {
    let (committed, cut, epoch) = (r.u64()?, r.u64()?, r.u64()?);
    let n = r.u32()? as usize;
    let mut c = Chunk::default();
    let mut total = 0u64;
    for _ in 0..n {
        let (off, ts, len) = (r.u64()?, r.u64()?, r.u64()?);
        total = total.checked_add(len)?;
        c.records.push((off, ts, len));
    }
    c.bytes = r.bytes()?;
    (total == c.bytes.len() as u64).then_some((committed, cut, epoch, c))
}

/// A bounds-checked reader of a frame: every getter is `None` past the end.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_be_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_be_bytes)
    }
    fn str(&mut self) -> Option<String> {
        let n = u16::from_be_bytes(self.take(2)?.try_into().ok()?) as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = self.u32()? as usize;
        self.take(n).map(<[u8]>::to_vec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_frames_round_trip_and_bad_ones_are_refused() {
        let c = Chunk {
            bytes: vec![1, 2, 3, 4, 5],
            records: vec![(7, 100, 2), (8, 101, 3)],
        };
        let f = chunk(8, u64::MAX, 3, &c);
        let mut r = Reader(&f);
        assert_eq!(r.u8(), Some(KIND_CHUNK));
        let (committed, cut, epoch, back) = read_chunk(&mut r).unwrap();
        assert_eq!((committed, cut, epoch), (8, u64::MAX, 3));
        assert_eq!(back.bytes, c.bytes);
        assert_eq!(back.records, c.records);
        // Every truncation of the frame is refused, never a panic.
        for cut in 1..f.len() {
            let mut r = Reader(&f[1..cut]);
            assert!(read_chunk(&mut r).is_none(), "{cut}");
        }
        // Lengths that do not add up to the bytes.
        let bad = chunk(
            0,
            0,
            0,
            &Chunk {
                bytes: vec![1],
                records: vec![(0, 0, u64::MAX)],
            },
        );
        assert!(read_chunk(&mut Reader(&bad[1..])).is_none());
    }

    #[test]
    fn initial_placement_leads_here_with_the_asked_size() {
        let nodes: Vec<super::super::Member> = ["n1", "n2", "n3"]
            .iter()
            .map(|n| super::super::Member {
                name: n.to_string(),
                addr: "127.0.0.1:1".into(),
            })
            .collect();
        let r = StreamRepl::new("n2".into(), &nodes, Transport::plain());
        let p = r.initial("/", "s", None);
        assert_eq!(p.leader, "n2");
        assert_eq!(p.members, vec!["n2", "n1", "n3"]);
        assert_eq!(r.initial("/", "s", Some(2)).members, vec!["n2", "n1"]);
        assert_eq!(r.initial("/", "s", Some(9)).members.len(), 3);
    }
}
