//! One task per TCP connection. It owns the socket, the negotiated limits, heartbeat
//! deadlines and every channel of the connection.
//!
//! The main loop selects over: bytes from the socket (decoded in batches, each frame handled
//! in order), commands from queues ([`outbound::Outbound`], mostly deliveries), writing the
//! output buffer, heartbeats, and broker shutdown. All output goes through one buffer that
//! is written with vectored I/O whenever the socket is writable, so frames decided in one
//! pass leave in one system call.

mod frames;
mod handshake;
pub mod outbound;

use crate::broker::{Broker, ConnectionInfo};
use crate::channel::{Channel, ConnCtx};
use crate::error::AmqpError;
use crate::protocol::codec::{describe_frame, Frame, FrameDecoder, Method};
use crate::protocol::encode::OutBuf;
use crate::stats::ConnShared;
use crate::tls::{ReadHalf, WriteHalf};
use crate::vhost::VHost;
use amq_protocol::protocol::{channel as cm, connection as conn, AMQPClass};
use bytes::BytesMut;
use handshake::HandshakeEnd;
use outbound::{ConnReceiver, ConnSender, Outbound};
use std::collections::HashMap;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Read buffer growth: small while a connection is quiet, large while reads fill it.
const READ_CHUNK_IDLE: usize = 4 * 1024;
const READ_CHUNK_BUSY: usize = 64 * 1024;
/// A connection that has neither read nor written for this long gives its buffers back.
const IDLE_AFTER: Duration = Duration::from_secs(2);
/// Stop taking deliveries from queues while this much output is pending.
const OUT_HIGH_WATER: usize = 1 << 20;
/// Stop reading the socket while this much output is pending (a peer that does not read).
const OUT_READ_PAUSE: usize = 8 << 20;
/// Outbound commands handled per loop turn, so input and output stay fair.
const OUTBOUND_BATCH: usize = 512;
/// How long a closing connection lives on: after we sent connection.close, waiting for
/// close-ok; after we sent close-ok, reading (and discarding) what the client still sends
/// until it closes its side. RabbitMQ waits up to min(heartbeat, 30 s) in both cases.
const CLOSE_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug)]
pub struct Connection {
    id: u64,
    broker: Arc<Broker>,
    peer: SocketAddr,
    reader: ReadHalf,
    writer: WriteHalf,
    /// The verified TLS client certificate's common name: the EXTERNAL login.
    peer_cn: Option<String>,
    inbuf: BytesMut,
    out: OutBuf,
    decoder: FrameDecoder,
    tx: ConnSender,
    rx: ConnReceiver,
    user: String,
    vhost: Option<Arc<VHost>>,
    frame_max: u32,
    channel_max: u16,
    heartbeat: u16,
    cancel_notify: bool,
    auth_failure_close: bool,
    /// The client advertised the `connection.blocked` capability.
    blocked_notify: bool,
    /// Publisher flow control under resource alarms (see [`crate::alarm`]).
    throttle: crate::alarm::Throttle,
    /// Boxed: a channel is large, and the map keeps spare slots (memory per connection).
    channels: HashMap<u16, Box<Channel>, ChannelIdHash>,
    /// Channels in confirm mode with confirms to flush after this input batch.
    confirm_dirty: Vec<u16>,
    /// Queues this read batch published to without dispatching (see `Queue::push_deferred`).
    deferred: Vec<Arc<crate::queue::Queue>>,
    /// Queues the last publish found overrun (filled by `queue::enqueue`, moved to `flow`).
    overrun: Vec<Arc<crate::queue::Queue>>,
    /// Internal flow control: the overrun queues this connection waits on; while it
    /// waits, the socket is not read (management shows `state: flow`).
    flow: crate::flow::Gate<Arc<crate::queue::Queue>>,
    /// We sent connection.close or connection.close-ok: input is read and discarded (only
    /// close/close-ok on channel 0 matter) until close-ok, EOF or [`CLOSE_GRACE`].
    closing_since: Option<Instant>,
    last_read: Instant,
    last_write: Instant,
    /// The last read filled the buffer's spare room: the peer is sending a lot.
    read_filled: bool,
    /// The message log's synced sequence number (publisher confirms of stored messages).
    synced: Option<tokio::sync::watch::Receiver<u64>>,
    /// Some channel holds replies until the message log syncs.
    awaiting_sync: bool,
    /// Replicated streams the first held confirms wait on (see `Channel::stream_waits`).
    stream_waits: Vec<tokio::sync::watch::Receiver<u64>>,
    /// A reply waiting for the metadata group (cluster only): no further frame is handled
    /// until it resolves.
    pending: Option<crate::channel::PendingMeta>,
    /// The frame being handled is a retry after a read barrier.
    barrier_passed: bool,
    /// client-properties from connection.start-ok, as management JSON.
    client_properties: serde_json::Value,
    /// What management sees of this connection (registered once the handshake is done).
    mgmt: Arc<ConnShared>,
}

/// Hashing for channel numbers, looked up for every frame. SipHash's DoS resistance buys
/// nothing here (at most channel_max keys, chosen from 1..=channel_max), so a
/// multiplicative hash does: it spreads the small numbers over the whole word, as
/// hashbrown wants both the low bits (bucket) and the top bits (control byte) to vary.
#[derive(Default, Clone, Copy)]
struct ChannelIdHasher(u64);

impl std::hash::Hasher for ChannelIdHasher {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u16(&mut self, n: u16) {
        self.0 = u64::from(n);
    }
}

type ChannelIdHash = std::hash::BuildHasherDefault<ChannelIdHasher>;

/// The parts of the broker a channel handler gets (see [`crate::channel::BrokerCtx`]).
fn broker_ctx(b: &Broker) -> crate::channel::BrokerCtx<'_> {
    crate::channel::BrokerCtx {
        auth: &b.auth,
        limits: &b.limits,
        max_message_size: b.config.max_message_size,
        meta: b.meta.get(),
        delayed: b.delayed.get(),
    }
}

/// Serves one accepted socket until it closes.
pub async fn serve(broker: Arc<Broker>, socket: TcpStream, peer: SocketAddr) {
    let _ = socket.set_nodelay(true);
    let (reader, writer) = crate::tls::split_tcp(socket);
    serve_stream(broker, reader, writer, peer, None).await
}

/// Serves a connection over plain or TLS halves; `peer_cn` is the client certificate's
/// common name when TLS verified one.
pub async fn serve_stream(
    broker: Arc<Broker>,
    reader: ReadHalf,
    writer: WriteHalf,
    peer: SocketAddr,
    peer_cn: Option<String>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let frame_max = broker.config.frame_max;
    let channel_max = broker.config.channel_max;
    let now = Instant::now();
    let id = broker.next_connection_id();
    let (local, tls) = match &writer {
        WriteHalf::Tcp(w) => (w.local_addr().unwrap_or(peer), false),
        WriteHalf::Tls(_) => ((broker.config.bind, 0).into(), true),
    };
    let mut c = Connection {
        mgmt: Arc::new(ConnShared {
            tls,
            ..ConnShared::new(id, peer, local)
        }),
        id,
        broker,
        peer,
        reader,
        writer,
        peer_cn,
        inbuf: BytesMut::with_capacity(READ_CHUNK_IDLE),
        out: OutBuf::new(),
        decoder: FrameDecoder::new(frame_max),
        tx,
        rx,
        user: String::new(),
        vhost: None,
        frame_max,
        channel_max,
        heartbeat: 0,
        cancel_notify: false,
        auth_failure_close: false,
        blocked_notify: false,
        throttle: Default::default(),
        channels: HashMap::default(),
        confirm_dirty: Vec::new(),
        deferred: Vec::new(),
        overrun: Vec::new(),
        flow: Default::default(),
        closing_since: None,
        last_read: now,
        last_write: now,
        read_filled: false,
        synced: None,
        awaiting_sync: false,
        stream_waits: Vec::new(),
        pending: None,
        barrier_passed: false,
        client_properties: serde_json::Value::Null,
    };
    c.synced = c.broker.message_log().map(|l| l.synced());
    let timeout = c.broker.config.handshake_timeout;
    match tokio::time::timeout(timeout, c.handshake()).await {
        Ok(Ok(())) => {
            let vhost = c.vhost.as_ref().map(|v| v.name.clone()).unwrap_or_default();
            tracing::info!(conn = c.id, peer = %c.peer, user = %c.user, %vhost, "connection opened");
            if c.inbuf.is_empty() {
                c.inbuf = BytesMut::new();
            }
            c.run().await;
            c.teardown();
            tracing::info!(conn = c.id, peer = %c.peer, user = %c.user, "connection closed");
        }
        Ok(Err(HandshakeEnd::Close(e))) => {
            tracing::info!(peer = %peer, error = %e, "handshake refused");
            c.send_connection_close(&e);
            c.finish_close().await;
        }
        // If the client went away while open-ok was being written, the connection was
        // already registered: teardown undoes that (and is a no-op for earlier ends).
        Ok(Err(_)) => c.teardown(),
        Err(_) => {
            tracing::info!(peer = %peer, "handshake timed out");
            c.teardown();
        }
    }
    let _ = c.writer.shutdown().await;
}

/// Reads into `inbuf`; returns the bytes read and the room there was. A buffer released
/// by `trim_if_idle` is allocated again only once the socket is readable, so an idle
/// connection waits without one.
async fn read_some(reader: &mut ReadHalf, inbuf: &mut BytesMut) -> std::io::Result<(usize, usize)> {
    if inbuf.capacity() == 0 {
        reader.readable().await?;
        inbuf.reserve(READ_CHUNK_IDLE);
    }
    let spare = inbuf.capacity() - inbuf.len();
    let n = reader.read_buf(inbuf).await?;
    Ok((n, spare))
}

/// Resolves once none of `waiting` is overrun any more (each queue wakes its publishers
/// when released; the end of saturation wakes them all).
async fn flow_released(load: &crate::flow::Load, waiting: &[Arc<crate::queue::Queue>]) {
    loop {
        // Interest is registered before each check, so a release in between is not lost.
        let global = load.released.notified();
        tokio::pin!(global);
        global.as_mut().enable();
        let Some(q) = waiting.iter().find(|q| q.flow_overrun()) else {
            return;
        };
        let local = q.flow_released().notified();
        tokio::pin!(local);
        local.as_mut().enable();
        if !q.flow_overrun() {
            continue;
        }
        tokio::select! {
            _ = &mut global => {}
            _ = &mut local => {}
        }
    }
}

async fn write_out(writer: &mut WriteHalf, out: &OutBuf) -> std::io::Result<usize> {
    let mut slices = [IoSlice::new(&[]); 64];
    let n = out.io_slices(&mut slices);
    writer.write_vectored(&slices[..n]).await
}

impl Connection {
    async fn read_more(&mut self) -> Result<(), HandshakeEnd> {
        if self.inbuf.capacity() - self.inbuf.len() < 1024 {
            self.inbuf.reserve(READ_CHUNK_IDLE);
        }
        match self.reader.read_buf(&mut self.inbuf).await {
            Ok(0) | Err(_) => Err(HandshakeEnd::Io),
            Ok(_) => Ok(()),
        }
    }

    async fn read_frame(&mut self) -> Result<Frame, HandshakeEnd> {
        loop {
            match self.decoder.decode(&mut self.inbuf) {
                Ok(Some(f)) => return Ok(f),
                Ok(None) => self.read_more().await?,
                Err(e) => return Err(HandshakeEnd::Close(e)),
            }
        }
    }

    async fn flush(&mut self) -> Result<(), HandshakeEnd> {
        while !self.out.is_empty() {
            match write_out(&mut self.writer, &self.out).await {
                Ok(0) | Err(_) => return Err(HandshakeEnd::Io),
                Ok(n) => self.out.advance(n),
            }
        }
        Ok(())
    }

    /// After a refused handshake: send what is buffered, wait briefly for close-ok.
    async fn finish_close(&mut self) {
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            if self.flush().await.is_err() {
                return;
            }
            loop {
                match self.read_frame().await {
                    Ok(Frame::Method(0, Method::Other(c)))
                        if matches!(*c, AMQPClass::Connection(conn::AMQPMethod::CloseOk(_))) =>
                    {
                        return
                    }
                    Ok(_) => continue,
                    Err(_) => return,
                }
            }
        })
        .await;
    }

    fn send_connection_close(&mut self, e: &AmqpError) {
        self.out.method(
            0,
            AMQPClass::Connection(conn::AMQPMethod::Close(conn::Close {
                reply_code: e.code,
                reply_text: e.text.as_str().into(),
                class_id: e.class_id,
                method_id: e.method_id,
            })),
        );
    }

    /// Starts closing the connection with an error: connection.close, then only
    /// close/close-ok are processed until the grace period ends.
    fn close_with(&mut self, e: AmqpError) {
        if self.closing_since.is_some() {
            return;
        }
        tracing::info!(conn = self.id, peer = %self.peer, code = e.code, text = %e.text, "closing connection");
        self.release_channels();
        self.send_connection_close(&e);
        self.closing_since = Some(Instant::now());
    }

    /// The client's connection.close: answer close-ok and let go of everything the
    /// connection held at once (its channels, exclusive queues, its place in the
    /// connection count), but keep reading, as RabbitMQ does: a client that still had
    /// frames in flight (publishes just before the close) must not have its writes fail
    /// with EPIPE or ECONNRESET. What it sends is discarded until it closes its side of
    /// the socket or [`CLOSE_GRACE`] ends.
    fn accept_close(&mut self) {
        self.out.method(
            0,
            AMQPClass::Connection(conn::AMQPMethod::CloseOk(conn::CloseOk {})),
        );
        self.teardown();
        self.closing_since = Some(Instant::now());
    }

    fn release_channels(&mut self) {
        if let Some(vhost) = &self.vhost {
            for (_, mut ch) in self.channels.drain() {
                ch.release(vhost);
            }
        }
    }

    async fn run(&mut self) {
        let mut shutdown = self.broker.shutdown_signal();
        // A shutdown that began during the handshake is already the receiver's current
        // value; changed() would only report the next one.
        if *shutdown.borrow() {
            self.close_with(AmqpError::connection_forced(format_args!(
                "broker forced connection closure with reason 'shutdown'"
            )));
        }
        let hb = Duration::from_secs(self.heartbeat as u64);
        let mut ticker = tokio::time::interval(if hb.is_zero() {
            Duration::from_secs(3600)
        } else {
            (hb / 2).max(Duration::from_millis(500))
        });
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ack_timeout = self.broker.config.consumer_timeout;
        // Also the idle check (`trim_if_idle`), hence at most IDLE_AFTER apart.
        let mut ack_ticker =
            tokio::time::interval((ack_timeout / 4).clamp(Duration::from_millis(20), IDLE_AFTER));
        ack_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut alarms = self.broker.alarms.subscribe();
        let initial = *alarms.borrow_and_update();
        self.on_alarms(initial);
        let mut done = false;
        while !done {
            let closing = self.closing_since.is_some();
            let close_deadline = self
                .closing_since
                .map(|t| t + CLOSE_GRACE)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            let want_write = !self.out.is_empty();
            // Closing, input is only drained: read it even when blocked or backed up.
            let can_read = closing
                || (self.out.len() < OUT_READ_PAUSE
                    && self.throttle.can_read()
                    && !self.flow.in_flow()
                    && self.pending.is_none());
            let in_flow = self.flow.in_flow() && !closing;
            let can_recv = self.out.len() < OUT_HIGH_WATER && !closing;
            // Small reads while idle (memory per connection), large ones under load: a read
            // that filled the buffer asks for a big one next time.
            let spare = self.inbuf.capacity() - self.inbuf.len();
            let released = self.inbuf.capacity() == 0;
            if !released && (spare < 1024 || (self.read_filled && spare < READ_CHUNK_BUSY / 2)) {
                self.inbuf.reserve(if self.read_filled {
                    READ_CHUNK_BUSY
                } else {
                    READ_CHUNK_IDLE
                });
            }
            tokio::select! {
                r = write_out(&mut self.writer, &self.out), if want_write => match r {
                    Ok(0) | Err(_) => done = true,
                    Ok(n) => {
                        self.out.advance(n);
                        self.last_write = Instant::now();
                        self.mgmt.add_octets(0, n as u64);
                    }
                },
                r = read_some(&mut self.reader, &mut self.inbuf), if can_read => match r {
                    Ok((0, _)) | Err(_) => done = true,
                    Ok((n, spare_before)) => {
                        self.mgmt.add_octets(n as u64, 0);
                        self.read_filled = n == spare_before;
                        self.last_read = Instant::now();
                        done = self.process_input();
                        if self.inbuf.is_empty() && !self.read_filled {
                            // Light traffic: wait for the next read without a buffer (see
                            // `read_some`), so idle connections cost little memory.
                            self.inbuf = BytesMut::new();
                        }
                    }
                },
                cmd = self.rx.recv(), if can_recv => {
                    if let Some(cmd) = cmd {
                        self.handle_outbound(cmd);
                        for _ in 0..OUTBOUND_BATCH {
                            if self.out.len() >= OUT_HIGH_WATER { break; }
                            match self.rx.try_recv() {
                                Ok(cmd) => self.handle_outbound(cmd),
                                Err(_) => break,
                            }
                        }
                    }
                },
                _ = flow_released(&self.broker.flow, self.flow.waiting()), if in_flow => {
                    done = self.on_flow_released();
                },
                r = alarms.changed() => {
                    if r.is_ok() {
                        let set = *alarms.borrow_and_update();
                        done = self.on_alarms(set);
                    }
                },
                _ = ticker.tick(), if !hb.is_zero() => {
                    let now = Instant::now();
                    if self.throttle.is_blocked() || self.flow.in_flow() {
                        // Not reading a blocked publisher: its heartbeats wait in the socket.
                        self.last_read = now;
                    }
                    if now.duration_since(self.last_read) > hb * 2 {
                        tracing::warn!(conn = self.id, peer = %self.peer, "missed heartbeats from client, timeout: {}s", hb.as_secs());
                        done = true;
                    } else if now.duration_since(self.last_write) >= hb / 2 && self.out.is_empty() && !closing {
                        self.out.heartbeat();
                    }
                },
                _ = ack_ticker.tick(), if !closing => {
                    self.check_ack_timeouts(ack_timeout);
                    self.trim_if_idle();
                }
                _ = any_changed(&mut self.stream_waits), if !self.stream_waits.is_empty() && !closing => {
                    self.on_synced();
                },
                r = async { self.synced.as_mut().expect("awaiting_sync implies a log").changed().await }, if self.awaiting_sync && self.synced.is_some() && !closing => {
                    if r.is_ok() { self.on_synced(); } else { self.awaiting_sync = false; }
                },
                r = async { self.pending.as_mut().expect("checked").wait.as_mut().await }, if self.pending.is_some() && !closing => {
                    done = self.finish_pending(r);
                },
                _ = shutdown.changed(), if !closing => {
                    self.close_with(AmqpError::connection_forced(format_args!("broker forced connection closure with reason 'shutdown'")));
                },
                _ = tokio::time::sleep_until(close_deadline), if closing => done = true,
            }
        }
        // Best effort: let the peer read what we last said (close-ok, close).
        let _ = tokio::time::timeout(Duration::from_secs(1), self.flush()).await;
    }

    /// A queue this connection waited on was released (or saturation ended): read again
    /// once none holds it, starting with the frames left in the input buffer. True when
    /// the connection is finished.
    fn on_flow_released(&mut self) -> bool {
        if !self.flow.release(|q| q.flow_overrun()) {
            return false;
        }
        self.mgmt.set_flow(false);
        self.throttle.can_read() && self.process_input()
    }

    /// The broker's alarm set changed: tell the client if it is blocked or unblocked, and
    /// handle the frames left in the input buffer when it was blocked. True when the
    /// connection is finished.
    fn on_alarms(&mut self, set: crate::alarm::AlarmSet) -> bool {
        let was_blocked = self.throttle.is_blocked();
        let notice = self.throttle.on_alarms(set);
        self.send_notice(notice);
        was_blocked && self.throttle.can_read() && self.process_input()
    }

    fn send_notice(&mut self, notice: Option<crate::alarm::Notice>) {
        if !self.blocked_notify || self.closing_since.is_some() {
            return;
        }
        let method = match notice {
            Some(crate::alarm::Notice::Blocked(reason)) => {
                conn::AMQPMethod::Blocked(conn::Blocked {
                    reason: reason.as_str().into(),
                })
            }
            Some(crate::alarm::Notice::Unblocked) => {
                conn::AMQPMethod::Unblocked(conn::Unblocked {})
            }
            None => return,
        };
        self.out.method(0, AMQPClass::Connection(method));
    }

    /// Closes channels whose oldest unacknowledged delivery is too old (406); their
    /// messages go back to their queues.
    /// After IDLE_AFTER without traffic, gives back the read and write buffers (they are
    /// allocated again by the next read or frame): idle connections cost little memory.
    fn trim_if_idle(&mut self) {
        let now = Instant::now();
        let quiet = now.duration_since(self.last_read) >= IDLE_AFTER
            && now.duration_since(self.last_write) >= IDLE_AFTER;
        if quiet {
            if self.inbuf.is_empty() && self.inbuf.capacity() > 0 {
                self.inbuf = BytesMut::new();
            }
            self.out.release_if_empty();
        }
    }

    fn check_ack_timeouts(&mut self, timeout: Duration) {
        let expired: Vec<(u16, AmqpError)> = self
            .channels
            .iter()
            .filter(|(_, ch)| !ch.closing)
            .filter_map(|(id, ch)| ch.check_ack_timeout(timeout).map(|e| (*id, e)))
            .collect();
        for (id, e) in expired {
            tracing::warn!(
                conn = self.id,
                channel = id,
                "consumer acknowledgement timed out"
            );
            self.close_channel(id, e);
        }
    }

    /// Sends channel.close with `e` and releases what the channel held.
    fn close_channel(&mut self, id: u16, e: AmqpError) {
        let Some(vhost) = self.vhost.clone() else {
            return;
        };
        if let Some(ch) = self.channels.get_mut(&id) {
            ch.release(&vhost);
            ch.closing = true;
        }
        self.out.method(
            id,
            AMQPClass::Channel(cm::AMQPMethod::Close(cm::Close {
                reply_code: e.code,
                reply_text: e.text.as_str().into(),
                class_id: e.class_id,
                method_id: e.method_id,
            })),
        );
    }

    /// Decodes and handles every complete frame in the input buffer. True when the
    /// connection is finished (close-ok exchanged).
    fn process_input(&mut self) -> bool {
        let mut finished = false;
        loop {
            if self.pending.is_some() {
                // The rest waits until the metadata group answers (`finish_pending`).
                break;
            }
            let frame = match self.decoder.decode(&mut self.inbuf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    // The rest of the input cannot be framed: drop it (a close-ok in it
                    // is lost; the grace period ends the connection then).
                    self.close_with(e);
                    self.inbuf.clear();
                    break;
                }
            };
            let publish = self.closing_since.is_none()
                && matches!(frame, Frame::Method(_, Method::Publish(_)));
            if publish {
                // Under a resource alarm a publisher is blocked after this publish: the
                // rest of the input waits (unread) until the alarm clears.
                let notice = self.throttle.on_publish(&self.broker.alarms);
                self.send_notice(notice);
            }
            match self.handle_frame(frame) {
                Ok(true) => {
                    finished = true;
                    break;
                }
                Ok(false) => {}
                Err(e) => {
                    if e.is_connection_level() {
                        // The frames after it are still read, to find the close-ok.
                        self.close_with(e);
                    }
                }
            }
            if !self.overrun.is_empty() {
                // A queue it feeds is overrun: the rest of the input waits (unread) until
                // the queue catches up or the broker is no longer saturated.
                for q in self.overrun.drain(..) {
                    self.flow.hold(q, Arc::ptr_eq);
                }
                self.mgmt.set_flow(true);
            }
            if publish && (!self.throttle.can_read() || self.flow.in_flow()) {
                break;
            }
        }
        for q in self.deferred.drain(..) {
            q.dispatch();
        }
        let dirty = std::mem::take(&mut self.confirm_dirty);
        if !dirty.is_empty() {
            let synced = self.synced_now();
            for id in dirty {
                if let Some(ch) = self.channels.get_mut(&id) {
                    ch.flush_confirms(&mut self.out, synced);
                    self.awaiting_sync |= ch.awaits_sync();
                }
            }
            self.collect_stream_waits();
        }
        finished
    }

    /// The metadata group answered the pending reply: send it (or handle the method again
    /// after a read barrier, or close the channel with 541 when the change could not be
    /// committed), then handle the frames that waited. True when the connection is
    /// finished.
    fn finish_pending(&mut self, r: Result<(), String>) -> bool {
        let Some(p) = self.pending.take() else {
            return false;
        };
        let open = self.channels.get(&p.channel).is_some_and(|c| !c.closing);
        if open {
            if let Err(e) = &r {
                tracing::warn!(conn = self.id, channel = p.channel, error = %e, "metadata store unavailable");
            }
            match (r, p.retry) {
                (_, Some(m)) => {
                    // After the barrier, or without it: answer from what this node has.
                    self.barrier_passed = true;
                    let res = self.handle_frame(Frame::Method(p.channel, m));
                    self.barrier_passed = false;
                    match res {
                        Ok(true) => return true,
                        Err(e) if e.is_connection_level() => self.close_with(e),
                        _ => {}
                    }
                }
                (Ok(()), None) => {
                    if let Some(reply) = p.reply {
                        self.out.method(p.channel, reply);
                    }
                }
                (Err(e), None) => self.close_channel(
                    p.channel,
                    AmqpError::new(
                        541,
                        "INTERNAL_ERROR",
                        format_args!("metadata store: {e}"),
                        crate::error::Scope::Channel,
                    ),
                ),
            }
        }
        self.process_input()
    }

    fn synced_now(&self) -> u64 {
        self.synced.as_ref().map(|s| *s.borrow()).unwrap_or(0)
    }

    /// The message log synced: send the replies that waited for it.
    fn on_synced(&mut self) {
        let synced = self.synced_now();
        let mut still = false;
        for ch in self.channels.values_mut() {
            if ch.awaits_sync() {
                ch.flush_confirms(&mut self.out, synced);
                still |= ch.awaits_sync();
            }
        }
        self.awaiting_sync = still;
        self.collect_stream_waits();
    }

    /// The replicated streams' watches the held confirms wait on now.
    fn collect_stream_waits(&mut self) {
        self.stream_waits.clear();
        let synced = self.synced_now();
        for ch in self.channels.values_mut() {
            // Bounded: each round sends at least the first held reply of the channel.
            for _ in 0..64 {
                match ch.stream_waits(synced) {
                    Some(rx) => {
                        // A closed watch (its stream is gone) would wake the loop for ever.
                        let open = rx.into_iter().filter(|r| r.has_changed().is_ok());
                        self.stream_waits.extend(open);
                        break;
                    }
                    None => ch.flush_confirms(&mut self.out, synced),
                }
            }
        }
    }

    fn handle_outbound(&mut self, cmd: Outbound) {
        let Some(vhost) = self.vhost.as_ref() else {
            return;
        };
        let mut cx = ConnCtx {
            out: &mut self.out,
            broker: broker_ctx(&self.broker),
            vhost,
            conn_id: self.id,
            user: &self.user,
            frame_max: self.frame_max,
            tx: &self.tx,
            cancel_notify: self.cancel_notify,
            stats: &self.mgmt,
            deferred: None,
            flow: None,
            pending: None,
            barrier_passed: false,
        };
        match cmd {
            Outbound::Deliver {
                consumer,
                queue,
                msgs,
            } => match self.channels.get_mut(&consumer.channel.id) {
                Some(ch) => ch.deliver(consumer, queue, msgs, &mut cx),
                None => {
                    for msg in msgs {
                        consumer.unreserve();
                        queue.return_undelivered(msg, !consumer.no_ack);
                    }
                }
            },
            Outbound::ServerCancel { consumer } => {
                if let Some(ch) = self.channels.get_mut(&consumer.channel.id) {
                    ch.server_cancel(consumer, &mut cx);
                }
            }
            Outbound::CancelOk { consumer, nowait } => {
                if let Some(ch) = self.channels.get_mut(&consumer.channel.id) {
                    ch.cancel_ok(consumer, nowait, &mut cx);
                }
            }
            Outbound::ForceClose(e) => self.close_with(e),
            Outbound::RemoteSettled | Outbound::Replicated => self.on_synced(),
        }
    }

    /// Releases everything the connection held: channels (unacked messages go back),
    /// deliveries still queued to us, exclusive queues. Idempotent (a client's close
    /// tears down at once, and again when the socket closes).
    fn teardown(&mut self) {
        self.flow.clear();
        self.mgmt.set_flow(false);
        self.release_channels();
        self.rx.close();
        while let Ok(cmd) = self.rx.try_recv() {
            if let Outbound::Deliver {
                consumer,
                queue,
                msgs,
            } = cmd
            {
                for msg in msgs {
                    consumer.unreserve();
                    queue.return_undelivered(msg, !consumer.no_ack);
                }
            }
        }
        if let Some(vhost) = &self.vhost {
            vhost.remove_exclusive_queues(self.id);
        }
        self.broker.connections.remove(&self.id);
        self.broker.stats.unregister(self.id);
    }

    /// Makes the opened connection count: in `broker.connections` (limits, `ctl`, shutdown)
    /// and, with what the handshake negotiated, in management.
    fn register(&mut self) {
        self.broker.connections.insert(
            self.id,
            ConnectionInfo {
                peer: self.peer,
                user: self.user.clone(),
                vhost: self
                    .vhost
                    .as_ref()
                    .map(|v| v.name.clone())
                    .unwrap_or_default(),
                control: self.tx.clone(),
            },
        );
        self.register_mgmt();
    }

    /// Fills in what the handshake negotiated and makes the connection visible to management.
    fn register_mgmt(&mut self) {
        let placeholder = Arc::new(ConnShared::new(self.id, self.peer, self.peer));
        let mut m = std::mem::replace(&mut self.mgmt, placeholder);
        if let Some(inner) = Arc::get_mut(&mut m) {
            inner.user = self.user.clone();
            inner.vhost = self
                .vhost
                .as_ref()
                .map(|v| v.name.clone())
                .unwrap_or_default();
            inner.frame_max = self.frame_max;
            inner.channel_max = self.channel_max;
            inner.heartbeat = self.heartbeat;
            inner.client_properties = std::mem::take(&mut self.client_properties);
        }
        self.mgmt = m;
        self.broker.stats.register(self.mgmt.clone());
    }
}

/// Resolves when one of `rx` changes.
async fn any_changed(rx: &mut [tokio::sync::watch::Receiver<u64>]) {
    use std::future::Future;
    let mut futs: Vec<_> = rx.iter_mut().map(|r| Box::pin(r.changed())).collect();
    std::future::poll_fn(|cx| {
        for f in futs.iter_mut() {
            if f.as_mut().poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await
}
