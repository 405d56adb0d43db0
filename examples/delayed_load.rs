//! Publishes COUNT messages to an `x-delayed-message` exchange with `x-delay` DELAY_MS
//! (persistent, publisher confirms, up to 1000 in flight), for the delay store's memory
//! figure (bench/delayed_rss.sh).
//!
//! `AMQP_ADDR=amqp://127.0.0.1:5672/%2f cargo run --release --example delayed_load -- COUNT [DELAY_MS] [SIZE]`

use lapin::{
    options::*,
    types::{AMQPValue, FieldTable},
    BasicProperties, Connection, ConnectionProperties,
};
use std::collections::VecDeque;

#[tokio::main]
async fn main() -> Result<(), lapin::Error> {
    let addr = std::env::var("AMQP_ADDR")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let arg = |i: usize, d: u64| -> u64 {
        std::env::args()
            .nth(i)
            .and_then(|n| n.parse().ok())
            .unwrap_or(d)
    };
    let (count, delay, size) = (arg(1, 1000), arg(2, 3_600_000), arg(3, 100) as usize);
    let conn = Connection::connect(&addr, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let mut xargs = FieldTable::default();
    xargs.insert(
        "x-delayed-type".into(),
        AMQPValue::LongString("direct".into()),
    );
    ch.exchange_declare(
        "delayed-load".into(),
        lapin::ExchangeKind::Custom("x-delayed-message".into()),
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        xargs,
    )
    .await?;
    let mut headers = FieldTable::default();
    headers.insert("x-delay".into(), AMQPValue::LongLongInt(delay as i64));
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(headers);
    let body = vec![b'x'; size];
    let started = std::time::Instant::now();
    let mut inflight = VecDeque::new();
    for _ in 0..count {
        if inflight.len() >= 1000 {
            if let Some(c) = inflight.pop_front() {
                c.await?;
            }
        }
        inflight.push_back(
            ch.basic_publish(
                "delayed-load".into(),
                "k".into(),
                BasicPublishOptions::default(),
                &body,
                props.clone(),
            )
            .await?,
        );
    }
    for c in inflight {
        c.await?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "published {count} delayed messages ({size} B, x-delay {delay} ms), all confirmed, in {secs:.1} s ({:.0} msg/s)",
        count as f64 / secs
    );
    conn.close(200, "bye".into()).await
}
