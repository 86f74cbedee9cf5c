//! Writes applied entries to state storage on its own thread, so the apply
//! path never waits on sled. Batches queued while a write runs are merged
//! into the next one. Storage is not the durability point (the write-ahead
//! log is, and recovery replays it), so lagging here loses nothing; readers
//! of storage (history, snapshots) first wait until it has caught up.

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::store::storage::StateStorage;
use crate::store::AppliedBatch;

#[derive(Default)]
struct Progress {
    /// Highest log index whose batch is in storage.
    persisted: u64,
    /// The first storage failure, if any.
    failed: Option<String>,
}

/// Batches of the entries up to a log index.
type Job = (Vec<AppliedBatch>, u64);

/// Handle to the persister thread.
pub struct Persister {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    progress: Arc<(Mutex<Progress>, Condvar)>,
    /// The persisted index, for async waiters on the runtime.
    watch: tokio::sync::watch::Sender<u64>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Persister {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Persister")
    }
}

impl Persister {
    /// Starts the thread; `persisted` is the index storage already holds.
    pub fn start(
        storage: Arc<dyn StateStorage>,
        audit_retention: usize,
        persisted: u64,
    ) -> Persister {
        let (tx, rx) = mpsc::channel::<Job>();
        let progress = Arc::new((
            Mutex::new(Progress {
                persisted,
                failed: None,
            }),
            Condvar::new(),
        ));
        let p = progress.clone();
        let watch = tokio::sync::watch::Sender::new(persisted);
        let w = watch.clone();
        let thread = std::thread::Builder::new()
            .name("state-persister".into())
            .spawn(move || {
                while let Ok((mut batches, mut upto)) = rx.recv() {
                    while let Ok((more, index)) = rx.try_recv() {
                        batches.extend(more);
                        upto = upto.max(index);
                    }
                    let result = storage.commit(&batches, audit_retention);
                    let (lock, cvar) = &*p;
                    let mut g = lock.lock().unwrap_or_else(|e| e.into_inner());
                    match result {
                        Ok(()) => {
                            g.persisted = g.persisted.max(upto);
                            w.send_replace(g.persisted);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "state storage write failed; applying stops");
                            g.failed.get_or_insert(e.to_string());
                        }
                    }
                    cvar.notify_all();
                }
            })
            .ok();
        Persister {
            tx: Mutex::new(Some(tx)),
            progress,
            watch,
            thread: Mutex::new(thread),
        }
    }

    /// Queues the batches of entries up to log index `upto`.
    pub fn submit(&self, batches: Vec<AppliedBatch>, upto: u64) -> Result<(), String> {
        if let Some(e) = &self
            .progress
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .failed
        {
            return Err(e.clone());
        }
        match &*self.tx.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(tx) => tx
                .send((batches, upto))
                .map_err(|_| "state persister stopped".to_string()),
            None => Err("state persister stopped".into()),
        }
    }

    /// Waits until storage holds everything up to log index `index`.
    pub fn wait_for(&self, index: u64, limit: Duration) -> Result<(), String> {
        let (lock, cvar) = &*self.progress;
        let g = lock.lock().unwrap_or_else(|e| e.into_inner());
        let (g, timeout) = cvar
            .wait_timeout_while(g, limit, |p| p.persisted < index && p.failed.is_none())
            .unwrap_or_else(|e| e.into_inner());
        if let Some(e) = &g.failed {
            return Err(e.clone());
        }
        if timeout.timed_out() {
            return Err(format!(
                "state storage is behind (at {}, need {index})",
                g.persisted
            ));
        }
        Ok(())
    }

    /// Fails, without waiting, unless storage holds everything up to `index`;
    /// readers on the runtime call this after [`Persister::caught_up`].
    pub fn check(&self, index: u64) -> Result<(), String> {
        let g = self.progress.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = &g.failed {
            return Err(e.clone());
        }
        if g.persisted < index {
            return Err(format!(
                "state storage is behind (at {}, need {index})",
                g.persisted
            ));
        }
        Ok(())
    }

    /// Waits without blocking the runtime until storage holds `index` (or
    /// `limit` passes; the blocking readers then report the lag).
    pub async fn caught_up(&self, index: u64, limit: Duration) {
        let mut rx = self.watch.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|p| *p >= index)).await;
    }

    /// Index storage holds.
    pub fn persisted(&self) -> u64 {
        self.progress
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .persisted
    }

    /// Marks `index` as held (after storage was replaced wholesale).
    pub fn reset_to(&self, index: u64) {
        let (lock, cvar) = &*self.progress;
        lock.lock().unwrap_or_else(|e| e.into_inner()).persisted = index;
        self.watch.send_replace(index);
        cvar.notify_all();
    }

    /// Writes out what is queued and stops the thread.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}
