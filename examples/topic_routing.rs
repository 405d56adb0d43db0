//! Topic routing: two queues bound with `*` and `#` patterns, then messages with several
//! routing keys, showing which queue receives what.

use lapin::{
    options::*, types::FieldTable, BasicProperties, Connection, ConnectionProperties, ExchangeKind,
};

#[tokio::main]
async fn main() -> Result<(), lapin::Error> {
    let addr = std::env::var("AMQP_ADDR")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let conn = Connection::connect(&addr, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.exchange_declare(
        "logs".into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    for (queue, pattern) in [("errors", "*.error"), ("kernel", "kern.#")] {
        ch.queue_declare(queue.into(), exclusive, FieldTable::default())
            .await?;
        ch.queue_bind(
            queue.into(),
            "logs".into(),
            pattern.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    for key in ["kern.error", "app.error", "kern.info.disk", "app.info"] {
        ch.basic_publish(
            "logs".into(),
            key.into(),
            BasicPublishOptions::default(),
            key.as_bytes(),
            BasicProperties::default(),
        )
        .await?;
    }
    for queue in ["errors", "kernel"] {
        // Messages published on this channel are routed before basic.get is processed.
        while let Some(m) = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await?
        {
            println!(
                "{queue:>6} <- {}",
                String::from_utf8_lossy(&m.delivery.data)
            );
        }
    }
    conn.close(200, "bye".into()).await
}
