//! Wire-level errors, driven with the raw client ([`crate::raw`]): what a well-behaved client
//! never sends. Each scenario asserts the exact connection.close code, text and
//! class/method ids RabbitMQ 3.10 sends, then checks that the broker still serves a new
//! connection.
//!
//! Observed on RabbitMQ 3.10.8 (text, class-id, method-id):
//! - wrong protocol header: the server writes `AMQP\x00\x00\x09\x01` and closes the socket
//! - bad frame-end octet: 501 `FRAME_ERROR - type 1, all octets = <<0,20,0,10,0>>: {invalid_frame_end_marker,0}` (0, 0)
//!   (payloads over 16 bytes print as `first 16 octets = <<...>>`)
//! - payload larger than frame_max: 501 `FRAME_ERROR - type 1, all octets = <<>>: {frame_too_large,131073,131064}` (0, 0);
//!   RabbitMQ tolerates payloads up to frame_max itself (8 bytes over the limit)
//! - unknown frame type: 501 `FRAME_ERROR - type 9, all octets = <<>>: unknown_frame` (0, 0)
//! - method on a channel never opened (or already closed): 504 `CHANNEL_ERROR - expected 'channel.open'` (class, method of the offending method)
//! - channel.open on an open channel: 504 `CHANNEL_ERROR - second 'channel.open' seen` (20, 10)
//! - content body or header with no publish before it: 505 `UNEXPECTED_FRAME - expected method frame, got non method frame instead` (0, 0)
//! - a method where a content header was due: 505 `UNEXPECTED_FRAME - expected content header for class 60, got non content header frame instead` (60, 40)
//! - a content header of class 50: 505 `UNEXPECTED_FRAME - expected content header for class 60, got one for class 50 instead` (60, 40)
//! - heartbeat on channel 1: 505 `UNEXPECTED_FRAME - type 8, all octets = <<>>` (0, 0)
//! - content header on channel 0: 505 `UNEXPECTED_FRAME - type 2, all octets = <<...>>` (0, 0)
//! - basic.qos on channel 0: 504 `CHANNEL_ERROR - unexpected method in connection state running` (60, 10)
//! - connection.close on channel 1: 503 `COMMAND_INVALID - unimplemented method` (10, 50)
//! - basic.qos with prefetch_size 1: 540 `NOT_IMPLEMENTED - prefetch_size!=0 (1)` (60, 10)
//! - method frame with truncated arguments (queue.declare cut inside the queue name):
//!   501 `FRAME_ERROR - cannot decode <<0,0,10,97,98>>` (50, 10) — the argument octets after the
//!   class and method ids, printed with `~w`
//! - unknown class or method id: no connection.close at all; RabbitMQ's reader crashes
//!   (`{unknown_method_id,{60,99}}`) and the socket is closed.

use crate::raw::{encode, method, raw_frame, RawConn};
use crate::support::*;
use crate::{Ctx, Failure, Outcome, Scenario};
use amq_protocol::frame::{AMQPContentHeader, AMQPFrame};
use amq_protocol::protocol::{basic, channel, connection, queue, AMQPClass};
use amq_protocol::types::FieldTable;

pub fn scenarios() -> Vec<Scenario> {
    vec![
        scenario!(
            "wire.protocol_header.wrong_version",
            "protocol header",
            wrong_header
        ),
        scenario!("wire.frame_end.bad_501", "frame end", bad_frame_end),
        scenario!(
            "wire.frame_end.bad_long_payload_501",
            "frame end",
            bad_frame_end_long
        ),
        scenario!("wire.frame_max.exceeded_501", "frame_max", frame_too_large),
        scenario!("wire.frame_max.fudge_accepted", "frame_max", frame_fudge),
        scenario!(
            "wire.frame_type.unknown_501",
            "frame type",
            unknown_frame_type
        ),
        scenario!(
            "wire.channel.unopened_504",
            "channel.open",
            unopened_channel
        ),
        scenario!("wire.channel.open_twice_504", "channel.open", open_twice),
        scenario!("wire.channel.after_close_504", "channel.close", after_close),
        scenario!(
            "wire.channel.close_ok_reopen",
            "channel.close / channel.close-ok",
            close_reopen
        ),
        scenario!(
            "wire.channel.frames_ignored_until_close_ok",
            "channel.close (error)",
            ignored_until_close_ok
        ),
        scenario!(
            "wire.content.body_without_header_505",
            "content frames",
            body_without_header
        ),
        scenario!(
            "wire.content.header_without_method_505",
            "content frames",
            header_without_method
        ),
        scenario!(
            "wire.content.method_instead_of_header_505",
            "content frames",
            method_instead_of_header
        ),
        scenario!(
            "wire.content.header_wrong_class_505",
            "content frames",
            header_wrong_class
        ),
        scenario!(
            "wire.content.body_after_empty_content_505",
            "content frames",
            body_after_empty
        ),
        scenario!(
            "wire.content.interleaved_channels",
            "content frames",
            interleaved_channels
        ),
        scenario!(
            "wire.heartbeat.nonzero_channel_505",
            "heartbeat",
            heartbeat_nonzero_channel
        ),
        scenario!(
            "wire.channel0.content_header_505",
            "channel 0",
            header_on_channel0
        ),
        scenario!(
            "wire.channel0.basic_method_504",
            "channel 0",
            basic_on_channel0
        ),
        scenario!(
            "wire.connection_method_on_channel_503",
            "channel 0",
            connection_on_channel1
        ),
        scenario!(
            "wire.basic_qos.prefetch_size_540",
            "basic.qos prefetch_size",
            qos_prefetch_size
        ),
        scenario!(
            "wire.unknown_method_closes",
            "unknown method",
            unknown_method
        ),
        scenario!("wire.unknown_class_closes", "unknown method", unknown_class),
        scenario!(
            "wire.method.malformed_501",
            "method frame arguments",
            malformed_method
        ),
    ]
}

/// The broker still accepts and serves a new connection.
async fn still_serving(ctx: &Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    sync(&ch).await
}

/// Opens a raw connection with channel 1 open.
async fn raw1(ctx: &Ctx) -> Result<RawConn, Failure> {
    let (mut c, _) = RawConn::open(&ctx.uri, 0).await?;
    c.open_channel(1).await?;
    Ok(c)
}

/// Sends `bytes`, expects connection.close with code, text and (class, method), then checks
/// that a new connection works.
async fn expect_close_after(
    ctx: &Ctx,
    mut c: RawConn,
    bytes: &[u8],
    code: u16,
    text: &str,
    ids: (u16, u16),
) -> Outcome {
    c.send_bytes(bytes).await?;
    let got = c.expect_connection_close(code, text).await?;
    check_eq("class-id, method-id", got, ids)?;
    still_serving(ctx).await
}

fn publish_method(ch: u16) -> Vec<u8> {
    method(
        ch,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "".into(),
            routing_key: "conformance-nowhere".into(),
            mandatory: false,
            immediate: false,
        })),
    )
}

fn header(ch: u16, class_id: u16, size: u64) -> Vec<u8> {
    encode(&AMQPFrame::Header(
        ch,
        AMQPContentHeader {
            class_id,
            body_size: size,
            properties: Default::default(),
        },
    ))
}

fn qos(ch: u16) -> Vec<u8> {
    method(
        ch,
        AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: 1,
            global: false,
        })),
    )
}

async fn wrong_header(ctx: Ctx) -> Outcome {
    for bad in [
        &b"AMQP\x00\x00\x08\x00"[..],
        b"AMQP\x01\x01\x00\x0a",
        b"GET / HTTP/1.1\r\n\r\n",
    ] {
        let mut c = RawConn::tcp(&ctx.uri).await?;
        c.send_bytes(bad).await?;
        let got = c.read_until_eof().await?;
        check_eq(
            &format!("answer to {:?}", String::from_utf8_lossy(bad)),
            got.as_slice(),
            b"AMQP\x00\x00\x09\x01".as_slice(),
        )?;
    }
    still_serving(&ctx).await
}

async fn bad_frame_end(ctx: Ctx) -> Outcome {
    let (c, _) = RawConn::open(&ctx.uri, 0).await?;
    let mut f = method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    );
    let n = f.len();
    f[n - 1] = 0x00;
    expect_close_after(
        &ctx,
        c,
        &f,
        501,
        "FRAME_ERROR - type 1, all octets = <<0,20,0,10,0>>: {invalid_frame_end_marker,0}",
        (0, 0),
    )
    .await
}

/// RabbitMQ builds FRAME_ERROR texts with Erlang's `~p`, which wraps a term that would end
/// past column 80 (of the text after `FRAME_ERROR - `): `{Atom,` then a newline and the
/// rest indented to one column after the `{`. E.g. with a 66-character prefix,
/// `{invalid_frame_end_marker,` newline, 67 spaces, `255}`.
fn erl_frame_error(prefix: &str, atom: &str, n: u64) -> String {
    let flat = format!("{{{atom},{n}}}");
    if prefix.len() + flat.len() > 80 {
        format!(
            "FRAME_ERROR - {prefix}{{{atom},\n{}{n}}}",
            " ".repeat(prefix.len() + 1)
        )
    } else {
        format!("FRAME_ERROR - {prefix}{flat}")
    }
}

/// For payloads over 16 bytes the text shows the first 16 (and here the error term wraps).
async fn bad_frame_end_long(ctx: Ctx) -> Outcome {
    let c = raw1(&ctx).await?;
    let mut f = method(
        1,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "\u{1}\u{2}\u{3}\u{4}\u{5}\u{6}\u{7}\u{8}\u{9}\u{a}".into(),
            passive: true,
            durable: false,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    );
    let n = f.len();
    f[n - 1] = 0xFF;
    expect_close_after(
        &ctx,
        c,
        &f,
        501,
        &erl_frame_error(
            "type 1, first 16 octets = <<0,50,0,10,0,0,10,1,2,3,4,5,6,7,8,9>>: ",
            "invalid_frame_end_marker",
            255,
        ),
        (0, 0),
    )
    .await
}

async fn frame_too_large(ctx: Ctx) -> Outcome {
    let (c, h) = RawConn::open(&ctx.uri, 0).await?;
    let fm = h.tune.frame_max;
    let big = raw_frame(1, 1, &vec![0u8; fm as usize + 1], 0xCE);
    let text = format!(
        "FRAME_ERROR - type 1, all octets = <<>>: {{frame_too_large,{},{}}}",
        fm + 1,
        fm - 8
    );
    expect_close_after(&ctx, c, &big, 501, &text, (0, 0)).await
}

/// RabbitMQ accepts a body frame whose payload is frame_max bytes (8 more than the limit
/// frame_max - 8), for clients that get the overhead wrong; the message arrives intact.
async fn frame_fudge(ctx: Ctx) -> Outcome {
    let (mut c, h) = RawConn::open(&ctx.uri, 0).await?;
    c.open_channel(1).await?;
    let q = ctx.name("q");
    let (_lc, ch) = open(&ctx.uri).await?;
    declare_exclusive(&ch, &q).await?;
    let size = h.tune.frame_max as usize;
    let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let mut bytes = method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "".into(),
            routing_key: q.as_str().into(),
            mandatory: false,
            immediate: false,
        })),
    );
    bytes.extend(header(1, 60, size as u64));
    bytes.extend(raw_frame(3, 1, &body, 0xCE));
    c.send_bytes(&bytes).await?;
    let m = get_one(&ch, &q, true).await?;
    check_eq("body length", m.delivery.data.len(), size)?;
    check("body intact", m.delivery.data == body)?;
    c.close().await
}

async fn unknown_frame_type(ctx: Ctx) -> Outcome {
    let (c, _) = RawConn::open(&ctx.uri, 0).await?;
    expect_close_after(
        &ctx,
        c,
        &raw_frame(9, 0, b"", 0xCE),
        501,
        "FRAME_ERROR - type 9, all octets = <<>>: unknown_frame",
        (0, 0),
    )
    .await
}

async fn unopened_channel(ctx: Ctx) -> Outcome {
    let (c, _) = RawConn::open(&ctx.uri, 0).await?;
    let m = method(
        3,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "".into(),
            passive: false,
            durable: false,
            exclusive: true,
            auto_delete: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    );
    expect_close_after(
        &ctx,
        c,
        &m,
        504,
        "CHANNEL_ERROR - expected 'channel.open'",
        (50, 10),
    )
    .await
}

async fn open_twice(ctx: Ctx) -> Outcome {
    let c = raw1(&ctx).await?;
    let m = method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    );
    expect_close_after(
        &ctx,
        c,
        &m,
        504,
        "CHANNEL_ERROR - second 'channel.open' seen",
        (20, 10),
    )
    .await
}

async fn close_channel(c: &mut RawConn, ch: u16) -> Outcome {
    c.send_method(
        ch,
        AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        })),
    )
    .await?;
    match c.recv_frame().await? {
        AMQPFrame::Method(n, AMQPClass::Channel(channel::AMQPMethod::CloseOk(_))) if n == ch => {
            Ok(())
        }
        other => Err(Failure::new("channel.close-ok", format!("{other:?}"))),
    }
}

async fn after_close(ctx: Ctx) -> Outcome {
    let mut c = raw1(&ctx).await?;
    close_channel(&mut c, 1).await?;
    expect_close_after(
        &ctx,
        c,
        &qos(1),
        504,
        "CHANNEL_ERROR - expected 'channel.open'",
        (60, 10),
    )
    .await
}

async fn close_reopen(ctx: Ctx) -> Outcome {
    let mut c = raw1(&ctx).await?;
    close_channel(&mut c, 1).await?;
    c.open_channel(1).await?;
    c.send_bytes(&qos(1)).await?;
    match c.recv_frame().await? {
        AMQPFrame::Method(1, AMQPClass::Basic(basic::AMQPMethod::QosOk(_))) => {}
        other => {
            return Err(Failure::new(
                "basic.qos-ok on the reopened channel",
                format!("{other:?}"),
            ))
        }
    }
    c.close().await
}

/// After the broker closes a channel for an error, it ignores that channel's frames (methods
/// and content) until the client's close-ok; then the channel number can be opened again.
async fn ignored_until_close_ok(ctx: Ctx) -> Outcome {
    let mut c = raw1(&ctx).await?;
    let missing = ctx.name("missing");
    c.send_method(
        1,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: missing.as_str().into(),
            passive: true,
            durable: false,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    )
    .await?;
    let text = format!("NOT_FOUND - no queue '{missing}' in vhost '/'");
    match c.recv_frame().await? {
        AMQPFrame::Method(1, AMQPClass::Channel(channel::AMQPMethod::Close(m))) => {
            check_eq(
                "channel.close",
                (
                    m.reply_code,
                    m.reply_text.to_string(),
                    m.class_id,
                    m.method_id,
                ),
                (404, reply_text(&text), 50, 10),
            )?;
        }
        other => return Err(Failure::new("channel.close 404", format!("{other:?}"))),
    }
    let mut junk = qos(1);
    junk.extend(publish_method(1));
    junk.extend(header(1, 60, 1));
    junk.extend(raw_frame(3, 1, b"x", 0xCE));
    c.send_bytes(&junk).await?;
    c.send_method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
    )
    .await?;
    c.open_channel(1).await?;
    c.close().await
}

async fn body_without_header(ctx: Ctx) -> Outcome {
    let c = raw1(&ctx).await?;
    expect_close_after(
        &ctx,
        c,
        &raw_frame(3, 1, b"hello", 0xCE),
        505,
        "UNEXPECTED_FRAME - expected method frame, got non method frame instead",
        (0, 0),
    )
    .await
}

async fn header_without_method(ctx: Ctx) -> Outcome {
    let c = raw1(&ctx).await?;
    expect_close_after(
        &ctx,
        c,
        &header(1, 60, 5),
        505,
        "UNEXPECTED_FRAME - expected method frame, got non method frame instead",
        (0, 0),
    )
    .await
}

async fn method_instead_of_header(ctx: Ctx) -> Outcome {
    let c = raw1(&ctx).await?;
    let mut b = publish_method(1);
    b.extend(qos(1));
    expect_close_after(&ctx, c, &b, 505, "UNEXPECTED_FRAME - expected content header for class 60, got non content header frame instead", (60, 40)).await
}

async fn header_wrong_class(ctx: Ctx) -> Outcome {
    let c = raw1(&ctx).await?;
    let mut b = publish_method(1);
    b.extend(header(1, 50, 3));
    expect_close_after(
        &ctx,
        c,
        &b,
        505,
        "UNEXPECTED_FRAME - expected content header for class 60, got one for class 50 instead",
        (60, 40),
    )
    .await
}

async fn body_after_empty(ctx: Ctx) -> Outcome {
    let c = raw1(&ctx).await?;
    let mut b = publish_method(1);
    b.extend(header(1, 60, 0));
    b.extend(raw_frame(3, 1, b"x", 0xCE));
    expect_close_after(
        &ctx,
        c,
        &b,
        505,
        "UNEXPECTED_FRAME - expected method frame, got non method frame instead",
        (0, 0),
    )
    .await
}

/// Content frames of two channels may interleave: each channel assembles its own message.
async fn interleaved_channels(ctx: Ctx) -> Outcome {
    let mut c = raw1(&ctx).await?;
    c.open_channel(2).await?;
    let q = ctx.name("q");
    let (_lc, ch) = open(&ctx.uri).await?;
    declare_exclusive(&ch, &q).await?;
    let publish = |n: u16| {
        method(
            n,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: "".into(),
                routing_key: q.as_str().into(),
                mandatory: false,
                immediate: false,
            })),
        )
    };
    let mut b = publish(1);
    b.extend(publish(2));
    b.extend(header(1, 60, 6));
    b.extend(header(2, 60, 6));
    b.extend(raw_frame(3, 2, b"two", 0xCE));
    b.extend(raw_frame(3, 1, b"one", 0xCE));
    b.extend(raw_frame(3, 1, b"-1", 0xCE));
    b.extend(raw_frame(3, 2, b"-2", 0xCE));
    b.extend(raw_frame(3, 1, b"!", 0xCE));
    b.extend(raw_frame(3, 2, b"!", 0xCE));
    c.send_bytes(&b).await?;
    let mut got = vec![
        String::from_utf8_lossy(&get_one(&ch, &q, true).await?.delivery.data).into_owned(),
        String::from_utf8_lossy(&get_one(&ch, &q, true).await?.delivery.data).into_owned(),
    ];
    got.sort();
    check_eq(
        "messages",
        got,
        vec!["one-1!".to_string(), "two-2!".to_string()],
    )?;
    c.close().await
}

async fn heartbeat_nonzero_channel(ctx: Ctx) -> Outcome {
    let c = raw1(&ctx).await?;
    expect_close_after(
        &ctx,
        c,
        &raw_frame(8, 1, b"", 0xCE),
        505,
        "UNEXPECTED_FRAME - type 8, all octets = <<>>",
        (0, 0),
    )
    .await
}

async fn header_on_channel0(ctx: Ctx) -> Outcome {
    let (c, _) = RawConn::open(&ctx.uri, 0).await?;
    let payload = [0u8, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    expect_close_after(
        &ctx,
        c,
        &raw_frame(2, 0, &payload, 0xCE),
        505,
        "UNEXPECTED_FRAME - type 2, all octets = <<0,60,0,0,0,0,0,0,0,0,0,0,0,0>>",
        (0, 0),
    )
    .await
}

async fn basic_on_channel0(ctx: Ctx) -> Outcome {
    let (c, _) = RawConn::open(&ctx.uri, 0).await?;
    expect_close_after(
        &ctx,
        c,
        &qos(0),
        504,
        "CHANNEL_ERROR - unexpected method in connection state running",
        (60, 10),
    )
    .await
}

async fn connection_on_channel1(ctx: Ctx) -> Outcome {
    let c = raw1(&ctx).await?;
    let m = method(
        1,
        AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: 200,
            reply_text: "".into(),
            class_id: 0,
            method_id: 0,
        })),
    );
    expect_close_after(
        &ctx,
        c,
        &m,
        503,
        "COMMAND_INVALID - unimplemented method",
        (10, 50),
    )
    .await
}

async fn qos_prefetch_size(ctx: Ctx) -> Outcome {
    let c = raw1(&ctx).await?;
    // basic.qos: class 60, method 10, prefetch-size 1 (long), prefetch-count 0, global 0.
    let f = raw_frame(1, 1, &[0, 60, 0, 10, 0, 0, 0, 1, 0, 0, 0], 0xCE);
    expect_close_after(
        &ctx,
        c,
        &f,
        540,
        "NOT_IMPLEMENTED - prefetch_size!=0 (1)",
        (60, 10),
    )
    .await
}

/// After an unknown method the connection must end. RabbitMQ closes the socket without a
/// connection.close; a broker that sends connection.close first (503 or 540) is accepted.
async fn expect_connection_ends(ctx: &Ctx, mut c: RawConn, bytes: &[u8]) -> Outcome {
    c.send_bytes(bytes).await?;
    for _ in 0..100 {
        match c.recv().await? {
            None => return still_serving(ctx).await,
            Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(m)))) => {
                check(
                    &format!(
                        "close code 503 or 540 (got {} {})",
                        m.reply_code, m.reply_text
                    ),
                    m.reply_code == 503 || m.reply_code == 540,
                )?;
                c.send_method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
                )
                .await?;
                c.expect_eof().await?;
                return still_serving(ctx).await;
            }
            Some(AMQPFrame::Heartbeat) => continue,
            Some(f) => return Err(Failure::new("the connection to end", format!("{f:?}"))),
        }
    }
    Err(Failure::new("the connection to end", "frames kept coming"))
}

async fn unknown_method(ctx: Ctx) -> Outcome {
    let c = raw1(&ctx).await?;
    expect_connection_ends(&ctx, c, &raw_frame(1, 1, &[0, 60, 0, 99], 0xCE)).await
}

async fn unknown_class(ctx: Ctx) -> Outcome {
    let c = raw1(&ctx).await?;
    expect_connection_ends(&ctx, c, &raw_frame(1, 1, &[0, 99, 0, 1], 0xCE)).await
}

/// queue.declare whose arguments stop in the middle of the queue name (the short string
/// announces 10 octets, 2 follow). RabbitMQ answers 501 FRAME_ERROR (not 502 SYNTAX_ERROR)
/// with `cannot decode` and the argument octets (after class and method ids) printed by `~w`.
async fn malformed_method(ctx: Ctx) -> Outcome {
    let c = raw1(&ctx).await?;
    let f = raw_frame(1, 1, &[0, 50, 0, 10, 0, 0, 10, b'a', b'b'], 0xCE);
    expect_close_after(
        &ctx,
        c,
        &f,
        501,
        "FRAME_ERROR - cannot decode <<0,0,10,97,98>>",
        (50, 10),
    )
    .await
}
