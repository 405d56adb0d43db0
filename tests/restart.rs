//! Durable definitions survive a restart; transient ones do not.

use crate::common;

use lapin::{
    options::*, types::AMQPValue, types::FieldTable, BasicProperties, Connection,
    ConnectionProperties, ExchangeKind,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_definitions_survive_restart() {
    let dir = common::temp_data_dir();
    let d2 = dir.clone();
    let broker = common::start_broker_with(move |c| c.data_dir = d2).await;
    {
        let conn = Connection::connect(&broker.uri(), ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare(
            "orders".into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.exchange_declare(
            "fan".into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await
        .unwrap();
        let mut args = FieldTable::default();
        args.insert("x-max-length".into(), AMQPValue::LongInt(10));
        let q = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare("orders.eu".into(), q, args).await.unwrap();
        ch.queue_declare(
            "scratch".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_bind(
            "orders.eu".into(),
            "orders".into(),
            "eu.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.exchange_bind(
            "orders".into(),
            "fan".into(),
            "".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        conn.close(200, "bye".into()).await.unwrap();
    }
    broker.shutdown().await;

    let d3 = dir.clone();
    let broker = common::start_broker_with(move |c| c.data_dir = d3).await;
    let conn = Connection::connect(&broker.uri(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(10));
    // Redeclaring with the same arguments is accepted: they were restored.
    ch.queue_declare(
        "orders.eu".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap();
    // fan -> orders -> orders.eu, all restored.
    ch.basic_publish(
        "fan".into(),
        "eu.de".into(),
        BasicPublishOptions::default(),
        b"restored",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    let got = common::within(std::time::Duration::from_secs(5), async {
        loop {
            if let Some(m) = ch
                .basic_get("orders.eu".into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
            {
                return m;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(&got.delivery.data[..], b"restored");
    let gone = ch
        .queue_declare(
            "scratch".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    assert!(
        gone.is_err(),
        "a non-durable queue must not survive a restart"
    );
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
