//! Publishes messages with publisher confirms.
//!
//! `cargo run --example publisher -- [COUNT]` against a broker on AMQP_ADDR
//! (default amqp://guest:guest@127.0.0.1:5672/%2f).

use lapin::{options::*, types::FieldTable, BasicProperties, Connection, ConnectionProperties};

#[tokio::main]
async fn main() -> Result<(), lapin::Error> {
    let addr = std::env::var("AMQP_ADDR")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(10);
    let conn = Connection::connect(&addr, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    ch.queue_declare(
        "hello".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    for i in 0..count {
        let confirm = ch
            .basic_publish(
                "".into(),
                "hello".into(),
                BasicPublishOptions::default(),
                format!("hello {i}").as_bytes(),
                BasicProperties::default().with_content_type("text/plain".into()),
            )
            .await?;
        confirm.await?;
    }
    println!("published {count} messages to 'hello', all confirmed");
    conn.close(200, "bye".into()).await
}
