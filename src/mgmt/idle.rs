//! Timeouts on the management listener's sockets, as RabbitMQ's web server (cowboy) has
//! them: a connection that sends nothing is closed after [`FIRST_BYTE`] (cowboy's
//! `request_timeout`, 5 s), one that stops sending — between keep-alive requests or in the
//! middle of one — after [`IDLE`] (cowboy's `idle_timeout`, 60 s), and one whose
//! response the client does not read after [`IDLE`] too. Without them a silent or slow
//! client held its socket (and file descriptor) for ever: enough of them exhaust the
//! process's descriptors, which the AMQP listener shares.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

pub const FIRST_BYTE: Duration = Duration::from_secs(5);
pub const IDLE: Duration = Duration::from_secs(60);

/// The management listener: accepted sockets come wrapped in [`IdleIo`].
#[derive(Debug)]
pub struct IdleListener(pub TcpListener);

impl axum::serve::Listener for IdleListener {
    type Io = IdleIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (IdleIo, SocketAddr) {
        loop {
            match self.0.accept().await {
                Ok((s, a)) => return (IdleIo::new(s), a),
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::error!(error = %e, "management accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// A socket whose reads fail once nothing arrived for the read deadline, and whose writes
/// fail once the peer took nothing for [`IDLE`].
#[derive(Debug)]
pub struct IdleIo {
    inner: TcpStream,
    read_deadline: Pin<Box<Sleep>>,
    write_deadline: Option<Pin<Box<Sleep>>>,
}

impl IdleIo {
    fn new(inner: TcpStream) -> IdleIo {
        IdleIo {
            inner,
            read_deadline: Box::pin(tokio::time::sleep(FIRST_BYTE)),
            write_deadline: None,
        }
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("management client {what}"))
}

impl AsyncRead for IdleIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.read_deadline.as_mut().reset(Instant::now() + IDLE);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match self.read_deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(timed_out("sent nothing"))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl IdleIo {
    /// After a write that made no progress: fails once the peer has taken nothing for
    /// [`IDLE`].
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let d = self
            .write_deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(IDLE)));
        match d.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(timed_out("read nothing"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for IdleIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.stalled(cx),
            other => {
                self.write_deadline = None;
                other
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.stalled(cx),
            other => {
                self.write_deadline = None;
                other
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
