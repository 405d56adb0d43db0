//! A minimal blocking HTTP/1.1 client for the management API: one request per
//! connection (`Connection: close`), basic auth, JSON bodies, chunked or sized responses.
//! Enough for `warren-ctl`; no TLS, no redirects.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Where the management API is and who we are.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `host:port`.
    pub authority: String,
    /// Path prefix before `/api` (usually empty).
    pub prefix: String,
    pub user: String,
    pub password: String,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("invalid URL '{0}': expected http://host:port[/prefix]")]
    BadUrl(String),
    #[error("cannot reach {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("I/O error talking to the management API: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed HTTP response: {0}")]
    Malformed(&'static str),
    #[error("{status} {reason}")]
    Status {
        status: u16,
        reason: String,
        body: String,
    },
}

/// A response: status and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Endpoint {
    /// Parses `http://host:port[/prefix]`.
    pub fn parse(url: &str, user: &str, password: &str) -> Result<Endpoint, HttpError> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| HttpError::BadUrl(url.to_string()))?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(HttpError::BadUrl(url.to_string()));
        }
        let authority = if authority.contains(':') {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(Endpoint {
            authority,
            prefix: prefix.to_string(),
            user: user.to_string(),
            password: password.to_string(),
        })
    }

    /// Sends one request; non-2xx statuses become [`HttpError::Status`] with the body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, HttpError> {
        let mut s = TcpStream::connect(&self.authority)
            .map_err(|e| HttpError::Connect(self.authority.clone(), e))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        s.set_write_timeout(Some(Duration::from_secs(60)))?;
        let auth = B64.encode(format!("{}:{}", self.user, self.password));
        let body = body.unwrap_or(b"");
        let head = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {auth}\r\n\
             Content-Type: application/json\r\nAccept: application/json, */*\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.prefix,
            self.authority,
            body.len()
        );
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let resp = parse_response(&raw)?;
        if !(200..300).contains(&resp.status) {
            let reason = String::from_utf8_lossy(&resp.body).into_owned();
            return Err(HttpError::Status {
                status: resp.status,
                reason: status_reason(resp.status).to_string(),
                body: reason,
            });
        }
        Ok(resp)
    }
}

fn status_reason(s: u16) -> &'static str {
    match s {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        500 => "Internal Server Error",
        _ => "error",
    }
}

/// Percent-encodes one path segment (vhost `/` becomes `%2F`).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Parses a complete HTTP/1.1 response (the server closed the connection after it).
pub fn parse_response(raw: &[u8]) -> Result<Response, HttpError> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(HttpError::Malformed("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| HttpError::Malformed("headers"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or(HttpError::Malformed("status line"))?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(HttpError::Malformed("status code"))?;
    let mut chunked = false;
    let mut length = None;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if k == "content-length" {
                length = v.parse::<usize>().ok();
            }
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else {
        match length {
            Some(n) if n <= rest.len() => rest[..n].to_vec(),
            Some(_) => return Err(HttpError::Malformed("body shorter than content-length")),
            None => rest.to_vec(),
        }
    };
    Ok(Response { status, body })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or(HttpError::Malformed("chunk size"))?;
        let size_text =
            std::str::from_utf8(&rest[..eol]).map_err(|_| HttpError::Malformed("chunk size"))?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| HttpError::Malformed("chunk size"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            return Err(HttpError::Malformed("truncated chunk"));
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"[]"[..]));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, b"abcde");
        assert!(parse_response(b"garbage").is_err());
        assert_eq!(segment("/"), "%2F");
        assert_eq!(segment("a b"), "a%20b");
        let e = Endpoint::parse("http://localhost:15672/", "u", "p").unwrap();
        assert_eq!(
            (e.authority.as_str(), e.prefix.as_str()),
            ("localhost:15672", "")
        );
        assert!(Endpoint::parse("https://x", "u", "p").is_err());
    }
}
