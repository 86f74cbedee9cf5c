//! openraft's state machine over the store: each committed entry is applied
//! with the store's deterministic `apply`, persisted as one storage batch,
//! and then published to readers by swapping the view. Snapshots are whole
//! state images written to their own fsynced file; the log is purged only
//! up to such a file, and recovery rebuilds storage from it when storage is
//! behind.

// openraft's StorageError is large by design; these functions return it as openraft asks.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::persister::Persister;
use super::types::{AppliedMeta, Member, NodeId, TypeConfig, WriteResponse};
use super::wal;
use crate::store::storage::StateStorage;
use crate::store::{self, AppliedBatch, AuditRecord, Change, Kind, StateImage, StateView, Store};

/// A snapshot file: the raft position and the full state at it.
#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotFile {
    /// openraft's snapshot metadata.
    pub meta: SnapshotMeta<NodeId, Member>,
    /// The state (audit included).
    pub image: StateImage,
}

struct Inner {
    store: Arc<Store>,
    storage: Arc<dyn StateStorage>,
    persister: Arc<Persister>,
    snapshot_dir: PathBuf,
    /// Stream entries kept behind the newest snapshot, in revisions.
    stream_keep: u64,
    applied: Mutex<AppliedMeta>,
    events: Mutex<Option<mpsc::UnboundedSender<Arc<Vec<AuditRecord>>>>>,
}

/// The state machine handle.
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateMachine")
    }
}

fn sm_error(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(&std::io::Error::other(e.to_string())).into()
}

/// The changes an installed snapshot brings that this node has not applied
/// (those its audit retention kept), in revision order, so subscribers here
/// still see every change; each key's newest event carries its current
/// GET document, as applied changes do.
fn missed_events(image: &StateImage, applied: u64, view: &StateView) -> Vec<AuditRecord> {
    let mut missed: Vec<AuditRecord> = image
        .audit
        .iter()
        .filter(|r| r.revision > applied)
        .cloned()
        .collect();
    missed.sort_by_key(|r| (r.revision, r.seq));
    let mut seen = std::collections::HashSet::new();
    for r in missed.iter_mut().rev() {
        if r.after.is_some() && seen.insert((r.kind, r.key.clone())) {
            r.document = match r.kind {
                Kind::Flag => view.flags.get(r.key.as_str()).map(|e| e.rendered()),
                Kind::User => None,
                Kind::Experiment => view
                    .experiments
                    .by_key
                    .get(r.key.as_str())
                    .map(|e| bytes::Bytes::from(e.document())),
                Kind::Segment => view
                    .segments
                    .get(r.key.as_str())
                    .map(|e| e.rendered.clone()),
            };
        }
    }
    missed
}

fn snapshot_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("{index:020}.snap"))
}

/// The newest snapshot file in `dir`, if any.
pub fn latest_snapshot(dir: &Path) -> std::io::Result<Option<SnapshotFile>> {
    let mut newest: Option<PathBuf> = None;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "snap") && newest.as_ref().is_none_or(|n| p > *n)
            {
                newest = Some(p);
            }
        }
    }
    let Some(path) = newest else { return Ok(None) };
    let bytes = std::fs::read(&path)?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| std::io::Error::other(format!("snapshot {}: {e}", path.display())))
}

fn write_snapshot(dir: &Path, file: &SnapshotFile) -> std::io::Result<Vec<u8>> {
    std::fs::create_dir_all(dir)?;
    let bytes = serde_json::to_vec(file).map_err(std::io::Error::other)?;
    let index = file.meta.last_log_id.map_or(0, |l| l.index);
    let path = snapshot_path(dir, index);
    wal::write_atomically(&path, &bytes)?;
    // Older snapshots are superseded.
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "snap") && p != path {
                let _ = std::fs::remove_file(p);
            }
        }
    }
    Ok(bytes)
}

impl StateMachine {
    /// A state machine over `store`, positioned at `applied`.
    pub fn new(
        store: Arc<Store>,
        storage: Arc<dyn StateStorage>,
        persister: Arc<Persister>,
        applied: AppliedMeta,
        snapshot_dir: PathBuf,
        stream_keep: u64,
    ) -> Self {
        StateMachine {
            inner: Arc::new(Inner {
                store,
                storage,
                persister,
                snapshot_dir,
                stream_keep,
                applied: Mutex::new(applied),
                events: Mutex::new(None),
            }),
        }
    }

    fn applied(&self) -> MutexGuard<'_, AppliedMeta> {
        self.inner.applied.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Change events (the audit records of each applied entry, in order),
    /// for the change feed. Unbounded, so none is ever dropped; one reader.
    pub fn take_events(&self) -> mpsc::UnboundedReceiver<Arc<Vec<AuditRecord>>> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.inner.events.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        rx
    }

    /// Applies entries in order, each against the view the previous one
    /// left; persists them in one storage batch, then publishes the result.
    fn apply_entries(
        &self,
        entries: impl Iterator<Item = Entry<TypeConfig>>,
    ) -> Result<Vec<Vec<WriteResponse>>, StorageError<NodeId>> {
        let mut applied = self.applied();
        let mut view = self.inner.store.view_full();
        let mut changed = false;
        let mut batches = Vec::new();
        let mut responses = Vec::new();
        for entry in entries {
            applied.log_id = Some(entry.log_id);
            let mut batch = AppliedBatch::default();
            let mut audit = Vec::new();
            let response = match &entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Membership(m) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    Vec::new()
                }
                EntryPayload::Normal(proposal) => {
                    let mut outcomes = Vec::with_capacity(proposal.requests.len());
                    for req in proposal.requests.iter() {
                        let seq_base = audit.len() as u32;
                        outcomes.push(
                            match store::apply(&view, entry.log_id.index, seq_base, req) {
                                Ok(done) => {
                                    crate::metrics::add(&crate::metrics::STORAGE.writes_applied, 1);
                                    if let Some(next) = done.view {
                                        batch.revision = Some(entry.log_id.index);
                                        view = Arc::new(next);
                                        changed = true;
                                    }
                                    batch.changes.extend(done.changes);
                                    audit.extend(done.audit);
                                    Ok(done.results)
                                }
                                Err(e) => Err(e),
                            },
                        );
                    }
                    outcomes
                }
            };
            batch.meta = applied.encode();
            batch.audit = Arc::new(audit);
            batches.push(batch);
            responses.push(response);
        }
        // The change feed reads the same records storage is given.
        let events: Vec<Arc<Vec<AuditRecord>>> = batches
            .iter()
            .filter(|b| !b.audit.is_empty())
            .map(|b| b.audit.clone())
            .collect();
        // Only the flags these entries changed can have been replaced.
        let changed_flags: Vec<String> = batches
            .iter()
            .flat_map(|b| &b.changes)
            .filter_map(|c| match c {
                Change::Flag(r) => Some(r.key.clone()),
                Change::FlagDeleted { key, .. } => Some(key.clone()),
                _ => None,
            })
            .collect();
        let upto = applied.log_id.map_or(0, |l| l.index);
        self.inner
            .persister
            .submit(batches, upto)
            .map_err(sm_error)?;
        if changed {
            self.inner
                .store
                .publish_changed(view, changed_flags.iter().map(String::as_str));
        }
        if let Some(tx) = &*self.inner.events.lock().unwrap_or_else(|p| p.into_inner()) {
            for e in events {
                let _ = tx.send(e);
            }
        }
        Ok(responses)
    }

    fn image_now(&self) -> Result<(AppliedMeta, StateImage), StorageError<NodeId>> {
        // Position and view are read together: apply changes both under this lock.
        let applied = self.applied();
        let view = self.inner.store.view_full();
        let meta = applied.clone();
        drop(applied);
        let upto = meta.log_id.map_or(0, |l| l.index);
        self.inner
            .persister
            .wait_for(upto, std::time::Duration::from_secs(60))
            .map_err(sm_error)?;
        let mut image = view.image().map_err(sm_error)?;
        image.audit = self
            .inner
            .storage
            .all_audit()
            .map_err(sm_error)?
            .into_iter()
            .filter(|r| r.revision <= upto)
            .collect();
        image.meta = Some(meta.encode());
        Ok((meta, image))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        // Reading every audit record and writing the file is slow: keep it off
        // the runtime thread that serves clients.
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.build_snapshot_blocking())
            .await
            .map_err(sm_error)?
    }
}

impl StateMachine {
    fn build_snapshot_blocking(&self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let started = std::time::Instant::now();
        let (applied, image) = self.image_now()?;
        let snapshot_id = match applied.log_id {
            Some(l) => format!("{}-{}", l.leader_id, l.index),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: applied.log_id,
            last_membership: applied.membership,
            snapshot_id,
        };
        let file = SnapshotFile {
            meta: meta.clone(),
            image,
        };
        let bytes = write_snapshot(&self.inner.snapshot_dir, &file).map_err(|e| {
            StorageError::from(StorageIOError::write_snapshot(Some(meta.signature()), &e))
        })?;
        let index = meta.last_log_id.map_or(0, |l| l.index);
        tracing::info!(index, bytes = bytes.len(), "snapshot written");
        let disk = &crate::metrics::STORAGE;
        crate::metrics::add(&disk.snapshots, 1);
        disk.snapshot_duration
            .observe(started.elapsed().as_micros() as u64);
        // The change stream's retention follows compaction, one window behind.
        self.inner
            .storage
            .stream_trim(index.saturating_sub(self.inner.stream_keep))
            .map_err(sm_error)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl StateMachine {
    fn install_snapshot_blocking(
        &self,
        meta: &SnapshotMeta<NodeId, Member>,
        snapshot: Cursor<Vec<u8>>,
    ) -> Result<(), StorageError<NodeId>> {
        let read_err = |e: &dyn std::fmt::Display| {
            StorageError::from(StorageIOError::read_snapshot(
                Some(meta.signature()),
                &std::io::Error::other(e.to_string()),
            ))
        };
        let file: SnapshotFile =
            serde_json::from_slice(snapshot.get_ref()).map_err(|e| read_err(&e))?;
        let view = StateView::from_image(&file.image).map_err(|e| read_err(&e))?;
        let applied = AppliedMeta {
            log_id: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        let mut image = file.image;
        image.meta = Some(applied.encode());
        let file = SnapshotFile {
            meta: meta.clone(),
            image,
        };
        write_snapshot(&self.inner.snapshot_dir, &file).map_err(|e| {
            StorageError::from(StorageIOError::write_snapshot(Some(meta.signature()), &e))
        })?;
        let mut a = self.applied();
        let current = a.log_id.map_or(0, |l| l.index);
        let missed = missed_events(&file.image, self.inner.store.view().revision, &view);
        self.inner
            .persister
            .wait_for(current, std::time::Duration::from_secs(60))
            .map_err(sm_error)?;
        self.inner.storage.replace(&file.image).map_err(sm_error)?;
        self.inner
            .persister
            .reset_to(meta.last_log_id.map_or(0, |l| l.index));
        self.inner.store.publish(view);
        *a = applied;
        if !missed.is_empty() {
            if let Some(tx) = &*self.inner.events.lock().unwrap_or_else(|p| p.into_inner()) {
                let _ = tx.send(Arc::new(missed));
            }
        }
        tracing::info!(
            index = meta.last_log_id.map_or(0, |l| l.index),
            "snapshot installed"
        );
        Ok(())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Member>), StorageError<NodeId>>
    {
        let a = self.applied();
        Ok((a.log_id, a.membership.clone()))
    }

    async fn apply<I>(
        &mut self,
        entries: I,
    ) -> Result<Vec<Vec<WriteResponse>>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        self.apply_entries(entries.into_iter())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        // Parsing, compiling and writing a snapshot is slow: keep it off the
        // runtime thread that serves clients.
        let this = self.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || this.install_snapshot_blocking(&meta, *snapshot))
            .await
            .map_err(sm_error)?
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        // Reading and re-encoding the file blocks: off the runtime thread.
        let dir = self.inner.snapshot_dir.clone();
        let read = tokio::task::spawn_blocking(move || {
            let file = latest_snapshot(&dir)?;
            Ok::<_, std::io::Error>(file.map(|f| {
                let bytes = serde_json::to_vec(&f).unwrap_or_default();
                Snapshot {
                    meta: f.meta,
                    snapshot: Box::new(Cursor::new(bytes)),
                }
            }))
        });
        read.await
            .map_err(sm_error)?
            .map_err(|e| StorageError::from(StorageIOError::read_snapshot(None, &e)))
    }
}
