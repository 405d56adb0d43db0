//! Serde for the [`Bytes`] of a [`super::wire::WireMsg`] (`#[serde(with = ...)]`): written
//! with `serialize_bytes` (postcard: a length and the bytes, one copy; the same encoding
//! as a `Vec<u8>`'s element-by-element sequence, so older logs and snapshots still read),
//! read from bytes or, for self-describing formats, a sequence of numbers. Cloning a
//! command then shares its body instead of copying it (openraft clones every entry it
//! replicates and applies).

use bytes::Bytes;
use serde::de::{Error, SeqAccess, Visitor};
use serde::{Deserializer, Serializer};
use std::fmt;

pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(b)
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
    d.deserialize_byte_buf(BytesVisitor)
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("bytes")
    }

    fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Bytes, E> {
        Ok(Bytes::copy_from_slice(v))
    }

    fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes::from(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
        // A length hint from the input is not trusted for the allocation.
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
        while let Some(b) = seq.next_element::<u8>()? {
            v.push(b);
        }
        Ok(Bytes::from(v))
    }
}

/// Serde for a [`ShortStr`](crate::protocol::codec::ShortStr) as a string (the encoding
/// of the `String` it replaces: logs and snapshots of earlier versions read the same).
pub mod short_str {
    use crate::protocol::codec::ShortStr;
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;

    pub fn serialize<S: Serializer>(v: &ShortStr, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ShortStr, D::Error> {
        d.deserialize_str(StrVisitor)
    }

    struct StrVisitor;

    impl Visitor<'_> for StrVisitor {
        type Value = ShortStr;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string")
        }

        fn visit_str<E: Error>(self, v: &str) -> Result<ShortStr, E> {
            Ok(ShortStr::copy_from(v))
        }
    }
}

/// Serde for a borrowed byte slice the same way (a snapshot's [`super::wire`] `WireRef`).
pub mod slice {
    use serde::Serializer;

    pub fn serialize<S: Serializer>(b: &&[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct New {
        #[serde(with = "super")]
        b: Bytes,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Old {
        b: Vec<u8>,
    }

    /// The bytes encode as a `Vec<u8>` did (postcard), both ways, and JSON's number
    /// arrays still read; a truncated input is an error.
    #[test]
    fn bytes_encode_as_a_vec_did() {
        let body: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let new = New {
            b: Bytes::from(body.clone()),
        };
        let old = Old { b: body };
        let enc = postcard::to_allocvec(&new).unwrap();
        assert_eq!(enc, postcard::to_allocvec(&old).unwrap());
        assert_eq!(postcard::from_bytes::<New>(&enc).unwrap(), new);
        assert_eq!(postcard::from_bytes::<Old>(&enc).unwrap(), old);
        assert!(postcard::from_bytes::<New>(&enc[..500]).is_err());
        let json = serde_json::to_vec(&old).unwrap();
        assert_eq!(serde_json::from_slice::<New>(&json).unwrap(), new);
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct NewStr {
        #[serde(with = "super::short_str")]
        s: crate::protocol::codec::ShortStr,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct OldStr {
        s: String,
    }

    /// A short string encodes as the `String` it replaces did (postcard and JSON), both
    /// ways; a truncated input is an error.
    #[test]
    fn short_strings_encode_as_a_string_did() {
        let text = "routing.key-é";
        let new = NewStr {
            s: crate::protocol::codec::ShortStr::copy_from(text),
        };
        let old = OldStr { s: text.into() };
        let enc = postcard::to_allocvec(&new).unwrap();
        assert_eq!(enc, postcard::to_allocvec(&old).unwrap());
        assert_eq!(postcard::from_bytes::<NewStr>(&enc).unwrap(), new);
        assert_eq!(postcard::from_bytes::<OldStr>(&enc).unwrap(), old);
        assert!(postcard::from_bytes::<NewStr>(&enc[..4]).is_err());
        let json = serde_json::to_vec(&old).unwrap();
        assert_eq!(serde_json::to_vec(&new).unwrap(), json);
        assert_eq!(serde_json::from_slice::<NewStr>(&json).unwrap(), new);
    }
}
