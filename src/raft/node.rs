//! Starting, recovering and driving the local raft node.

// openraft's StorageError is large by design; these functions return it as openraft asks.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use openraft::{Config, Raft, ServerState, SnapshotPolicy};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::broadcast::Broadcaster;
use super::bus::{self, BusContext, READ_INDEX};
use super::liveness::{Liveness, Timings};
use super::log_store::{LogOpenError, LogStore};
use super::membership::{self, JoinError, MemberChange, MemberError, MEMBER};
use super::network::Network;
use super::peer::{CallError, PeerClient, Secret};
use super::persister::Persister;
use super::recovery::{recover, Recovered};
use super::state_machine::StateMachine;
use super::types::{Member, NodeId, TypeConfig};
use super::wal::FsyncPolicy;
use super::writes::{read_index, WriteQueue};
use crate::metrics::ClusterStats;
use crate::store::storage::{SledStorage, StateStorage};
use crate::store::{AuditRecord, OpResult, Store, WriteError, WriteRequest};

/// What the node needs from the configuration.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// This node's id.
    pub node_id: NodeId,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Address clients reach this node at (as advertised to peers).
    pub client_addr: String,
    /// Address peers reach this node's cluster bus at (empty: no bus).
    pub cluster_addr: String,
    /// Where the cluster bus listens, if it does.
    pub bus_listen: Option<String>,
    /// The cluster secret (required with a bus).
    pub secret: Option<Secret>,
    /// A member's client address to join at first start.
    pub join: Option<String>,
    /// Join as a non-voting learner.
    pub learner: bool,
    /// The client password, given to the member asked to add this node.
    pub password: Option<String>,
    /// The ACL user that password belongs to (`default` when `None`).
    pub join_user: Option<String>,
    /// Raft timings and the staleness bound.
    pub timings: Timings,
    /// When the log reaches the disk.
    pub fsync: FsyncPolicy,
    /// Take a snapshot (and compact the log) every this many entries.
    pub snapshot_every: u64,
    /// Audit records kept per key.
    pub audit_retention: usize,
    /// How long a write may take before its outcome is reported unknown.
    pub write_timeout: Duration,
    /// Largest raft entry in bytes (`--max-entry-bytes`).
    pub max_entry_bytes: u64,
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory belongs to another node or is damaged.
    #[error("data dir {dir}: {why}")]
    DataDir {
        /// Directory.
        dir: String,
        /// Why.
        why: String,
    },
    /// State storage failed to open or load.
    #[error(transparent)]
    Storage(#[from] crate::store::storage::StorageError),
    /// The log failed to open.
    #[error(transparent)]
    Log(#[from] LogOpenError),
    /// Stored state did not rebuild.
    #[error("stored state does not load: {0}")]
    State(String),
    /// openraft refused to start.
    #[error("raft: {0}")]
    Raft(String),
    /// The cluster bus could not listen.
    #[error("cannot listen for the cluster bus on {addr}: {source}")]
    Bus {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The running local node.
pub struct RaftNode {
    raft: Raft<TypeConfig>,
    writes: WriteQueue,
    liveness: Arc<Liveness>,
    broadcaster: Option<Broadcaster>,
    published: Mutex<Option<mpsc::UnboundedReceiver<(Bytes, Bytes)>>>,
    /// The leader's bus client for read-index requests and membership changes.
    leader_client: tokio::sync::Mutex<Option<(NodeId, PeerClient)>>,
    background: CancellationToken,
    stats: Arc<ClusterStats>,
    state_machine: StateMachine,
    log: LogStore,
    storage: Arc<SledStorage>,
    persister: Arc<Persister>,
    settings: NodeSettings,
    /// Whether this node started empty with `--join` and must ask to be added.
    joining: bool,
    /// Answers other nodes' node-local queries.
    local_query: super::bus::LocalQueryHook,
}

impl std::fmt::Debug for RaftNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RaftNode({})", self.settings.node_id)
    }
}

fn raft_config(settings: &NodeSettings) -> Result<Arc<Config>, StartError> {
    let t = settings.timings;
    let config = Config {
        cluster_name: "flagstaff".into(),
        heartbeat_interval: t.heartbeat.as_millis() as u64,
        election_timeout_min: t.election_timeout.as_millis() as u64,
        election_timeout_max: t.election_timeout_max().as_millis() as u64,
        // A snapshot chunk's last piece installs the whole state: allow it time.
        install_snapshot_timeout: 30_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(settings.snapshot_every),
        max_in_snapshot_log_to_keep: 0,
        ..Default::default()
    };
    Ok(Arc::new(
        config
            .validate()
            .map_err(|e| StartError::Raft(e.to_string()))?,
    ))
}

/// Keeps the liveness record current with what openraft reports.
async fn watch_metrics(raft: Raft<TypeConfig>, liveness: Arc<Liveness>, stop: CancellationToken) {
    let mut metrics = raft.metrics();
    loop {
        liveness.observe(&metrics.borrow_and_update());
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = metrics.changed() => if changed.is_err() { return },
        }
    }
}

/// On the leader: keeps this node's addresses in the membership current
/// (restarted with a new address, or the first node given a bus).
async fn refresh_addresses(raft: Raft<TypeConfig>, me: Member, stop: CancellationToken) {
    loop {
        membership::refresh_own(&raft, &me).await;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

impl RaftNode {
    /// Opens the data directory, recovers state and log, and starts raft and
    /// the cluster bus. A one-member cluster returns once every logged entry
    /// is applied; a member of a larger cluster serves its applied state at
    /// once (stale until it hears from its leader).
    pub async fn start(settings: NodeSettings, store: &Arc<Store>) -> Result<RaftNode, StartError> {
        // Recovery reads and recompiles everything: keep it off the runtime
        // thread so clients connecting meanwhile are answered -LOADING.
        let blocking_settings = settings.clone();
        let recovered = tokio::task::spawn_blocking(move || recover(&blocking_settings))
            .await
            .map_err(|e| StartError::State(format!("recovery task failed: {e}")))??;
        let Recovered {
            storage,
            applied,
            view,
            log,
            snapshot_dir,
        } = recovered;
        let voters: Vec<NodeId> = applied.membership.membership().voter_ids().collect();
        let single_voter = voters == [settings.node_id];
        store.install(view);
        let persister = Arc::new(Persister::start(
            storage.clone(),
            settings.audit_retention,
            applied.log_id.map_or(0, |l| l.index),
        ));
        let state_machine = StateMachine::new(
            store.clone(),
            storage.clone(),
            persister.clone(),
            applied,
            snapshot_dir,
            settings.snapshot_every,
        );
        let liveness = Arc::new(Liveness::new(settings.timings));
        let raft = Raft::new(
            settings.node_id,
            raft_config(&settings)?,
            Network::new(settings.secret.clone(), liveness.clone()),
            log.clone(),
            state_machine.clone(),
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let me = Member {
            cluster_addr: settings.cluster_addr.clone(),
            client_addr: settings.client_addr.clone(),
        };
        // Decided before `initialize` writes the first entry: a fresh node that
        // forms its own cluster must, like a restarted sole voter, wait until it
        // leads before it stops answering -LOADING.
        let fresh = log.is_empty();
        let joining = fresh && settings.join.is_some();
        if fresh && !joining {
            raft.initialize(BTreeMap::from([(settings.node_id, me.clone())]))
                .await
                .map_err(|e| StartError::Raft(e.to_string()))?;
        }
        if (fresh && !joining) || single_voter {
            if single_voter {
                // Alone in its cluster, the node need not wait out an election
                // timeout before it can commit and replay the log.
                raft.trigger()
                    .elect()
                    .await
                    .map_err(|e| StartError::Raft(e.to_string()))?;
            }
            let last = log.last_index();
            raft.wait(Some(Duration::from_secs(120)))
                .applied_index_at_least(Some(last), "replay the log")
                .await
                .map_err(|e| StartError::Raft(format!("log replay did not finish: {e}")))?;
            let id = settings.node_id;
            raft.wait(Some(Duration::from_secs(30)))
                .metrics(
                    |m| {
                        m.state == ServerState::Leader
                            && m.membership_config.membership().get_node(&id).is_some()
                    },
                    "leadership of its own cluster",
                )
                .await
                .map_err(|e| StartError::Raft(format!("no leader: {e}")))?;
        }
        let background = CancellationToken::new();
        tokio::spawn(watch_metrics(
            raft.clone(),
            liveness.clone(),
            background.clone(),
        ));
        tokio::spawn(refresh_addresses(raft.clone(), me, background.clone()));
        let stats = Arc::new(ClusterStats::default());
        let writes = WriteQueue::start(
            raft.clone(),
            liveness.clone(),
            settings.secret.clone(),
            settings.write_timeout,
            stats.clone(),
            settings.max_entry_bytes,
        );
        let (published_tx, published_rx) = mpsc::unbounded_channel();
        let local_query: bus::LocalQueryHook = Arc::default();
        let mut broadcaster = None;
        if let (Some(listen), Some(secret)) = (&settings.bus_listen, &settings.secret) {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|source| StartError::Bus {
                    addr: listen.clone(),
                    source,
                })?;
            let ctx = BusContext {
                local_query: local_query.clone(),
                raft: raft.clone(),
                secret: secret.clone(),
                liveness: liveness.clone(),
                writes: writes.clone(),
                published: published_tx,
                write_timeout: settings.write_timeout,
                stats: stats.clone(),
            };
            tokio::spawn(bus::serve(listener, ctx, background.clone()));
            broadcaster = Some(Broadcaster::new(
                raft.clone(),
                secret.clone(),
                stats.clone(),
            ));
            tracing::info!(addr = %listen, "cluster bus listening");
        }
        tracing::info!(
            node_id = settings.node_id,
            last_index = log.last_index(),
            flags = store.counts().flags,
            "state recovered"
        );
        Ok(RaftNode {
            raft,
            writes,
            liveness,
            broadcaster,
            published: Mutex::new(Some(published_rx)),
            leader_client: tokio::sync::Mutex::new(None),
            background,
            stats,
            state_machine,
            log,
            storage,
            persister,
            settings,
            joining,
            local_query,
        })
    }

    /// Sets how this node answers other nodes' node-local queries (once).
    pub fn answer_local_queries(&self, hook: bus::LocalAnswer) {
        let _ = self.local_query.set(hook);
    }

    /// Asks every other member (voters and learners) the node-local query
    /// `body`, all at once: each member's answer, or why it gave none.
    pub async fn ask_members(
        &self,
        body: Bytes,
        timeout: Duration,
    ) -> Vec<(NodeId, Result<Bytes, String>)> {
        let members: Vec<(NodeId, String)> = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            m.membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != m.id)
                .map(|(id, node)| (*id, node.cluster_addr.clone()))
                .collect()
        };
        let mut asks = tokio::task::JoinSet::new();
        for (id, addr) in members {
            let Some(secret) = self.settings.secret.clone().filter(|_| !addr.is_empty()) else {
                asks.spawn(async move { (id, Err("no cluster bus".to_string())) });
                continue;
            };
            let body = body.clone();
            asks.spawn(async move {
                let mut client = PeerClient::new(&addr, secret);
                let answer = client
                    .call(&[bus::LOCAL_QUERY, &body], timeout)
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|mut parts| match parts.is_empty() {
                        true => Err("empty answer".to_string()),
                        false => Ok(parts.swap_remove(0)),
                    });
                (id, answer)
            });
        }
        let mut answers = Vec::new();
        while let Some(done) = asks.join_next().await {
            if let Ok(answer) = done {
                answers.push(answer);
            }
        }
        answers.sort_by_key(|(id, _)| *id);
        answers
    }

    /// Whether this node must still ask a member to add it (`--join` on an empty node).
    pub fn joining(&self) -> bool {
        self.joining
    }

    /// This node's addresses, as recorded in the membership.
    fn me(&self) -> Member {
        Member {
            cluster_addr: self.settings.cluster_addr.clone(),
            client_addr: self.settings.client_addr.clone(),
        }
    }

    /// Asks the member at `addr` to add this node, retrying while the cluster
    /// is unreachable or leaderless, until added or refused for good.
    pub async fn join(&self, addr: &str) -> Result<(), String> {
        let mut attempt = 0u32;
        // Added meanwhile (an answer lost, an operator's RAFT.NODE ADD, or
        // RAFT.CLUSTER INIT): the membership reaching this node ends the loop.
        while !self.initialized() {
            let asked = membership::request_join(
                addr,
                self.settings.secret.as_ref(),
                self.settings.node_id,
                &self.me(),
                self.settings.learner,
                self.settings.join_user.as_deref(),
                self.settings.password.as_deref(),
            )
            .await;
            match asked {
                Ok(_) => break,
                Err(JoinError::Fatal(why)) => return Err(why),
                Err(JoinError::Retry(why)) => {
                    attempt += 1;
                    if attempt % 10 == 1 {
                        tracing::warn!(%why, "cannot join yet; retrying");
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        let id = self.settings.node_id;
        self.raft
            .wait(Some(Duration::from_secs(60)))
            .metrics(
                |m| {
                    m.current_leader.is_some()
                        && m.membership_config.membership().get_node(&id).is_some()
                },
                "membership",
            )
            .await
            .map_err(|e| format!("added, but this node did not see its membership: {e}"))?;
        tracing::info!(
            node_id = id,
            learner = self.settings.learner,
            "joined the cluster"
        );
        Ok(())
    }

    /// Makes an empty node a one-member cluster (`RAFT.CLUSTER INIT`).
    pub async fn initialize(&self) -> Result<(), String> {
        self.raft
            .initialize(BTreeMap::from([(self.settings.node_id, self.me())]))
            .await
            .map_err(|e| e.to_string())
    }

    /// Whether this node belongs to a cluster yet.
    pub fn initialized(&self) -> bool {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .next()
            .is_some()
    }

    /// Commits a write through raft and returns each operation's outcome once
    /// it is durable, committed and applied on this node. A follower forwards
    /// it to the leader.
    pub async fn write(&self, request: WriteRequest) -> Result<Vec<OpResult>, WriteError> {
        let timeout = self.settings.write_timeout;
        let deadline = Instant::now() + timeout;
        let rx = self.writes.enqueue(request, true)?;
        let (revision, results) = match tokio::time::timeout(timeout, rx).await {
            Err(_) => return Err(WriteError::Timeout(timeout.as_millis() as u64)),
            Ok(Err(_)) => return Err(WriteError::Unknown("the write path stopped".into())),
            Ok(Ok(outcome)) => outcome?,
        };
        // Forwarded writes come back once committed on the leader; answer once
        // this node has applied them too, so the writer reads its own write.
        if let Err(e) = self.applied_at_least(revision, deadline).await {
            tracing::warn!(revision, error = %e, "write committed but not yet applied here");
        }
        Ok(results)
    }

    async fn applied_at_least(&self, index: u64, deadline: Instant) -> Result<u64, WriteError> {
        let applied =
            |m: &openraft::RaftMetrics<NodeId, Member>| m.last_applied.map_or(0, |l| l.index);
        let now = applied(&self.raft.metrics().borrow());
        if now >= index {
            return Ok(now);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(left))
            .applied_index_at_least(Some(index), "barrier")
            .await
            .map(|m| applied(&m))
            .map_err(|_| WriteError::Timeout(left.as_millis() as u64))
    }

    /// Calls the leader's bus, on behalf of a follower.
    async fn call_leader(
        &self,
        parts: &[&[u8]],
        timeout: Duration,
    ) -> Result<Vec<Bytes>, CallError> {
        let (leader, member) = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            let leader = m.current_leader;
            let member =
                leader.and_then(|l| m.membership_config.membership().get_node(&l).cloned());
            (leader, member)
        };
        let (Some(leader), Some(member), Some(secret)) = (leader, member, &self.settings.secret)
        else {
            return Err(CallError::NotSent("No raft leader".into()));
        };
        let mut cached = self.leader_client.lock().await;
        if !matches!(&*cached, Some((id, c)) if *id == leader && c.addr() == member.cluster_addr) {
            *cached = Some((
                leader,
                PeerClient::new(&member.cluster_addr, secret.clone()),
            ));
        }
        let Some((_, client)) = cached.as_mut() else {
            return Err(CallError::NotSent("No raft leader".into()));
        };
        let result = client.call(parts, timeout).await;
        if result.is_err() {
            *cached = None;
        }
        result
    }

    fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// `RAFT.BARRIER`: returns once this node has applied `revision`, or by
    /// default every write committed before the call (a read index from the
    /// leader); the answer is the applied revision.
    pub async fn barrier(
        &self,
        revision: Option<u64>,
        timeout: Duration,
    ) -> Result<u64, WriteError> {
        let deadline = Instant::now() + timeout;
        let index = match revision {
            Some(r) => r,
            #[cfg(feature = "planted-bugs")]
            None if crate::planted::armed(crate::planted::BARRIER_WITHOUT_READ_INDEX) => self
                .raft
                .metrics()
                .borrow()
                .last_applied
                .map_or(0, |l| l.index),
            None if self.is_leader() => {
                match tokio::time::timeout(timeout, read_index(&self.raft, &self.liveness)).await {
                    Err(_) => return Err(WriteError::Timeout(timeout.as_millis() as u64)),
                    Ok(Err(e)) => return Err(WriteError::ClusterDown(format!("No quorum: {e}"))),
                    Ok(Ok(index)) => index,
                }
            }
            None => {
                let answer =
                    self.call_leader(&[READ_INDEX], timeout)
                        .await
                        .map_err(|e| match e {
                            CallError::Lost(_) => WriteError::Timeout(timeout.as_millis() as u64),
                            other => WriteError::ClusterDown(other.to_string()),
                        })?;
                serde_json::from_slice(answer.first().map_or(&[][..], |b| b.as_ref()))
                    .map_err(|e| WriteError::ClusterDown(format!("malformed read index: {e}")))?
            }
        };
        self.applied_at_least(index, deadline).await
    }

    /// `RAFT.NODE`: runs a membership change on the leader (forwarded there
    /// from any other node).
    pub async fn change_members(&self, change: MemberChange) -> Result<String, MemberError> {
        if self.is_leader() || self.settings.secret.is_none() {
            return membership::apply(&self.raft, self.settings.secret.as_ref(), change).await;
        }
        let body = serde_json::to_vec(&change).unwrap_or_default();
        let answer = self
            .call_leader(&[MEMBER, &body], Duration::from_secs(180))
            .await
            .map_err(|e| match e {
                CallError::NotSent(why) => MemberError::ClusterDown(why),
                other => MemberError::Refused(other.to_string()),
            })?;
        serde_json::from_slice::<Result<String, MemberError>>(
            answer.first().map_or(&[][..], |b| b.as_ref()),
        )
        .map_err(|e| MemberError::Refused(format!("malformed answer from the leader: {e}")))?
    }

    /// Why this node's answers may be out of date (`None`: they are current).
    pub fn stale(&self) -> Option<String> {
        self.liveness.stale(&self.raft.metrics().borrow())
    }

    /// Sends a client's PUBLISH to every other member's subscribers.
    pub fn publish_to_peers(&self, channel: &Bytes, message: &Bytes) {
        if let Some(b) = &self.broadcaster {
            b.publish(channel, message);
        }
    }

    /// Messages published on other nodes, for this node's subscribers (one reader).
    pub fn take_published(&self) -> Option<mpsc::UnboundedReceiver<(Bytes, Bytes)>> {
        self.published.lock().ok()?.take()
    }

    /// Term, leader, commit and applied indexes, staleness and follower lag.
    pub fn status(&self) -> super::info::Status {
        super::info::status(&self.raft.metrics().borrow(), &self.liveness)
    }

    /// `RAFT.INFO`: raft state as INFO-style text.
    pub fn info(&self) -> String {
        let m = self.raft.metrics().borrow().clone();
        super::info::render(&m, &self.liveness, &self.settings, &self.stats)
    }

    /// Change events of every applied write, in revision order (one reader).
    pub fn take_events(&self) -> tokio::sync::mpsc::UnboundedReceiver<Arc<Vec<AuditRecord>>> {
        self.state_machine.take_events()
    }

    /// Entries held in the log (since the last compaction).
    pub fn log_entries(&self) -> usize {
        self.log.len()
    }

    /// Pub/sub messages published here that did not reach a peer (queue full,
    /// bus call failed, or too large for a bus message).
    pub fn peer_messages_dropped(&self) -> u64 {
        crate::metrics::get(&self.stats.peer_messages_dropped)
    }

    /// Bytes of the log and state on disk.
    pub fn disk_bytes(&self) -> (u64, u64) {
        (
            super::wal::disk_bytes(&self.settings.data_dir.join("wal")),
            self.storage.disk_bytes(),
        )
    }

    /// Stops raft, then flushes storage.
    pub async fn shutdown(&self) {
        self.background.cancel();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        // Joining the persister thread and flushing sled both block.
        let persister = self.persister.clone();
        let storage = self.storage.clone();
        let done = tokio::task::spawn_blocking(move || {
            persister.close();
            if let Err(e) = storage.flush() {
                tracing::warn!(error = %e, "state storage flush");
            }
        });
        if let Err(e) = done.await {
            tracing::warn!(error = %e, "closing state storage");
        }
    }

    /// Waits, without blocking other clients, until storage holds every
    /// write applied up to `revision` (readers of history and the stream
    /// call this first).
    pub async fn storage_caught_up(&self, revision: u64) {
        self.persister
            .caught_up(revision, Duration::from_secs(10))
            .await;
    }

    /// The revision a reader of storage reads at, given the view's: no
    /// further than storage holds. A write applied between the reader's
    /// [`RaftNode::storage_caught_up`] and its read is left to the next read
    /// (the change it publishes wakes blocked readers) instead of failing
    /// [`RaftNode::storage_at`] with "storage is behind".
    pub fn readable_revision(&self, view_revision: u64) -> u64 {
        view_revision.min(self.persister.persisted())
    }

    /// State storage to read from, once it holds every write applied up to
    /// `revision` (after [`RaftNode::storage_caught_up`]; this never waits).
    pub fn storage_at(&self, revision: u64) -> Result<Arc<dyn StateStorage>, String> {
        self.persister.check(revision)?;
        Ok(self.storage.clone())
    }

    /// Entries retained in the change stream.
    pub fn stream_len(&self, revision: u64) -> Result<usize, String> {
        self.persister.check(revision)?;
        self.storage.stream_len().map_err(|e| e.to_string())
    }

    /// Highest revision whose stream entries were compacted away.
    pub fn stream_trimmed(&self) -> Result<u64, String> {
        self.storage.stream_trimmed().map_err(|e| e.to_string())
    }

    /// The node's settings.
    pub fn settings(&self) -> &NodeSettings {
        &self.settings
    }
}
