//! The content assembler: basic.publish, then a content header, then body frames until the
//! announced size is reached. A pure state machine (RabbitMQ's rabbit_command_assembler).

use crate::error::{AmqpError, AmqpResult};
use crate::protocol::codec::{ContentHeader, Publish};
use bytes::{Bytes, BytesMut};

/// A publish whose content is complete.
#[derive(Debug)]
pub struct Assembled {
    pub publish: Publish,
    pub properties: Bytes,
    pub body: Bytes,
}

#[derive(Debug, Default)]
pub enum Assembler {
    #[default]
    Idle,
    AwaitHeader(Publish),
    AwaitBody {
        publish: Publish,
        header: ContentHeader,
        body: Body,
    },
}

/// Body fragments: one frame's `Bytes` kept as is; several are joined once.
#[derive(Debug)]
pub enum Body {
    Empty,
    One(Bytes),
    Many(BytesMut),
}

impl Body {
    fn len(&self) -> usize {
        match self {
            Body::Empty => 0,
            Body::One(b) => b.len(),
            Body::Many(b) => b.len(),
        }
    }

    fn push(&mut self, frag: Bytes, total: usize) {
        *self = match std::mem::replace(self, Body::Empty) {
            Body::Empty => Body::One(frag),
            Body::One(first) => {
                let mut m = BytesMut::with_capacity(total);
                m.extend_from_slice(&first);
                m.extend_from_slice(&frag);
                Body::Many(m)
            }
            Body::Many(mut m) => {
                m.extend_from_slice(&frag);
                Body::Many(m)
            }
        }
    }

    fn freeze(self) -> Bytes {
        match self {
            Body::Empty => Bytes::new(),
            Body::One(b) => b,
            Body::Many(m) => m.freeze(),
        }
    }
}

fn expected_method() -> AmqpError {
    AmqpError::unexpected_frame(format_args!(
        "expected method frame, got non method frame instead"
    ))
}

impl Assembler {
    pub fn is_idle(&self) -> bool {
        matches!(self, Assembler::Idle)
    }

    /// A method frame arrived. Only legal when idle (the caller handles it).
    pub fn check_method(&self) -> AmqpResult<()> {
        match self {
            Assembler::Idle => Ok(()),
            Assembler::AwaitHeader(_) => Err(AmqpError::unexpected_frame(format_args!(
                "expected content header for class 60, got non content header frame instead"
            ))
            .with_method(60, 40)),
            Assembler::AwaitBody { .. } => Err(AmqpError::unexpected_frame(format_args!(
                "expected content body, got non content body frame instead"
            ))
            .with_method(60, 40)),
        }
    }

    /// basic.publish arrived: wait for its header.
    pub fn start(&mut self, publish: Publish) {
        *self = Assembler::AwaitHeader(publish);
    }

    /// A content header arrived. Returns the message when the body is empty.
    pub fn header(
        &mut self,
        header: ContentHeader,
        max_size: u64,
    ) -> AmqpResult<Option<Assembled>> {
        let publish = match std::mem::take(self) {
            Assembler::AwaitHeader(p) => p,
            Assembler::Idle => return Err(expected_method()),
            other @ Assembler::AwaitBody { .. } => {
                *self = other;
                return Err(AmqpError::unexpected_frame(format_args!(
                    "expected content body, got non content body frame instead"
                ))
                .with_method(60, 40));
            }
        };
        if header.class_id != 60 {
            return Err(AmqpError::unexpected_frame(format_args!(
                "expected content header for class 60, got one for class {} instead",
                header.class_id
            ))
            .with_method(60, 40));
        }
        if header.body_size > max_size {
            return Err(AmqpError::precondition_failed(format_args!(
                "message size {} is larger than configured max size {}",
                header.body_size, max_size
            ))
            .with_method(60, 40));
        }
        if header.body_size == 0 {
            return Ok(Some(Assembled {
                publish,
                properties: header.properties,
                body: Bytes::new(),
            }));
        }
        *self = Assembler::AwaitBody {
            publish,
            header,
            body: Body::Empty,
        };
        Ok(None)
    }

    /// A body frame arrived. Returns the message when the body is complete.
    pub fn body(&mut self, frag: Bytes) -> AmqpResult<Option<Assembled>> {
        match self {
            Assembler::AwaitBody { header, body, .. } => {
                let total = header.body_size as usize;
                let have = body.len() + frag.len();
                if have > total {
                    return Err(AmqpError::frame_error(format_args!(
                        "received content body of {have} bytes but the header announced {total}"
                    ))
                    .with_method(60, 40));
                }
                if !frag.is_empty() {
                    body.push(frag, total);
                }
                if have < total {
                    return Ok(None);
                }
            }
            Assembler::Idle => return Err(expected_method()),
            Assembler::AwaitHeader(_) => {
                return Err(AmqpError::unexpected_frame(format_args!(
                    "expected content header for class 60, got non content header frame instead"
                ))
                .with_method(60, 40))
            }
        }
        match std::mem::take(self) {
            Assembler::AwaitBody {
                publish,
                header,
                body,
            } => Ok(Some(Assembled {
                publish,
                properties: header.properties,
                body: body.freeze(),
            })),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::codec::ShortStr;

    fn publish() -> Publish {
        Publish {
            exchange: ShortStr::from_static(""),
            routing_key: ShortStr::from_static("q"),
            mandatory: false,
            immediate: false,
        }
    }

    fn header(size: u64) -> ContentHeader {
        ContentHeader {
            class_id: 60,
            weight: 0,
            body_size: size,
            properties: Bytes::from_static(&[0, 0]),
        }
    }

    #[test]
    fn assembles_multi_frame_body() {
        let mut a = Assembler::default();
        a.start(publish());
        assert!(a.header(header(6), 100).unwrap().is_none());
        assert!(a.body(Bytes::from_static(b"abc")).unwrap().is_none());
        let m = a.body(Bytes::from_static(b"def")).unwrap().unwrap();
        assert_eq!(&m.body[..], b"abcdef");
        assert!(a.is_idle());
    }

    #[test]
    fn empty_body_completes_on_header() {
        let mut a = Assembler::default();
        a.start(publish());
        assert!(a.header(header(0), 100).unwrap().is_some());
    }

    #[test]
    fn out_of_order_frames_are_unexpected() {
        let mut a = Assembler::default();
        assert_eq!(a.body(Bytes::from_static(b"x")).unwrap_err().code, 505);
        assert_eq!(a.header(header(1), 100).unwrap_err().code, 505);
        a.start(publish());
        assert_eq!(a.check_method().unwrap_err().code, 505);
        assert_eq!(a.body(Bytes::from_static(b"x")).unwrap_err().code, 505);
    }

    #[test]
    fn oversized_and_overlong_bodies_refused() {
        let mut a = Assembler::default();
        a.start(publish());
        assert_eq!(a.header(header(101), 100).unwrap_err().code, 406);
        let mut a = Assembler::default();
        a.start(publish());
        a.header(header(2), 100).unwrap();
        assert_eq!(a.body(Bytes::from_static(b"abc")).unwrap_err().code, 501);
    }
}
