//! The cluster port's connections, plain TCP or TLS: every inter-node link — the metadata
//! group's and the queue groups' Raft RPCs ([`super::network::Peer`]), liveness probes,
//! forwarded writes, `join_cluster`, the forwarding links ([`super::forward`]) and stream
//! replication ([`super::stream_repl`]) — dials through [`Transport::connect`], and the
//! listener hands each accepted socket to [`Transport::accept`] before reading a byte.
//!
//! With `--cluster-tls-cert-file` / `--cluster-tls-key-file` every connection is TLS
//! (rustls, `ring`), with amqps's options (RabbitMQ's inter-node TLS, `ssl_dist_optfile`'s
//! `server` and `client` sections with the same files): with `--cluster-tls-verify-peer`
//! the dialling node checks the listening node's certificate against
//! `--cluster-tls-ca-file` and the host name of its address in `--cluster-nodes`, and the
//! listening node asks for the dialler's certificate and checks it against the same CA
//! (`--cluster-tls-fail-if-no-peer-cert` refuses a peer without one), so both directions
//! are authenticated. A peer that fails the handshake (plain TCP, a certificate from
//! another CA, none) is refused and logged (at most once per address, reason and
//! [`LOG_EVERY`]). Without those options nothing changes: plain TCP, no extra copy.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use crate::tls::TlsError;

/// How long an accepted socket has for its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A refusal with the same peer address and reason is logged again after this long.
pub const LOG_EVERY: Duration = Duration::from_secs(30);

/// The cluster port's TLS settings (`--cluster-tls-*`), the same set as amqps's.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsOptions {
    /// PEM certificate chain this node presents, as server and as client.
    pub cert_file: PathBuf,
    /// Its PEM private key.
    pub key_file: PathBuf,
    /// PEM CA bundle the peers' certificates must chain to.
    pub ca_file: Option<PathBuf>,
    /// Verify the peers' certificates (both directions) against `ca_file`.
    pub verify_peer: bool,
    /// Refuse a dialling peer that presents no certificate.
    pub fail_if_no_peer_cert: bool,
}

/// Dials and accepts cluster connections; cheap to clone (one per link holder).
#[derive(Clone, Default)]
pub struct Transport {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    tls: Option<Tls>,
    /// When each (peer, reason) refusal was last logged.
    logged: Mutex<HashMap<(String, String), Instant>>,
}

struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    connector: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("tls", &self.is_tls())
            .finish()
    }
}

/// Why the cluster's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("cluster TLS: {0}")]
pub struct TransportError(String);

impl From<TransportError> for io::Error {
    fn from(e: TransportError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
    }
}

fn config_err(e: TlsError) -> TransportError {
    TransportError(match e {
        TlsError::NoCaFile => {
            "--cluster-tls-verify-peer needs a CA file (--cluster-tls-ca-file)".into()
        }
        e => e.to_string(),
    })
}

impl Transport {
    /// Plain TCP.
    pub fn plain() -> Transport {
        Transport::default()
    }

    /// Plain TCP without options, TLS with them; an unreadable or inconsistent file is an
    /// error naming it.
    pub fn new(tls: Option<&TlsOptions>) -> Result<Transport, TransportError> {
        let Some(o) = tls else {
            return Ok(Transport::plain());
        };
        if o.fail_if_no_peer_cert && !o.verify_peer {
            return Err(TransportError(
                "--cluster-tls-fail-if-no-peer-cert needs --cluster-tls-verify-peer".into(),
            ));
        }
        let acceptor = crate::tls::acceptor(&crate::tls::TlsConfig {
            port: 0,
            cert_file: o.cert_file.clone(),
            key_file: o.key_file.clone(),
            ca_file: o.ca_file.clone(),
            verify_peer: o.verify_peer,
            fail_if_no_peer_cert: o.fail_if_no_peer_cert,
        })
        .map_err(config_err)?;
        let connector = connector(o).map_err(config_err)?;
        if o.verify_peer && !o.fail_if_no_peer_cert {
            tracing::warn!(
                "cluster TLS: peers without a certificate are accepted \
                 (add --cluster-tls-fail-if-no-peer-cert to refuse them)"
            );
        }
        Ok(Transport {
            inner: Arc::new(Inner {
                tls: Some(Tls {
                    acceptor,
                    connector,
                }),
                logged: Mutex::default(),
            }),
        })
    }

    pub fn is_tls(&self) -> bool {
        self.inner.tls.is_some()
    }

    /// Connects to `addr` (`host:port`) and completes the TLS handshake, all within
    /// `timeout`.
    pub async fn connect(&self, addr: &str, timeout: Duration) -> io::Result<Conn> {
        let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
        tokio::time::timeout(timeout, async {
            let sock = TcpStream::connect(addr).await?;
            let _ = sock.set_nodelay(true);
            let Some(tls) = &self.inner.tls else {
                return Ok(Conn::Tcp(sock));
            };
            let name = server_name(addr)?;
            match tls.connector.connect(name, sock).await {
                Ok(s) => Ok(Conn::Client(Box::new(s))),
                Err(e) => {
                    self.refused(addr, "cluster peer refused: TLS handshake failed", &e);
                    Err(e)
                }
            }
        })
        .await
        .unwrap_or_else(|_| Err(timed_out()))
    }

    /// The server side of an accepted socket: the TLS handshake (logged and `None` when
    /// the peer fails it).
    pub async fn accept(&self, sock: TcpStream) -> Option<Conn> {
        let _ = sock.set_nodelay(true);
        let Some(tls) = &self.inner.tls else {
            return Some(Conn::Tcp(sock));
        };
        let peer = sock
            .peer_addr()
            .map_or_else(|_| "?".to_string(), |a| a.ip().to_string());
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor.accept(sock)).await {
            Ok(Ok(s)) => Some(Conn::Server(Box::new(s))),
            Ok(Err(e)) => {
                self.refused(
                    &peer,
                    "cluster connection refused: TLS handshake failed",
                    &e,
                );
                None
            }
            Err(_) => {
                let e = io::Error::new(io::ErrorKind::TimedOut, "no TLS handshake in 5 s");
                self.refused(&peer, "cluster connection refused", &e);
                None
            }
        }
    }

    /// A plain cluster port was sent a TLS client hello (the peer has cluster TLS on).
    pub fn tls_on_plain_port(&self, peer: Option<std::net::SocketAddr>) {
        let peer = peer.map_or_else(|| "?".to_string(), |a| a.ip().to_string());
        let e = io::Error::other("the peer speaks TLS; is cluster TLS configured on this node?");
        self.refused(&peer, "cluster connection refused", &e);
    }

    /// Logs a refused connection, at most once per peer and reason every [`LOG_EVERY`].
    fn refused(&self, peer: &str, what: &str, e: &io::Error) {
        let reason = describe(e);
        let key = (peer.to_string(), reason.clone());
        {
            let mut logged = self.inner.logged.lock();
            let now = Instant::now();
            if logged
                .get(&key)
                .is_some_and(|t| now.duration_since(*t) < LOG_EVERY)
            {
                return;
            }
            if logged.len() > 1024 {
                logged.retain(|_, t| now.duration_since(*t) < LOG_EVERY);
            }
            logged.insert(key, now);
        }
        tracing::warn!(peer, reason = %reason, "{what}");
    }
}

/// A handshake error in words, with a hint for the usual mistakes.
fn describe(e: &io::Error) -> String {
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    match inner {
        Some(rustls::Error::InvalidMessage(_))
        | Some(rustls::Error::InappropriateMessage { .. }) => {
            format!("{e} (not TLS: is cluster TLS configured on the peer?)")
        }
        Some(rustls::Error::NoCertificatesPresented) => {
            format!("{e} (the peer presented no certificate)")
        }
        Some(rustls::Error::InvalidCertificate(_)) => {
            format!("{e} (is the peer's certificate signed by --cluster-tls-ca-file?)")
        }
        _ => e.to_string(),
    }
}

/// The host part of `host:port` (IPv6 in brackets) as a TLS server name.
fn server_name(addr: &str) -> io::Result<rustls::pki_types::ServerName<'static>> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{addr}: not a host name for TLS: {e}"),
        )
    })
}

fn connector(o: &TlsOptions) -> Result<tokio_rustls::TlsConnector, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = crate::tls::certs(&o.cert_file)?;
    let key = crate::tls::private_key(&o.key_file)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = if o.verify_peer {
        let ca = o.ca_file.as_ref().ok_or(TlsError::NoCaFile)?;
        builder.with_root_certificates(crate::tls::roots(ca)?)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
    };
    let config = builder
        .with_client_auth_cert(chain, key)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Without `verify_peer`: the peer's certificate is not checked (Erlang's `verify_none`);
/// the handshake's signatures still are, so the session is encrypted.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One cluster connection: plain TCP, or TLS as the dialling or the accepting side.
#[derive(Debug)]
pub enum Conn {
    Tcp(TcpStream),
    Client(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Server(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// The read half of a split [`Conn`] (plain TCP without a lock).
#[derive(Debug)]
pub enum ReadHalf {
    Tcp(tokio::net::tcp::OwnedReadHalf),
    Tls(tokio::io::ReadHalf<Conn>),
}

/// The write half of a split [`Conn`].
#[derive(Debug)]
pub enum WriteHalf {
    Tcp(tokio::net::tcp::OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<Conn>),
}

impl Conn {
    /// Splits the stream for a reader and a writer task (or `select!` arms).
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Conn::Tcp(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
            }
            tls => {
                let (r, w) = tokio::io::split(tls);
                (ReadHalf::Tls(r), WriteHalf::Tls(w))
            }
        }
    }
}

macro_rules! delegate_io {
    (write $ty:ident { $($variant:ident),* }) => {
        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $($ty::$variant(s) => Pin::new(s).poll_write(cx, buf),)*
                }
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $($ty::$variant(s) => Pin::new(s).poll_write_vectored(cx, bufs),)*
                }
            }

            fn is_write_vectored(&self) -> bool {
                match self {
                    $($ty::$variant(s) => s.is_write_vectored(),)*
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $($ty::$variant(s) => Pin::new(s).poll_flush(cx),)*
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $($ty::$variant(s) => Pin::new(s).poll_shutdown(cx),)*
                }
            }
        }
    };
    ($ty:ident { $($variant:ident),* }) => {
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $($ty::$variant(s) => Pin::new(s).poll_read(cx, buf),)*
                }
            }
        }
    };
}

delegate_io!(Conn {
    Tcp,
    Client,
    Server
});
delegate_io!(write Conn { Tcp, Client, Server });
delegate_io!(ReadHalf { Tcp, Tls });
delegate_io!(write WriteHalf { Tcp, Tls });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_the_address_host() {
        assert!(matches!(
            server_name("127.0.0.1:25672").unwrap(),
            rustls::pki_types::ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]:25672").unwrap(),
            rustls::pki_types::ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("node-1.example:25672").unwrap(),
            rustls::pki_types::ServerName::DnsName(_)
        ));
        assert!(server_name("bad host:1").is_err());
    }

    #[test]
    fn missing_files_and_inconsistent_options_are_named() {
        let o = TlsOptions {
            cert_file: "/nonexistent/cert.pem".into(),
            key_file: "/nonexistent/key.pem".into(),
            ca_file: None,
            verify_peer: false,
            fail_if_no_peer_cert: false,
        };
        let e = Transport::new(Some(&o)).unwrap_err().to_string();
        assert!(e.starts_with("cluster TLS: /nonexistent/cert.pem"), "{e}");
        let o = TlsOptions {
            fail_if_no_peer_cert: true,
            ..o
        };
        let e = Transport::new(Some(&o)).unwrap_err().to_string();
        assert!(e.contains("needs --cluster-tls-verify-peer"), "{e}");
        assert!(!Transport::new(None).unwrap().is_tls());
    }
}
