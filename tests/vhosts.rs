//! Virtual hosts are isolated: the same names in two vhosts are different objects, users
//! see only the vhosts they have permissions in, and deleting a vhost closes its
//! connections with 320 and removes its queues without touching the other vhost.

use crate::common;

use conformance::support::{amqp_error, events, next_error};
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(10);

/// A passive queue.declare that must succeed.
async fn passive(ch: &lapin::Channel, queue: &str) -> lapin::Queue {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("passive declare {queue}: {e:?}"))
}

fn uri(broker: &warren::BrokerHandle, user: &str, vhost: &str) -> String {
    format!("amqp://{user}:pw@{}/{vhost}", broker.addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_names_in_two_vhosts_are_different_objects() {
    let broker = common::start_broker().await;
    let b = &broker.broker;
    b.add_vhost("team-a");
    b.add_vhost("team-b");
    b.add_user("alice", "pw", vec![]).unwrap();
    b.add_user("bob", "pw", vec![]).unwrap();
    b.set_permissions("alice", "team-a", ".*", ".*", ".*")
        .unwrap();
    b.set_permissions("bob", "team-b", ".*", ".*", ".*")
        .unwrap();

    let a = Connection::connect(
        &uri(&broker, "alice", "team-a"),
        ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let bc = Connection::connect(
        &uri(&broker, "bob", "team-b"),
        ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let ach = a.create_channel().await.unwrap();
    let bch = bc.create_channel().await.unwrap();
    for ch in [&ach, &bch] {
        ch.queue_declare(
            "jobs".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    // The same exchange name with different types is fine in different vhosts.
    ach.exchange_declare(
        "ev".into(),
        lapin::ExchangeKind::Fanout,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    bch.exchange_declare(
        "ev".into(),
        lapin::ExchangeKind::Topic,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ach.basic_publish(
        "".into(),
        "jobs".into(),
        BasicPublishOptions::default(),
        b"for-a",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    // The publish is enqueued before Bob looks (the passive declare's reply follows it).
    assert_eq!(passive(&ach, "jobs").await.message_count(), 1);
    // Bob's "jobs" is empty; Alice's has her message.
    let got = common::within(
        DEADLINE,
        bch.basic_get("jobs".into(), BasicGetOptions { no_ack: true }),
    )
    .await
    .unwrap();
    assert!(got.is_none(), "bob saw alice's message");
    let got = common::within(
        DEADLINE,
        ach.basic_get("jobs".into(), BasicGetOptions { no_ack: true }),
    )
    .await
    .unwrap()
    .expect("alice's message");
    assert_eq!(got.delivery.data, b"for-a");

    // Neither can enter the other's vhost.
    let e = Connection::connect(
        &uri(&broker, "alice", "team-b"),
        ConnectionProperties::default(),
    )
    .await
    .expect_err("refused");
    assert_eq!(
        amqp_error(&e),
        Some((
            530,
            "NOT_ALLOWED - access to vhost 'team-b' refused for user 'alice'".into()
        ))
    );

    // Deleting team-a closes alice's connection with 320 and removes its queues only.
    let mut ev = events(&a);
    b.delete_vhost("team-a").unwrap();
    let (code, text) = common::within(DEADLINE, next_error(&mut ev)).await.unwrap();
    assert_eq!(
        (code, text.as_str()),
        (320, "CONNECTION_FORCED - vhost 'team-a' is deleted")
    );
    assert!(b.vhost("team-a").is_none());
    assert!(b.auth.permission("alice", "team-a").is_none());
    assert_eq!(passive(&bch, "jobs").await.name().as_str(), "jobs");
    assert!(b.delete_vhost("team-a").is_err());
}

/// Users, vhosts, permissions and vhost limits are saved in the definitions file and come
/// back after a restart; the default user is not re-created once the file lists users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_vhosts_and_permissions_survive_restart() {
    let dir = common::temp_data_dir();
    let d2 = dir.clone();
    let broker = common::start_broker_with(move |c| c.data_dir = d2).await;
    let b = &broker.broker;
    b.add_vhost("kept");
    b.add_user("carol", "pw", vec!["monitoring".into()])
        .unwrap();
    b.set_permissions("carol", "kept", "^c", ".*", ".*")
        .unwrap();
    b.set_vhost_limits(
        "kept",
        warren::limits::VHostLimits {
            max_connections: Some(3),
            max_queues: None,
        },
    )
    .unwrap();
    b.delete_user("guest").unwrap();
    common::within(DEADLINE, broker.shutdown()).await;

    let d3 = dir.clone();
    let broker = common::start_broker_with(move |c| c.data_dir = d3).await;
    let b = &broker.broker;
    assert!(b.user("guest").is_none(), "default user re-created");
    let carol = b.authenticate("carol", "pw").expect("carol restored");
    assert_eq!(carol.tags, vec!["monitoring"]);
    assert_eq!(
        b.auth
            .permission("carol", "kept")
            .unwrap()
            .configure
            .as_str(),
        "^c"
    );
    assert_eq!(b.limits.get("kept").max_connections, Some(3));
    let c = common::within(
        DEADLINE,
        Connection::connect(
            &uri(&broker, "carol", "kept"),
            ConnectionProperties::default(),
        ),
    )
    .await
    .expect("carol logs in after restart");
    drop(c);
}
