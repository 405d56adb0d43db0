//! SASL responses of connection.start-ok: PLAIN and AMQPLAIN.

use amq_protocol::types::{parsing::parse_field_table, AMQPValue};

/// Username and password extracted from a start-ok response.
#[derive(Debug, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// Parses the response for `mechanism`; `None` when it is malformed.
pub fn parse(mechanism: &str, response: &[u8]) -> Option<Credentials> {
    match mechanism {
        "PLAIN" => parse_plain(response),
        "AMQPLAIN" => parse_amqplain(response),
        _ => None,
    }
}

/// PLAIN: `[authzid] \0 authcid \0 passwd` (RFC 4616).
fn parse_plain(r: &[u8]) -> Option<Credentials> {
    let mut parts = r.split(|b| *b == 0);
    let _authzid = parts.next()?;
    let user = parts.next()?;
    let pass = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    Some(Credentials {
        username: String::from_utf8(user.to_vec()).ok()?,
        password: String::from_utf8(pass.to_vec()).ok()?,
    })
}

/// AMQPLAIN: a field table *without* its 4-byte length prefix, holding LOGIN and PASSWORD.
fn parse_amqplain(r: &[u8]) -> Option<Credentials> {
    let mut framed = Vec::with_capacity(r.len() + 4);
    framed.extend_from_slice(&(r.len() as u32).to_be_bytes());
    framed.extend_from_slice(r);
    let (_, table) = parse_field_table(&framed[..]).ok()?;
    let get = |k: &str| -> Option<String> {
        match table.inner().get(k)? {
            AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).ok(),
            AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
            _ => None,
        }
    };
    Some(Credentials {
        username: get("LOGIN")?,
        password: get("PASSWORD")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain() {
        assert_eq!(
            parse("PLAIN", b"\0guest\0secret"),
            Some(Credentials {
                username: "guest".into(),
                password: "secret".into()
            })
        );
        assert_eq!(parse("PLAIN", b"guest"), None);
    }

    #[test]
    fn amqplain() {
        let mut r = Vec::new();
        r.push(5);
        r.extend_from_slice(b"LOGIN");
        r.push(b'S');
        r.extend_from_slice(&5u32.to_be_bytes());
        r.extend_from_slice(b"guest");
        r.push(8);
        r.extend_from_slice(b"PASSWORD");
        r.push(b'S');
        r.extend_from_slice(&3u32.to_be_bytes());
        r.extend_from_slice(b"pwd");
        assert_eq!(
            parse("AMQPLAIN", &r),
            Some(Credentials {
                username: "guest".into(),
                password: "pwd".into()
            })
        );
        assert_eq!(parse("AMQPLAIN", b"\x05LOG"), None);
    }
}
