//! Writes applied entries to state storage on its own thread, so the apply
//! path never waits on sled. Entries applied within [`COALESCE`] of each
//! other go to storage as one batch: every sled batch rolls sled's I/O
//! buffer twice (two buffer writes and `sync_file_range`s, and fresh
//! zeroed buffers), which at one batch per raft entry cost more CPU than
//! the entries themselves. Storage is not the durability point (the
//! write-ahead log is, and recovery replays it), so lagging here loses
//! nothing; readers of storage (history, the change stream, snapshots)
//! first wait until it has caught up, and waiting asks for the pending
//! batch to be written at once.

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::store::storage::StateStorage;
use crate::store::AppliedBatch;

/// Longest an applied entry waits to be written with later ones, unless a
/// reader needs it first.
pub const COALESCE: Duration = Duration::from_millis(10);

/// Most entries written in one storage batch.
const MAX_ENTRIES: usize = 4096;

#[derive(Default)]
struct Progress {
    /// Highest log index whose batch is in storage.
    persisted: u64,
    /// The first storage failure, if any.
    failed: Option<String>,
}

/// What the persister thread is sent.
enum Job {
    /// Batches of the entries up to a log index.
    Write(Vec<AppliedBatch>, u64),
    /// A reader waits: write what is pending now.
    Hurry,
}

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

/// Entries received but not yet written.
#[derive(Default)]
struct Pending {
    batches: Vec<AppliedBatch>,
    upto: u64,
    /// When the oldest of them arrived.
    since: Option<Instant>,
    /// A reader is waiting for them.
    hurry: bool,
}

impl Pending {
    fn take(&mut self, job: Job) {
        match job {
            Job::Write(batches, upto) => {
                self.batches.extend(batches);
                self.upto = self.upto.max(upto);
                self.since.get_or_insert_with(Instant::now);
            }
            Job::Hurry => self.hurry = true,
        }
    }

    /// Whether to write now rather than wait for more.
    fn due(&self) -> bool {
        self.hurry
            || self.batches.len() >= MAX_ENTRIES
            || self.since.is_some_and(|t| t.elapsed() >= COALESCE)
    }
}

/// The persister thread: collects batches for up to [`COALESCE`] and
/// writes them as one; on shutdown (the sender dropped) writes the rest.
fn run(
    rx: mpsc::Receiver<Job>,
    storage: Arc<dyn StateStorage>,
    audit_retention: usize,
    progress: Arc<(Mutex<Progress>, Condvar)>,
    watch: tokio::sync::watch::Sender<u64>,
) {
    let mut pending = Pending::default();
    let mut open = true;
    while open {
        let received = match pending.since {
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            Some(t) => rx.recv_timeout(COALESCE.saturating_sub(t.elapsed())),
        };
        match received {
            Ok(job) => pending.take(job),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => open = false,
        }
        while let Ok(job) = rx.try_recv() {
            pending.take(job);
        }
        if pending.since.is_none() {
            // A reader hurried with nothing pending: already written.
            pending.hurry = false;
            continue;
        }
        if open && !pending.due() {
            continue;
        }
        let done = std::mem::take(&mut pending);
        let result = storage.commit(&done.batches, audit_retention);
        let (lock, cvar) = &*progress;
        let mut g = lock.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(()) => {
                g.persisted = g.persisted.max(done.upto);
                watch.send_replace(g.persisted);
            }
            Err(e) => {
                tracing::error!(error = %e, "state storage write failed; applying stops");
                g.failed.get_or_insert(e.to_string());
            }
        }
        cvar.notify_all();
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
            .spawn(move || run(rx, storage, audit_retention, p, w))
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
                .send(Job::Write(batches, upto))
                .map_err(|_| "state persister stopped".to_string()),
            None => Err("state persister stopped".into()),
        }
    }

    /// Asks for what is pending to be written now, when storage does not
    /// hold `index` yet (a reader is about to wait for it).
    fn hurry(&self, index: u64) {
        if self.persisted() >= index {
            return;
        }
        if let Some(tx) = &*self.tx.lock().unwrap_or_else(|e| e.into_inner()) {
            let _ = tx.send(Job::Hurry);
        }
    }

    /// Waits until storage holds everything up to log index `index`.
    pub fn wait_for(&self, index: u64, limit: Duration) -> Result<(), String> {
        self.hurry(index);
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
        self.hurry(index);
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
