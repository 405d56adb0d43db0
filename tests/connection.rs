//! How connections end, and what connection.start says about the server.
//!
//! Closing: after connection.close-ok (either way round) Warren keeps reading, and
//! discarding, what the client still sends, until the client closes its side or a bound
//! passes, as RabbitMQ does. A client that had publishes in flight when it closed must not
//! see its writes fail with EPIPE or ECONNRESET. Frames on a channel the server is closing
//! are discarded until channel.close-ok.
//!
//! Server properties: `--server-product` / `--server-version` replace `product` and
//! `version`.

use crate::common;

use amq_protocol::frame::{parse_frame, AMQPContentHeader, AMQPFrame};
use amq_protocol::protocol::{basic, channel, connection, queue, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable};
use conformance::raw::{encode, method, raw_frame, RawConn};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::time::Instant;

/// Every wait in these tests gives up after this.
const T: Duration = Duration::from_secs(20);
/// Warren's bound on a closing connection (`CLOSE_GRACE` in src/connection/mod.rs).
const CLOSE_GRACE: Duration = Duration::from_secs(3);

/// Frames read from a socket half, for tests that write and read at once.
struct Frames {
    r: OwnedReadHalf,
    buf: Vec<u8>,
}

impl Frames {
    /// The next frame; `Ok(None)` on EOF, `Err` on a read error (a reset).
    async fn next(&mut self) -> std::io::Result<Option<AMQPFrame>> {
        for _ in 0..100_000 {
            if !self.buf.is_empty() {
                if let Ok((rest, f)) = parse_frame(self.buf.as_slice()) {
                    let used = self.buf.len() - rest.len();
                    self.buf.drain(..used);
                    return Ok(Some(f));
                }
            }
            let mut chunk = [0u8; 65536];
            let n = common::within(T, self.r.read(&mut chunk)).await?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        panic!("no frame in 100000 reads");
    }

    /// Reads until the server's close-ok (failing on anything but heartbeats and `allowed`).
    async fn until_close_ok(&mut self, allowed: impl Fn(&AMQPFrame) -> bool) {
        for _ in 0..100_000 {
            match self.next().await {
                Ok(Some(AMQPFrame::Method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)),
                ))) => return,
                Ok(Some(AMQPFrame::Heartbeat)) => {}
                Ok(Some(f)) if allowed(&f) => {}
                other => panic!("expected connection.close-ok, got {other:?}"),
            }
        }
        panic!("no close-ok");
    }

    /// Reads until EOF (discarding frames); panics on a reset or after `T`.
    async fn until_eof(&mut self) {
        let mut chunk = [0u8; 65536];
        for _ in 0..100_000 {
            match common::within(T, self.r.read(&mut chunk)).await {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) => panic!("expected EOF, the read failed: {e}"),
            }
        }
        panic!("no EOF");
    }
}

fn publish(ch: u16, routing_key: &str, body: &[u8]) -> Vec<u8> {
    let mut v = method(
        ch,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "".into(),
            routing_key: routing_key.into(),
            mandatory: false,
            immediate: false,
        })),
    );
    v.extend(encode(&AMQPFrame::Header(
        ch,
        AMQPContentHeader {
            class_id: 60,
            body_size: body.len() as u64,
            properties: Default::default(),
        },
    )));
    v.extend(encode(&AMQPFrame::Body(ch, body.to_vec())));
    v
}

fn connection_close() -> Vec<u8> {
    method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        })),
    )
}

fn connection_close_ok() -> Vec<u8> {
    method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
    )
}

fn declare(ch: u16, name: &str, exclusive: bool) -> Vec<u8> {
    method(
        ch,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: name.into(),
            passive: false,
            durable: false,
            exclusive,
            auto_delete: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    )
}

/// A raw connection (no heartbeats) with channel 1 open and queue `q` declared.
async fn open_with_queue(broker: &warren::BrokerHandle, q: &str, exclusive: bool) -> RawConn {
    let (mut raw, _) = RawConn::open(&broker.uri(), 0).await.unwrap();
    raw.open_channel(1).await.unwrap();
    raw.send_bytes(&declare(1, q, exclusive)).await.unwrap();
    match raw.recv_frame().await.unwrap() {
        AMQPFrame::Method(1, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))) => {}
        other => panic!("expected queue.declare-ok, got {other:?}"),
    }
    raw
}

fn ready(broker: &warren::BrokerHandle, q: &str) -> Option<usize> {
    broker
        .broker
        .vhost("/")
        .unwrap()
        .queue(q)
        .map(|q| q.stats().0)
}

/// A burst of publishes, connection.close right behind it, and more frames after that
/// (16 MiB, more than both sockets' buffers hold, so the broker has to keep reading for
/// the writes to complete). The client gets close-ok, every write succeeds, the
/// publishes before the close are in the queue and none after it, and once the client
/// shuts its side the broker closes the socket (EOF, not a reset).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_with_frames_in_flight_drains_them() {
    const BURST: usize = 2000;
    let broker = common::start_broker().await;
    let raw = open_with_queue(&broker, "drain", false).await;
    let (r, mut w, buf) = raw.into_split();
    let mut frames = Frames { r, buf };

    let body = vec![b'x'; 1024];
    let one = publish(1, "drain", &body);
    let mut burst: Vec<u8> = one
        .iter()
        .copied()
        .cycle()
        .take(one.len() * BURST)
        .collect();
    burst.extend(connection_close());
    let after: Vec<u8> = one.iter().copied().cycle().take(one.len() * 256).collect();

    let writer = tokio::spawn(async move {
        common::within(T, w.write_all(&burst)).await?;
        // ~16 MiB after the close, in 64 writes.
        for _ in 0..64 {
            common::within(T, w.write_all(&after)).await?;
        }
        common::within(T, w.shutdown()).await?;
        Ok::<_, std::io::Error>(w)
    });
    frames.until_close_ok(|_| false).await;
    // The connection's resources are released by the time close-ok is sent, while the
    // broker still reads the socket.
    assert_eq!(
        ready(&broker, "drain"),
        Some(BURST),
        "publishes before the close"
    );
    let w = common::within(T, writer)
        .await
        .unwrap()
        .expect("writes after connection.close must not fail");
    frames.until_eof().await;
    drop(w);
    assert_eq!(
        ready(&broker, "drain"),
        Some(BURST),
        "nothing after the close"
    );
    assert!(broker.broker.connections.is_empty());
    broker.shutdown().await;
}

/// After close-ok the connection is gone for the broker (exclusive queues deleted, not
/// counted), even though the client has not closed its socket yet; the broker closes the
/// socket itself once the bound passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_never_closes_is_cut_after_the_bound() {
    let broker = common::start_broker().await;
    let raw = open_with_queue(&broker, "mine", true).await;
    let (r, mut w, buf) = raw.into_split();
    let mut frames = Frames { r, buf };
    w.write_all(&connection_close()).await.unwrap();
    frames.until_close_ok(|_| false).await;
    let close_ok_at = Instant::now();
    assert_eq!(
        ready(&broker, "mine"),
        None,
        "exclusive queue deleted at close"
    );
    assert!(broker.broker.connections.is_empty());
    // Frames sent now are discarded (no reply), heartbeats included.
    w.write_all(&declare(1, "late", false)).await.unwrap();
    w.write_all(&encode(&AMQPFrame::Heartbeat)).await.unwrap();
    frames.until_eof().await;
    let took = close_ok_at.elapsed();
    assert!(
        took >= CLOSE_GRACE - Duration::from_millis(500),
        "closed {took:?} after close-ok, before the bound"
    );
    assert!(
        took < CLOSE_GRACE + Duration::from_secs(5),
        "closed after {took:?}"
    );
    assert_eq!(
        ready(&broker, "late"),
        None,
        "declare after close discarded"
    );
    drop(w);
    broker.shutdown().await;
}

/// The server closes the connection (505, a heartbeat on channel 1) while the client is
/// still publishing: the rest is read and discarded (nothing reaches the queue), a
/// crossing connection.close is answered with close-ok, and the client's close-ok ends
/// the connection at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_close_discards_until_close_ok() {
    let broker = common::start_broker().await;
    let raw = open_with_queue(&broker, "after-error", false).await;
    let (r, mut w, buf) = raw.into_split();
    let mut frames = Frames { r, buf };
    let one = publish(1, "after-error", b"late");
    let mut bytes = raw_frame(8, 1, &[], 0xCE);
    bytes.extend(one.iter().copied().cycle().take(one.len() * 1000));
    w.write_all(&bytes).await.unwrap();
    let close = loop {
        match frames.next().await.unwrap() {
            Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(c)))) => {
                break c
            }
            Some(AMQPFrame::Heartbeat) => continue,
            other => panic!("expected connection.close, got {other:?}"),
        }
    };
    assert_eq!(close.reply_code, 505, "{close:?}");
    // More publishes, and a close of our own crossing the server's.
    w.write_all(&bytes[8..]).await.unwrap();
    w.write_all(&connection_close()).await.unwrap();
    frames.until_close_ok(|_| false).await;
    let t = Instant::now();
    w.write_all(&connection_close_ok()).await.unwrap();
    frames.until_eof().await;
    assert!(
        t.elapsed() < CLOSE_GRACE,
        "close-ok should end the connection at once, took {:?}",
        t.elapsed()
    );
    assert_eq!(ready(&broker, "after-error"), Some(0));
    drop(w);
    broker.shutdown().await;
}

/// After the server's channel.close, frames on that channel other than close/close-ok are
/// discarded (no replies, no effects) until the client's close-ok; then the channel can
/// be opened again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_channel_discards_frames_until_close_ok() {
    let broker = common::start_broker().await;
    let mut raw = open_with_queue(&broker, "ch-q", false).await;
    // A passive declare of a missing queue (404 closes the channel), and right behind it,
    // before the client has seen channel.close: publishes and a declare on that channel.
    let mut bytes = method(
        1,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "missing".into(),
            passive: true,
            durable: false,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    );
    for _ in 0..100 {
        bytes.extend(publish(1, "ch-q", b"discarded"));
    }
    bytes.extend(declare(1, "should-not-exist", false));
    // A channel.close crossing the server's: answered with close-ok, still closing.
    bytes.extend(method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
            reply_code: 200,
            reply_text: "crossing".into(),
            class_id: 0,
            method_id: 0,
        })),
    ));
    bytes.extend(publish(1, "ch-q", b"discarded"));
    raw.send_bytes(&bytes).await.unwrap();
    match raw.recv_frame().await.unwrap() {
        AMQPFrame::Method(1, AMQPClass::Channel(channel::AMQPMethod::Close(c))) => {
            assert_eq!(c.reply_code, 404, "{c:?}")
        }
        other => panic!("expected channel.close, got {other:?}"),
    }
    match raw.recv_frame().await.unwrap() {
        AMQPFrame::Method(1, AMQPClass::Channel(channel::AMQPMethod::CloseOk(_))) => {}
        other => panic!("expected channel.close-ok for the crossing close, got {other:?}"),
    }
    raw.send_method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
    )
    .await
    .unwrap();
    // The next reply on channel 1 is open-ok: nothing sent in between was answered.
    raw.open_channel(1).await.unwrap();
    assert_eq!(
        ready(&broker, "ch-q"),
        Some(0),
        "publishes on a closing channel"
    );
    assert_eq!(ready(&broker, "should-not-exist"), None);
    raw.close().await.unwrap();
    broker.shutdown().await;
}

fn long_string(props: &FieldTable, key: &str) -> String {
    match props.inner().get(key) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("server property {key}: {other:?}"),
    }
}

/// By default connection.start says product "Warren" and Warren's version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_properties_default_to_warren() {
    let broker = common::start_broker().await;
    let mut raw = RawConn::tcp(&broker.uri()).await.unwrap();
    let start = raw.start().await.unwrap();
    assert_eq!(long_string(&start.server_properties, "product"), "Warren");
    assert_eq!(
        long_string(&start.server_properties, "version"),
        env!("CARGO_PKG_VERSION")
    );
    broker.shutdown().await;
}

/// Config's server_product / server_version: clients see them in connection.start, and
/// management's overview reports them as product_name / product_version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_product_and_version_are_configurable() {
    let broker = common::start_broker_with(|c| {
        c.server_product = "RabbitMQ".into();
        c.server_version = "3.13.7".into();
    })
    .await;
    let mut raw = RawConn::tcp(&broker.uri()).await.unwrap();
    let start = raw.start().await.unwrap();
    assert_eq!(long_string(&start.server_properties, "product"), "RabbitMQ");
    assert_eq!(long_string(&start.server_properties, "version"), "3.13.7");
    drop(raw);
    let api = common::http::Api::new(broker.mgmt_addr.expect("management"));
    let overview = api.get_json("/api/overview").await;
    assert_eq!(overview["product_name"], "RabbitMQ");
    assert_eq!(overview["product_version"], "3.13.7");
    broker.shutdown().await;
}

/// The warren binary with `--server-product RabbitMQ --server-version 3.13.7`: clients
/// see those in connection.start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_product_and_version_options() {
    let dir = common::temp_data_dir();
    let p = common::spawn_warren(
        &dir,
        &["--server-product", "RabbitMQ", "--server-version", "3.13.7"],
    );
    let mut raw = RawConn::tcp(&p.uri).await.unwrap();
    let start = raw.start().await.unwrap();
    assert_eq!(long_string(&start.server_properties, "product"), "RabbitMQ");
    assert_eq!(long_string(&start.server_properties, "version"), "3.13.7");
    drop(raw);
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}
