//! A minimal raw AMQP 0-9-1 client over a tokio `TcpStream`, for the scenarios that have to
//! put on the wire what a well-behaved client (lapin) never sends: wrong protocol headers,
//! broken frame ends, oversized frames, methods on unopened channels, unknown methods.
//!
//! Frames are encoded with `amq_protocol::frame::gen_frame` and decoded with
//! `amq_protocol::frame::parse_frame`; arbitrary bytes can be sent with [`RawConn::send_bytes`].
//! Every read waits at most [`WAIT`](crate::support::WAIT).

use crate::support::WAIT;
use crate::Failure;
use amq_protocol::frame::{gen_frame, parse_frame, AMQPFrame, ProtocolVersion, WriteContext};
use amq_protocol::protocol::{channel, connection, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable};
use amq_protocol::uri::AMQPUri;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the server sent in its `connection.start` and `connection.tune`.
#[derive(Debug, Clone)]
pub struct Handshake {
    pub start: connection::Start,
    pub tune: connection::Tune,
}

/// A raw connection: the socket plus bytes read but not yet parsed.
#[derive(Debug)]
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Set once the server closed its side (EOF).
    pub eof: bool,
}

/// Parses a URI the same way lapin does.
pub fn parse_uri(uri: &str) -> Result<AMQPUri, Failure> {
    uri.parse::<AMQPUri>()
        .map_err(|e| Failure::new("a valid AMQP URI", e))
}

/// Encodes one frame to bytes.
pub fn encode(frame: &AMQPFrame) -> Vec<u8> {
    let ctx = WriteContext::from(Vec::new());
    match gen_frame(frame)(ctx) {
        Ok(ctx) => ctx.into_inner().0,
        Err(e) => panic!("cannot encode {frame:?}: {e:?}"),
    }
}

/// Encodes a method on a channel.
pub fn method(channel: u16, class: AMQPClass) -> Vec<u8> {
    encode(&AMQPFrame::Method(channel, class))
}

/// Builds a raw frame from its parts: type, channel, payload, and the frame-end octet to use.
pub fn raw_frame(frame_type: u8, channel: u16, payload: &[u8], frame_end: u8) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + 8);
    v.push(frame_type);
    v.extend_from_slice(&channel.to_be_bytes());
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v.push(frame_end);
    v
}

impl RawConn {
    /// Opens the TCP connection only (no protocol header sent).
    pub async fn tcp(uri: &str) -> Result<Self, Failure> {
        let u = parse_uri(uri)?;
        let addr = format!("{}:{}", u.authority.host, u.authority.port);
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(&addr))
            .await
            .map_err(|_| Failure::new(format!("TCP connect to {addr}"), "timed out"))?
            .map_err(|e| Failure::new(format!("TCP connect to {addr}"), format!("{e}")))?;
        stream.set_nodelay(true).ok();
        Ok(RawConn {
            stream,
            buf: Vec::new(),
            eof: false,
        })
    }

    /// The socket split in two, and the bytes already read but not parsed: for tests
    /// that write and read the same connection at once (a flood with replies to watch).
    pub fn into_split(
        self,
    ) -> (
        tokio::net::tcp::OwnedReadHalf,
        tokio::net::tcp::OwnedWriteHalf,
        Vec<u8>,
    ) {
        let (r, w) = self.stream.into_split();
        (r, w, self.buf)
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|e| Failure::new("write to the socket", format!("{e}")))
    }

    pub async fn send(&mut self, frame: &AMQPFrame) -> Result<(), Failure> {
        self.send_bytes(&encode(frame)).await
    }

    pub async fn send_method(&mut self, channel: u16, class: AMQPClass) -> Result<(), Failure> {
        self.send(&AMQPFrame::Method(channel, class)).await
    }

    /// Reads more bytes; false on EOF (or a reset, which is how some servers close).
    async fn fill(&mut self, deadline: tokio::time::Instant) -> Result<bool, Failure> {
        let mut chunk = [0u8; 65536];
        match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
            Err(_) => Err(Failure::new(
                "a frame from the server",
                format!("nothing within {WAIT:?}"),
            )),
            Ok(Ok(0)) | Ok(Err(_)) => {
                self.eof = true;
                Ok(false)
            }
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
        }
    }

    /// The next frame, or `None` when the server closed the socket. Fails after [`WAIT`].
    pub async fn recv(&mut self) -> Result<Option<AMQPFrame>, Failure> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if !self.buf.is_empty() {
                match parse_frame(self.buf.as_slice()) {
                    Ok((rest, frame)) => {
                        let used = self.buf.len() - rest.len();
                        self.buf.drain(..used);
                        return Ok(Some(frame));
                    }
                    Err(nom::Err::Incomplete(_)) => {}
                    Err(e) => {
                        return Err(Failure::new(
                            "a parsable frame",
                            format!("{e:?} in {:?}", &self.buf[..self.buf.len().min(64)]),
                        ))
                    }
                }
            }
            if self.eof || !self.fill(deadline).await? {
                return Ok(None);
            }
        }
    }

    /// The next frame that is not a heartbeat; fails on EOF.
    pub async fn recv_frame(&mut self) -> Result<AMQPFrame, Failure> {
        for _ in 0..1000 {
            match self.recv().await? {
                Some(AMQPFrame::Heartbeat) => continue,
                Some(f) => return Ok(f),
                None => return Err(Failure::new("a frame", "the server closed the connection")),
            }
        }
        Err(Failure::new("a non-heartbeat frame", "only heartbeats"))
    }

    /// All the bytes the server sends until it closes the socket (at most 64 KiB, within WAIT).
    pub async fn read_until_eof(&mut self) -> Result<Vec<u8>, Failure> {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.eof && self.buf.len() < 65536 {
            self.fill(deadline).await?;
        }
        Ok(std::mem::take(&mut self.buf))
    }

    /// Expects the server to close the socket, discarding whatever it sends before that.
    pub async fn expect_eof(&mut self) -> Result<(), Failure> {
        self.read_until_eof().await.map(|_| ())
    }

    /// Sends the protocol header and reads `connection.start`.
    pub async fn start(&mut self) -> Result<connection::Start, Failure> {
        self.send(&AMQPFrame::ProtocolHeader(ProtocolVersion::amqp_0_9_1()))
            .await?;
        match self.recv_frame().await? {
            AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Start(s))) => Ok(s),
            other => Err(Failure::new("connection.start", format!("{other:?}"))),
        }
    }

    /// Sends start-ok with PLAIN credentials, advertising the authentication_failure_close
    /// and consumer_cancel_notify capabilities.
    pub async fn send_start_ok(&mut self, user: &str, pass: &str) -> Result<(), Failure> {
        let mut caps = FieldTable::default();
        caps.insert("authentication_failure_close".into(), true.into());
        caps.insert("consumer_cancel_notify".into(), true.into());
        let mut props = FieldTable::default();
        props.insert(
            "product".into(),
            AMQPValue::LongString("conformance-raw".into()),
        );
        props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
        self.send_start_ok_with(user, pass, props).await
    }

    /// Sends start-ok with PLAIN credentials and the given client properties.
    pub async fn send_start_ok_with(
        &mut self,
        user: &str,
        pass: &str,
        props: FieldTable,
    ) -> Result<(), Failure> {
        let mut response = vec![0u8];
        response.extend_from_slice(user.as_bytes());
        response.push(0);
        response.extend_from_slice(pass.as_bytes());
        self.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: props,
                mechanism: "PLAIN".into(),
                response: response.into(),
                locale: "en_US".into(),
            })),
        )
        .await
    }

    /// [`send_start_ok`](Self::send_start_ok), then reads `connection.tune` (anything else is
    /// an error).
    pub async fn start_ok(&mut self, user: &str, pass: &str) -> Result<connection::Tune, Failure> {
        self.send_start_ok(user, pass).await?;
        match self.recv_frame().await? {
            AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Tune(t))) => Ok(t),
            other => Err(Failure::new("connection.tune", format!("{other:?}"))),
        }
    }

    /// Sends tune-ok with the given values and `connection.open`, and reads open-ok.
    pub async fn tune_ok_open(
        &mut self,
        tune: connection::TuneOk,
        vhost: &str,
    ) -> Result<(), Failure> {
        self.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(tune)),
        )
        .await?;
        self.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: vhost.into(),
            })),
        )
        .await?;
        match self.recv_frame().await? {
            AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))) => {
                Ok(())
            }
            other => Err(Failure::new("connection.open-ok", format!("{other:?}"))),
        }
    }

    /// A complete handshake with the URI's credentials and vhost, accepting the server's tune
    /// values except the heartbeat, which is `heartbeat`.
    pub async fn open(uri: &str, heartbeat: u16) -> Result<(Self, Handshake), Failure> {
        let u = parse_uri(uri)?;
        let mut c = RawConn::tcp(uri).await?;
        let start = c.start().await?;
        let tune = c
            .start_ok(
                &u.authority.userinfo.username,
                &u.authority.userinfo.password,
            )
            .await?;
        c.tune_ok_open(
            connection::TuneOk {
                channel_max: tune.channel_max,
                frame_max: tune.frame_max,
                heartbeat,
            },
            &u.vhost,
        )
        .await?;
        Ok((c, Handshake { start, tune }))
    }

    /// Opens channel `id` and waits for open-ok.
    pub async fn open_channel(&mut self, id: u16) -> Result<(), Failure> {
        self.send_method(
            id,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        )
        .await?;
        match self.recv_frame().await? {
            AMQPFrame::Method(c, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))) if c == id => {
                Ok(())
            }
            other => Err(Failure::new(
                format!("channel.open-ok on {id}"),
                format!("{other:?}"),
            )),
        }
    }

    /// Reads frames until the server's `connection.close`, checks its code and text, answers
    /// close-ok and expects the socket to close. Returns (class_id, method_id) of the close.
    pub async fn expect_connection_close(
        &mut self,
        code: u16,
        text: &str,
    ) -> Result<(u16, u16), Failure> {
        for _ in 0..1000 {
            match self.recv().await? {
                None => {
                    return Err(Failure::new(
                        format!("connection.close {code} {text}"),
                        "socket closed without connection.close",
                    ))
                }
                Some(AMQPFrame::Method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::Close(c)),
                )) => {
                    let _ = self
                        .send_method(
                            0,
                            AMQPClass::Connection(connection::AMQPMethod::CloseOk(
                                connection::CloseOk {},
                            )),
                        )
                        .await;
                    if c.reply_code != code || c.reply_text.as_str() != text {
                        return Err(Failure::new(
                            format!("connection.close {code} {text}"),
                            format!("connection.close {} {}", c.reply_code, c.reply_text),
                        ));
                    }
                    self.expect_eof().await?;
                    return Ok((c.class_id, c.method_id));
                }
                Some(_) => continue,
            }
        }
        Err(Failure::new("connection.close", "too many other frames"))
    }

    /// Reads frames until `channel.close` on `ch`, checks code and text, answers close-ok.
    /// Returns (class_id, method_id).
    pub async fn expect_channel_close(
        &mut self,
        ch: u16,
        code: u16,
        text: &str,
    ) -> Result<(u16, u16), Failure> {
        for _ in 0..1000 {
            match self.recv().await? {
                None => {
                    return Err(Failure::new(
                        format!("channel.close {code} {text}"),
                        "socket closed",
                    ))
                }
                Some(AMQPFrame::Method(c, AMQPClass::Channel(channel::AMQPMethod::Close(m))))
                    if c == ch =>
                {
                    self.send_method(
                        ch,
                        AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                    )
                    .await?;
                    if m.reply_code != code || m.reply_text.as_str() != text {
                        return Err(Failure::new(
                            format!("channel.close {code} {text}"),
                            format!("channel.close {} {}", m.reply_code, m.reply_text),
                        ));
                    }
                    return Ok((m.class_id, m.method_id));
                }
                Some(AMQPFrame::Method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::Close(c)),
                )) => {
                    return Err(Failure::new(
                        format!("channel.close {code} {text}"),
                        format!("connection.close {} {}", c.reply_code, c.reply_text),
                    ))
                }
                Some(_) => continue,
            }
        }
        Err(Failure::new("channel.close", "too many other frames"))
    }

    /// Closes the connection politely (close, then close-ok, then EOF).
    pub async fn close(mut self) -> Result<(), Failure> {
        self.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                reply_code: 200,
                reply_text: "bye".into(),
                class_id: 0,
                method_id: 0,
            })),
        )
        .await?;
        for _ in 0..1000 {
            match self.recv().await? {
                Some(AMQPFrame::Method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)),
                )) => return Ok(()),
                Some(_) => continue,
                None => return Err(Failure::new("connection.close-ok", "socket closed")),
            }
        }
        Err(Failure::new("connection.close-ok", "too many other frames"))
    }
}
