//! The inter-node transport on `--cluster-port`: TCP, each message a length-prefixed
//! frame (`[len u32 big-endian][JSON]`), one request and its response at a time per
//! connection. Raft's RPCs (append-entries, vote, install-snapshot) travel over it, and so
//! do the cluster's own requests (a write forwarded to the leader, a read barrier, a
//! membership change, a liveness probe). Every connection is dialled and accepted through
//! [`Transport`] (plain TCP, or TLS with `--cluster-tls-*`).
//!
//! Quorum queue groups share the port: their frames are binary (`[len][0x00][postcard]`,
//! a [`super::qgroup::QRequest`] naming its group), told from JSON by the first byte.

use super::handle::{BoxFut, MetaCmd};
use super::transport::{Conn, Transport};
use super::{Member, Nid, TypeConfig};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Largest frame read from a peer.
pub const MAX_FRAME: usize = 64 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Our own bound on an append-entries RPC. openraft 0.9 also wraps each one in a timeout
/// of the heartbeat interval and drops the call when it fires (whichever comes first
/// wins), which is why [`Peer::call_raw`] must be cancel-safe.
const APPEND_MIN_TIMEOUT: Duration = Duration::from_millis(400);
/// After an unreachable peer, retry this soon (openraft's default is 500 ms).
const BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<Nid>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// A metadata write forwarded to the leader.
    Write(MetaCmd),
    /// The leader's committed index, confirmed by a quorum (a read barrier).
    ReadIndex,
    /// Add this node to the membership (sent to any member; forwarded to the leader).
    Join(Member),
    /// Remove the named node from the membership.
    Forget(String),
    Ping,
    /// The named node opens its forwarding link (`cluster::forward`): the rest of this
    /// connection carries forwarding frames, not requests.
    Forward(String),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    Append(Result<AppendEntriesResponse<Nid>, RaftError<Nid>>),
    Vote(Result<VoteResponse<Nid>, RaftError<Nid>>),
    Snapshot(Result<InstallSnapshotResponse<Nid>, RaftError<Nid, InstallSnapshotError>>),
    /// The log index the write was committed at, or why not.
    Index(Result<u64, String>),
    Done(Result<(), String>),
    Pong(String),
}

/// First byte of a binary (queue group) frame; JSON never starts with it.
const BINARY: u8 = 0;
/// First byte of a TLS handshake record (a client hello), never of a frame's length
/// (it would be past [`MAX_FRAME`]).
const TLS_HANDSHAKE: u8 = 0x16;

/// Writes one frame.
pub async fn write_frame<W: AsyncWriteExt + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> io::Result<()> {
    let bytes = serde_json::to_vec(msg).map_err(io::Error::other)?;
    write_raw(w, &bytes).await
}

/// Encodes a binary frame's payload, into a buffer sized beforehand (an append of a
/// batch of publishes, a MiB, was copied again at each doubling of a growing buffer).
pub fn binary<T: Serialize>(msg: &T) -> io::Result<Vec<u8>> {
    let size = postcard::experimental::serialized_size(msg).map_err(io::Error::other)?;
    let mut out = Vec::with_capacity(1 + size);
    out.push(BINARY);
    postcard::to_io(msg, &mut out).map_err(io::Error::other)?;
    Ok(out)
}

/// Decodes a binary frame's payload.
pub fn from_binary<T: for<'de> Deserialize<'de>>(payload: &[u8]) -> io::Result<T> {
    match payload.split_first() {
        Some((&BINARY, rest)) => {
            postcard::from_bytes(rest).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a binary frame",
        )),
    }
}

/// Frames up to this size are copied behind their length and written at once.
const COPIED_FRAME: usize = 16 << 10;

async fn write_raw<W: AsyncWriteExt + Unpin>(w: &mut W, bytes: &[u8]) -> io::Result<()> {
    if bytes.len() > MAX_FRAME {
        return Err(io::Error::other("cluster frame too large"));
    }
    let len = (bytes.len() as u32).to_be_bytes();
    if bytes.len() <= COPIED_FRAME {
        // One write (one segment, one TLS record) for a small frame.
        let mut buf = Vec::with_capacity(4 + bytes.len());
        buf.extend_from_slice(&len);
        buf.extend_from_slice(bytes);
        w.write_all(&buf).await?;
    } else {
        // A large one is not copied behind its length first.
        w.write_all(&len).await?;
        w.write_all(bytes).await?;
    }
    // TLS may hold the last record until flushed (a no-op on plain TCP).
    w.flush().await
}

/// Reads one frame; a length past [`MAX_FRAME`] or undecodable JSON is an error, never a
/// panic or a huge allocation.
pub async fn read_frame<R: AsyncReadExt + Unpin, T: for<'de> Deserialize<'de>>(
    r: &mut R,
) -> io::Result<T> {
    let buf = read_raw(r, None).await?;
    serde_json::from_slice(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// One frame's payload; `len`: its length bytes, when they were read already.
async fn read_raw<R: AsyncReadExt + Unpin>(r: &mut R, len: Option<[u8; 4]>) -> io::Result<Vec<u8>> {
    let len = match len {
        Some(l) => l,
        None => {
            let mut l = [0u8; 4];
            r.read_exact(&mut l).await?;
            l
        }
    };
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "cluster frame too large",
        ));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

/// What serves requests arriving on the cluster port.
pub trait Serve: Send + Sync + 'static {
    fn serve(&self, req: Request) -> BoxFut<Response>;
    /// Takes over a connection that asked for [`Request::Forward`] (dropped by default).
    fn forward(&self, _from: String, _sock: Conn) {}
    /// A connection that opened with [`super::stream_repl::MAGIC`] (stream replication).
    fn link(&self, _sock: Conn) {}
    /// A queue group's request (a binary frame's payload); the response's payload.
    fn serve_binary(&self, payload: Vec<u8>) -> BoxFut<io::Result<Vec<u8>>>;
    /// A peer's request connection ended (closed, reset, or broken off): the peer may
    /// have died.
    fn closed(&self) {}
}

/// Takes a stream-replication connection.
pub type LinkServe = dyn Fn(Conn) + Send + Sync;

/// Accepts peers on `listener` until `stop` flips; one task per connection, which first
/// completes `transport`'s handshake.
pub async fn listen(
    listener: TcpListener,
    transport: Transport,
    serve: Arc<dyn Serve>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Ok((tcp, _)) = accepted else {
            continue;
        };
        let serve = serve.clone();
        let transport = transport.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let plain = !transport.is_tls();
            let peer = tcp.peer_addr().ok();
            let mut sock = tokio::select! {
                s = transport.accept(tcp) => match s {
                    Some(s) => s,
                    None => return,
                },
                _ = stop.wait_for(|s| *s) => return,
            };
            let mut len = [0u8; 4];
            tokio::select! {
                r = sock.read_exact(&mut len) => if r.is_err() { return },
                _ = stop.wait_for(|s| *s) => return,
            }
            if plain && len[0] == TLS_HANDSHAKE && len[1] == 3 {
                transport.tls_on_plain_port(peer);
                return;
            }
            if len == super::stream_repl::MAGIC {
                serve.link(sock);
                return;
            }
            let mut first = Some(len);
            loop {
                let payload = tokio::select! {
                    r = read_raw(&mut sock, first.take()) => match r {
                        Ok(r) => r,
                        Err(_) => return serve.closed(),
                    },
                    _ = stop.wait_for(|s| *s) => return,
                };
                let written = if payload.first() == Some(&BINARY) {
                    match serve.serve_binary(payload).await {
                        Ok(resp) => write_raw(&mut sock, &resp).await,
                        Err(_) => return,
                    }
                } else {
                    let Ok(req) = serde_json::from_slice::<Request>(&payload) else {
                        return;
                    };
                    if let Request::Forward(from) = req {
                        serve.forward(from, sock);
                        return;
                    }
                    let resp = serve.serve(req).await;
                    write_frame(&mut sock, &resp).await
                };
                if written.is_err() {
                    return;
                }
            }
        });
    }
}

/// A connection to one peer, opened on first use and again after an error.
#[derive(Debug)]
pub struct Peer {
    pub addr: String,
    transport: Transport,
    conn: tokio::sync::Mutex<Option<Conn>>,
}

impl Peer {
    pub fn new(addr: String, transport: &Transport) -> Peer {
        Peer {
            addr,
            transport: transport.clone(),
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// Sends `req` and waits up to `timeout` for the response. On any error the
    /// connection is dropped (a late response must not answer the next request).
    pub async fn call(&self, req: &Request, timeout: Duration) -> io::Result<Response> {
        let bytes = serde_json::to_vec(req).map_err(io::Error::other)?;
        let resp = self.call_raw(&bytes, timeout).await?;
        serde_json::from_slice(&resp).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Sends a frame's payload and returns the response's.
    ///
    /// Cancel-safe: the connection is taken out for the call and put back only after a
    /// whole round trip. openraft 0.9 wraps every append-entries in its own timeout (the
    /// heartbeat interval) and drops this future when it fires; a connection left with a
    /// request written and its response unread (or half a frame written) would answer
    /// the next request with the previous one's response, or hang.
    pub async fn call_raw(&self, req: &[u8], timeout: Duration) -> io::Result<Vec<u8>> {
        let mut conn = self.conn.lock().await;
        let mut stream = conn.take();
        let r = tokio::time::timeout(timeout, async {
            if stream.is_none() {
                stream = Some(self.transport.connect(&self.addr, CONNECT_TIMEOUT).await?);
            }
            let s = stream
                .as_mut()
                .ok_or_else(|| io::Error::other("no connection"))?;
            write_raw(s, req).await?;
            read_raw(s, None).await
        })
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "peer timed out")));
        if r.is_ok() {
            *conn = stream;
        }
        r
    }
}

/// openraft's network factory: one [`Peer`] per target.
#[derive(Debug, Clone, Default)]
pub struct Network(pub Transport);

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, _target: Nid, node: &Member) -> PeerClient {
        PeerClient {
            peer: Peer::new(node.addr.clone(), &self.0),
        }
    }
}

pub struct PeerClient {
    peer: Peer,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<Nid, Member, RaftError<Nid, E>>;

fn unreachable<E: std::error::Error>(e: io::Error) -> RPCError<Nid, Member, E> {
    if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::ConnectionRefused {
        RPCError::Unreachable(Unreachable::new(&e))
    } else {
        RPCError::Network(NetworkError::new(&e))
    }
}

fn unexpected<E: std::error::Error>() -> RPCError<Nid, Member, E> {
    RPCError::Network(NetworkError::new(&io::Error::other("unexpected response")))
}

impl RaftNetwork<TypeConfig> for PeerClient {
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(BACKOFF))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<Nid>, RpcErr> {
        match self
            .peer
            .call(
                &Request::Append(rpc),
                option.hard_ttl().max(APPEND_MIN_TIMEOUT),
            )
            .await
            .map_err(unreachable)?
        {
            Response::Append(r) => {
                r.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(0, e)))
            }
            _ => Err(unexpected()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<Nid>, RpcErr<InstallSnapshotError>> {
        match self
            .peer
            .call(&Request::Snapshot(rpc), option.hard_ttl())
            .await
            .map_err(unreachable)?
        {
            Response::Snapshot(r) => {
                r.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(0, e)))
            }
            _ => Err(unexpected()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<Nid>,
        option: RPCOption,
    ) -> Result<VoteResponse<Nid>, RpcErr> {
        match self
            .peer
            .call(&Request::Vote(rpc), option.hard_ttl())
            .await
            .map_err(unreachable)?
        {
            Response::Vote(r) => {
                r.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(0, e)))
            }
            _ => Err(unexpected()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call dropped while it waits for its response (openraft's own timeout around an
    /// append) must not leave the connection behind: the next call gets its own
    /// response, not the dropped one's.
    #[tokio::test]
    async fn a_dropped_call_does_not_answer_the_next_one() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (got_first, first_arrived) = tokio::sync::oneshot::channel();
        let (release_tx, release) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            // Echo server, one connection at a time; the first request is answered only
            // once the test says so (after the caller gave up on it).
            let mut got_first = Some(got_first);
            let mut release = Some(release);
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                while let Ok(req) = read_raw(&mut s, None).await {
                    if let Some(tx) = got_first.take() {
                        let _ = tx.send(());
                        if let Some(r) = release.take() {
                            let _ = r.await;
                        }
                    }
                    if write_raw(&mut s, &req).await.is_err() {
                        break;
                    }
                }
            }
        });
        let peer = Peer::new(addr, &super::super::transport::Transport::plain());
        tokio::select! {
            r = peer.call_raw(b"first", Duration::from_secs(30)) => panic!("answered: {r:?}"),
            _ = first_arrived => {}
        }
        let _ = release_tx.send(());
        let r = peer
            .call_raw(b"second", Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(r, b"second");
    }

    /// A large frame (its length written, then its bytes, not copied) reads back whole,
    /// between two small ones (copied behind their length).
    #[tokio::test]
    async fn large_frames_round_trip_between_small_ones() {
        let (mut a, mut b) = tokio::io::duplex(1 << 12);
        let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let sent = big.clone();
        let w = tokio::spawn(async move {
            write_raw(&mut a, b"one").await.unwrap();
            write_raw(&mut a, &sent).await.unwrap();
            write_raw(&mut a, b"two").await.unwrap();
        });
        assert_eq!(read_raw(&mut b, None).await.unwrap(), b"one");
        assert_eq!(read_raw(&mut b, None).await.unwrap(), big);
        assert_eq!(read_raw(&mut b, None).await.unwrap(), b"two");
        w.await.unwrap();
    }

    #[tokio::test]
    async fn frames_round_trip_and_oversized_frames_are_refused() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write_frame(&mut a, &Request::Ping).await.unwrap();
        let r: Request = read_frame(&mut b).await.unwrap();
        assert!(matches!(r, Request::Ping));
        a.write_all(&(u32::MAX).to_be_bytes()).await.unwrap();
        let e = read_frame::<_, Request>(&mut b).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&3u32.to_be_bytes()).await.unwrap();
        a.write_all(b"{{{").await.unwrap();
        assert!(read_frame::<_, Request>(&mut b).await.is_err());
    }
}
