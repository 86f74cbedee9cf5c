//! openraft's log storage over the write-ahead log. Entries live in memory
//! (until purged after a snapshot) for replication and apply; the WAL makes
//! them durable, and openraft is told an entry is flushed only when the
//! `fdatasync` covering it has returned.

// openraft's StorageError is large by design; these functions return it as openraft asks.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, LogId, LogState, RaftLogId, RaftLogReader, StorageError, StorageIOError, Vote,
};

use super::types::{NodeId, TypeConfig};
use super::wal::{self, FsyncPolicy, Wal, WalError};

struct Inner {
    wal: Wal,
    vote_path: PathBuf,
    state: Mutex<LogMemory>,
}

#[derive(Default)]
struct LogMemory {
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    last_purged: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
}

/// The raft log: cheap to clone (a handle).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogStore")
    }
}

/// Why the log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LogOpenError {
    /// The WAL failed.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// A record did not decode.
    #[error("write-ahead log entry {index} does not decode: {why}")]
    Decode {
        /// Index.
        index: u64,
        /// Why.
        why: String,
    },
    /// The vote file is unreadable.
    #[error("vote file {path}: {why}")]
    Vote {
        /// Path.
        path: String,
        /// Why.
        why: String,
    },
}

fn io_error(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write_logs(&std::io::Error::other(e.to_string())).into()
}

impl LogStore {
    /// Opens the log in `dir` and replays it.
    pub fn open(dir: &Path, policy: FsyncPolicy, segment_bytes: u64) -> Result<Self, LogOpenError> {
        let (wal, replayed) = wal::open(&dir.join("wal"), policy, segment_bytes)?;
        let mut memory = LogMemory::default();
        for (index, body) in replayed.entries {
            let entry: Entry<TypeConfig> =
                serde_json::from_slice(&body).map_err(|e| LogOpenError::Decode {
                    index,
                    why: e.to_string(),
                })?;
            memory.entries.insert(index, entry);
        }
        if let Some(p) = replayed.purged {
            memory.last_purged = serde_json::from_slice(&p).map_err(|e| LogOpenError::Decode {
                index: 0,
                why: e.to_string(),
            })?;
        }
        let vote_path = dir.join("vote.json");
        let vote_err = |why: String| LogOpenError::Vote {
            path: vote_path.display().to_string(),
            why,
        };
        if let Some(bytes) = wal::read_small(&vote_path).map_err(|e| vote_err(e.to_string()))? {
            memory.vote =
                Some(serde_json::from_slice(&bytes).map_err(|e| vote_err(e.to_string()))?);
        }
        Ok(LogStore {
            inner: Arc::new(Inner {
                wal,
                vote_path,
                state: Mutex::new(memory),
            }),
        })
    }

    fn mem(&self) -> MutexGuard<'_, LogMemory> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Index of the last entry (0 when empty).
    pub fn last_index(&self) -> u64 {
        let m = self.mem();
        m.entries
            .keys()
            .next_back()
            .copied()
            .or(m.last_purged.map(|l| l.index))
            .unwrap_or(0)
    }

    /// Whether the log has never been written (no vote, no entries).
    pub fn is_empty(&self) -> bool {
        let m = self.mem();
        m.entries.is_empty() && m.last_purged.is_none() && m.vote.is_none()
    }

    /// Entries held in memory.
    pub fn len(&self) -> usize {
        self.mem().entries.len()
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        Ok(self
            .mem()
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let m = self.mem();
        let last = m
            .entries
            .values()
            .next_back()
            .map(|e| *e.get_log_id())
            .or(m.last_purged);
        Ok(LogState {
            last_purged_log_id: m.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let bytes = serde_json::to_vec(vote).map_err(io_error)?;
        // Writing and syncing the file blocks: off the runtime thread.
        let path = self.inner.vote_path.clone();
        tokio::task::spawn_blocking(move || wal::write_atomically(&path, &bytes))
            .await
            .map_err(std::io::Error::other)
            .and_then(|written| written)
            .map_err(|e| StorageError::from(StorageIOError::write_vote(&e)))?;
        self.mem().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.mem().vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        // Frame everything first: an entry the log cannot hold fails the
        // append before memory or disk changes.
        let mut bytes = Vec::new();
        let mut last = None;
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        for entry in &entries {
            let index = entry.get_log_id().index;
            let body = serde_json::to_vec(entry).map_err(io_error)?;
            wal::entry_record(index, &body, &mut bytes).map_err(io_error)?;
            last = Some(index);
        }
        {
            let mut m = self.mem();
            for entry in entries {
                m.entries.insert(entry.get_log_id().index, entry);
            }
        }
        self.inner
            .wal
            .write(
                bytes,
                last,
                Some(Box::new(move |r| callback.log_io_completed(r))),
            )
            .map_err(io_error)
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.mem().entries.split_off(&log_id.index);
        let mut bytes = Vec::new();
        wal::truncate_record(log_id.index, &mut bytes).map_err(io_error)?;
        // Ordered before any later append in the same file, so it needs no sync of its own.
        self.inner.wal.write(bytes, None, None).map_err(io_error)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        {
            let mut m = self.mem();
            let keep = m.entries.split_off(&(log_id.index + 1));
            m.entries = keep;
            m.last_purged = Some(log_id);
        }
        let body = serde_json::to_vec(&log_id).map_err(io_error)?;
        let mut bytes = Vec::new();
        wal::purge_record(log_id.index, &body, &mut bytes).map_err(io_error)?;
        self.inner.wal.write(bytes, None, None).map_err(io_error)?;
        self.inner.wal.drop_segments(log_id.index);
        Ok(())
    }
}
