//! One consumer: its own connection (the raw client in `wire`), one basic.consume on
//! its queue.
//!
//! Frames are handled straight from the read buffer; acks for everything handled from
//! one read go out together in one write, before the next read.

use crate::args::Args;
use crate::body;
use crate::stats::Shared;
use crate::tracker::Received;
use crate::wire::{id, Conn, Content, Frame, Out};
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

#[derive(Debug, Default)]
pub struct ConsumerResult {
    pub queue: usize,
    pub received: Received,
}

/// A connected consumer, ready to run (so producers start only once all are ready).
pub struct Ready {
    conn: Conn,
    tag: String,
}

pub async fn connect(args: &Args, queue: &str, tag: String) -> io::Result<Ready> {
    let mut conn = Conn::open(&args.uri).await?;
    if args.qos > 0 {
        conn.tx.out.qos(args.qos);
        conn.tx.flush().await?;
        conn.reader.expect(id::QOS_OK).await?;
    }
    conn.tx
        .out
        .consume(queue, &tag, args.auto_ack, args.stream_offset.as_deref());
    conn.tx.flush().await?;
    conn.reader.expect(id::CONSUME_OK).await?;
    Ok(Ready { conn, tag })
}

/// Per-consumer state for handling frames.
struct State {
    args: Arc<Args>,
    shared: Arc<Shared>,
    index: usize,
    queue: usize,
    received: Received,
    /// Acks waiting for the next write.
    out: Out,
    content: Content,
    /// Delivery tag of the message whose content is arriving.
    tag: u64,
    unacked: u64,
    last_tag: u64,
    cancelled: bool,
}

impl State {
    fn on_frame(&mut self, f: Frame<'_>) -> io::Result<()> {
        match f.method() {
            Some(id::DELIVER) => {
                let mut a = f.args();
                a.shortstr();
                self.tag = a.u64().unwrap_or(0);
            }
            Some(id::CANCEL_OK) => self.cancelled = true,
            Some(id::CONNECTION_CLOSE | id::CHANNEL_CLOSE) => {
                return Err(crate::wire::bad(format!(
                    "closed by the broker: {}",
                    f.close_reason()
                )))
            }
            Some(_) => {}
            None if f.is_header() => {
                self.content.start(f.body_size().unwrap_or(0));
                if let Some(head) = self.content.finish_if_done() {
                    self.on_message(head.bytes());
                }
            }
            None if f.is_body() && self.content.active() => {
                if let Some(head) = self.content.add(f.payload) {
                    self.on_message(head.bytes());
                }
            }
            None => {}
        }
        Ok(())
    }

    fn on_message(&mut self, head: &[u8]) {
        let shared = &self.shared;
        let now = shared.now_ns();
        if let Some(stamp) = body::decode(head) {
            let latency = now.saturating_sub(stamp.sent_ns);
            shared.latency[self.index].lock().unwrap().record(latency);
            self.received
                .record(stamp.producer, stamp.seq, self.args.producers);
        } else {
            self.received.foreign += 1;
        }
        shared.received.fetch_add(1, Relaxed);
        shared.per_queue[self.queue].fetch_add(1, Relaxed);
        shared.last_receive_ns.fetch_max(now, Relaxed);
        if !self.args.auto_ack {
            self.unacked += 1;
            self.last_tag = self.tag;
            if self.unacked >= self.args.multi_ack {
                self.out.ack(self.last_tag, self.args.multi_ack > 1);
                self.unacked = 0;
            }
        }
    }
}

/// Handles every complete frame in the read buffer, then writes the acks they caused.
async fn drain(conn: &mut Conn, st: &mut State) -> io::Result<()> {
    while let Some(f) = conn.reader.try_frame()? {
        st.on_frame(f)?;
    }
    if !st.out.buf.is_empty() {
        conn.tx.writer.write_all(&st.out.buf).await?;
        st.out.buf.clear();
    }
    Ok(())
}

pub async fn run(
    args: Arc<Args>,
    shared: Arc<Shared>,
    index: usize,
    queue: usize,
    ready: Ready,
    mut stop: watch::Receiver<bool>,
) -> ConsumerResult {
    let Ready { mut conn, tag } = ready;
    let who = format!("consumer {index}");
    let mut st = State {
        args,
        shared: shared.clone(),
        index,
        queue,
        received: Received::default(),
        out: Out::default(),
        content: Content::default(),
        tag: 0,
        unacked: 0,
        last_tag: 0,
        cancelled: false,
    };
    let mut failed = false;
    loop {
        // Checked every round, not only in the select below: while deliveries keep
        // arriving, the read is always ready and would starve the stop signal.
        if *stop.borrow() {
            break;
        }
        if let Err(e) = drain(&mut conn, &mut st).await {
            shared.error(&who, e);
            failed = true;
            break;
        }
        tokio::select! {
            biased;
            r = conn.reader.fill() => if let Err(e) = r {
                shared.error(&who, e);
                failed = true;
                break;
            },
            _ = stop.changed() => break,
        }
    }
    if !failed {
        // Cancel, then take what the broker sent before cancel-ok: with auto-ack those
        // messages have left the queue, so skipping them would look like loss.
        conn.tx.out.cancel(&tag);
        let _ = conn.tx.flush().await;
        // Everything sent before cancel-ok left the queue (with auto-ack), so it is read
        // to the end; a broker with a large backlog in the socket needs more than a moment.
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs_f64(st.args.drain.max(2.0));
        while !st.cancelled {
            if drain(&mut conn, &mut st).await.is_err() || st.cancelled {
                break;
            }
            match tokio::time::timeout_at(deadline, conn.reader.fill()).await {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
        if st.unacked > 0 {
            conn.tx.out.ack(st.last_tag, true);
        }
        conn.tx.out.connection_close();
        if conn.tx.flush().await.is_ok() {
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                conn.reader.expect(id::CONNECTION_CLOSE_OK),
            )
            .await;
        }
    }
    ConsumerResult {
        queue,
        received: st.received,
    }
}
