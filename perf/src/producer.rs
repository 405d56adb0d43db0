//! One producer: its own connection and channel, publishes pipelined.
//!
//! `basic_publish` resolves once lapin has written the frames; we keep up to
//! `window` of those futures in flight (the confirm window with `-c`, else
//! `--pipeline`), so the producer never waits for one write before issuing the next.
//! Body buffers come back with their future and are reused.

use crate::args::Args;
use crate::body::{self, Stamp};
use crate::stats::Shared;
use crate::tracker::Bitset;
use futures_util::stream::{FuturesUnordered, StreamExt};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::Confirmation;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Default)]
pub struct ProducerResult {
    pub sent: u64,
    /// Sequences that must reach every queue: confirmed (ack, not returned) with
    /// confirms on, written to the socket without.
    pub expected: Bitset,
    /// Time from first to last publish.
    pub elapsed: Duration,
}

/// What a finished publish future reports.
enum Outcome {
    Expected,
    Returned,
    Nacked,
    Failed(lapin::Error),
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
    let conn = match Connection::connect(&args.uri, ConnectionProperties::default()).await {
        Ok(c) => c,
        Err(e) => {
            shared.error(&who, e);
            return result;
        }
    };
    let ch = match conn.create_channel().await {
        Ok(c) => c,
        Err(e) => {
            shared.error(&who, e);
            return result;
        }
    };
    let confirms = args.confirm.is_some();
    if confirms {
        if let Err(e) = ch.confirm_select(ConfirmSelectOptions::default()).await {
            shared.error(&who, e);
            return result;
        }
    }
    let window = args.confirm.unwrap_or(args.pipeline);
    let mut props = BasicProperties::default();
    if args.persistent() {
        props = props.with_delivery_mode(2);
    }
    let options = BasicPublishOptions {
        mandatory: args.mandatory(),
        immediate: false,
    };
    let limit = args.pmessages.unwrap_or(u64::MAX).min(u64::from(u32::MAX));
    let interval = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));

    let ch = &ch;
    let mut inflight = FuturesUnordered::new();
    let mut free: Vec<Vec<u8>> = Vec::with_capacity(window);
    let mut failed = false;
    let start = tokio::time::Instant::now();
    let mut handle = |(seq, buf, outcome): (u32, Vec<u8>, Outcome),
                      free: &mut Vec<Vec<u8>>,
                      failed: &mut bool| {
        free.push(buf);
        match outcome {
            Outcome::Expected => {
                result.expected.set(seq);
                if confirms {
                    shared.confirmed.fetch_add(1, Relaxed);
                }
            }
            Outcome::Returned => {
                shared.returned.fetch_add(1, Relaxed);
                if confirms {
                    shared.confirmed.fetch_add(1, Relaxed);
                }
            }
            Outcome::Nacked => {
                shared.nacked.fetch_add(1, Relaxed);
            }
            Outcome::Failed(e) => {
                if !*failed {
                    shared.error(&who, e);
                }
                *failed = true;
            }
        }
    };

    let mut seq: u64 = 0;
    while seq < limit && !shared.stopping() && !failed {
        while inflight.len() >= window {
            match inflight.next().await {
                Some(done) => handle(done, &mut free, &mut failed),
                None => break,
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
        let mut buf = free.pop().unwrap_or_else(|| vec![0u8; args.size]);
        let s = seq as u32;
        body::encode(
            &mut buf,
            Stamp {
                sent_ns: shared.now_ns(),
                producer: id,
                seq: s,
            },
        );
        let (ex, rk, p) = (
            exchange.as_str().into(),
            routing_key.as_str().into(),
            props.clone(),
        );
        inflight.push(async move {
            let outcome = match ch.basic_publish(ex, rk, options, &buf, p).await {
                Err(e) => Outcome::Failed(e),
                Ok(confirm) => match confirm.await {
                    Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => {
                        Outcome::Expected
                    }
                    Ok(Confirmation::Ack(Some(_))) => Outcome::Returned,
                    Ok(Confirmation::Nack(_)) => Outcome::Nacked,
                    Err(e) => Outcome::Failed(e),
                },
            };
            (s, buf, outcome)
        });
        seq += 1;
        shared.sent.fetch_add(1, Relaxed);
        // Give the new future its first poll (that is when lapin queues the frames)
        // and collect whatever already finished, without waiting.
        while let Some(Some(done)) = futures_lite::future::poll_once(inflight.next()).await {
            handle(done, &mut free, &mut failed);
        }
    }
    while let Some(done) = inflight.next().await {
        handle(done, &mut free, &mut failed);
    }
    result.elapsed = start.elapsed();
    result.sent = seq;
    let _ = conn.close(200, "bye".into()).await;
    result
}
