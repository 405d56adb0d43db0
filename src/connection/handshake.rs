//! The opening handshake: protocol header, start/start-ok (authentication), tune/tune-ok,
//! open/open-ok. Runs under the handshake timeout before the connection's main loop.

use super::Connection;
use crate::error::AmqpError;
use crate::protocol::codec::{Frame, Method};
use crate::protocol::{header_supported, sasl, FRAME_MIN_SIZE, PROTOCOL_HEADER};
use amq_protocol::protocol::{connection as cm, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use tokio::io::AsyncWriteExt;

/// Why the handshake did not complete.
#[derive(Debug)]
pub enum HandshakeEnd {
    /// The socket closed or failed; nothing more to say.
    Io,
    /// The peer asked for another protocol; we answered with our header.
    WrongProtocol,
    /// Close the connection with this error (connection.close, wait for close-ok).
    Close(AmqpError),
    /// Close the socket without a word (auth failure for clients that did not ask for
    /// `authentication_failure_close`, as RabbitMQ).
    Silent,
}

fn table(entries: Vec<(&str, AMQPValue)>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert(k.into(), v);
    }
    t
}

fn lstr(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

/// connection.start's server-properties: product information and a capabilities table
/// advertising only what Warren implements. `product` and `version` are configurable
/// (`--server-product`, `--server-version`).
pub fn server_properties(cfg: &crate::Config) -> FieldTable {
    let caps = table(vec![
        ("publisher_confirms", AMQPValue::Boolean(true)),
        ("exchange_exchange_bindings", AMQPValue::Boolean(true)),
        ("basic.nack", AMQPValue::Boolean(true)),
        ("consumer_cancel_notify", AMQPValue::Boolean(true)),
        ("authentication_failure_close", AMQPValue::Boolean(true)),
        ("connection.blocked", AMQPValue::Boolean(true)),
        ("per_consumer_qos", AMQPValue::Boolean(true)),
        ("consumer_priorities", AMQPValue::Boolean(true)),
        ("direct_reply_to", AMQPValue::Boolean(true)),
    ]);
    table(vec![
        ("capabilities", AMQPValue::FieldTable(caps)),
        ("cluster_name", lstr(&cfg.cluster_name)),
        ("copyright", lstr("Copyright (c) the Warren authors")),
        (
            "information",
            lstr("Licensed under the MIT license. Source: the warren repository"),
        ),
        (
            "platform",
            lstr(&format!("Rust / {}", std::env::consts::OS)),
        ),
        ("product", lstr(&cfg.server_product)),
        ("version", lstr(&cfg.server_version)),
    ])
}

/// Before connection.open, RabbitMQ answers any unexpected frame by closing the socket
/// without a word; so do we.
fn expect_connection_method(f: Frame, what: &str) -> Result<cm::AMQPMethod, HandshakeEnd> {
    match f {
        Frame::Method(0, Method::Other(class)) => match *class {
            AMQPClass::Connection(m) => Ok(m),
            _ => {
                tracing::debug!("expected '{what}', closing");
                Err(HandshakeEnd::Silent)
            }
        },
        _ => Err(HandshakeEnd::Silent),
    }
}

impl Connection {
    /// Reads the next frame, skipping heartbeats during the handshake.
    async fn next_handshake_method(&mut self, what: &str) -> Result<cm::AMQPMethod, HandshakeEnd> {
        loop {
            let f = self.read_frame().await?;
            if matches!(f, Frame::Heartbeat(0)) {
                continue;
            }
            return expect_connection_method(f, what);
        }
    }

    pub(super) async fn handshake(&mut self) -> Result<(), HandshakeEnd> {
        // Protocol header.
        while self.inbuf.len() < 8 {
            self.read_more().await?;
        }
        let header = self.inbuf.split_to(8);
        if !header_supported(&header) {
            let _ = self.writer.write_all(PROTOCOL_HEADER).await;
            let _ = self.writer.flush().await;
            return Err(HandshakeEnd::WrongProtocol);
        }
        let cfg = self.broker.config.clone();
        self.out.method(
            0,
            AMQPClass::Connection(cm::AMQPMethod::Start(cm::Start {
                version_major: 0,
                version_minor: 9,
                server_properties: server_properties(&cfg),
                mechanisms: if self.peer_cn.is_some() {
                    "PLAIN AMQPLAIN EXTERNAL".into()
                } else {
                    "PLAIN AMQPLAIN".into()
                },
                locales: "en_US".into(),
            })),
        );
        self.flush().await?;

        // start-ok: authenticate.
        let start_ok = match self.next_handshake_method("connection.start-ok").await? {
            cm::AMQPMethod::StartOk(s) => s,
            _ => return Err(HandshakeEnd::Silent),
        };
        self.read_client_capabilities(&start_ok.client_properties);
        self.client_properties = serde_json::Value::Object(
            crate::store::definitions::table_to_json(&start_ok.client_properties),
        );
        let mechanism = start_ok.mechanism.as_str();
        let external = mechanism == "EXTERNAL" && self.peer_cn.is_some();
        if mechanism != "PLAIN" && mechanism != "AMQPLAIN" && !external {
            return Err(HandshakeEnd::Silent);
        }
        let (creds, user) = if external {
            // EXTERNAL: the verified client certificate's CN names the user; no password.
            let cn = self.peer_cn.clone().unwrap_or_default();
            let user = self.broker.user(&cn);
            (
                Some(sasl::Credentials {
                    username: cn,
                    password: String::new(),
                }),
                user,
            )
        } else {
            let creds = sasl::parse(mechanism, start_ok.response.as_bytes());
            let user = creds
                .as_ref()
                .and_then(|c| self.broker.authenticate(&c.username, &c.password));
            (creds, user)
        };
        // RabbitMQ's loopback_users: these may log in only from a loopback address; a
        // refusal looks like any other authentication failure to the client.
        let user = user.filter(|u| {
            let ok = !crate::auth::loopback_refused(&cfg.loopback_users, &u.name, self.peer.ip());
            if !ok {
                tracing::warn!(peer = %self.peer, user = %u.name, "user '{}' can only connect via localhost", u.name);
            }
            ok
        });
        let Some(user) = user else {
            let who = creds.map(|c| c.username).unwrap_or_default();
            tracing::warn!(peer = %self.peer, user = %who, mechanism, "authentication failed");
            if self.auth_failure_close {
                return Err(HandshakeEnd::Close(
                    AmqpError::access_refused(format_args!(
                        "Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."
                    ))
                    .hard(),
                ));
            }
            return Err(HandshakeEnd::Silent);
        };
        self.user = user.name.clone();

        // tune / tune-ok.
        let (server_frame_max, server_channel_max, server_heartbeat) =
            (cfg.frame_max, cfg.channel_max, cfg.heartbeat);
        self.out.method(
            0,
            AMQPClass::Connection(cm::AMQPMethod::Tune(cm::Tune {
                channel_max: server_channel_max,
                frame_max: server_frame_max,
                heartbeat: server_heartbeat,
            })),
        );
        self.flush().await?;
        let tune_ok = match self.next_handshake_method("connection.tune-ok").await? {
            cm::AMQPMethod::TuneOk(t) => t,
            _ => return Err(HandshakeEnd::Silent),
        };
        if tune_ok.frame_max != 0 && tune_ok.frame_max < FRAME_MIN_SIZE {
            return Err(HandshakeEnd::Silent);
        }
        if server_frame_max != 0 && tune_ok.frame_max > server_frame_max {
            return Err(HandshakeEnd::Silent);
        }
        if server_channel_max != 0 && tune_ok.channel_max > server_channel_max {
            return Err(HandshakeEnd::Silent);
        }
        self.frame_max = if tune_ok.frame_max == 0 {
            server_frame_max
        } else {
            tune_ok.frame_max
        };
        self.channel_max = if tune_ok.channel_max == 0 {
            server_channel_max
        } else {
            tune_ok.channel_max
        };
        self.heartbeat = tune_ok.heartbeat;
        self.decoder.frame_max = self.frame_max;

        // open.
        let open = match self.next_handshake_method("connection.open").await? {
            cm::AMQPMethod::Open(o) => o,
            _ => return Err(HandshakeEnd::Silent),
        };
        let vhost_name = open.virtual_host.as_str();
        let Some(vhost) = self.broker.vhost(vhost_name) else {
            return Err(HandshakeEnd::Close(
                AmqpError::not_allowed(format_args!("vhost {vhost_name} not found"))
                    .with_method(10, 40),
            ));
        };
        self.broker
            .auth
            .check_vhost(&self.user, vhost_name)
            .map_err(|e| HandshakeEnd::Close(e.with_method(10, 40)))?;
        self.broker
            .check_connection_limits(&self.user, vhost_name)
            .map_err(|e| HandshakeEnd::Close(e.with_method(10, 40)))?;
        self.vhost = Some(vhost);
        // Counted before open-ok goes out, so that a client that connects again as soon as
        // it is told this connection is open is checked against a limit that includes it.
        self.register();
        self.out.method(
            0,
            AMQPClass::Connection(cm::AMQPMethod::OpenOk(cm::OpenOk {})),
        );
        self.flush().await?;
        Ok(())
    }

    fn read_client_capabilities(&mut self, props: &FieldTable) {
        if let Some(AMQPValue::FieldTable(caps)) = props.inner().get("capabilities") {
            let flag = |k: &str| matches!(caps.inner().get(k), Some(AMQPValue::Boolean(true)));
            self.cancel_notify = flag("consumer_cancel_notify");
            self.auth_failure_close = flag("authentication_failure_close");
            self.blocked_notify = flag("connection.blocked");
        }
    }
}
