//! Helpers shared by scenarios: connecting, reading AMQP errors off lapin results, and
//! waiting for deliveries with a deadline (never sleeping to synchronise).

use crate::Failure;
use futures_lite::StreamExt;
use lapin::{
    message::{BasicGetMessage, Delivery},
    options::*,
    types::FieldTable,
    Channel, Connection, ConnectionProperties, Consumer,
};
use std::time::Duration;

/// How long a scenario waits for something it expects to happen.
pub const WAIT: Duration = Duration::from_secs(5);

pub async fn connect(uri: &str) -> Result<Connection, Failure> {
    Connection::connect(uri, ConnectionProperties::default())
        .await
        .map_err(|e| Failure::new("connection opens", format!("{e:?}")))
}

/// Opens a connection and one channel.
pub async fn open(uri: &str) -> Result<(Connection, Channel), Failure> {
    let conn = connect(uri).await?;
    let ch = conn
        .create_channel()
        .await
        .map_err(|e| Failure::new("channel opens", format!("{e:?}")))?;
    Ok((conn, ch))
}

/// The AMQP reply code and text carried by a lapin error, if it is a broker-sent error.
pub fn amqp_error(e: &lapin::Error) -> Option<(u16, String)> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(err) => Some((err.get_id(), err.get_message().to_string())),
        _ => None,
    }
}

/// Asserts that `r` failed with reply `code` and exactly `text`.
pub fn expect_error<T: std::fmt::Debug>(
    r: Result<T, lapin::Error>,
    code: u16,
    text: &str,
) -> Result<(), Failure> {
    let text = reply_text(text);
    let text = text.as_str();
    let expected = format!("{code} {text}");
    match r {
        Ok(v) => Err(Failure::new(expected, format!("success: {v:?}"))),
        Err(e) => match amqp_error(&e) {
            Some((c, t)) if c == code && t == text => Ok(()),
            Some((c, t)) => Err(Failure::new(expected, format!("{c} {t}"))),
            None => Err(Failure::new(expected, format!("{e:?}"))),
        },
    }
}

/// Asserts that `r` failed with reply `code` (text not checked).
pub fn expect_code<T: std::fmt::Debug>(
    r: Result<T, lapin::Error>,
    code: u16,
) -> Result<(), Failure> {
    match r {
        Ok(v) => Err(Failure::new(
            format!("error {code}"),
            format!("success: {v:?}"),
        )),
        Err(e) => match amqp_error(&e) {
            Some((c, _)) if c == code => Ok(()),
            Some((c, t)) => Err(Failure::new(format!("error {code}"), format!("{c} {t}"))),
            None => Err(Failure::new(format!("error {code}"), format!("{e:?}"))),
        },
    }
}

/// Converts any lapin error into a failure saying what step failed.
pub trait Step<T> {
    fn step(self, what: &str) -> Result<T, Failure>;
}

impl<T> Step<T> for Result<T, lapin::Error> {
    fn step(self, what: &str) -> Result<T, Failure> {
        self.map_err(|e| Failure::new(format!("{what} succeeds"), format!("{e:?}")))
    }
}

/// Compares two values, failing with both rendered.
pub fn check_eq<T: std::fmt::Debug + PartialEq>(
    what: &str,
    observed: T,
    expected: T,
) -> Result<(), Failure> {
    if observed == expected {
        Ok(())
    } else {
        Err(Failure::new(
            format!("{what} = {expected:?}"),
            format!("{what} = {observed:?}"),
        ))
    }
}

pub fn check(what: &str, cond: bool) -> Result<(), Failure> {
    if cond {
        Ok(())
    } else {
        Err(Failure::new(what.to_string(), "it did not hold"))
    }
}

/// Declares a non-durable, auto-delete=false queue with default arguments.
pub async fn declare_queue(ch: &Channel, name: &str) -> Result<lapin::Queue, Failure> {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .step(&format!("queue.declare {name}"))
}

pub async fn publish(ch: &Channel, exchange: &str, rk: &str, body: &[u8]) -> Result<(), Failure> {
    ch.basic_publish(
        exchange.into(),
        rk.into(),
        BasicPublishOptions::default(),
        body,
        lapin::BasicProperties::default(),
    )
    .await
    .step("basic.publish")?;
    Ok(())
}

/// Waits up to [`WAIT`] for the next delivery of `consumer`.
pub async fn next_delivery(consumer: &mut Consumer) -> Result<Delivery, Failure> {
    match tokio::time::timeout(WAIT, consumer.next()).await {
        Ok(Some(Ok(d))) => Ok(d),
        Ok(Some(Err(e))) => Err(Failure::new("a delivery", format!("{e:?}"))),
        Ok(None) => Err(Failure::new("a delivery", "consumer stream ended")),
        Err(_) => Err(Failure::new(
            "a delivery",
            format!("nothing within {WAIT:?}"),
        )),
    }
}

/// Asserts that no delivery arrives within `within` — used only where the absence of a
/// message is the behaviour under test, after a synchronous round trip made sure anything
/// the broker was going to send is already on its way.
pub async fn expect_no_delivery(consumer: &mut Consumer, within: Duration) -> Result<(), Failure> {
    match tokio::time::timeout(within, consumer.next()).await {
        Err(_) => Ok(()),
        Ok(Some(Ok(d))) => Err(Failure::new(
            "no delivery",
            format!("delivery {:?}", String::from_utf8_lossy(&d.data)),
        )),
        Ok(other) => Err(Failure::new("no delivery", format!("{other:?}"))),
    }
}

/// basic.get that must return a message, polled until [`WAIT`] (a message published on
/// another channel may still be in flight).
pub async fn get_one(ch: &Channel, queue: &str, no_ack: bool) -> Result<BasicGetMessage, Failure> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack })
            .await
            .step("basic.get")?;
        if let Some(m) = r {
            return Ok(m);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Failure::new(
                "basic.get-ok",
                "basic.get-empty until deadline",
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until a passive declare of `queue` reports `count` ready messages.
pub async fn wait_message_count(ch: &Channel, queue: &str, count: u32) -> Result<(), Failure> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let q = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .step("passive queue.declare")?;
        if q.message_count() == count {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Failure::new(
                format!("{count} messages in {queue}"),
                format!("{}", q.message_count()),
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The connection's event stream, subscribed before an asynchronous error is provoked, so
/// the `channel.close` / `connection.close` the broker sends can be read with its code and
/// text (lapin reports both as `Event::Error`).
pub type Events = std::pin::Pin<Box<dyn futures_lite::Stream<Item = lapin::Event> + Send>>;

pub fn events(conn: &Connection) -> Events {
    Box::pin(conn.events_listener())
}

/// Waits up to [`WAIT`] for the next broker-sent error on the connection: (code, text).
pub async fn next_error(ev: &mut Events) -> Result<(u16, String), Failure> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, ev.next()).await {
            Err(_) => {
                return Err(Failure::new(
                    "a channel or connection error",
                    format!("nothing within {WAIT:?}"),
                ))
            }
            Ok(None) => {
                return Err(Failure::new(
                    "a channel or connection error",
                    "event stream ended",
                ))
            }
            Ok(Some(lapin::Event::Error(e))) => {
                return amqp_error(&e)
                    .ok_or_else(|| Failure::new("an AMQP error", format!("{e:?}")))
            }
            Ok(Some(_)) => continue,
        }
    }
}

/// Waits for the broker to close a channel or the connection with `code` and exactly `text`.
pub async fn expect_async_error(ev: &mut Events, code: u16, text: &str) -> Result<(), Failure> {
    let text = reply_text(text);
    let text = text.as_str();
    let (c, t) = next_error(ev).await?;
    if c == code && t == text {
        Ok(())
    } else {
        Err(Failure::new(format!("{code} {text}"), format!("{c} {t}")))
    }
}

/// Asserts that the connection is still usable: a new channel opens and a passive declare of
/// amq.direct succeeds on it.
pub async fn expect_connection_usable(conn: &Connection) -> Result<(), Failure> {
    let ch = conn
        .create_channel()
        .await
        .step("channel.open on the same connection")?;
    ch.exchange_declare(
        "amq.direct".into(),
        lapin::ExchangeKind::Direct,
        ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .step("passive exchange.declare amq.direct")?;
    let _ = ch.close(200, "bye".into()).await;
    Ok(())
}

/// Waits until lapin has seen the connection close (after a connection-level error).
pub async fn wait_connection_closed(conn: &Connection) -> Result<(), Failure> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while conn.status().connected() {
        if tokio::time::Instant::now() >= deadline {
            return Err(Failure::new(
                "the connection closed by the broker",
                "still open",
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Waits until lapin has seen the channel closed (after a channel-level error).
pub async fn wait_channel_closed(ch: &Channel) -> Result<(), Failure> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while ch.status().connected() {
        if tokio::time::Instant::now() >= deadline {
            return Err(Failure::new(
                "the channel closed by the broker",
                "still open",
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Asserts that a channel closed by the broker refuses further operations client-side.
pub async fn expect_channel_unusable(ch: &Channel) -> Result<(), Failure> {
    wait_channel_closed(ch).await?;
    match ch.basic_qos(1, BasicQosOptions::default()).await {
        Ok(()) => Err(Failure::new(
            "the closed channel refuses basic.qos",
            "basic.qos-ok",
        )),
        Err(_) => Ok(()),
    }
}

pub async fn declare_exchange(
    ch: &Channel,
    name: &str,
    kind: lapin::ExchangeKind,
) -> Result<(), Failure> {
    ch.exchange_declare(
        name.into(),
        kind,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .step(&format!("exchange.declare {name}"))
}

/// Declares an auto-delete exchange: it goes away with its last binding if a scenario fails.
pub async fn declare_exchange_ad(
    ch: &Channel,
    name: &str,
    kind: lapin::ExchangeKind,
) -> Result<(), Failure> {
    ch.exchange_declare(
        name.into(),
        kind,
        ExchangeDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .step(&format!("exchange.declare {name}"))
}

/// Declares an exclusive queue, so it disappears with the connection whatever happens.
pub async fn declare_exclusive(ch: &Channel, name: &str) -> Result<lapin::Queue, Failure> {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .step(&format!("queue.declare exclusive {name}"))
}

pub async fn bind(ch: &Channel, queue: &str, exchange: &str, rk: &str) -> Result<(), Failure> {
    bind_args(ch, queue, exchange, rk, FieldTable::default()).await
}

pub async fn bind_args(
    ch: &Channel,
    queue: &str,
    exchange: &str,
    rk: &str,
    args: FieldTable,
) -> Result<(), Failure> {
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        rk.into(),
        QueueBindOptions::default(),
        args,
    )
    .await
    .step(&format!("queue.bind {queue} to {exchange} with {rk:?}"))
}

pub async fn consume(ch: &Channel, queue: &str, no_ack: bool) -> Result<Consumer, Failure> {
    ch.basic_consume(
        queue.into(),
        "".into(),
        BasicConsumeOptions {
            no_ack,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .step(&format!("basic.consume {queue}"))
}

pub async fn publish_props(
    ch: &Channel,
    exchange: &str,
    rk: &str,
    body: &[u8],
    props: lapin::BasicProperties,
) -> Result<(), Failure> {
    ch.basic_publish(
        exchange.into(),
        rk.into(),
        BasicPublishOptions::default(),
        body,
        props,
    )
    .await
    .step("basic.publish")?;
    Ok(())
}

/// Publishes on a channel in confirm mode and waits for the broker's confirm.
pub async fn publish_confirmed(
    ch: &Channel,
    exchange: &str,
    rk: &str,
    body: &[u8],
    mandatory: bool,
) -> Result<lapin::Confirmation, Failure> {
    let c = ch
        .basic_publish(
            exchange.into(),
            rk.into(),
            BasicPublishOptions {
                mandatory,
                ..Default::default()
            },
            body,
            lapin::BasicProperties::default(),
        )
        .await
        .step("basic.publish")?;
    match tokio::time::timeout(WAIT, c).await {
        Ok(r) => r.step("publisher confirm"),
        Err(_) => Err(Failure::new(
            "a publisher confirm",
            format!("nothing within {WAIT:?}"),
        )),
    }
}

/// basic.get that must find the queue empty.
pub async fn expect_empty(ch: &Channel, queue: &str) -> Result<(), Failure> {
    match ch
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .step("basic.get")?
    {
        None => Ok(()),
        Some(m) => Err(Failure::new(
            format!("{queue} empty (basic.get-empty)"),
            format!(
                "basic.get-ok {:?}",
                String::from_utf8_lossy(&m.delivery.data)
            ),
        )),
    }
}

/// Takes `n` deliveries, each within [`WAIT`], and returns their bodies as strings.
pub async fn bodies(consumer: &mut Consumer, n: usize) -> Result<Vec<String>, Failure> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let d = next_delivery(consumer).await?;
        v.push(String::from_utf8_lossy(&d.data).into_owned());
    }
    Ok(v)
}

/// Drains a queue with basic.get (no-ack) until get-empty; returns the bodies in order.
/// Bounded at 10 000 messages.
pub async fn drain(ch: &Channel, queue: &str) -> Result<Vec<String>, Failure> {
    let mut v = Vec::new();
    for _ in 0..10_000 {
        match ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .step("basic.get")?
        {
            None => return Ok(v),
            Some(m) => v.push(String::from_utf8_lossy(&m.delivery.data).into_owned()),
        }
    }
    Err(Failure::new("queue drained", "more than 10 000 messages"))
}

/// A round trip on `ch`: once it returns, everything the broker sent on this channel before
/// answering has been read (used before asserting that something did *not* happen). The
/// round trip is a passive declare of amq.direct, which changes nothing.
pub async fn sync(ch: &Channel) -> Result<(), Failure> {
    ch.exchange_declare(
        "amq.direct".into(),
        lapin::ExchangeKind::Direct,
        ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .step("round trip (passive exchange.declare amq.direct)")
}

/// The URI with a query parameter added (e.g. `heartbeat=5`).
pub fn with_query(uri: &str, param: &str) -> String {
    if uri.contains('?') {
        format!("{uri}&{param}")
    } else {
        format!("{uri}?{param}")
    }
}

/// Connects with a modified URI (credentials or vhost changed).
pub async fn connect_modified(
    uri: &str,
    f: impl FnOnce(&mut lapin::uri::AMQPUri),
) -> Result<Connection, lapin::Error> {
    let mut u: lapin::uri::AMQPUri = uri.parse().expect("valid URI");
    f(&mut u);
    Connection::connect_uri(u, ConnectionProperties::default()).await
}

/// Deletes, on a fresh connection, the queues and exchanges a scenario registered, whatever
/// the scenario's outcome: `cl.finish(async { ... }).await`.
#[derive(Debug)]
pub struct Cleanup {
    uri: String,
    queues: std::sync::Mutex<Vec<String>>,
    exchanges: std::sync::Mutex<Vec<String>>,
}

impl Cleanup {
    pub fn new(ctx: &crate::Ctx) -> Self {
        Cleanup {
            uri: ctx.uri.clone(),
            queues: Default::default(),
            exchanges: Default::default(),
        }
    }

    /// Registers a queue name for deletion and returns it.
    pub fn queue(&self, name: impl Into<String>) -> String {
        let n = name.into();
        self.queues.lock().unwrap().push(n.clone());
        n
    }

    /// Registers an exchange name for deletion and returns it.
    pub fn exchange(&self, name: impl Into<String>) -> String {
        let n = name.into();
        self.exchanges.lock().unwrap().push(n.clone());
        n
    }

    /// Runs the scenario body, then deletes everything registered (errors ignored), and
    /// returns the body's outcome.
    pub async fn finish(
        self,
        body: impl std::future::Future<Output = crate::Outcome>,
    ) -> crate::Outcome {
        let r = body.await;
        let queues = std::mem::take(&mut *self.queues.lock().unwrap());
        let exchanges = std::mem::take(&mut *self.exchanges.lock().unwrap());
        if queues.is_empty() && exchanges.is_empty() {
            return r;
        }
        if let Ok(conn) = Connection::connect(&self.uri, ConnectionProperties::default()).await {
            for q in queues {
                if let Ok(ch) = conn.create_channel().await {
                    let _ = ch
                        .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                        .await;
                }
            }
            for x in exchanges {
                if let Ok(ch) = conn.create_channel().await {
                    let _ = ch
                        .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
                        .await;
                }
            }
            let _ = conn.close(200, "cleanup".into()).await;
        }
        r
    }
}

/// How RabbitMQ fits a reply text into a short string: a text longer than 255 bytes is cut to
/// its first 252 bytes followed by `...` (observed on RabbitMQ 3.10 with long queue names).
pub fn reply_text(s: &str) -> String {
    if s.len() <= 255 {
        return s.to_string();
    }
    let mut cut = 252;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &s[..cut])
}

/// Takes messages from `queue` with basic.get (no-ack) until one whose body is `marker`
/// (published last on the same channel, so everything routed before it is already in the
/// queue); returns the bodies before it. Bounded by [`WAIT`] and 10 000 messages.
pub async fn until_marker(ch: &Channel, queue: &str, marker: &str) -> Result<Vec<String>, Failure> {
    let mut v = Vec::new();
    for _ in 0..10_000 {
        let m = get_one(ch, queue, true).await.map_err(|f| {
            Failure::new(
                format!("marker {marker:?} in {queue} after {v:?}"),
                f.observed,
            )
        })?;
        let b = String::from_utf8_lossy(&m.delivery.data).into_owned();
        if b == marker {
            return Ok(v);
        }
        v.push(b);
    }
    Err(Failure::new("the marker", "more than 10 000 messages"))
}

/// The user name in the URI (what the broker authenticated the connection as).
pub fn username(uri: &str) -> String {
    uri.parse::<lapin::uri::AMQPUri>()
        .map(|u| u.authority.userinfo.username)
        .unwrap_or_else(|_| "guest".into())
}
