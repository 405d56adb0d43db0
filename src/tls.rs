//! TLS (amqps) with rustls and the `ring` provider: the server configuration from PEM
//! files, optional client-certificate verification, and the connection's stream halves.
//!
//! Plain TCP and TLS connections share one connection task type; its socket halves are
//! the enums [`ReadHalf`] / [`WriteHalf`], so the plain-TCP path stays a direct call into
//! tokio's TCP halves (one predictable branch, no boxing) and TLS goes through
//! `tokio_rustls`. The client certificate's subject common name is what the EXTERNAL
//! mechanism logs in as (RabbitMQ's `ssl_cert_login_from = common_name`).

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;

/// The amqps listener's settings (RabbitMQ's `listeners.ssl.default` and `ssl_options.*`).
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// amqps port (5671 by default; 0 picks a free one in tests).
    pub port: u16,
    /// PEM certificate chain presented to clients (`ssl_options.certfile`).
    pub cert_file: PathBuf,
    /// PEM private key (`ssl_options.keyfile`): PKCS#8, PKCS#1 or SEC1.
    pub key_file: PathBuf,
    /// PEM CA bundle that client certificates must chain to (`ssl_options.cacertfile`).
    pub ca_file: Option<PathBuf>,
    /// Ask clients for a certificate and verify it against `ca_file`
    /// (`ssl_options.verify = verify_peer`).
    pub verify_peer: bool,
    /// Refuse clients without a certificate (`ssl_options.fail_if_no_peer_cert`).
    pub fail_if_no_peer_cert: bool,
}

/// Why the TLS configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{0}: no certificate found")]
    NoCertificate(PathBuf),
    #[error("{0}: no private key found")]
    NoKey(PathBuf),
    #[error("verify_peer needs a CA file (--tls-ca-file)")]
    NoCaFile,
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

impl From<TlsError> for io::Error {
    fn from(e: TlsError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The certificates of a PEM file (at least one).
pub(crate) fn certs(
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub(crate) fn private_key(
    path: &Path,
) -> Result<rustls::pki_types::PrivateKeyDer<'static>, TlsError> {
    let key_pem = read(path)?;
    rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|source| TlsError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey(path.to_path_buf()))
}

/// The CA bundle of a PEM file as trust anchors.
pub(crate) fn roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(path)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::Rustls(format!("{}: {e}", path.display())))?;
    }
    Ok(roots)
}

/// Builds the acceptor: certificate and key from the files, and when `verify_peer` is set a
/// client verifier over `ca_file` (optional or mandatory client certificates).
pub fn acceptor(c: &TlsConfig) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs(&c.cert_file)?;
    let key = private_key(&c.key_file)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = if c.verify_peer {
        let ca = c.ca_file.as_ref().ok_or(TlsError::NoCaFile)?;
        let roots = roots(ca)?;
        let v =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let v = if c.fail_if_no_peer_cert {
            v
        } else {
            v.allow_unauthenticated()
        };
        builder.with_client_cert_verifier(v.build().map_err(|e| TlsError::Rustls(e.to_string()))?)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The read half of a connection's socket.
#[derive(Debug)]
pub enum ReadHalf {
    Tcp(OwnedReadHalf),
    Tls(tokio::io::ReadHalf<TlsStream<TcpStream>>),
}

/// The write half of a connection's socket.
#[derive(Debug)]
pub enum WriteHalf {
    Tcp(OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<TlsStream<TcpStream>>),
}

/// Splits a plain socket.
pub fn split_tcp(s: TcpStream) -> (ReadHalf, WriteHalf) {
    let (r, w) = s.into_split();
    (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
}

/// Splits a TLS stream; also returns the verified client certificate's common name.
pub fn split_tls(s: TlsStream<TcpStream>) -> (ReadHalf, WriteHalf, Option<String>) {
    let cn = s
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| subject_common_name(c.as_ref()));
    let (r, w) = tokio::io::split(s);
    (ReadHalf::Tls(r), WriteHalf::Tls(w), cn)
}

impl ReadHalf {
    /// Waits until a read would make progress, without a buffer: an idle connection holds
    /// no read buffer while it waits. TLS streams buffer internally and report ready at
    /// once (the read that follows then waits).
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            ReadHalf::Tcp(r) => r.readable().await,
            ReadHalf::Tls(_) => Ok(()),
        }
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Tcp(r) => Pin::new(r).poll_read(cx, buf),
            ReadHalf::Tls(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_write(cx, buf),
            WriteHalf::Tls(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_write_vectored(cx, bufs),
            WriteHalf::Tls(w) => Pin::new(w).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            WriteHalf::Tcp(w) => w.is_write_vectored(),
            WriteHalf::Tls(w) => w.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_flush(cx),
            WriteHalf::Tls(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_shutdown(cx),
            WriteHalf::Tls(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

// ---------- the subject common name, from the certificate's DER ----------

/// One DER element: (tag, contents, rest). `None` on malformed or unsupported input
/// (lengths over 4 bytes); certificates come from the network, so nothing here panics.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, b| (a << 8) | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The subject's CN of an X.509 certificate, or `None`.
pub fn subject_common_name(cert: &[u8]) -> Option<String> {
    const SEQ: u8 = 0x30;
    const CN_OID: &[u8] = &[0x55, 0x04, 0x03];
    let (SEQ, cert, _) = der(cert)? else {
        return None;
    };
    let (SEQ, tbs, _) = der(cert)? else {
        return None;
    };
    let mut rest = tbs;
    // [0] version (optional), serial, signature algorithm, issuer, validity, subject.
    let (tag, _, r) = der(rest)?;
    rest = if tag == 0xa0 { r } else { tbs };
    for _ in 0..4 {
        rest = der(rest)?.2;
    }
    let (SEQ, mut subject, _) = der(rest)? else {
        return None;
    };
    while !subject.is_empty() {
        let (_, set, next) = der(subject)?;
        subject = next;
        let mut attrs = set;
        while !attrs.is_empty() {
            let (_, attr, next) = der(attrs)?;
            attrs = next;
            let (0x06, oid, value) = der(attr)? else {
                continue;
            };
            if oid == CN_OID {
                let (_, v, _) = der(value)?;
                return String::from_utf8(v.to_vec()).ok();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_never_panics_on_garbage() {
        for input in [
            &b""[..],
            b"\x30",
            b"\x30\x85\x01",
            b"\x30\x84\xff\xff\xff\xff",
            b"\x30\x02\x30",
        ] {
            assert_eq!(subject_common_name(input), None);
        }
    }
}
