//! Starting, recovering and driving the local raft node.

// openraft's StorageError is large by design; these functions return it as openraft asks.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{Config, Raft, SnapshotPolicy};
use serde::{Deserialize, Serialize};

use super::log_store::{LogOpenError, LogStore};
use super::network::NoBus;
use super::persister::Persister;
use super::state_machine::{latest_snapshot, StateMachine};
use super::types::{AppliedMeta, Member, NodeId, Proposal, TypeConfig};
use super::wal::FsyncPolicy;
use crate::store::storage::{SledStorage, StateStorage, StreamId};
use crate::store::{AuditRecord, Kind, OpResult, StateView, Store, WriteError, WriteRequest};

/// What the node needs from the configuration.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// This node's id.
    pub node_id: NodeId,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Address clients reach this node at.
    pub client_addr: String,
    /// When the log reaches the disk.
    pub fsync: FsyncPolicy,
    /// Take a snapshot (and compact the log) every this many entries.
    pub snapshot_every: u64,
    /// Audit records kept per key.
    pub audit_retention: usize,
    /// How long a write may take before its outcome is reported unknown.
    pub write_timeout: Duration,
    /// Test-only: acknowledge log writes before they are written (a planted
    /// bug that the crash test must catch). Never set in production.
    pub unsafe_ack_before_log: bool,
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
}

/// Who owns a data directory.
#[derive(Debug, Serialize, Deserialize)]
struct Identity {
    node_id: NodeId,
    format: u32,
}

const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

fn data_dir_error(dir: &Path, why: impl Into<String>) -> StartError {
    StartError::DataDir {
        dir: dir.display().to_string(),
        why: why.into(),
    }
}

/// Checks (or records) that `dir` belongs to `node_id`. Returns whether it was new.
fn claim(dir: &Path, node_id: NodeId) -> Result<bool, StartError> {
    let path = dir.join("node.json");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let id: Identity = serde_json::from_slice(&bytes).map_err(|e| {
                data_dir_error(
                    dir,
                    format!("node.json is unreadable ({e}); refusing to start"),
                )
            })?;
            if id.node_id != node_id {
                return Err(data_dir_error(
                    dir,
                    format!("belongs to node {}, not node {node_id}; start with --node-id {} or use another --data-dir", id.node_id, id.node_id),
                ));
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let has_data = ["wal", "state", "snapshots"]
                .iter()
                .any(|d| dir.join(d).exists());
            if has_data {
                return Err(data_dir_error(
                    dir,
                    "holds flagstaff data but no node.json; refusing to start over it",
                ));
            }
            let bytes = serde_json::to_vec(&Identity { node_id, format: 1 }).unwrap_or_default();
            super::wal::write_atomically(&path, &bytes)
                .map_err(|e| data_dir_error(dir, e.to_string()))?;
            Ok(true)
        }
        Err(e) => Err(data_dir_error(dir, format!("cannot read node.json: {e}"))),
    }
}

/// Most requests in one proposal.
const MAX_BATCH_REQUESTS: usize = 256;
/// Most definition bytes in one proposal (a larger single request still goes alone).
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// A write waiting for its proposal.
type Pending = (
    WriteRequest,
    tokio::sync::oneshot::Sender<Result<Vec<OpResult>, WriteError>>,
);

fn request_bytes(r: &WriteRequest) -> usize {
    use crate::store::WriteOp;
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

/// Group commit above raft: openraft 0.9 makes each proposal durable before
/// taking the next, so every write that arrives meanwhile joins the next
/// proposal instead of waiting for its own fsync.
async fn run_batcher(
    raft: Raft<TypeConfig>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Pending>,
) {
    while let Some(first) = rx.recv().await {
        let mut bytes = request_bytes(&first.0);
        let mut pending = vec![first];
        while pending.len() < MAX_BATCH_REQUESTS && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += request_bytes(&p.0);
                    pending.push(p);
                }
                Err(_) => break,
            }
        }
        let (requests, replies): (Vec<_>, Vec<_>) = pending.into_iter().unzip();
        let count = requests.len();
        match raft.client_write(Proposal { requests }).await {
            Ok(response) if response.data.len() == count => {
                for (reply, outcome) in replies.into_iter().zip(response.data) {
                    let _ = reply.send(outcome);
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
                let error = match e {
                    RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
                        WriteError::ClusterDown("No raft leader".into())
                    }
                    other => WriteError::Failed(other.to_string()),
                };
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// What recovery found on disk.
struct Recovered {
    storage: Arc<SledStorage>,
    applied: AppliedMeta,
    view: StateView,
    log: LogStore,
    snapshot_dir: std::path::PathBuf,
}

/// Opens the data directory and rebuilds state and log (blocking).
fn recover(settings: &NodeSettings) -> Result<Recovered, StartError> {
    let dir = settings.data_dir.clone();
    let fresh = claim(&dir, settings.node_id)?;
    let storage = Arc::new(SledStorage::open(&dir.join("state"))?);
    let mut image = storage.load()?;
    let decode = |meta: &Option<Vec<u8>>| -> Result<AppliedMeta, StartError> {
        match meta {
            Some(m) => AppliedMeta::decode(m)
                .map_err(|e| StartError::State(format!("applied position: {e}"))),
            None => Ok(AppliedMeta::default()),
        }
    };
    let mut applied = decode(&image.meta)?;
    let snapshot_dir = dir.join("snapshots");
    let snapshot = latest_snapshot(&snapshot_dir).map_err(|e| StartError::State(e.to_string()))?;
    if let Some(snap) = snapshot {
        let snap_index = snap.meta.last_log_id.map(|l| l.index);
        if snap_index > applied.log_id.map(|l| l.index) {
            // Storage is behind the last durable snapshot (it is not fsynced
            // on every write): rebuild it from the snapshot, then replay the log.
            tracing::info!(?snap_index, "restoring state from snapshot");
            let mut img = snap.image;
            img.meta = Some(
                AppliedMeta {
                    log_id: snap.meta.last_log_id,
                    membership: snap.meta.last_membership.clone(),
                }
                .encode(),
            );
            storage.replace(&img)?;
            image = storage.load()?;
            applied = decode(&image.meta)?;
        }
    }
    let view = StateView::from_image(&image).map_err(|e| StartError::State(e.to_string()))?;
    let log = LogStore::open(
        &dir,
        settings.fsync,
        SEGMENT_BYTES,
        settings.unsafe_ack_before_log,
    )?;
    if !fresh && log.is_empty() && applied.log_id.is_none() {
        return Err(data_dir_error(
            &dir,
            "has node.json but neither a log nor state; refusing to start empty over it",
        ));
    }
    Ok(Recovered {
        storage,
        applied,
        view,
        log,
        snapshot_dir,
    })
}

/// The running local node.
pub struct RaftNode {
    raft: Raft<TypeConfig>,
    proposals: tokio::sync::mpsc::UnboundedSender<Pending>,
    state_machine: StateMachine,
    log: LogStore,
    storage: Arc<SledStorage>,
    persister: Arc<Persister>,
    settings: NodeSettings,
}

impl std::fmt::Debug for RaftNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RaftNode({})", self.settings.node_id)
    }
}

impl RaftNode {
    /// Opens the data directory, recovers state and log, and starts raft.
    /// Returns once every logged entry is applied and the node can serve.
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
        let config = Config {
            cluster_name: "flagstaff".into(),
            heartbeat_interval: 50,
            election_timeout_min: 150,
            election_timeout_max: 300,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(settings.snapshot_every),
            max_in_snapshot_log_to_keep: 0,
            ..Default::default()
        };
        let config = Arc::new(
            config
                .validate()
                .map_err(|e| StartError::Raft(e.to_string()))?,
        );
        let raft = Raft::new(
            settings.node_id,
            config,
            NoBus,
            log.clone(),
            state_machine.clone(),
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        if log.is_empty() {
            let mut members = BTreeMap::new();
            members.insert(
                settings.node_id,
                Member {
                    cluster_addr: String::new(),
                    client_addr: settings.client_addr.clone(),
                },
            );
            raft.initialize(members)
                .await
                .map_err(|e| StartError::Raft(e.to_string()))?;
        } else if single_voter {
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
        raft.wait(Some(Duration::from_secs(30)))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await
            .map_err(|e| StartError::Raft(format!("no leader: {e}")))?;
        tracing::info!(
            node_id = settings.node_id,
            last_index = last,
            flags = store.counts().flags,
            "state recovered"
        );
        let (proposals, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(run_batcher(raft.clone(), rx));
        Ok(RaftNode {
            raft,
            proposals,
            state_machine,
            log,
            storage,
            persister,
            settings,
        })
    }

    /// Commits a write through raft and returns each operation's outcome once
    /// it is durable and applied on this node.
    pub async fn write(&self, request: WriteRequest) -> Result<Vec<OpResult>, WriteError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.proposals
            .send((request, tx))
            .map_err(|_| WriteError::Failed("the write path has stopped".into()))?;
        let timeout = self.settings.write_timeout;
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => Err(WriteError::Timeout(timeout.as_millis() as u64)),
            Ok(Err(_)) => Err(WriteError::Failed("the write path has stopped".into())),
            Ok(Ok(outcome)) => outcome,
        }
    }

    /// Change events of every applied write, in revision order (one reader).
    pub fn take_events(&self) -> tokio::sync::mpsc::UnboundedReceiver<Arc<Vec<AuditRecord>>> {
        self.state_machine.take_events()
    }

    /// Entries held in the log (since the last compaction).
    pub fn log_entries(&self) -> usize {
        self.log.len()
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
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        self.persister.close();
        if let Err(e) = self.storage.flush() {
            tracing::warn!(error = %e, "state storage flush");
        }
    }

    /// A key's audit records, newest first, including every write applied here.
    pub fn history(
        &self,
        kind: Kind,
        key: &str,
        count: usize,
        revision: u64,
    ) -> Result<Vec<AuditRecord>, String> {
        self.persister.wait_for(revision, Duration::from_secs(10))?;
        self.storage
            .history(kind, key, count)
            .map_err(|e| e.to_string())
    }

    /// Waits, without blocking other clients, until storage holds every
    /// write applied up to `revision` (readers of history and the stream
    /// call this first).
    pub async fn storage_caught_up(&self, revision: u64) {
        self.persister
            .caught_up(revision, Duration::from_secs(10))
            .await;
    }

    /// Change-stream entries after `after`, including every write applied here.
    pub fn stream_after(
        &self,
        after: StreamId,
        count: usize,
        revision: u64,
    ) -> Result<Vec<(StreamId, String)>, String> {
        self.persister.wait_for(revision, Duration::from_secs(10))?;
        self.storage
            .stream_after(after, count)
            .map_err(|e| e.to_string())
    }

    /// Change-stream entries in `[from, to]`.
    pub fn stream_range(
        &self,
        from: StreamId,
        to: StreamId,
        count: usize,
        rev: bool,
        revision: u64,
    ) -> Result<Vec<(StreamId, String)>, String> {
        self.persister.wait_for(revision, Duration::from_secs(10))?;
        self.storage
            .stream_range(from, to, count, rev)
            .map_err(|e| e.to_string())
    }

    /// Entries retained in the change stream.
    pub fn stream_len(&self, revision: u64) -> Result<usize, String> {
        self.persister.wait_for(revision, Duration::from_secs(10))?;
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
