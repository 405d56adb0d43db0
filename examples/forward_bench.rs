//! Throughput through a queue: one publisher (confirms, a window of 1000 in flight) on
//! PUB_ADDR, one consumer (manual acks, `multiple` every 100, prefetch 1000) on CON_ADDR,
//! the durable queue declared on HOME_ADDR. Prints messages per second from the first
//! publish to the last delivery. Used by bench/forward.sh to compare a queue used on its
//! home node with one reached from two other nodes.
//!
//! `cargo run --release --example forward_bench -- COUNT SIZE [persistent]`

use futures_lite::StreamExt;
use lapin::{options::*, types::FieldTable, BasicProperties, Connection, ConnectionProperties};
use std::collections::VecDeque;
use std::time::Instant;

fn addr(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

#[tokio::main]
async fn main() -> Result<(), lapin::Error> {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let size: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1024);
    let persistent = args.next().is_some_and(|a| a == "persistent");
    let queue = format!("fwd-bench-{}", std::process::id());

    let home = Connection::connect(&addr("HOME_ADDR"), ConnectionProperties::default()).await?;
    let hch = home.create_channel().await?;
    hch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;

    let con = Connection::connect(&addr("CON_ADDR"), ConnectionProperties::default()).await?;
    let cch = con.create_channel().await?;
    // The definition reaches the consumer's node with the declare-ok; wait until it is
    // usable there (bounded).
    for _ in 0..100 {
        let probe = con.create_channel().await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        if probe
            .queue_declare(queue.as_str().into(), passive, FieldTable::default())
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    cch.basic_qos(1000, BasicQosOptions::default()).await?;
    let mut consumer = cch
        .basic_consume(
            queue.as_str().into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;

    let publ = Connection::connect(&addr("PUB_ADDR"), ConnectionProperties::default()).await?;
    let pch = publ.create_channel().await?;
    pch.confirm_select(ConfirmSelectOptions::default()).await?;
    let body = vec![b'x'; size];
    let props = if persistent {
        BasicProperties::default().with_delivery_mode(2)
    } else {
        BasicProperties::default()
    };

    let start = Instant::now();
    let receiver = tokio::spawn(async move {
        let mut n = 0usize;
        while let Some(d) = consumer.next().await {
            let d = d?;
            n += 1;
            if n.is_multiple_of(100) || n == count {
                d.ack(BasicAckOptions { multiple: true }).await?;
            }
            if n == count {
                break;
            }
        }
        Ok::<_, lapin::Error>(n)
    });
    let mut window = VecDeque::with_capacity(1000);
    let first = pch
        .basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            &body,
            props.clone(),
        )
        .await?;
    window.push_back(first);
    let mut nacks = 0;
    for _ in 1..count {
        if window.len() >= 1000 {
            let c = window.pop_front().expect("window");
            nacks += usize::from(!c.await?.is_ack());
        }
        window.push_back(
            pch.basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                props.clone(),
            )
            .await?,
        );
    }
    for c in window {
        nacks += usize::from(!c.await?.is_ack());
    }
    let confirmed = start.elapsed();
    let got = receiver.await.expect("consumer task")?;
    let all = start.elapsed();
    println!(
        "{} msgs of {} B{}: confirmed in {:.2} s ({:.0} msg/s), consumed {} in {:.2} s ({:.0} msg/s), {} nacks",
        count,
        size,
        if persistent { " persistent" } else { "" },
        confirmed.as_secs_f64(),
        count as f64 / confirmed.as_secs_f64(),
        got,
        all.as_secs_f64(),
        got as f64 / all.as_secs_f64(),
        nacks
    );
    hch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    Ok(())
}
