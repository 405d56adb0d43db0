//! The listener: accepts TCP connections and spawns one task per connection; on shutdown
//! stops accepting, lets every connection send 320 CONNECTION_FORCED, and waits for them.

use crate::broker::Broker;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// How long shutdown waits for connections to finish their close handshake.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Accepts on `listener`; with `tls`, each socket first completes a TLS handshake (under
/// the AMQP handshake timeout, so a client that stalls mid-TLS is dropped too).
pub async fn run(
    broker: Arc<Broker>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let mut shutdown = broker.shutdown_signal();
    let mut conns = JoinSet::new();
    // A shutdown requested before this task first ran is already the current value
    // (changed() would wait for the next one).
    while !*shutdown.borrow() {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => match &tls {
                    None => {
                        conns.spawn(crate::connection::serve(broker.clone(), socket, peer));
                    }
                    Some(acceptor) => {
                        conns.spawn(serve_tls(broker.clone(), acceptor.clone(), socket, peer));
                    }
                },
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            // wait_for sees a shutdown that began before this task first ran.
            _ = async { let _ = shutdown.wait_for(|down| *down).await; } => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.abort_all();
}

async fn serve_tls(
    broker: Arc<Broker>,
    acceptor: tokio_rustls::TlsAcceptor,
    socket: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
) {
    let _ = socket.set_nodelay(true);
    let timeout = broker.config.handshake_timeout;
    match tokio::time::timeout(timeout, acceptor.accept(socket)).await {
        Ok(Ok(stream)) => {
            let (r, w, cn) = crate::tls::split_tls(stream);
            crate::connection::serve_stream(broker, r, w, peer, cn).await;
        }
        Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
    }
}
