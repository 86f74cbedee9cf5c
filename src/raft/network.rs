//! The raft network of a node that has no cluster bus: it has no peers, so
//! every RPC reports the target unreachable. A one-member cluster never
//! sends one; a node started without `--cluster-port` refuses members.

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use super::types::{Member, NodeId, TypeConfig};

/// Network factory for a node without a cluster bus.
#[derive(Debug, Clone, Default)]
pub struct NoBus;

/// A connection to a peer that cannot be reached.
#[derive(Debug)]
pub struct NoPeer {
    target: NodeId,
}

fn unreachable<E: std::error::Error>(target: NodeId) -> RPCError<NodeId, Member, E> {
    let why = std::io::Error::other(format!(
        "node {target} is unreachable: this node has no cluster bus (start it with --cluster-port)"
    ));
    RPCError::Unreachable(Unreachable::new(&why))
}

impl RaftNetworkFactory<TypeConfig> for NoBus {
    type Network = NoPeer;

    async fn new_client(&mut self, target: NodeId, _node: &Member) -> Self::Network {
        NoPeer { target }
    }
}

impl RaftNetwork<TypeConfig> for NoPeer {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        Err(unreachable(self.target))
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(unreachable(self.target))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        Err(unreachable(self.target))
    }
}
