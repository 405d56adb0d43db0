//! A queue group's Raft RPCs over the cluster port: binary frames naming the group.

use super::{QRequest, QResponse, QTypeConfig};
use crate::cluster::network::{self, Peer};
use crate::cluster::{Member, Nid};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use std::io;
use std::time::Duration;

/// A binary request to a peer.
pub async fn call(peer: &Peer, req: &QRequest, timeout: Duration) -> io::Result<QResponse> {
    let bytes = network::binary(req)?;
    let resp = peer.call_raw(&bytes, timeout).await?;
    network::from_binary(&resp)
}

/// openraft's network factory for one group: a connection per target.
#[derive(Debug, Clone)]
pub struct QNetwork {
    pub(super) gid: u64,
    pub(super) transport: crate::cluster::transport::Transport,
}

impl RaftNetworkFactory<QTypeConfig> for QNetwork {
    type Network = QPeerClient;

    async fn new_client(&mut self, _target: Nid, node: &Member) -> QPeerClient {
        QPeerClient {
            gid: self.gid,
            peer: Peer::new(node.addr.clone(), &self.transport),
        }
    }
}

pub struct QPeerClient {
    gid: u64,
    peer: Peer,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<Nid, Member, RaftError<Nid, E>>;

fn net_err<E: std::error::Error>(e: impl std::fmt::Display) -> RPCError<Nid, Member, E> {
    RPCError::Network(NetworkError::new(&io::Error::other(e.to_string())))
}

impl RaftNetwork<QTypeConfig> for QPeerClient {
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(100)))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<QTypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<Nid>, RpcErr> {
        let timeout = option.hard_ttl().max(Duration::from_millis(400));
        let req = QRequest::AppendAt(self.gid, crate::store::log::now_ms(), rpc);
        match call(&self.peer, &req, timeout).await {
            Ok(QResponse::Append(Ok(r))) => Ok(r),
            Ok(QResponse::Append(Err(e))) => Err(net_err(e)),
            Ok(_) => Err(RPCError::Unreachable(Unreachable::new(&io::Error::other(
                "no such queue group there",
            )))),
            Err(e) => Err(RPCError::Unreachable(Unreachable::new(&e))),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<QTypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<Nid>, RpcErr<InstallSnapshotError>> {
        let timeout = option.hard_ttl().max(Duration::from_millis(400));
        match call(&self.peer, &QRequest::Snapshot(self.gid, rpc), timeout).await {
            Ok(QResponse::Snapshot(Ok(r))) => Ok(r),
            Ok(QResponse::Snapshot(Err(e))) => Err(net_err(e)),
            Ok(_) => Err(RPCError::Unreachable(Unreachable::new(&io::Error::other(
                "no such queue group there",
            )))),
            Err(e) => Err(RPCError::Unreachable(Unreachable::new(&e))),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<Nid>,
        option: RPCOption,
    ) -> Result<VoteResponse<Nid>, RpcErr> {
        match call(
            &self.peer,
            &QRequest::Vote(self.gid, rpc),
            option.hard_ttl(),
        )
        .await
        {
            Ok(QResponse::Vote(Ok(r))) => Ok(r),
            Ok(QResponse::Vote(Err(e))) => Err(net_err(e)),
            Ok(_) => Err(RPCError::Unreachable(Unreachable::new(&io::Error::other(
                "no such queue group there",
            )))),
            Err(e) => Err(RPCError::Unreachable(Unreachable::new(&e))),
        }
    }
}
