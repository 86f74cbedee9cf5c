//! openraft's view of the cluster bus: each raft RPC is one bus request to
//! the target's cluster address. A node without a bus (no `--cluster-port`)
//! reports every peer unreachable; a one-member cluster never sends an RPC.

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;

use super::frame::MAX_PART_BYTES;
use super::liveness::Liveness;
use super::peer::{CallError, PeerClient, Secret};
use super::types::{Member, NodeId, TypeConfig};

/// Bus verbs for the three raft RPCs.
pub const APPEND: &[u8] = b"APPEND";
/// See [`APPEND`].
pub const VOTE: &[u8] = b"VOTE";
/// See [`APPEND`].
pub const SNAPSHOT: &[u8] = b"SNAPSHOT";

/// Creates a bus client per peer; `None` when this node has no bus.
#[derive(Debug, Clone)]
pub struct Network {
    secret: Option<Secret>,
    liveness: std::sync::Arc<Liveness>,
}

impl Network {
    /// The network of a node with (`Some`) or without a cluster bus; appends
    /// carry how long ago `liveness` last saw a majority acknowledge this leader.
    pub fn new(secret: Option<Secret>, liveness: std::sync::Arc<Liveness>) -> Self {
        Network { secret, liveness }
    }
}

/// The raft connection to one peer.
#[derive(Debug)]
pub struct PeerNetwork {
    target: NodeId,
    client: Option<PeerClient>,
    /// Whether the last call failed (so a change is logged once, not per heartbeat).
    down: bool,
    liveness: std::sync::Arc<Liveness>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Self::Network {
        let client = match &self.secret {
            Some(secret) if !node.cluster_addr.is_empty() => {
                Some(PeerClient::new(&node.cluster_addr, secret.clone()))
            }
            _ => None,
        };
        PeerNetwork {
            target,
            client,
            down: false,
            liveness: self.liveness.clone(),
        }
    }
}

impl PeerNetwork {
    async fn rpc<Resp, E>(
        &mut self,
        verb: &[u8],
        body: &[u8],
        extra: &[u8],
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Member, RaftError<NodeId, E>>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let target = self.target;
        let Some(client) = self.client.as_mut() else {
            let why = std::io::Error::other(format!(
                "node {target} is unreachable: this node or that one has no cluster bus (start both with --cluster-port and --cluster-secret)"
            ));
            return Err(RPCError::Unreachable(Unreachable::new(&why)));
        };
        let parts: &[&[u8]] = if extra.is_empty() {
            &[verb, body]
        } else {
            &[verb, body, extra]
        };
        #[cfg(feature = "chaos")]
        let answer = chaos_call(client, parts, option.hard_ttl(), target).await;
        #[cfg(not(feature = "chaos"))]
        let answer = client.call(parts, option.hard_ttl()).await;
        match (&answer, self.down) {
            (Err(e), false) => {
                tracing::warn!(node = target, error = %e, "raft peer unreachable");
                self.down = true;
            }
            (Ok(_), true) => {
                tracing::info!(node = target, "raft peer reachable again");
                self.down = false;
            }
            _ => {}
        }
        let answer = answer.map_err(|e| match e {
            CallError::NotSent(why) => {
                RPCError::Unreachable(Unreachable::new(&std::io::Error::other(why)))
            }
            CallError::Lost(why) | CallError::Refused(why) => {
                RPCError::Network(NetworkError::new(&std::io::Error::other(why)))
            }
        })?;
        let payload = answer.first().map(|b| b.as_ref()).unwrap_or_default();
        let result: Result<Resp, RaftError<NodeId, E>> =
            serde_json::from_slice(payload).map_err(|e| {
                RPCError::Network(NetworkError::new(&std::io::Error::other(format!(
                    "malformed answer from node {target}: {e}"
                ))))
            })?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(target, e)))
    }
}

/// Sends one RPC through the test-only chaos layer (`crate::chaos`): as
/// usual, after a delay, or held back on a connection of its own and still
/// delivered after the sender gave up on it.
#[cfg(feature = "chaos")]
async fn chaos_call(
    client: &mut PeerClient,
    parts: &[&[u8]],
    ttl: std::time::Duration,
    target: NodeId,
) -> Result<Vec<bytes::Bytes>, CallError> {
    use crate::chaos::{Plan, LATE};
    match crate::chaos::plan(target) {
        None => client.call(parts, ttl).await,
        Some(Plan::Delay(d)) => {
            tokio::time::sleep(d).await;
            let left = ttl
                .saturating_sub(d)
                .max(std::time::Duration::from_millis(1));
            client.call(parts, left).await
        }
        Some(Plan::Reorder(hold)) => {
            let mut held = client.fresh();
            let owned: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
            let (tx, rx) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                tokio::time::sleep(hold).await;
                let parts: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
                // Delivered whether or not the sender still waits: a late message.
                let answer = held.call(&parts, std::time::Duration::from_secs(5)).await;
                if tx.send(answer).is_err() {
                    LATE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
            match tokio::time::timeout(ttl, rx).await {
                Ok(Ok(answer)) => answer,
                _ => Err(CallError::Lost(format!(
                    "chaos: the RPC to node {target} is held back past its deadline"
                ))),
            }
        }
    }
}

/// How many of `rpc`'s entries (at least one) fit in `budget` bytes of JSON
/// together with the request around them.
fn entries_that_fit(rpc: &AppendEntriesRequest<TypeConfig>, budget: usize) -> usize {
    let mut size = encode(&AppendEntriesRequest::<TypeConfig> {
        vote: rpc.vote,
        prev_log_id: rpc.prev_log_id,
        leader_commit: rpc.leader_commit,
        entries: Vec::new(),
    })
    .len();
    let mut keep = 0;
    for entry in &rpc.entries {
        // Its JSON, and a comma after the first.
        let more = encode(entry).len() + usize::from(keep > 0);
        if keep > 0 && size + more > budget {
            break;
        }
        size += more;
        keep += 1;
    }
    keep
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        // How old this leader's contact with its majority is: a follower or
        // learner hearing only from a leader that lost its majority is stale too.
        let quorum_age = self
            .liveness
            .since_quorum_ack()
            .map_or(0, |d| d.as_millis() as u64)
            .to_string();
        let body = encode(&rpc);
        if body.len() <= MAX_PART_BYTES || rpc.entries.len() <= 1 {
            return self
                .rpc(APPEND, &body, quorum_age.as_bytes(), &option)
                .await;
        }
        // Several large entries would not fit one bus message: send the
        // longest prefix that does (at least one entry, which always fits)
        // and report a partial success, so openraft sends the rest next.
        drop(body);
        let keep = entries_that_fit(&rpc, MAX_PART_BYTES);
        rpc.entries.truncate(keep);
        let last = rpc.entries.last().map(|e| e.log_id);
        let answer = self
            .rpc(APPEND, &encode(&rpc), quorum_age.as_bytes(), &option)
            .await?;
        Ok(match answer {
            AppendEntriesResponse::Success => AppendEntriesResponse::PartialSuccess(last),
            other => other,
        })
    }

    async fn install_snapshot(
        &mut self,
        mut rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        // The chunk travels as raw bytes beside the JSON header.
        let data = std::mem::take(&mut rpc.data);
        self.rpc(SNAPSHOT, &encode(&rpc), &data, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        self.rpc(VOTE, &encode(&rpc), &[], &option).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::WriteRequest;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};

    fn entry(index: u64, bytes: usize) -> Entry<TypeConfig> {
        let request = WriteRequest {
            actor: "x".repeat(bytes),
            ts_ms: 0,
            ops: Vec::new(),
            watch: Vec::new(),
        };
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(crate::raft::types::Proposal {
                requests: vec![request].into(),
            }),
        }
    }

    #[test]
    fn an_append_too_large_for_one_message_is_cut_to_a_prefix_that_fits() {
        let rpc = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            leader_commit: None,
            entries: (1..=5).map(|i| entry(i, 1000)).collect(),
        };
        let whole = encode(&rpc).len();
        assert_eq!(entries_that_fit(&rpc, whole), 5);
        let keep = entries_that_fit(&rpc, 2500);
        assert_eq!(keep, 2);
        let mut prefix = rpc;
        prefix.entries.truncate(keep);
        assert!(encode(&prefix).len() <= 2500);
        // One entry always goes, even over the budget (it fits the real limit).
        assert_eq!(entries_that_fit(&prefix, 10), 1);
    }
}
