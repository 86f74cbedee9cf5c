//! Opening a data directory: checking it belongs to this node, then
//! rebuilding the state (sled, or the last snapshot when sled is behind it)
//! and opening the log. Blocking; the node runs it off the runtime thread.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::log_store::LogStore;
use super::node::{NodeSettings, StartError};
use super::state_machine::latest_snapshot;
use super::types::{AppliedMeta, NodeId};
use crate::store::storage::{SledStorage, StateStorage};
use crate::store::StateView;

/// Who owns a data directory, and in which on-disk format it is written.
#[derive(Debug, Serialize, Deserialize)]
struct Identity {
    node_id: NodeId,
    format: u32,
}

/// The on-disk format this build writes, recorded in `node.json`.
///
/// - 1: the first releases (WAL records of at most 256 MiB).
/// - 2: WAL records up to `--max-entry-bytes` (2 GiB at most), which format-1
///   code refuses or cuts as a torn tail; nothing else changed, so a format-1
///   dir is upgraded in place by rewriting `node.json`.
/// - 3: new WAL segments start with a magic and checksum each record's
///   length (a damaged length is corruption, not a torn tail), which older
///   code would cut as a torn tail; segments of the older layout are still
///   replayed and new records go to a new segment, so a format-1 or -2 dir is
///   upgraded in place by rewriting `node.json`.
/// - 4: state storage keeps each definition once: audit records and
///   change-stream entries may refer to the key's record instead of copying
///   the definition (values starting with byte 1, which older code reads as
///   corrupt). Whole JSON values of older dirs are still read as before and
///   are never rewritten, so a format-1 to -3 dir is upgraded in place by
///   rewriting `node.json`.
///
/// Bump it with any change older code would misread, and say here how an
/// older dir is upgraded.
pub const DATA_FORMAT: u32 = 4;

/// The oldest format this build opens (and upgrades).
pub const OLDEST_DATA_FORMAT: u32 = 1;

const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

fn data_dir_error(dir: &Path, why: impl Into<String>) -> StartError {
    StartError::DataDir {
        dir: dir.display().to_string(),
        why: why.into(),
    }
}

/// Checks (or records) that `dir` belongs to `node_id` and is in a format
/// this build reads. Returns whether it was new and its format.
fn claim(dir: &Path, node_id: NodeId) -> Result<(bool, u32), StartError> {
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
            if id.format > DATA_FORMAT {
                return Err(data_dir_error(
                    dir,
                    format!("is in on-disk format {}, newer than this build reads (formats {OLDEST_DATA_FORMAT} to {DATA_FORMAT}); run the newer flagstaff release that wrote it, or `flagstaff export` with that release and import into an empty data dir", id.format),
                ));
            }
            if id.format < OLDEST_DATA_FORMAT {
                return Err(data_dir_error(
                    dir,
                    format!("is in on-disk format {}, older than this build reads (formats {OLDEST_DATA_FORMAT} to {DATA_FORMAT}); `flagstaff export` with the release that wrote it and import into an empty data dir", id.format),
                ));
            }
            Ok((false, id.format))
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
            write_identity(dir, node_id)?;
            Ok((true, DATA_FORMAT))
        }
        Err(e) => Err(data_dir_error(dir, format!("cannot read node.json: {e}"))),
    }
}

/// Records `node_id` and the current format in `dir`'s `node.json`, durably.
fn write_identity(dir: &Path, node_id: NodeId) -> Result<(), StartError> {
    let identity = Identity {
        node_id,
        format: DATA_FORMAT,
    };
    let bytes = serde_json::to_vec(&identity).unwrap_or_default();
    super::wal::write_atomically(&dir.join("node.json"), &bytes)
        .map_err(|e| data_dir_error(dir, format!("cannot write node.json: {e}")))
}

/// What recovery found on disk.
pub(super) struct Recovered {
    /// The state storage.
    pub storage: Arc<SledStorage>,
    /// Where the state stands in the log.
    pub applied: AppliedMeta,
    /// The state, compiled for reads.
    pub view: StateView,
    /// The raft log.
    pub log: LogStore,
    /// Where snapshots live.
    pub snapshot_dir: std::path::PathBuf,
}

/// Opens the data directory and rebuilds state and log (blocking).
pub(super) fn recover(settings: &NodeSettings) -> Result<Recovered, StartError> {
    let dir = settings.data_dir.clone();
    let (fresh, format) = claim(&dir, settings.node_id)?;
    // The log and the state are independent until raft starts: read the log
    // (its entries are decoded whole, ~0.45 s of CPU for a 40 MB import
    // entry) on another core while the state loads.
    let (storage, applied, view, log) = std::thread::scope(|scope| {
        let log = scope.spawn(|| LogStore::open(&dir, settings.fsync, SEGMENT_BYTES));
        let state = recover_state(&dir);
        let log = log
            .join()
            .map_err(|_| StartError::State("reading the log panicked".into()))??;
        let (storage, applied, view) = state?;
        Ok::<_, StartError>((storage, applied, view, log))
    })?;
    if !fresh && log.is_empty() && applied.log_id.is_none() && settings.join.is_none() {
        return Err(data_dir_error(
            &dir,
            "has node.json but neither a log nor state; refusing to start empty over it",
        ));
    }
    if format < DATA_FORMAT {
        // Everything opened: only now record the new format (each upgrade
        // step so far is a superset of the one before; see DATA_FORMAT).
        write_identity(&dir, settings.node_id)?;
        tracing::info!(
            from = format,
            to = DATA_FORMAT,
            "data dir upgraded to the current on-disk format"
        );
    }
    Ok(Recovered {
        storage,
        applied,
        view,
        log,
        snapshot_dir: dir.join("snapshots"),
    })
}

/// Opens state storage, restores it from the latest snapshot when it is
/// behind it, and builds the view (blocking).
fn recover_state(dir: &Path) -> Result<(Arc<SledStorage>, AppliedMeta, StateView), StartError> {
    let storage = Arc::new(SledStorage::open(&dir.join("state"))?);
    let mut image = storage.load_without_flags()?;
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
            image = storage.load_without_flags()?;
            applied = decode(&image.meta)?;
        }
    }
    let view = StateView::from_stored(image, storage.flag_records())?;
    Ok((storage, applied, view))
}
