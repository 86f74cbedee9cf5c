//! The one write path: every write on this node, a client's or one forwarded
//! by a follower, joins a queue; a single task turns what has queued into one
//! raft proposal (group commit above raft: openraft 0.9 makes each proposal
//! durable before taking the next) or, on a follower, forwards it to the
//! leader over the cluster bus.

use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{Raft, ServerState};
use tokio::sync::{mpsc, oneshot};

use super::liveness::Liveness;
use super::peer::{CallError, PeerClient, Secret};
use super::types::{Member, NodeId, Proposal, TypeConfig};
use crate::metrics::{add, ClusterStats};
use crate::store::{OpResult, WriteError, WriteOp, WriteRequest};

/// Bus verb of a batch of writes forwarded to the leader.
pub const WRITE: &[u8] = b"WRITE";

/// A committed write: its revision (log index) and each operation's outcome.
pub type Committed = Result<(u64, Vec<OpResult>), WriteError>;

/// Most requests in one proposal.
const MAX_BATCH_REQUESTS: usize = 256;
/// Most definition bytes in one proposal (a larger single request still goes alone).
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// A write waiting for its proposal.
struct Pending {
    request: WriteRequest,
    /// Whether a follower may forward it (not for writes that were already forwarded).
    forward: bool,
    reply: oneshot::Sender<Committed>,
}

/// The queue in front of the proposal task.
#[derive(Debug, Clone)]
pub struct WriteQueue(mpsc::UnboundedSender<Pending>);

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pending")
    }
}

impl WriteQueue {
    /// Starts the proposal task for `raft`.
    pub fn start(
        raft: Raft<TypeConfig>,
        liveness: std::sync::Arc<Liveness>,
        secret: Option<Secret>,
        timeout: Duration,
        stats: std::sync::Arc<ClusterStats>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let batcher = Batcher {
            raft,
            liveness,
            secret,
            timeout,
            leader: None,
            stats,
        };
        tokio::spawn(batcher.run(rx));
        WriteQueue(tx)
    }

    /// Queues a write; the receiver gets its outcome once committed (on the
    /// leader: applied there; on a follower: the leader's answer).
    pub fn enqueue(
        &self,
        request: WriteRequest,
        forward: bool,
    ) -> Result<oneshot::Receiver<Committed>, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.0
            .send(Pending {
                request,
                forward,
                reply,
            })
            .map_err(|_| WriteError::Failed("the write path has stopped".into()))?;
        Ok(rx)
    }
}

fn request_bytes(r: &WriteRequest) -> usize {
    r.ops
        .iter()
        .map(|op| match op {
            WriteOp::SetFlag { definition, .. }
            | WriteOp::SetSegment { definition, .. }
            | WriteOp::RollbackFlag { definition, .. } => definition.len(),
            WriteOp::Import { document, .. } => document.len(),
            _ => 64,
        })
        .sum()
}

fn fail(pending: Vec<Pending>, error: WriteError) {
    for p in pending {
        let _ = p.reply.send(Err(error.clone()));
    }
}

/// Where the proposal task sends what it collected.
enum Route {
    Refuse(String),
    Propose,
    Forward(NodeId, Member),
}

struct Batcher {
    raft: Raft<TypeConfig>,
    liveness: std::sync::Arc<Liveness>,
    secret: Option<Secret>,
    timeout: Duration,
    /// Bus client of the leader writes were last forwarded to.
    leader: Option<(NodeId, PeerClient)>,
    stats: std::sync::Arc<ClusterStats>,
}

/// Returns once `raft` no longer names `leader` as the leader.
async fn leader_changes(raft: &Raft<TypeConfig>, leader: NodeId) {
    let mut metrics = raft.metrics();
    while metrics.borrow_and_update().current_leader == Some(leader) {
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

impl Batcher {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Pending>) {
        while let Some(first) = rx.recv().await {
            let mut bytes = request_bytes(&first.request);
            let mut pending = vec![first];
            while pending.len() < MAX_BATCH_REQUESTS && bytes < MAX_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(p) => {
                        bytes += request_bytes(&p.request);
                        pending.push(p);
                    }
                    Err(_) => break,
                }
            }
            match self.route() {
                Route::Refuse(why) => {
                    add(&self.stats.writes_refused, pending.len() as u64);
                    fail(pending, WriteError::ClusterDown(why))
                }
                Route::Propose => self.propose(pending).await,
                Route::Forward(id, member) => {
                    let (forward, local): (Vec<_>, Vec<_>) =
                        pending.into_iter().partition(|p| p.forward);
                    fail(
                        local,
                        WriteError::ClusterDown("No raft leader: leadership moved".into()),
                    );
                    if !forward.is_empty() {
                        self.forward(id, &member, forward).await;
                    }
                }
            }
        }
    }

    fn route(&self) -> Route {
        let m = self.raft.metrics().borrow().clone();
        if let Some(why) = self.liveness.write_refusal(&m) {
            return Route::Refuse(why);
        }
        if m.state == ServerState::Leader {
            return Route::Propose;
        }
        let Some(leader) = m.current_leader else {
            return Route::Refuse("No raft leader".into());
        };
        match m.membership_config.membership().get_node(&leader) {
            Some(member) if self.secret.is_some() && !member.cluster_addr.is_empty() => {
                Route::Forward(leader, member.clone())
            }
            _ => Route::Refuse(format!(
                "No raft leader reachable: node {leader} has no cluster bus address"
            )),
        }
    }

    async fn propose(&self, pending: Vec<Pending>) {
        let (requests, replies): (Vec<_>, Vec<_>) =
            pending.into_iter().map(|p| (p.request, p.reply)).unzip();
        let count = requests.len();
        match self.raft.client_write(Proposal { requests }).await {
            Ok(response) if response.data.len() == count => {
                let revision = response.log_id.index;
                for (reply, outcome) in replies.into_iter().zip(response.data) {
                    let _ = reply.send(outcome.map(|o| (revision, o)));
                }
            }
            Ok(_) => {
                for reply in replies {
                    let _ = reply.send(Err(WriteError::Failed(
                        "applied batch returned the wrong number of outcomes".into(),
                    )));
                }
            }
            Err(e) => {
                // ForwardToLeader: not this node's to propose, or its entry
                // was truncated by a new leader; either way not committed.
                let error = match e {
                    RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
                        WriteError::ClusterDown("No raft leader".into())
                    }
                    other => WriteError::Unknown(other.to_string()),
                };
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }

    async fn forward(&mut self, id: NodeId, member: &Member, pending: Vec<Pending>) {
        let Some(secret) = self.secret.clone() else {
            return fail(pending, WriteError::ClusterDown("No cluster bus".into()));
        };
        if !matches!(&self.leader, Some((lid, c)) if *lid == id && c.addr() == member.cluster_addr)
        {
            self.leader = Some((id, PeerClient::new(&member.cluster_addr, secret)));
        }
        let Some((_, client)) = self.leader.as_mut() else {
            return;
        };
        add(&self.stats.writes_forwarded, pending.len() as u64);
        let requests: Vec<&WriteRequest> = pending.iter().map(|p| &p.request).collect();
        let body = serde_json::to_vec(&requests).unwrap_or_default();
        // If leadership moves while the batch is in flight, its answer may
        // never come (a paused leader): report the outcome unknown at once
        // rather than after the whole write timeout.
        let parts: [&[u8]; 2] = [WRITE, &body];
        let answer = tokio::select! {
            answer = client.call(&parts, self.timeout) => answer,
            _ = leader_changes(&self.raft, id) => Err(CallError::Lost(format!(
                "leadership moved from node {id} while the write was in flight"
            ))),
        };
        let outcomes: Result<Vec<Committed>, WriteError> = match answer {
            Ok(parts) => serde_json::from_slice(parts.first().map_or(&[][..], |b| b.as_ref()))
                .map_err(|e| WriteError::Unknown(format!("malformed answer from the leader: {e}"))),
            Err(CallError::NotSent(why)) => Err(WriteError::ClusterDown(format!(
                "cannot reach the raft leader (node {id}): {why}"
            ))),
            Err(CallError::Lost(why)) => Err(WriteError::Unknown(why)),
            Err(CallError::Refused(why)) => Err(WriteError::Failed(why)),
        };
        match outcomes {
            Ok(outcomes) if outcomes.len() == pending.len() => {
                for (p, outcome) in pending.into_iter().zip(outcomes) {
                    let _ = p.reply.send(outcome);
                }
            }
            Ok(_) => fail(
                pending,
                WriteError::Unknown("the leader answered for the wrong number of writes".into()),
            ),
            Err(e) => {
                match e {
                    WriteError::Unknown(_) => {
                        self.leader = None;
                        add(&self.stats.writes_unknown, pending.len() as u64);
                    }
                    WriteError::ClusterDown(_) => {
                        add(&self.stats.writes_refused, pending.len() as u64)
                    }
                    _ => {}
                }
                fail(pending, e)
            }
        }
    }
}
