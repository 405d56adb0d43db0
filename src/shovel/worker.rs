//! One shovel's task: an AMQP 0-9-1 client (lapin) on each side, consuming from the source
//! and publishing to the destination, reconnecting after `reconnect-delay` when either side
//! fails.
//!
//! With `on-confirm` the destination's publisher confirms drive the source acks: each
//! delivery's confirm future and acker go, in delivery order, to an acking loop that acks
//! the source message only once the destination confirmed it (a nack requeues it). At most
//! `src-prefetch-count` messages are unconfirmed. A message is therefore never lost; one
//! confirmed but not yet acked when a connection fails is delivered again (at least once,
//! as rabbitmq_shovel).

use super::config::{AckMode, DeleteAfter, Dest, ShovelConfig, Source};
use super::Status;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldArray, FieldTable};
use lapin::{Acker, Channel, Connection, ConnectionProperties, PublisherConfirm};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use tokio::sync::mpsc;

/// What the task needs besides its configuration.
pub(super) struct Job {
    pub vhost: String,
    pub name: String,
    pub config: Arc<ShovelConfig>,
    pub src_uri: String,
    pub dest_uri: String,
    pub status: Arc<Mutex<Status>>,
    /// Called once when `src-delete-after` is reached: removes the shovel.
    pub on_done: Box<dyn FnOnce() + Send + Sync>,
}

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// Runs the shovel until it is aborted (deleted, broker shutdown) or done.
pub(super) async fn run(job: Job) {
    let moved = Arc::new(AtomicU64::new(0));
    // `src-delete-after`: the number of messages to move, fixed at the first start.
    let mut target = match job.config.delete_after {
        DeleteAfter::Count(n) => Some(n),
        _ => None,
    };
    loop {
        job.status.lock().set("starting", None);
        match session(&job, &moved, &mut target).await {
            Ok(()) => {
                job.status
                    .lock()
                    .set("terminated", Some("src-delete-after reached".into()));
                tracing::info!(vhost = %job.vhost, shovel = %job.name, moved = moved.load(Relaxed), "shovel done, deleting it");
                (job.on_done)();
                return;
            }
            Err(e) => {
                tracing::warn!(vhost = %job.vhost, shovel = %job.name, error = %e, "shovel failed; reconnecting");
                job.status.lock().set("terminated", Some(e));
                tokio::time::sleep(job.config.reconnect_delay).await;
            }
        }
    }
}

/// The source queue exists (passive declare) or is declared durable, as rabbitmq_shovel
/// does; returns a usable channel and the queue's message count.
async fn ensure_queue(conn: &Connection, q: &str) -> Result<(Channel, u32), String> {
    let ch = conn
        .create_channel()
        .await
        .map_err(|e| err("channel.open", e))?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    if let Ok(found) = ch
        .queue_declare(q.into(), passive, FieldTable::default())
        .await
    {
        return Ok((ch, found.message_count()));
    }
    let ch = conn
        .create_channel()
        .await
        .map_err(|e| err("channel.open", e))?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let declared = ch
        .queue_declare(q.into(), durable, FieldTable::default())
        .await
        .map_err(|e| err(&format!("queue.declare '{q}'"), e))?;
    Ok((ch, declared.message_count()))
}

/// One connection to each side, until an error or `target` messages moved (`Ok`).
async fn session(
    job: &Job,
    moved: &Arc<AtomicU64>,
    target: &mut Option<u64>,
) -> Result<(), String> {
    let props = || ConnectionProperties::default();
    let src = Connection::connect(&job.src_uri, props())
        .await
        .map_err(|e| err("source connection", e))?;
    let dst = Connection::connect(&job.dest_uri, props())
        .await
        .map_err(|e| err("destination connection", e))?;
    let result = shovel(job, &src, &dst, moved, target).await;
    let _ = src.close(200, "shovel stopping".into()).await;
    let _ = dst.close(200, "shovel stopping".into()).await;
    result
}

async fn shovel(
    job: &Job,
    src: &Connection,
    dst: &Connection,
    moved: &Arc<AtomicU64>,
    target: &mut Option<u64>,
) -> Result<(), String> {
    let cfg = &job.config;
    let (sch, queue) = match &cfg.src {
        Source::Queue(q) => {
            let (ch, count) = ensure_queue(src, q).await?;
            if cfg.delete_after == DeleteAfter::QueueLength && target.is_none() {
                *target = Some(count as u64);
            }
            (ch, q.clone())
        }
        Source::Exchange { name, key } => {
            let ch = src
                .create_channel()
                .await
                .map_err(|e| err("channel.open", e))?;
            let q = ch
                .queue_declare(
                    "".into(),
                    QueueDeclareOptions {
                        exclusive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| err("queue.declare", e))?;
            let qn = q.name().as_str().to_string();
            ch.queue_bind(
                qn.as_str().into(),
                name.as_str().into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| err(&format!("queue.bind to '{name}'"), e))?;
            (ch, qn)
        }
    };
    if target.is_some_and(|t| moved.load(Relaxed) >= t) {
        return Ok(());
    }
    let dch = match &cfg.dest {
        Dest::Queue(q) => ensure_queue(dst, q).await?.0,
        Dest::Exchange { .. } => dst
            .create_channel()
            .await
            .map_err(|e| err("channel.open", e))?,
    };
    if cfg.ack_mode == AckMode::OnConfirm {
        dch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| err("confirm.select", e))?;
    }
    if cfg.ack_mode != AckMode::NoAck {
        sch.basic_qos(cfg.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| err("basic.qos", e))?;
    }
    let mut consumer = sch
        .basic_consume(
            queue.as_str().into(),
            format!("shovel-{}", job.name).as_str().into(),
            BasicConsumeOptions {
                no_ack: cfg.ack_mode == AckMode::NoAck,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| err(&format!("basic.consume on '{queue}'"), e))?;
    job.status.lock().set("running", None);
    let forward_headers = cfg.add_forward_headers.then(|| forward_header(job));
    let limit = *target;
    let (tx, mut rx) = mpsc::channel::<(PublisherConfirm, Acker)>(cfg.prefetch as usize);
    // Acks at the source, in delivery order, once the destination confirmed: the confirms
    // waiting now form a batch, acknowledged with one `basic.ack multiple` (a nack in the
    // middle is requeued on its own after the acks before it).
    let acking = {
        let moved = moved.clone();
        let status = job.status.clone();
        async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < 4096 {
                    match rx.try_recv() {
                        Ok(x) => batch.push(x),
                        Err(_) => break,
                    }
                }
                let mut last_ok: Option<Acker> = None;
                let mut acked = 0u64;
                for (confirm, acker) in batch {
                    let c = confirm.await.map_err(|e| err("publisher confirm", e))?;
                    if c.is_ack() {
                        last_ok = Some(acker);
                        acked += 1;
                        continue;
                    }
                    if let Some(a) = last_ok.take() {
                        ack_up_to(a).await?;
                    }
                    acker
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..Default::default()
                        })
                        .await
                        .map_err(|e| err("basic.nack", e))?;
                }
                if let Some(a) = last_ok {
                    ack_up_to(a).await?;
                }
                let n = moved.fetch_add(acked, Relaxed) + acked;
                status.lock().forwarded = n;
                if limit.is_some_and(|t| n >= t) {
                    return Ok(true);
                }
            }
            Ok::<bool, String>(false)
        }
    };
    let forwarding = async {
        let mut published = moved.load(Relaxed);
        while let Some(d) = consumer.next().await {
            let d = d.map_err(|e| err("source consumer", e))?;
            if limit.is_some_and(|t| published >= t) {
                // Past `src-delete-after`: left unacked, requeued when the channel closes.
                continue;
            }
            let (exchange, rk) = match &cfg.dest {
                Dest::Queue(q) => (String::new(), q.clone()),
                Dest::Exchange { name, key } => (
                    name.clone(),
                    key.clone()
                        .unwrap_or_else(|| d.routing_key.as_str().to_string()),
                ),
            };
            let mut properties = d.properties.clone();
            if let Some(h) = &forward_headers {
                let mut headers = properties.headers().clone().unwrap_or_default();
                headers.insert("x-shovelled".into(), h.clone());
                properties = properties.with_headers(headers);
            }
            let confirm = dch
                .basic_publish(
                    exchange.as_str().into(),
                    rk.as_str().into(),
                    BasicPublishOptions::default(),
                    &d.data,
                    properties,
                )
                .await
                .map_err(|e| err("basic.publish", e))?;
            published += 1;
            match cfg.ack_mode {
                AckMode::OnConfirm => {
                    if tx.send((confirm, d.acker)).await.is_err() {
                        break;
                    }
                }
                mode => {
                    if mode == AckMode::OnPublish {
                        d.acker
                            .ack(BasicAckOptions::default())
                            .await
                            .map_err(|e| err("basic.ack", e))?;
                    }
                    let n = moved.fetch_add(1, Relaxed) + 1;
                    job.status.lock().forwarded = n;
                    if limit.is_some_and(|t| n >= t) {
                        return Ok(true);
                    }
                }
            }
        }
        Err::<bool, String>("the source cancelled the shovel's consumer".into())
    };
    // Whichever ends first: the acking loop reaching the target, or an error on either.
    let done = tokio::select! {
        r = acking => r?,
        r = forwarding => r?,
    };
    if done {
        Ok(())
    } else {
        Err("stopped".into())
    }
}

/// Acknowledges this delivery and every earlier one still unacknowledged on its channel.
async fn ack_up_to(acker: Acker) -> Result<(), String> {
    acker
        .ack(BasicAckOptions { multiple: true })
        .await
        .map(|_| ())
        .map_err(|e| err("basic.ack", e))
}

/// The `x-shovelled` header RabbitMQ adds with `add-forward-headers`: one table per hop.
fn forward_header(job: &Job) -> AMQPValue {
    let cfg = &job.config;
    let s = |v: &str| AMQPValue::LongString(v.into());
    let mut t = FieldTable::default();
    t.insert("shovel-name".into(), s(&job.name));
    t.insert("shovel-type".into(), s("dynamic"));
    t.insert("shovel-vhost".into(), s(&job.vhost));
    t.insert("src-uri".into(), s(&redact(&cfg.src_uri)));
    match &cfg.src {
        Source::Queue(q) => {
            t.insert("src-queue".into(), s(q));
        }
        Source::Exchange { name, key } => {
            t.insert("src-exchange".into(), s(name));
            t.insert("src-exchange-key".into(), s(key));
        }
    }
    t.insert("dest-uri".into(), s(&redact(&cfg.dest_uri)));
    match &cfg.dest {
        Dest::Queue(q) => {
            t.insert("dest-queue".into(), s(q));
        }
        Dest::Exchange { name, key } => {
            t.insert("dest-exchange".into(), s(name));
            if let Some(k) = key {
                t.insert("dest-exchange-key".into(), s(k));
            }
        }
    }
    AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(t)]))
}

/// A URI without its password (`amqp://user@host/vhost`), as shown in headers and status.
pub fn redact(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_string();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    match auth {
        Some(a) => {
            let user = a.split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{host}")
        }
        None => uri.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact("amqp://guest:guest@127.0.0.1:5682/%2f"),
            "amqp://guest@127.0.0.1:5682/%2f"
        );
        assert_eq!(super::redact("amqp://host"), "amqp://host");
    }
}
