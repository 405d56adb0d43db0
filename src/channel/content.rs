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

/// Where the assembler is. The parts of the message in progress live beside it in
/// [`Assembler`], written in place: the publish path runs this three times per message, and
/// moving a whole enum of publish + header + body in and out on each step cost measurably.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Stage {
    #[default]
    Idle,
    AwaitHeader,
    AwaitBody,
}

#[derive(Debug, Default)]
pub struct Assembler {
    stage: Stage,
    /// Set from `AwaitHeader` until the message completes.
    publish: Option<Publish>,
    properties: Bytes,
    body_size: u64,
    body: Body,
}

/// Body fragments: one frame's `Bytes` kept as is; several are joined once.
#[derive(Debug, Default)]
pub enum Body {
    #[default]
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

fn header_expected() -> AmqpError {
    AmqpError::unexpected_frame(format_args!(
        "expected content header for class 60, got non content header frame instead"
    ))
    .with_method(60, 40)
}

fn body_expected() -> AmqpError {
    AmqpError::unexpected_frame(format_args!(
        "expected content body, got non content body frame instead"
    ))
    .with_method(60, 40)
}

impl Assembler {
    pub fn is_idle(&self) -> bool {
        self.stage == Stage::Idle
    }

    /// A method frame arrived. Only legal when idle (the caller handles it).
    pub fn check_method(&self) -> AmqpResult<()> {
        match self.stage {
            Stage::Idle => Ok(()),
            Stage::AwaitHeader => Err(header_expected()),
            Stage::AwaitBody => Err(body_expected()),
        }
    }

    /// basic.publish arrived: wait for its header.
    pub fn start(&mut self, publish: Publish) {
        self.publish = Some(publish);
        self.stage = Stage::AwaitHeader;
    }

    /// The completed message; the assembler is idle again.
    fn finish(&mut self) -> Option<Assembled> {
        self.stage = Stage::Idle;
        let publish = self.publish.take()?;
        Some(Assembled {
            publish,
            properties: std::mem::take(&mut self.properties),
            body: std::mem::take(&mut self.body).freeze(),
        })
    }

    /// A content header arrived. Returns the message when the body is empty.
    pub fn header(
        &mut self,
        header: ContentHeader,
        max_size: u64,
    ) -> AmqpResult<Option<Assembled>> {
        match self.stage {
            Stage::AwaitHeader => {}
            Stage::Idle => return Err(expected_method()),
            Stage::AwaitBody => return Err(body_expected()),
        }
        if header.class_id != 60 {
            self.reset();
            return Err(AmqpError::unexpected_frame(format_args!(
                "expected content header for class 60, got one for class {} instead",
                header.class_id
            ))
            .with_method(60, 40));
        }
        if header.body_size > max_size {
            self.reset();
            return Err(AmqpError::precondition_failed(format_args!(
                "message size {} is larger than configured max size {}",
                header.body_size, max_size
            ))
            .with_method(60, 40));
        }
        self.properties = header.properties;
        self.body_size = header.body_size;
        if header.body_size == 0 {
            return Ok(self.finish());
        }
        self.stage = Stage::AwaitBody;
        Ok(None)
    }

    /// Back to idle, dropping a message in progress (its channel is closing).
    fn reset(&mut self) {
        self.stage = Stage::Idle;
        self.publish = None;
        self.properties = Bytes::new();
        self.body = Body::Empty;
    }

    /// A body frame arrived. Returns the message when the body is complete.
    pub fn body(&mut self, frag: Bytes) -> AmqpResult<Option<Assembled>> {
        match self.stage {
            Stage::AwaitBody => {}
            Stage::Idle => return Err(expected_method()),
            Stage::AwaitHeader => return Err(header_expected()),
        }
        let total = self.body_size as usize;
        let have = self.body.len() + frag.len();
        if have > total {
            return Err(AmqpError::frame_error(format_args!(
                "received content body of {have} bytes but the header announced {total}"
            ))
            .with_method(60, 40));
        }
        if !frag.is_empty() {
            self.body.push(frag, total);
        }
        if have < total {
            return Ok(None);
        }
        Ok(self.finish())
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
