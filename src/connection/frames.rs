//! One frame from the client: channel 0 (connection.close / close-ok, heartbeats) or a
//! channel's method, header or body, with RabbitMQ's rules for a closing connection or
//! channel (frames other than close / close-ok are discarded until close-ok).

use super::*;

impl Connection {
    /// Handles one frame; `Ok(true)` when the connection is finished.
    pub(super) fn handle_frame(&mut self, frame: Frame) -> Result<bool, AmqpError> {
        if self.closing_since.is_some() {
            // Only close / close-ok on channel 0 matter now, as in RabbitMQ: close-ok ends
            // the connection; a (crossing) close is answered with close-ok and we go on
            // waiting for the client's close-ok or EOF. Everything else is discarded.
            if let Frame::Method(0, Method::Other(c)) = frame {
                match *c {
                    AMQPClass::Connection(conn::AMQPMethod::CloseOk(_)) => return Ok(true),
                    AMQPClass::Connection(conn::AMQPMethod::Close(_)) => {
                        self.out.method(
                            0,
                            AMQPClass::Connection(conn::AMQPMethod::CloseOk(conn::CloseOk {})),
                        );
                    }
                    _ => {}
                }
            }
            return Ok(false);
        }
        let channel = match &frame {
            Frame::Method(ch, _)
            | Frame::Header(ch, _)
            | Frame::Body(ch, _)
            | Frame::Heartbeat(ch) => *ch,
        };
        if channel == 0 {
            return self.handle_channel_zero(frame);
        }
        if let Frame::Heartbeat(_) = frame {
            return Err(AmqpError::unexpected_frame(format_args!(
                "type 8, all octets = <<>>"
            )));
        }
        let Some(vhost) = self.vhost.as_ref() else {
            return Ok(false);
        };
        let Some(ch) = self.channels.get_mut(&channel) else {
            // Only channel.open is legal on a channel that is not open.
            if let Frame::Method(_, Method::Other(c)) = &frame {
                if let AMQPClass::Channel(cm::AMQPMethod::Open(_)) = **c {
                    if self.channels.len() >= self.channel_max as usize {
                        return Err(AmqpError::not_allowed(format_args!(
                            "number of channels opened ({}) has reached the negotiated channel_max ({})",
                            self.channels.len(),
                            self.channel_max
                        ))
                        .with_method(20, 10));
                    }
                    self.broker
                        .check_channel_limit(&self.user)
                        .map_err(|e| e.with_method(20, 10))?;
                    let ch = Box::new(Channel::new(channel));
                    self.mgmt.channel_opened(&ch.shared);
                    self.channels.insert(channel, ch);
                    self.out.method(
                        channel,
                        AMQPClass::Channel(cm::AMQPMethod::OpenOk(cm::OpenOk {})),
                    );
                    return Ok(false);
                }
            }
            let err = AmqpError::channel_error(format_args!("expected 'channel.open'"));
            return Err(match &frame {
                Frame::Method(_, m) => err.with_method(m.ids().0, m.ids().1),
                _ => err,
            });
        };
        if ch.closing {
            // Waiting for close-ok: discard, but answer a crossing channel.close.
            if let Frame::Method(_, Method::Other(c)) = frame {
                match *c {
                    AMQPClass::Channel(cm::AMQPMethod::CloseOk(_)) => {
                        self.channels.remove(&channel);
                    }
                    AMQPClass::Channel(cm::AMQPMethod::Close(_)) => {
                        self.out.method(
                            channel,
                            AMQPClass::Channel(cm::AMQPMethod::CloseOk(cm::CloseOk {})),
                        );
                    }
                    _ => {}
                }
            }
            return Ok(false);
        }
        let mut cx = ConnCtx {
            out: &mut self.out,
            broker: broker_ctx(&self.broker),
            vhost,
            conn_id: self.id,
            user: &self.user,
            frame_max: self.frame_max,
            tx: &self.tx,
            cancel_notify: self.cancel_notify,
            stats: &self.mgmt,
            deferred: Some(&mut self.deferred),
            flow: Some(&mut self.overrun),
            pending: Some(&mut self.pending),
            barrier_passed: self.barrier_passed,
        };
        let result = match frame {
            Frame::Method(_, m) => {
                let ids = m.ids();
                match m {
                    Method::Other(c)
                        if matches!(*c, AMQPClass::Channel(cm::AMQPMethod::Close(_))) =>
                    {
                        ch.release(vhost);
                        cx.out.method(
                            channel,
                            AMQPClass::Channel(cm::AMQPMethod::CloseOk(cm::CloseOk {})),
                        );
                        self.channels.remove(&channel);
                        return Ok(false);
                    }
                    Method::Other(c)
                        if matches!(*c, AMQPClass::Channel(cm::AMQPMethod::CloseOk(_))) =>
                    {
                        // Not closing: a stray close-ok is ignored, as RabbitMQ does.
                        return Ok(false);
                    }
                    m => {
                        let r = ch
                            .handle_method(m, &mut cx)
                            .map_err(|e| e.with_method(ids.0, ids.1));
                        self.awaiting_sync |= ch.awaits_sync();
                        if ids == (60, 40) || ids == (85, 10) {
                            // publish completes later; confirms are flushed per batch.
                        }
                        r
                    }
                }
            }
            Frame::Header(_, h) => {
                let r = ch.handle_header(h, &mut cx);
                if !self.confirm_dirty.contains(&channel) {
                    self.confirm_dirty.push(channel);
                }
                r
            }
            Frame::Body(_, b) => {
                let r = ch.handle_body(b, &mut cx);
                if !self.confirm_dirty.contains(&channel) {
                    self.confirm_dirty.push(channel);
                }
                r
            }
            Frame::Heartbeat(_) => Ok(()),
        };
        match result {
            Ok(()) => Ok(false),
            Err(e) if e.is_connection_level() => Err(e),
            Err(e) => {
                tracing::info!(conn = self.id, channel, code = e.code, text = %e.text, "closing channel");
                self.close_channel(channel, e);
                Ok(false)
            }
        }
    }

    fn handle_channel_zero(&mut self, frame: Frame) -> Result<bool, AmqpError> {
        match frame {
            Frame::Heartbeat(_) => Ok(false),
            Frame::Method(_, Method::Other(c)) => match *c {
                AMQPClass::Connection(conn::AMQPMethod::Close(_)) => {
                    self.accept_close();
                    Ok(false)
                }
                AMQPClass::Connection(conn::AMQPMethod::CloseOk(_)) => Ok(true),
                AMQPClass::Connection(conn::AMQPMethod::UpdateSecret(_)) => {
                    self.out.method(
                        0,
                        AMQPClass::Connection(conn::AMQPMethod::UpdateSecretOk(
                            conn::UpdateSecretOk {},
                        )),
                    );
                    Ok(false)
                }
                AMQPClass::Connection(
                    conn::AMQPMethod::Blocked(_) | conn::AMQPMethod::Unblocked(_),
                ) => Ok(false),
                other => Err(AmqpError::channel_error(format_args!(
                    "unexpected method in connection state running"
                ))
                .with_method(other.get_amqp_class_id(), other.get_amqp_method_id())),
            },
            Frame::Method(_, m) => {
                let (c, mid) = m.ids();
                Err(AmqpError::channel_error(format_args!(
                    "unexpected method in connection state running"
                ))
                .with_method(c, mid))
            }
            Frame::Header(_, h) => {
                let mut payload = Vec::with_capacity(12 + h.properties.len());
                payload.extend_from_slice(&h.class_id.to_be_bytes());
                payload.extend_from_slice(&h.weight.to_be_bytes());
                payload.extend_from_slice(&h.body_size.to_be_bytes());
                payload.extend_from_slice(&h.properties);
                Err(AmqpError::unexpected_frame(format_args!(
                    "{}",
                    describe_frame(2, &payload)
                )))
            }
            Frame::Body(_, b) => Err(AmqpError::unexpected_frame(format_args!(
                "{}",
                describe_frame(3, &b)
            ))),
        }
    }
}
