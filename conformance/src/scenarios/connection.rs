//! The connection handshake (start / start-ok / tune / tune-ok / open), authentication and
//! vhost errors, negotiated limits, heartbeats and close.
//!
//! lapin does not expose `connection.start` or `connection.tune`, so those are observed with
//! the raw client ([`crate::raw`]).
//!
//! RabbitMQ 3.10 observed values: server properties product "RabbitMQ", version "3.10.8",
//! platform "Erlang/OTP 25.2.3", plus cluster_name, copyright and information; mechanisms
//! "AMQPLAIN PLAIN"; locales "en_US"; tune channel_max 2047, frame_max 131072, heartbeat 60.
//! Errors before connection.open (bad tune-ok, unknown mechanism, frames out of order) are
//! not reported with connection.close: RabbitMQ closes the socket (after about 3 s).

use crate::raw::{parse_uri, RawConn};
use crate::support::*;
use crate::{Ctx, Failure, Outcome, Scenario};
use amq_protocol::protocol::{connection, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        scenario!(
            "connection.open_close",
            "connection.open / connection.close",
            open_close
        ),
        scenario!(
            "connection.start.server_properties",
            "connection.start",
            server_properties
        ),
        scenario!(
            "connection.start.capabilities",
            "connection.start capabilities",
            capabilities
        ),
        scenario!(
            "connection.start.mechanisms_and_locales",
            "connection.start",
            mechanisms
        ),
        scenario!(
            "connection.auth.bad_password_403",
            "connection.start-ok",
            bad_password
        ),
        scenario!(
            "connection.auth.bad_password_raw_403",
            "connection.start-ok",
            bad_password_raw
        ),
        scenario!(
            "connection.auth.failure_without_capability_closes",
            "connection.start-ok",
            bad_password_no_capability
        ),
        scenario!(
            "connection.auth.amqplain",
            "connection.start-ok AMQPLAIN",
            amqplain
        ),
        scenario!(
            "connection.auth.unknown_mechanism_closes",
            "connection.start-ok",
            unknown_mechanism
        ),
        scenario!(
            "connection.open.unknown_vhost_530",
            "connection.open",
            unknown_vhost
        ),
        scenario!(
            "connection.open.unknown_vhost_raw_530",
            "connection.open",
            unknown_vhost_raw
        ),
        scenario!(
            "connection.tune.server_proposal",
            "connection.tune",
            tune_proposal
        ),
        scenario!(
            "connection.tune.lapin_negotiated",
            "connection.tune-ok",
            tune_negotiated
        ),
        scenario!(
            "connection.tune.client_lower_values",
            "connection.tune-ok",
            tune_client_lower
        ),
        scenario!(
            "connection.tune.frame_max_below_minimum_closes",
            "connection.tune-ok",
            tune_frame_max_small
        ),
        scenario!(
            "connection.tune.frame_max_above_server_closes",
            "connection.tune-ok",
            tune_frame_max_big
        ),
        scenario!(
            "connection.tune.channel_max_above_server_closes",
            "connection.tune-ok",
            tune_channel_max_big
        ),
        scenario!(
            "connection.tune.channel_max_enforced_530",
            "connection.tune-ok channel_max",
            channel_max_enforced
        ),
        scenario!(
            "connection.heartbeat.server_sends",
            "heartbeat",
            heartbeat_sent
        ),
        scenario!(
            "connection.heartbeat.client_heartbeats_keep_alive",
            "heartbeat",
            heartbeat_keepalive
        ),
        scenario!(
            "connection.heartbeat.silent_client_disconnected",
            "heartbeat",
            heartbeat_timeout
        ),
        scenario!(
            "connection.close.raw_close_ok",
            "connection.close",
            raw_close
        ),
        scenario!(
            "connection.close.with_open_channels",
            "connection.close",
            close_with_channels
        ),
        scenario!(
            "connection.frame_before_open_closes",
            "connection handshake",
            frame_before_open
        ),
    ]
}

async fn open_close(ctx: Ctx) -> Outcome {
    let conn = connect(&ctx.uri).await?;
    check("connected", conn.status().connected())?;
    let ch = conn.create_channel().await.step("channel.open")?;
    sync(&ch).await?;
    conn.close(200, "bye".into())
        .await
        .step("connection.close")?;
    check("closed", !conn.status().connected())?;
    // The broker still accepts connections.
    let (_c2, ch2) = open(&ctx.uri).await?;
    sync(&ch2).await
}

fn longstr(t: &FieldTable, key: &str) -> Option<String> {
    match t.inner().get(key) {
        Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    }
}

async fn server_properties(ctx: Ctx) -> Outcome {
    let mut c = RawConn::tcp(&ctx.uri).await?;
    let start = c.start().await?;
    check_eq("version_major", start.version_major, 0)?;
    check_eq("version_minor", start.version_minor, 9)?;
    let props = &start.server_properties;
    for key in ["product", "version", "platform", "copyright", "information"] {
        let v = longstr(props, key);
        check(
            &format!("server property {key} is a non-empty long string (got {v:?})"),
            v.is_some_and(|v| !v.is_empty()),
        )?;
    }
    Ok(())
}

/// The capabilities the core broker must advertise, each `true`.
async fn capabilities(ctx: Ctx) -> Outcome {
    let mut c = RawConn::tcp(&ctx.uri).await?;
    let start = c.start().await?;
    let caps = match start.server_properties.inner().get("capabilities") {
        Some(AMQPValue::FieldTable(t)) => t.clone(),
        other => return Err(Failure::new("a capabilities table", format!("{other:?}"))),
    };
    for key in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "per_consumer_qos",
        "authentication_failure_close",
    ] {
        check_eq(
            &format!("capability {key}"),
            caps.inner().get(key),
            Some(&AMQPValue::Boolean(true)),
        )?;
    }
    Ok(())
}

async fn mechanisms(ctx: Ctx) -> Outcome {
    let mut c = RawConn::tcp(&ctx.uri).await?;
    let start = c.start().await?;
    let mechs = String::from_utf8_lossy(start.mechanisms.as_bytes()).into_owned();
    let list: Vec<&str> = mechs.split(' ').collect();
    check(
        &format!("mechanisms {mechs:?} include PLAIN"),
        list.contains(&"PLAIN"),
    )?;
    check(
        &format!("mechanisms {mechs:?} include AMQPLAIN"),
        list.contains(&"AMQPLAIN"),
    )?;
    check_eq(
        "locales",
        String::from_utf8_lossy(start.locales.as_bytes()).into_owned(),
        "en_US".to_string(),
    )
}

const LOGIN_REFUSED: &str =
    "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile.";

/// lapin advertises authentication_failure_close, so RabbitMQ answers a bad password with
/// connection.close 403; lapin surfaces it as the connect error.
async fn bad_password(ctx: Ctx) -> Outcome {
    let r = connect_modified(&ctx.uri, |u| {
        u.authority.userinfo.password = "definitely-wrong".into()
    })
    .await;
    expect_error(r.map(|_| ()), 403, LOGIN_REFUSED)?;
    let (_c, ch) = open(&ctx.uri).await?;
    sync(&ch).await
}

async fn bad_password_raw(ctx: Ctx) -> Outcome {
    let mut c = RawConn::tcp(&ctx.uri).await?;
    c.start().await?;
    c.send_start_ok("guest", "definitely-wrong").await?;
    let (class, method) = c.expect_connection_close(403, LOGIN_REFUSED).await?;
    check_eq("class/method", (class, method), (0, 0))
}

/// Without the authentication_failure_close capability the broker just closes the socket.
async fn bad_password_no_capability(ctx: Ctx) -> Outcome {
    let mut c = RawConn::tcp(&ctx.uri).await?;
    c.start().await?;
    c.send_method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: FieldTable::default(),
            mechanism: "PLAIN".into(),
            response: b"\0guest\0definitely-wrong".to_vec().into(),
            locale: "en_US".into(),
        })),
    )
    .await?;
    match c.recv().await? {
        None => Ok(()),
        Some(f) => Err(Failure::new(
            "the socket closed without a frame",
            format!("{f:?}"),
        )),
    }
}

/// AMQPLAIN: the response is a field table body with LOGIN and PASSWORD.
async fn amqplain(ctx: Ctx) -> Outcome {
    let u = parse_uri(&ctx.uri)?;
    let mut c = RawConn::tcp(&ctx.uri).await?;
    c.start().await?;
    let mut t = FieldTable::default();
    t.insert(
        "LOGIN".into(),
        AMQPValue::LongString(u.authority.userinfo.username.as_str().into()),
    );
    t.insert(
        "PASSWORD".into(),
        AMQPValue::LongString(u.authority.userinfo.password.as_str().into()),
    );
    // Encode the table and strip its 4-byte length prefix: AMQPLAIN sends the table body.
    let encoded = amq_protocol::types::generation::gen_field_table(&t)(
        amq_protocol::frame::WriteContext::from(Vec::new()),
    )
    .map_err(|e| Failure::new("an encodable AMQPLAIN table", format!("{e:?}")))?
    .into_inner()
    .0;
    let response = encoded.get(4..).unwrap_or_default().to_vec();
    c.send_method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: FieldTable::default(),
            mechanism: "AMQPLAIN".into(),
            response: response.into(),
            locale: "en_US".into(),
        })),
    )
    .await?;
    match c.recv_frame().await? {
        amq_protocol::frame::AMQPFrame::Method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Tune(t)),
        ) => {
            c.tune_ok_open(
                connection::TuneOk {
                    channel_max: t.channel_max,
                    frame_max: t.frame_max,
                    heartbeat: 0,
                },
                &u.vhost,
            )
            .await?;
            c.open_channel(1).await?;
            c.close().await
        }
        other => Err(Failure::new(
            "connection.tune after AMQPLAIN login",
            format!("{other:?}"),
        )),
    }
}

async fn unknown_mechanism(ctx: Ctx) -> Outcome {
    let mut c = RawConn::tcp(&ctx.uri).await?;
    c.start().await?;
    c.send_method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: FieldTable::default(),
            mechanism: "NO-SUCH-MECHANISM".into(),
            response: b"x".to_vec().into(),
            locale: "en_US".into(),
        })),
    )
    .await?;
    // RabbitMQ: handshake error "unknown authentication mechanism", socket closed, no close frame.
    match c.recv().await? {
        None => Ok(()),
        Some(f) => Err(Failure::new(
            "the socket closed without a frame",
            format!("{f:?}"),
        )),
    }
}

async fn unknown_vhost(ctx: Ctx) -> Outcome {
    let r = connect_modified(&ctx.uri, |u| u.vhost = "no-such-vhost-conformance".into()).await;
    expect_error(
        r.map(|_| ()),
        530,
        "NOT_ALLOWED - vhost no-such-vhost-conformance not found",
    )
}

async fn unknown_vhost_raw(ctx: Ctx) -> Outcome {
    let u = parse_uri(&ctx.uri)?;
    let mut c = RawConn::tcp(&ctx.uri).await?;
    c.start().await?;
    let t = c
        .start_ok(
            &u.authority.userinfo.username,
            &u.authority.userinfo.password,
        )
        .await?;
    c.send_method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: t.channel_max,
            frame_max: t.frame_max,
            heartbeat: 0,
        })),
    )
    .await?;
    c.send_method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
            virtual_host: "no-such-vhost-conformance".into(),
        })),
    )
    .await?;
    let (class, method) = c
        .expect_connection_close(
            530,
            "NOT_ALLOWED - vhost no-such-vhost-conformance not found",
        )
        .await?;
    check_eq(
        "class/method of the failing method (connection.open)",
        (class, method),
        (10, 40),
    )
}

async fn tune_proposal(ctx: Ctx) -> Outcome {
    let (c, h) = RawConn::open(&ctx.uri, 0).await?;
    check_eq("tune channel_max", h.tune.channel_max, 2047)?;
    check_eq("tune frame_max", h.tune.frame_max, 131072)?;
    check_eq("tune heartbeat", h.tune.heartbeat, 60)?;
    c.close().await
}

async fn tune_negotiated(ctx: Ctx) -> Outcome {
    let conn = connect(&ctx.uri).await?;
    let cfg = conn.configuration();
    check_eq(
        "negotiated (channel_max, frame_max, heartbeat)",
        (cfg.channel_max(), cfg.frame_max(), cfg.heartbeat()),
        (2047, 131072, 60),
    )
}

async fn tune_client_lower(ctx: Ctx) -> Outcome {
    let uri = with_query(
        &with_query(&with_query(&ctx.uri, "heartbeat=5"), "frame_max=8192"),
        "channel_max=16",
    );
    let conn = Connection::connect(&uri, ConnectionProperties::default())
        .await
        .step("connect with lower tune values")?;
    let cfg = conn.configuration();
    check_eq(
        "negotiated (channel_max, frame_max, heartbeat)",
        (cfg.channel_max(), cfg.frame_max(), cfg.heartbeat()),
        (16, 8192, 5),
    )?;
    let ch = conn.create_channel().await.step("channel.open")?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    let body = vec![b'z'; 20_000];
    publish(&ch, "", &q, &body).await?;
    let m = get_one(&ch, &q, true).await?;
    check_eq(
        "body length with frame_max 8192",
        m.delivery.data.len(),
        20_000,
    )
}

/// Sends tune-ok with the given values and expects the socket to close without open-ok.
async fn bad_tune_ok(ctx: &Ctx, channel_max: u16, frame_max: u32) -> Outcome {
    let u = parse_uri(&ctx.uri)?;
    let mut c = RawConn::tcp(&ctx.uri).await?;
    c.start().await?;
    c.start_ok(
        &u.authority.userinfo.username,
        &u.authority.userinfo.password,
    )
    .await?;
    c.send_method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max,
            frame_max,
            heartbeat: 0,
        })),
    )
    .await?;
    c.send_method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
            virtual_host: u.vhost.as_str().into(),
        })),
    )
    .await?;
    match c.recv().await? {
        None => Ok(()),
        Some(f) => Err(Failure::new(
            format!("socket closed after tune-ok channel_max={channel_max} frame_max={frame_max}"),
            format!("{f:?}"),
        )),
    }
}

async fn tune_frame_max_small(ctx: Ctx) -> Outcome {
    // RabbitMQ logs "negotiated frame_max = 1024 is lower than the minimum allowed value (4096)".
    bad_tune_ok(&ctx, 0, 1024).await
}

async fn tune_frame_max_big(ctx: Ctx) -> Outcome {
    // "negotiated frame_max = 200000 is higher than the maximum allowed value (131072)".
    bad_tune_ok(&ctx, 0, 200_000).await
}

async fn tune_channel_max_big(ctx: Ctx) -> Outcome {
    // "negotiated channel_max = 3000 is higher than the maximum allowed value (2047)".
    bad_tune_ok(&ctx, 3000, 131_072).await
}

/// With channel_max 2 negotiated, opening a third channel is a connection error (530).
/// (RabbitMQ counts open channels; it even accepts a channel *number* above channel_max,
/// which this suite does not require.)
async fn channel_max_enforced(ctx: Ctx) -> Outcome {
    let u = parse_uri(&ctx.uri)?;
    let mut c = RawConn::tcp(&ctx.uri).await?;
    c.start().await?;
    let t = c
        .start_ok(
            &u.authority.userinfo.username,
            &u.authority.userinfo.password,
        )
        .await?;
    c.tune_ok_open(
        connection::TuneOk {
            channel_max: 2,
            frame_max: t.frame_max,
            heartbeat: 0,
        },
        &u.vhost,
    )
    .await?;
    c.open_channel(1).await?;
    c.open_channel(2).await?;
    c.send_method(
        3,
        AMQPClass::Channel(amq_protocol::protocol::channel::AMQPMethod::Open(
            amq_protocol::protocol::channel::Open {},
        )),
    )
    .await?;
    c.expect_connection_close(
        530,
        "NOT_ALLOWED - number of channels opened (2) has reached the negotiated channel_max (2)",
    )
    .await?;
    let (_c2, ch) = open(&ctx.uri).await?;
    sync(&ch).await
}

/// With heartbeat 1 negotiated, the server sends heartbeat frames on channel 0 (RabbitMQ:
/// every half interval) without anything else happening.
async fn heartbeat_sent(ctx: Ctx) -> Outcome {
    let (mut c, _) = RawConn::open(&ctx.uri, 1).await?;
    for i in 0..2 {
        match c.recv().await? {
            Some(amq_protocol::frame::AMQPFrame::Heartbeat) => {}
            other => {
                return Err(Failure::new(
                    format!("heartbeat frame #{}", i + 1),
                    format!("{other:?}"),
                ))
            }
        }
    }
    c.close().await
}

/// A raw client with heartbeat 1 that sends its own heartbeats stays connected for 3 s
/// (several intervals), and the connection still works afterwards.
async fn heartbeat_keepalive(ctx: Ctx) -> Outcome {
    let (mut c, _) = RawConn::open(&ctx.uri, 1).await?;
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        c.send(&amq_protocol::frame::AMQPFrame::Heartbeat).await?;
        match c.recv().await? {
            Some(amq_protocol::frame::AMQPFrame::Heartbeat) => {}
            other => {
                return Err(Failure::new(
                    "only heartbeats while idle",
                    format!("{other:?}"),
                ))
            }
        }
    }
    c.open_channel(1).await?;
    c.close().await
}

/// A client that negotiated heartbeat 1 and then sends nothing is disconnected (RabbitMQ:
/// after about two missed intervals, socket closed without connection.close).
async fn heartbeat_timeout(ctx: Ctx) -> Outcome {
    let (mut c, _) = RawConn::open(&ctx.uri, 1).await?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        match c.recv().await? {
            None => return Ok(()),
            Some(amq_protocol::frame::AMQPFrame::Heartbeat) => continue,
            Some(f) => {
                return Err(Failure::new(
                    "heartbeats, then the socket closed",
                    format!("{f:?}"),
                ))
            }
        }
    }
    Err(Failure::new(
        "the silent client disconnected within 10 s",
        "still connected",
    ))
}

async fn raw_close(ctx: Ctx) -> Outcome {
    let (mut c, _) = RawConn::open(&ctx.uri, 0).await?;
    c.open_channel(1).await?;
    c.open_channel(2).await?;
    c.close().await?;
    Ok(())
}

async fn close_with_channels(ctx: Ctx) -> Outcome {
    let conn = connect(&ctx.uri).await?;
    let mut chans = Vec::new();
    for _ in 0..5 {
        chans.push(conn.create_channel().await.step("channel.open")?);
    }
    let q = ctx.name("q");
    declare_exclusive(&chans[0], &q).await?;
    let _consumer = consume(&chans[1], &q, false).await?;
    conn.close(200, "bye".into())
        .await
        .step("connection.close with open channels and a consumer")?;
    for ch in &chans {
        check(
            "channel closed with the connection",
            !ch.status().connected(),
        )?;
    }
    Ok(())
}

/// A channel.open before the handshake finished: RabbitMQ closes the socket (handshake
/// error, no connection.close).
async fn frame_before_open(ctx: Ctx) -> Outcome {
    let mut c = RawConn::tcp(&ctx.uri).await?;
    c.start().await?;
    c.send_method(
        1,
        AMQPClass::Channel(amq_protocol::protocol::channel::AMQPMethod::Open(
            amq_protocol::protocol::channel::Open {},
        )),
    )
    .await?;
    match c.recv().await? {
        None => Ok(()),
        Some(f) => Err(Failure::new(
            "the socket closed without a frame",
            format!("{f:?}"),
        )),
    }
}
