//! Event sourcing on a stream: account balances as a projection of the event log.
//!
//! A stream (`x-queue-type: stream`) keeps every event; consuming never removes anything.
//! The projection rebuilds its state from the first event (`x-stream-offset: first`), so a
//! restarted (or brand-new) projection needs no snapshot to catch up, then follows live
//! events on the same consumer. Each delivery carries its position in the stream in the
//! `x-stream-offset` header: a projection that stored its state with that offset could
//! resume from `offset + 1` instead of `first`.
//!
//! `AMQP_URL=amqp://127.0.0.1:5672 cargo run --example event_sourcing` — publishes a
//! history of deposits and withdrawals (with publisher confirms, so they are on disk),
//! rebuilds the balances from it, then publishes a few live events and shows the
//! projection following them. Exits after the live events (or 10 s). Running it again
//! replays the whole history, the earlier runs' events included.

use futures_lite::StreamExt;
use lapin::{
    options::*,
    types::{AMQPValue, FieldTable},
    BasicProperties, Channel, Connection, ConnectionProperties,
};
use std::collections::BTreeMap;
use std::time::Duration;

const STREAM: &str = "accounts.events";

/// An event: `account:+amount` (deposit) or `account:-amount` (withdrawal); anything
/// else (the demo's markers) is not an account event.
fn parse(event: &str) -> Option<(&str, i64)> {
    let (account, amount) = event.split_once(':')?;
    Some((account, amount.parse().ok()?))
}

async fn publish_events(ch: &Channel, events: &[&str]) -> Result<(), lapin::Error> {
    let mut confirms = Vec::new();
    for e in events {
        // Every event is filterable by account, e.g. `x-stream-filter: alice`.
        let account = e.split(':').next().unwrap_or_default();
        let mut headers = FieldTable::default();
        headers.insert(
            "x-stream-filter-value".into(),
            AMQPValue::LongString(account.into()),
        );
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(headers);
        confirms.push(
            ch.basic_publish(
                "".into(),
                STREAM.into(),
                BasicPublishOptions::default(),
                e.as_bytes(),
                props,
            )
            .await?,
        );
    }
    for c in confirms {
        c.await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://127.0.0.1:5672".into());
    let conn = Connection::connect(&url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    // Keep a day of history at most (retention deletes whole old segments).
    args.insert("x-max-age".into(), AMQPValue::LongString("1D".into()));
    ch.queue_declare(
        STREAM.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await?;

    // The history.
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    publish_events(
        &ch,
        &[
            "alice:+100",
            "bob:+50",
            "alice:-30",
            "carol:+200",
            "bob:-20",
        ],
    )
    .await?;
    // A marker after the history: once the projection has read it, it is live. (The
    // declare-ok message count would do on Warren, but RabbitMQ updates it a moment later.)
    let marker = format!(
        "caught-up:at-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
    );
    publish_events(&ch, &[marker.as_str()]).await?;

    // The projection: a consumer from the first event. Streams need a prefetch; acks
    // only give credit back.
    let proj = conn.create_channel().await?;
    proj.basic_qos(100, BasicQosOptions::default()).await?;
    let mut consume_args = FieldTable::default();
    consume_args.insert(
        "x-stream-offset".into(),
        AMQPValue::LongString("first".into()),
    );
    let mut events = proj
        .basic_consume(
            STREAM.into(),
            "projection".into(),
            BasicConsumeOptions::default(),
            consume_args,
        )
        .await?;

    let live = ["alice:+5", "dave:+42", "carol:-100"];
    let mut balances: BTreeMap<String, i64> = BTreeMap::new();
    let mut replayed = false;
    let mut live_seen = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while live_seen < live.len() {
        let Ok(Some(d)) = tokio::time::timeout_at(deadline, events.next()).await else {
            eprintln!("timed out waiting for events");
            break;
        };
        let d = d?;
        let offset = match d
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-stream-offset"))
        {
            Some(AMQPValue::LongLongInt(o)) => *o,
            _ => -1,
        };
        let text = String::from_utf8_lossy(&d.data).into_owned();
        if let Some((account, amount)) = parse(&text) {
            *balances.entry(account.to_string()).or_default() += amount;
        }
        d.ack(BasicAckOptions::default()).await?;
        if replayed {
            live_seen += 1;
            println!("live   #{offset:<4} {text:<12} -> {balances:?}");
        } else if text == marker {
            replayed = true;
            println!("replayed {offset} events; balances: {balances:?}");
            // Now follow live events: the same consumer gets them as they are committed.
            publish_events(&ch, &live).await?;
        }
    }
    conn.close(200, "bye".into()).await?;
    Ok(())
}
