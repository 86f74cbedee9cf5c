//! openraft type configuration and the replicated metadata we persist.

use std::fmt;
use std::io::Cursor;

use openraft::{LogId, StoredMembership};
use serde::{Deserialize, Serialize};

use crate::store::{OpResult, WriteError, WriteRequest};

/// Node ids are small integers chosen by the operator (`--node-id`).
pub type NodeId = u64;

/// How to reach a member: its cluster-bus address and its client address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Address of the raft bus (empty for a node without one).
    pub cluster_addr: String,
    /// Address clients use (RESP).
    pub client_addr: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.client_addr)
    }
}

/// What applying one write request returns to its writer.
pub type WriteResponse = Result<Vec<OpResult>, WriteError>;

/// One raft entry: the write requests that arrived while the previous entry
/// was being made durable (group commit). Each applies on its own, in order;
/// they share the entry's log index as their revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// The requests, in arrival order. Shared, not copied, when openraft
    /// reads an entry back from the log for apply or replication (its JSON
    /// is that of a plain list).
    pub requests: std::sync::Arc<[WriteRequest]>,
}

openraft::declare_raft_types!(
    /// flagstaff's raft types: batches of write requests in, their outcomes out.
    pub TypeConfig:
        D = Proposal,
        R = Vec<WriteResponse>,
        NodeId = NodeId,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

/// The state machine's position, persisted with every applied entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedMeta {
    /// Last applied log id.
    pub log_id: Option<LogId<NodeId>>,
    /// Last applied membership.
    pub membership: StoredMembership<NodeId, Member>,
}

impl AppliedMeta {
    /// Encodes for the storage engine (which treats it as opaque bytes).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes what [`encode`](Self::encode) wrote.
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}
