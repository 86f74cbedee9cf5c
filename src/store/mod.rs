//! The state machine behind one narrow write interface.
//!
//! Readers load an immutable [`StateView`] (swapped atomically after every
//! applied write, so evaluation never waits for a writer and never touches
//! disk). Writers submit a [`WriteRequest`]; [`apply`](state::apply) runs every
//! check that involves other keys deterministically, so the same request
//! applied on any replica gives the same outcome.

pub mod experiments;
pub mod records;
mod render;
mod state;
pub mod storage;

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use serde::{Deserialize, Serialize};

pub use records::{
    AppliedBatch, AuditRecord, Change, Event, FlagRecord, Kind, SegmentRecord, StateImage,
};
pub use render::rfc3339;
pub use state::{apply, parse_dump, Applied, Dump, FlagEntry, SegmentEntry, StateView};

use crate::flag::Invalid;

/// One change inside a write request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WriteOp {
    /// Set (`Some` line) or delete (`None`) ACL users; with `replace_all`
    /// the given users replace every user (`ACL LOAD`). The outcome's
    /// version is how many of the named users existed before.
    SetUsers {
        /// (name, `ACL LIST` line or `None` to delete).
        users: Vec<(String, Option<String>)>,
        /// Whether these are all the users.
        replace_all: bool,
    },
    /// Create or replace a flag.
    SetFlag {
        /// Full key.
        key: String,
        /// The definition JSON as the client sent it.
        definition: String,
        /// Required current version (0: must not exist).
        if_version: Option<u64>,
        /// Why, for the audit log.
        reason: Option<String>,
    },
    /// Restore an earlier definition of a flag as a new version.
    RollbackFlag {
        /// Full key.
        key: String,
        /// The version restored (for the record).
        version: u64,
        /// That version's definition, from the audit log.
        definition: String,
        /// Why.
        reason: Option<String>,
    },
    /// Apply a `FLAG.DUMP` document: all of it, or none of it.
    Import {
        /// The document.
        document: String,
        /// Why.
        reason: Option<String>,
    },
    /// Delete a flag.
    DeleteFlag {
        /// Full key.
        key: String,
        /// Why.
        reason: Option<String>,
    },
    /// Turn a flag on or off.
    ToggleFlag {
        /// Full key.
        key: String,
        /// New state.
        on: bool,
        /// Why.
        reason: Option<String>,
    },
    /// Create or replace a segment.
    SetSegment {
        /// Full key.
        key: String,
        /// The definition JSON.
        definition: String,
        /// Why.
        reason: Option<String>,
    },
    /// Delete a segment.
    DeleteSegment {
        /// Full key.
        key: String,
        /// Why.
        reason: Option<String>,
    },
    /// Create or replace an experiment (checked against its flag at apply).
    SetExperiment {
        /// Experiment key.
        key: String,
        /// The definition JSON.
        definition: String,
    },
    /// Delete an experiment.
    DeleteExperiment {
        /// Experiment key.
        key: String,
    },
    /// Start (`running`) or stop an experiment.
    RunExperiment {
        /// Experiment key.
        key: String,
        /// Start or stop.
        running: bool,
    },
}

/// A batch of changes that commits as one unit with one revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteRequest {
    /// Who asks (the authenticated user).
    pub actor: String,
    /// When, in Unix ms, as the receiving node saw it (replicas use this value).
    pub ts_ms: u64,
    /// The changes, applied in order.
    pub ops: Vec<WriteOp>,
    /// Keys with the revision each must still have, or nothing applies (WATCH).
    pub watch: Vec<(String, u64)>,
}

impl WriteRequest {
    /// A request with one operation.
    pub fn single(actor: &str, op: WriteOp) -> Self {
        WriteRequest {
            actor: actor.to_string(),
            ts_ms: crate::clock::unix_ms(),
            ops: vec![op],
            watch: Vec::new(),
        }
    }
}

/// What an applied operation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpOutcome {
    /// The key's new version.
    Version(u64),
    /// Whether something was deleted.
    Deleted(bool),
}

/// Why one operation was refused; the rest of its batch still applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum OpError {
    /// The definition is invalid.
    #[error("INVALID {path}: {why}")]
    Invalid {
        /// JSON path.
        path: String,
        /// Problem.
        why: String,
    },
    /// IFVERSION did not match.
    #[error("CONFLICT {0}")]
    Conflict(String),
    /// Other flags depend on the key.
    #[error("ERR {0}")]
    Referenced(String),
    /// The key does not exist.
    #[error("ERR {0}")]
    NotFound(String),
}

impl From<Invalid> for OpError {
    fn from(e: Invalid) -> Self {
        OpError::Invalid {
            path: e.path,
            why: e.why,
        }
    }
}

/// The outcome of one operation.
pub type OpResult = Result<OpOutcome, OpError>;

/// Why a whole write request did not apply (or may not have).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum WriteError {
    /// A watched key changed (EXEC answers nil).
    #[error("watched key changed")]
    WatchFailed,
    /// No leader or no quorum: nothing was written; retry later.
    #[error("CLUSTERDOWN {0}")]
    ClusterDown(String),
    /// The write did not finish in time; it may or may not have committed.
    #[error("TIMEOUT write outcome unknown after {0} ms")]
    Timeout(u64),
    /// The write was sent but its answer was lost; it may or may not have committed.
    #[error("TIMEOUT write outcome unknown: {0}")]
    Unknown(String),
    /// The write path failed.
    #[error("ERR write failed: {0}")]
    Failed(String),
}

/// Key counts and the revision, for INFO and DBSIZE.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    /// Stored flags.
    pub flags: usize,
    /// Stored segments.
    pub segments: usize,
    /// Revision of the last applied write.
    pub revision: u64,
}

/// Whether the evaluated flag version `e` (key `k`) is no longer the one
/// `new` holds, so its counts must be kept for the rollup.
fn replaced(new: &StateView, k: &str, e: &Arc<FlagEntry>) -> bool {
    e.compiled.counters.total() > 0 && new.flags.get(k).is_none_or(|n| !Arc::ptr_eq(n, e))
}

/// Retired flag versions kept for the analytics rollup at most.
const MAX_RETIRED: usize = 10_000;

/// The store: the current view that readers load and the state machine
/// replaces after every applied write.
pub struct Store {
    view: ArcSwap<StateView>,
    /// Evaluated flag versions replaced or deleted since the analytics
    /// rollup last took them, so their last counts are not lost.
    retired: std::sync::Mutex<Vec<(Arc<str>, Arc<FlagEntry>)>>,
    /// The current view's `users_revision`, readable without loading the view.
    users_revision: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// An empty store, before its data is loaded.
    pub fn new() -> Self {
        Store {
            view: ArcSwap::from_pointee(StateView::default()),
            retired: std::sync::Mutex::new(Vec::new()),
            users_revision: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Installs the view loaded at start.
    pub fn install(&self, view: StateView) {
        self.publish_arc(Arc::new(view));
    }

    /// Revision at which the ACL users last changed (one atomic load; the
    /// dispatcher checks it on every command).
    #[inline]
    pub fn users_revision(&self) -> u64 {
        self.users_revision
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// The current view: cheap, lock-free, and consistent for as long as it is held.
    pub fn view(&self) -> Guard<Arc<StateView>> {
        self.view.load()
    }

    /// The current view as an owned handle.
    pub fn view_full(&self) -> Arc<StateView> {
        self.view.load_full()
    }

    /// Makes `view` the current one (after an applied write).
    pub fn publish(&self, view: StateView) {
        self.publish_arc(Arc::new(view));
    }

    /// Makes an already shared view the current one.
    pub fn publish_arc(&self, view: Arc<StateView>) {
        let users = view.users_revision;
        let new = view.clone();
        let old = self.view.swap(view);
        self.retire(old.flags.iter().filter(|(k, e)| replaced(&new, k, e)));
        self.users_revision
            .store(users, std::sync::atomic::Ordering::Release);
    }

    /// Makes `view` the current one after applied writes that changed only
    /// the flags named in `changed` (repeats allowed): only those are looked
    /// at for retired versions, instead of every flag (a walk and a hash of
    /// every key on each write).
    pub fn publish_changed<'k>(
        &self,
        view: Arc<StateView>,
        changed: impl IntoIterator<Item = &'k str>,
    ) {
        let users = view.users_revision;
        let new = view.clone();
        let old = self.view.swap(view);
        let mut seen = std::collections::HashSet::new();
        self.retire(
            changed
                .into_iter()
                .filter(|k| seen.insert(*k))
                .filter_map(|k| old.flags.get_key_value(k))
                .filter(|(k, e)| replaced(&new, k, e)),
        );
        self.users_revision
            .store(users, std::sync::atomic::Ordering::Release);
    }

    /// Keeps the given evaluated flag versions for the analytics rollup.
    fn retire<'a>(&self, gone: impl Iterator<Item = (&'a Arc<str>, &'a Arc<FlagEntry>)>) {
        let mut gone = gone.peekable();
        if gone.peek().is_none() {
            return;
        }
        let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        for (k, e) in gone {
            // Bounded: past this, the rollup is far behind and counts are dropped.
            if retired.len() < MAX_RETIRED {
                retired.push((k.clone(), e.clone()));
            }
        }
    }

    /// The retired flag versions not yet taken by [`Store::take_retired`].
    pub fn retired(&self, key: &str) -> Vec<Arc<FlagEntry>> {
        let retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        retired
            .iter()
            .filter(|(k, _)| &**k == key)
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// Takes every retired flag version (for the analytics rollup).
    pub fn take_retired(&self) -> Vec<(Arc<str>, Arc<FlagEntry>)> {
        std::mem::take(&mut *self.retired.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Counts for INFO and DBSIZE.
    pub fn counts(&self) -> Counts {
        let v = self.view.load();
        Counts {
            flags: v.flags.len(),
            segments: v.segments.len(),
            revision: v.revision,
        }
    }

    /// Revision at which a flag or segment with this key last changed (0: never).
    pub fn key_revision(&self, key: &str) -> u64 {
        self.view.load().key_revision(key)
    }
}
