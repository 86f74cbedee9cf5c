//! The one write path: every write on this node, a client's or one forwarded
//! by a follower, joins a queue; a single task turns what has queued into one
//! raft proposal (group commit above raft: openraft 0.9 makes each proposal
//! durable before taking the next) or, on a follower, forwards it to the
//! leader over the cluster bus.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{Raft, ServerState};
use tokio::sync::{mpsc, oneshot};

use super::liveness::Liveness;
use super::peer::{CallError, PeerClient, Secret};
use super::types::{Member, NodeId, Proposal, TypeConfig};
use crate::metrics::{add, ClusterStats};
use crate::store::{OpResult, WriteError, WriteRequest};

/// Bus verb of a batch of writes forwarded to the leader.
pub const WRITE: &[u8] = b"WRITE";

/// A committed write: its revision (log index) and each operation's outcome.
pub type Committed = Result<(u64, Vec<OpResult>), WriteError>;

/// Most requests in one proposal.
const MAX_BATCH_REQUESTS: usize = 256;
/// Bytes at which a proposal stops taking more requests (a larger single
/// request still goes alone, up to the entry limit).
const MAX_BATCH_BYTES: u64 = 4 * 1024 * 1024;

/// Bytes a raft entry's JSON takes beyond its requests (log id, membership
/// wrapper, brackets). The entry of requests `r1..rn` serializes to at most
/// `ENTRY_OVERHEAD + Σ (json(ri) + 1)` bytes; a unit test checks it.
pub const ENTRY_OVERHEAD: u64 = 1024;

/// Bytes `value` takes as JSON (as the log will write it), counted without
/// building the text.
pub fn json_len<T: serde::Serialize + ?Sized>(value: &T) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len() as u64;
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// A write waiting for its proposal.
struct Pending {
    request: WriteRequest,
    /// What it adds to a raft entry: its JSON and a separator.
    bytes: u64,
    /// Whether a follower may forward it (not for writes that were already forwarded).
    forward: bool,
    reply: oneshot::Sender<Committed>,
}

/// The queue in front of the proposal task.
#[derive(Debug, Clone)]
pub struct WriteQueue {
    tx: mpsc::UnboundedSender<Pending>,
    /// Largest raft entry (`--max-entry-bytes`).
    max_entry_bytes: u64,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pending")
    }
}

impl WriteQueue {
    /// Starts the proposal task for `raft`.
    pub fn start(
        raft: Raft<TypeConfig>,
        liveness: Arc<Liveness>,
        secret: Option<Secret>,
        timeout: Duration,
        stats: Arc<ClusterStats>,
        max_entry_bytes: u64,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let batcher = Batcher {
            raft,
            liveness,
            secret,
            timeout,
            leader: None,
            stats,
            max_entry_bytes,
        };
        tokio::spawn(batcher.run(rx));
        WriteQueue {
            tx,
            max_entry_bytes,
        }
    }

    /// Queues a write; the receiver gets its outcome once committed (on the
    /// leader: applied there; on a follower: the leader's answer). A request
    /// whose raft entry would exceed `--max-entry-bytes` is refused here,
    /// before anything of it is logged or acknowledged.
    pub fn enqueue(
        &self,
        request: WriteRequest,
        forward: bool,
    ) -> Result<oneshot::Receiver<Committed>, WriteError> {
        let bytes = json_len(&request) + 1;
        let entry = ENTRY_OVERHEAD + bytes;
        if entry > self.max_entry_bytes {
            return Err(WriteError::Failed(format!(
                "write too large: its raft entry would take {entry} bytes, above --max-entry-bytes {}; split it into smaller writes",
                self.max_entry_bytes
            )));
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending {
                request,
                bytes,
                forward,
                reply,
            })
            .map_err(|_| WriteError::Failed("the write path has stopped".into()))?;
        Ok(rx)
    }
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
    liveness: Arc<Liveness>,
    secret: Option<Secret>,
    timeout: Duration,
    /// Bus client of the leader writes were last forwarded to.
    leader: Option<(NodeId, PeerClient)>,
    stats: Arc<ClusterStats>,
    /// Largest raft entry: a proposal never grows past it.
    max_entry_bytes: u64,
}

/// The index a linearizable read must wait for, on the leader (an error when
/// this node does not lead or cannot reach its majority).
///
/// openraft 0.9 restores a restarted node that led straight back to leader,
/// without committing an entry of its term, so until it does its commit
/// index is only what its state store had applied, and `ensure_linearizable`
/// alone would answer an index older than writes acknowledged before the
/// restart (a stale read, found by the fault harness's power-cut row). So
/// this process first commits one empty proposal in each term it leads.
pub async fn read_index(raft: &Raft<TypeConfig>, liveness: &Liveness) -> Result<u64, String> {
    let term = raft.metrics().borrow().current_term;
    if !liveness.read_index_primed(term) {
        raft.client_write(Proposal {
            requests: Arc::new([]),
        })
        .await
        .map_err(|e| e.to_string())?;
        liveness.prime_read_index(term);
    }
    let index = raft
        .ensure_linearizable()
        .await
        .map_err(|e| e.to_string())?;
    Ok(index.map_or(0, |l| l.index))
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
        // A request that would have pushed the last proposal past the entry
        // limit starts the next one.
        let mut carried: Option<Pending> = None;
        loop {
            let first = match carried.take() {
                Some(p) => p,
                None => match rx.recv().await {
                    Some(p) => p,
                    None => return,
                },
            };
            let mut bytes = ENTRY_OVERHEAD + first.bytes;
            let mut pending = vec![first];
            while pending.len() < MAX_BATCH_REQUESTS && bytes < MAX_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(p) if bytes + p.bytes > self.max_entry_bytes => {
                        carried = Some(p);
                        break;
                    }
                    Ok(p) => {
                        bytes += p.bytes;
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
        // Read in place: the metrics hold the membership, costly to copy per batch.
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
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
        // A leader that loses its majority mid-proposal never sees it commit
        // (openraft 0.9 has no check-quorum): stop waiting once it is cut off,
        // answer "outcome unknown", and let the writes queued behind it be
        // refused fast instead of each waiting out the write timeout (found by
        // the fault harness's partition-leader row).
        let write = self.raft.client_write(Proposal {
            requests: requests.into(),
        });
        let outcome = tokio::select! {
            outcome = write => outcome,
            why = self.cut_off() => {
                add(&self.stats.writes_unknown, count as u64);
                for reply in replies {
                    let _ = reply.send(Err(WriteError::Unknown(format!(
                        "the leader lost its majority while the write was being committed: {why}"
                    ))));
                }
                return;
            }
        };
        match outcome {
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

    /// Returns once this leader must refuse writes (it lost its majority).
    async fn cut_off(&self) -> String {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let m = self.raft.metrics().borrow().clone();
            if let Some(why) = self.liveness.write_refusal(&m) {
                return why;
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
        // At most one entry's worth of requests (the batch bound above), so the
        // message fits the bus's frame limit.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::WriteOp;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

    fn request(definition: &str) -> WriteRequest {
        WriteRequest {
            actor: "someone \"quoted\"".into(),
            ts_ms: u64::MAX,
            ops: vec![WriteOp::SetFlag {
                key: "k\u{1}".into(),
                definition: definition.to_string(),
                if_version: Some(u64::MAX),
                reason: Some("\n\t\"".into()),
            }],
            watch: vec![("w".into(), u64::MAX)],
        }
    }

    #[test]
    fn an_entry_never_exceeds_the_measured_bound() {
        for n in [0usize, 1, 2, 50] {
            let requests: Vec<WriteRequest> = (0..n)
                .map(|i| {
                    request(&format!(
                        "{{\"on\":true,\"x\":\"{}\\\u{0}\"}}",
                        "\"".repeat(i)
                    ))
                })
                .collect();
            let bound = ENTRY_OVERHEAD + requests.iter().map(|r| json_len(r) + 1).sum::<u64>();
            let entry: Entry<TypeConfig> = Entry {
                log_id: LogId::new(CommittedLeaderId::new(u64::MAX, u64::MAX), u64::MAX),
                payload: EntryPayload::Normal(Proposal {
                    requests: requests.into(),
                }),
            };
            let written = serde_json::to_vec(&entry)
                .map(|v| v.len() as u64)
                .unwrap_or(0);
            assert!(written > 0 && written <= bound, "{written} > {bound}");
        }
    }
}
