//! Broker shutdown (what SIGTERM/SIGINT trigger in the binary): every client gets
//! connection.close 320 CONNECTION_FORCED.

use crate::common;

use futures_lite::StreamExt;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_clients_with_320() {
    let broker = common::start_broker().await;
    let conn = lapin::Connection::connect(&broker.uri(), lapin::ConnectionProperties::default())
        .await
        .expect("connect");
    let mut events = Box::pin(conn.events_listener());
    common::within(Duration::from_secs(10), broker.shutdown()).await;
    let err = common::within(Duration::from_secs(5), async {
        loop {
            match events.next().await {
                Some(lapin::Event::Error(e)) => return e,
                Some(_) => continue,
                None => panic!("event stream ended without an error"),
            }
        }
    })
    .await;
    match err.kind() {
        lapin::ErrorKind::ProtocolError(e) => {
            assert_eq!(e.get_id(), 320);
            assert_eq!(
                e.get_message().as_str(),
                "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"
            );
        }
        other => panic!("expected connection.close 320, got {other:?}"),
    }
}
