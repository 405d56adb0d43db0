//! Request/reply over a server-named reply queue with correlation ids: a server task
//! answers `rpc_queue` requests by upper-casing them; the client waits for each reply.

use futures_lite::StreamExt;
use lapin::{options::*, types::FieldTable, BasicProperties, Connection, ConnectionProperties};

#[tokio::main]
async fn main() -> Result<(), lapin::Error> {
    let addr = std::env::var("AMQP_ADDR")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());

    // Server side.
    let server = Connection::connect(&addr, ConnectionProperties::default()).await?;
    let sch = server.create_channel().await?;
    sch.queue_declare(
        "rpc_queue".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let mut requests = sch
        .basic_consume(
            "rpc_queue".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tokio::spawn(async move {
        while let Some(Ok(req)) = requests.next().await {
            let reply_to = req.properties.reply_to().clone().unwrap_or_default();
            let props = BasicProperties::default()
                .with_correlation_id(req.properties.correlation_id().clone().unwrap_or_default());
            let answer = String::from_utf8_lossy(&req.data).to_uppercase();
            let _ = sch
                .basic_publish(
                    "".into(),
                    reply_to.as_str().into(),
                    BasicPublishOptions::default(),
                    answer.as_bytes(),
                    props,
                )
                .await;
            let _ = req.ack(BasicAckOptions::default()).await;
        }
    });

    // Client side.
    let client = Connection::connect(&addr, ConnectionProperties::default()).await?;
    let ch = client.create_channel().await?;
    let reply = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let mut replies = ch
        .basic_consume(
            reply.name().as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    for (i, word) in ["hello", "warren"].iter().enumerate() {
        let id = format!("req-{i}");
        let props = BasicProperties::default()
            .with_reply_to(reply.name().clone())
            .with_correlation_id(id.as_str().into());
        ch.basic_publish(
            "".into(),
            "rpc_queue".into(),
            BasicPublishOptions::default(),
            word.as_bytes(),
            props,
        )
        .await?;
        if let Some(Ok(answer)) = replies.next().await {
            println!(
                "{word} -> {} (correlation id {:?})",
                String::from_utf8_lossy(&answer.data),
                answer.properties.correlation_id()
            );
        }
    }
    client.close(200, "bye".into()).await?;
    server.close(200, "bye".into()).await
}
