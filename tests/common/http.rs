//! A minimal HTTP/1.1 client for the management API tests (one request per connection).

#![allow(dead_code)]

use base64::Engine;
use serde_json::Value;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A management API client for one broker, as `guest` unless told otherwise.
#[derive(Debug, Clone)]
pub struct Api {
    pub addr: SocketAddr,
    pub auth: Option<(String, String)>,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Api {
        Api {
            addr,
            auth: Some(("guest".into(), "guest".into())),
        }
    }

    pub fn as_user(&self, user: &str, pass: &str) -> Api {
        Api {
            addr: self.addr,
            auth: Some((user.into(), pass.into())),
        }
    }

    pub fn anonymous(&self) -> Api {
        Api {
            addr: self.addr,
            auth: None,
        }
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request("GET", path, None, &[]).await
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let r = self.get(path).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        r.json()
    }

    pub async fn put(&self, path: &str, body: Value) -> Response {
        self.request("PUT", path, Some(body.to_string()), &[]).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.request("POST", path, Some(body.to_string()), &[])
            .await
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.request("DELETE", path, None, &[]).await
    }

    /// One request; fails the test if the server takes more than 30 s to answer.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> Response {
        let what = format!("{method} {path}");
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            self.request_inner(method, path, body, headers),
        )
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 30 s"))
    }

    async fn request_inner(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> Response {
        let mut s = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let body = body.unwrap_or_default();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        if let Some((u, p)) = &self.auth {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            req.push_str(&format!("Authorization: Basic {token}\r\n"));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(&body);
        s.write_all(req.as_bytes()).await.unwrap();
        // Read until the response is complete: some servers (chromedriver) keep the
        // connection open despite `Connection: close`.
        let mut raw = Vec::new();
        let mut buf = [0u8; 16384];
        loop {
            if complete(&raw) {
                break;
            }
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
        }
        parse(&raw)
    }
}

/// True once `raw` holds a whole response (by Content-Length or the last chunk).
fn complete(raw: &[u8]) -> bool {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let body = &raw[split + 4..];
    if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        return body.len() >= len;
    }
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with(b"0\r\n\r\n");
    }
    false
}

fn parse(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(p) = rest.windows(2).position(|w| w == b"\r\n") {
            let n =
                usize::from_str_radix(std::str::from_utf8(&rest[..p]).unwrap().trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[p + 2..p + 2 + n]);
            rest = &rest[p + 4 + n..];
        }
        body = out;
    }
    Response {
        status,
        headers,
        body,
    }
}

/// Polls `f` until it returns Some, failing after `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
