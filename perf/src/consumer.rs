//! One consumer: its own connection and channel, one basic.consume on its queue.
//!
//! Acks are queued without waiting for lapin to write them: the ack's frame is
//! pushed on the future's first poll, so we poll once and drop the future.

use crate::args::Args;
use crate::body;
use crate::stats::Shared;
use crate::tracker::Received;
use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Debug, Default)]
pub struct ConsumerResult {
    pub queue: usize,
    pub received: Received,
}

/// A connected consumer, ready to run (so producers start only once all are ready).
pub struct Ready {
    conn: Connection,
    ch: Channel,
    consumer: lapin::Consumer,
    tag: String,
}

pub async fn connect(args: &Args, queue: &str, tag: String) -> lapin::Result<Ready> {
    let conn = Connection::connect(&args.uri, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    if args.qos > 0 {
        ch.basic_qos(args.qos, BasicQosOptions::default()).await?;
    }
    let options = BasicConsumeOptions {
        no_ack: args.auto_ack,
        ..Default::default()
    };
    let consumer = ch
        .basic_consume(
            queue.into(),
            tag.as_str().into(),
            options,
            FieldTable::default(),
        )
        .await?;
    Ok(Ready {
        conn,
        ch,
        consumer,
        tag,
    })
}

async fn ack(ch: &Channel, tag: u64, multiple: bool) -> Result<(), lapin::Error> {
    let fut = ch.basic_ack(tag, BasicAckOptions { multiple });
    match futures_lite::future::poll_once(fut).await {
        Some(Err(e)) => Err(e),
        _ => Ok(()),
    }
}

/// Per-consumer state for handling deliveries.
struct State {
    args: Arc<Args>,
    shared: Arc<Shared>,
    ch: Channel,
    index: usize,
    queue: usize,
    received: Received,
    unacked: u64,
    last_tag: u64,
}

impl State {
    async fn on_delivery(&mut self, delivery: lapin::message::Delivery) -> lapin::Result<()> {
        let shared = &self.shared;
        let now = shared.now_ns();
        if let Some(stamp) = body::decode(&delivery.data) {
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
            self.last_tag = delivery.delivery_tag;
            if self.unacked >= self.args.multi_ack {
                ack(&self.ch, self.last_tag, self.args.multi_ack > 1).await?;
                self.unacked = 0;
            }
        }
        Ok(())
    }
}

pub async fn run(
    args: Arc<Args>,
    shared: Arc<Shared>,
    index: usize,
    queue: usize,
    ready: Ready,
    mut stop: watch::Receiver<bool>,
) -> ConsumerResult {
    let Ready {
        conn,
        ch,
        mut consumer,
        tag,
    } = ready;
    let who = format!("consumer {index}");
    let mut st = State {
        args,
        shared: shared.clone(),
        ch: ch.clone(),
        index,
        queue,
        received: Received::default(),
        unacked: 0,
        last_tag: 0,
    };
    let mut stopped = false;
    loop {
        let delivery = tokio::select! {
            biased;
            d = consumer.next() => d,
            _ = stop.changed() => { stopped = true; break }
        };
        let result = match delivery {
            Some(Ok(d)) => st.on_delivery(d).await,
            Some(Err(e)) => Err(e),
            None => {
                shared.error(&who, "consumer cancelled by the broker");
                break;
            }
        };
        if let Err(e) = result {
            shared.error(&who, e);
            break;
        }
    }
    if stopped {
        // Cancel, then take what the broker sent before cancel-ok: with auto-ack those
        // messages have left the queue, so skipping them would look like loss.
        let _ = ch
            .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
            .await;
        while let Ok(Some(Ok(d))) =
            tokio::time::timeout(std::time::Duration::from_secs(2), consumer.next()).await
        {
            if st.on_delivery(d).await.is_err() {
                break;
            }
        }
    }
    if st.unacked > 0 {
        let _ = ack(&ch, st.last_tag, true).await;
    }
    let _ = conn.close(200, "bye".into()).await;
    ConsumerResult {
        queue,
        received: st.received,
    }
}
