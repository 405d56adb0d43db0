//! A lazy view over raw content-header property bytes.
//!
//! Messages keep the property bytes exactly as the publisher sent them (so header tables
//! reach consumers byte-for-byte, key order and type letters included). The few fields the
//! broker itself needs are located by walking the flag word, without building a
//! `BasicProperties`; headers are parsed only when a headers exchange asks for them.

use amq_protocol::protocol::basic::{parse_properties, AMQPProperties};
use amq_protocol::types::FieldTable;

const CONTENT_TYPE: u16 = 1 << 15;
const CONTENT_ENCODING: u16 = 1 << 14;
const HEADERS: u16 = 1 << 13;
const DELIVERY_MODE: u16 = 1 << 12;
const PRIORITY: u16 = 1 << 11;
const CORRELATION_ID: u16 = 1 << 10;
const REPLY_TO: u16 = 1 << 9;
const EXPIRATION: u16 = 1 << 8;
const MESSAGE_ID: u16 = 1 << 7;
const TIMESTAMP: u16 = 1 << 6;
const TYPE: u16 = 1 << 5;
const USER_ID: u16 = 1 << 4;

/// The property fields the broker acts on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub delivery_mode: Option<u8>,
    pub priority: Option<u8>,
    pub expiration: Option<String>,
    pub reply_to: Option<String>,
    pub user_id: Option<String>,
    pub has_headers: bool,
}

/// Walks the property list once. `None` when the bytes are malformed.
pub fn summary(props: &[u8]) -> Option<Summary> {
    if props.len() < 2 {
        return None;
    }
    let flags = u16::from_be_bytes([props[0], props[1]]);
    let mut at = 2usize;
    let mut s = Summary::default();
    if flags & 1 != 0 {
        // Continuation flag words are not used by 0-9-1 basic; RabbitMQ refuses them too.
        return None;
    }
    let shortstr = |at: &mut usize| -> Option<std::ops::Range<usize>> {
        let len = *props.get(*at)? as usize;
        let r = *at + 1..*at + 1 + len;
        if r.end > props.len() {
            return None;
        }
        *at = r.end;
        Some(r)
    };
    if flags & CONTENT_TYPE != 0 {
        shortstr(&mut at)?;
    }
    if flags & CONTENT_ENCODING != 0 {
        shortstr(&mut at)?;
    }
    if flags & HEADERS != 0 {
        let len = u32::from_be_bytes(props.get(at..at + 4)?.try_into().ok()?) as usize;
        at += 4 + len;
        if at > props.len() {
            return None;
        }
        s.has_headers = true;
    }
    if flags & DELIVERY_MODE != 0 {
        s.delivery_mode = Some(*props.get(at)?);
        at += 1;
    }
    if flags & PRIORITY != 0 {
        s.priority = Some(*props.get(at)?);
        at += 1;
    }
    if flags & CORRELATION_ID != 0 {
        shortstr(&mut at)?;
    }
    if flags & REPLY_TO != 0 {
        let r = shortstr(&mut at)?;
        s.reply_to = Some(String::from_utf8_lossy(&props[r]).into_owned());
    }
    if flags & EXPIRATION != 0 {
        let r = shortstr(&mut at)?;
        s.expiration = Some(String::from_utf8_lossy(&props[r]).into_owned());
    }
    if flags & MESSAGE_ID != 0 {
        shortstr(&mut at)?;
    }
    if flags & TIMESTAMP != 0 {
        at += 8;
        if at > props.len() {
            return None;
        }
    }
    if flags & TYPE != 0 {
        shortstr(&mut at)?;
    }
    if flags & USER_ID != 0 {
        let r = shortstr(&mut at)?;
        s.user_id = Some(String::from_utf8_lossy(&props[r]).into_owned());
    }
    Some(s)
}

/// The same properties with a header `key` of type long (`l`, value 0) appended to the
/// headers table (created when absent), and the position of its 8 value bytes, for the
/// caller to fill in. Byte-level, so the other headers keep their order and type letters.
/// `None` when the bytes are malformed or the table may already hold `key` (the caller
/// then re-encodes).
pub fn with_long_header(props: &[u8], key: &str) -> Option<(bytes::Bytes, usize)> {
    if props.len() < 2 || key.len() > 255 {
        return None;
    }
    let flags = u16::from_be_bytes([props[0], props[1]]);
    if flags & 1 != 0 {
        return None;
    }
    let mut at = 2usize;
    for f in [CONTENT_TYPE, CONTENT_ENCODING] {
        if flags & f != 0 {
            at += 1 + *props.get(at)? as usize;
            if at > props.len() {
                return None;
            }
        }
    }
    let mut entry = Vec::with_capacity(key.len() + 10);
    entry.push(key.len() as u8);
    entry.extend_from_slice(key.as_bytes());
    entry.push(b'l');
    let value_in_entry = entry.len();
    entry.extend_from_slice(&[0u8; 8]);
    let mut out = Vec::with_capacity(props.len() + entry.len() + 4);
    let value_at;
    if flags & HEADERS != 0 {
        let len = u32::from_be_bytes(props.get(at..at + 4)?.try_into().ok()?) as usize;
        let end = at.checked_add(4 + len)?;
        let table = props.get(at + 4..end)?;
        if table.windows(key.len()).any(|w| w == key.as_bytes()) {
            return None;
        }
        out.extend_from_slice(&props[..at]);
        out.extend_from_slice(&u32::try_from(len + entry.len()).ok()?.to_be_bytes());
        out.extend_from_slice(table);
        value_at = out.len() + value_in_entry;
        out.extend_from_slice(&entry);
        out.extend_from_slice(&props[end..]);
    } else {
        out.extend_from_slice(&(flags | HEADERS).to_be_bytes());
        out.extend_from_slice(&props[2..at]);
        out.extend_from_slice(&(entry.len() as u32).to_be_bytes());
        value_at = out.len() + value_in_entry;
        out.extend_from_slice(&entry);
        out.extend_from_slice(&props[at..]);
    }
    Some((out.into(), value_at))
}

/// Decodes, changes and re-encodes properties (off the hot path: direct reply-to, BCC).
fn reencode(
    props: &[u8],
    change: impl FnOnce(AMQPProperties) -> AMQPProperties,
) -> Option<bytes::Bytes> {
    let p = change(decode(props)?);
    let (v, _) = cookie_factory::gen(
        amq_protocol::protocol::basic::gen_properties(&p),
        Vec::new(),
    )
    .ok()?;
    Some(bytes::Bytes::from(v))
}

/// The same properties with another reply-to (direct reply-to rewrites it).
pub fn with_reply_to(props: &[u8], reply_to: &str) -> Option<bytes::Bytes> {
    reencode(props, |p| p.with_reply_to(reply_to.into()))
}

/// The same properties with another headers table.
pub fn with_headers(props: &[u8], headers: FieldTable) -> Option<bytes::Bytes> {
    reencode(props, |p| p.with_headers(headers))
}

/// The same properties with one header set (added to the table, or a new table).
pub fn with_header(
    props: &[u8],
    key: &str,
    value: amq_protocol::types::AMQPValue,
) -> Option<bytes::Bytes> {
    reencode(props, |p| {
        let mut h = p.headers().clone().unwrap_or_default();
        h.insert(key.into(), value);
        p.with_headers(h)
    })
}

/// The routing keys in a `CC` or `BCC` header (an array of strings).
pub fn routing_key_list(headers: &FieldTable, key: &str) -> Vec<String> {
    use amq_protocol::types::AMQPValue;
    match headers.inner().get(key) {
        Some(AMQPValue::FieldArray(a)) => a
            .as_slice()
            .iter()
            .filter_map(|v| match v {
                AMQPValue::LongString(s) => {
                    Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
                }
                AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Fully decodes the properties (used off the hot path).
pub fn decode(props: &[u8]) -> Option<AMQPProperties> {
    parse_properties(props).ok().map(|(_, p)| p)
}

/// The headers table, if any.
pub fn headers(props: &[u8]) -> Option<FieldTable> {
    decode(props).and_then(|p| p.headers().clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::basic::gen_properties;
    use amq_protocol::types::AMQPValue;

    fn encode(p: &AMQPProperties) -> Vec<u8> {
        cookie_factory::gen(gen_properties(p), Vec::new())
            .expect("gen")
            .0
    }

    #[test]
    fn summary_finds_fields_after_headers() {
        let mut h = FieldTable::default();
        h.insert("k".into(), AMQPValue::LongString("v".into()));
        let p = AMQPProperties::default()
            .with_content_type("text/plain".into())
            .with_headers(h)
            .with_delivery_mode(2)
            .with_priority(7)
            .with_expiration("1000".into())
            .with_timestamp(5)
            .with_user_id("guest".into());
        let s = summary(&encode(&p)).unwrap();
        assert_eq!(s.delivery_mode, Some(2));
        assert_eq!(s.priority, Some(7));
        assert_eq!(s.expiration.as_deref(), Some("1000"));
        assert_eq!(s.user_id.as_deref(), Some("guest"));
        assert!(s.has_headers);
        assert!(headers(&encode(&p)).unwrap().contains_key("k"));
    }

    #[test]
    fn long_header_appended_in_place() {
        use amq_protocol::types::AMQPValue;
        let mut h = FieldTable::default();
        h.insert("b".into(), AMQPValue::LongString("x".into()));
        let cases = [
            AMQPProperties::default(),
            AMQPProperties::default()
                .with_content_type("text/plain".into())
                .with_delivery_mode(2)
                .with_user_id("guest".into()),
            AMQPProperties::default()
                .with_content_encoding("gzip".into())
                .with_headers(h)
                .with_priority(3),
        ];
        for p in cases {
            let raw = encode(&p);
            let (mut out, at) = with_long_header(&raw, "x-stream-offset").unwrap();
            let mut v = out.to_vec();
            v[at..at + 8].copy_from_slice(&42i64.to_be_bytes());
            out = v.into();
            let d = decode(&out).unwrap();
            let hd = d.headers().clone().unwrap();
            assert_eq!(
                hd.inner().get("x-stream-offset"),
                Some(&AMQPValue::LongLongInt(42))
            );
            assert_eq!(d.delivery_mode(), p.delivery_mode());
            assert_eq!(d.priority(), p.priority());
            assert_eq!(d.user_id(), p.user_id());
            assert_eq!(d.content_type(), p.content_type());
            assert_eq!(d.content_encoding(), p.content_encoding());
            if let Some(orig) = p.headers() {
                assert_eq!(hd.inner().len(), orig.inner().len() + 1);
            }
            // Already there: the caller re-encodes instead.
            assert!(with_long_header(&out, "x-stream-offset").is_none());
        }
        assert!(
            with_long_header(&[0x20, 0], "k").is_none(),
            "truncated headers"
        );
    }

    #[test]
    fn summary_rejects_truncated() {
        let p = AMQPProperties::default().with_user_id("guest".into());
        let v = encode(&p);
        assert!(summary(&v[..v.len() - 1]).is_none());
        assert_eq!(summary(&[0, 0]), Some(Summary::default()));
    }
}
