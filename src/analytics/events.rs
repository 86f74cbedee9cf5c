//! `flagstaff:events`: this node's stream of analytics events (exposures,
//! tracked metric events, sampled evaluations), bounded by length and age.
//! Node-local, never through raft. Kept in memory for reads and appended to
//! `<data-dir>/analytics/events.jsonl` by a writer thread (never on the
//! runtime), read back and compacted at start.

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// An entry id: (Unix ms, sequence within that ms), as Redis's `ms-seq`.
pub type EventId = (u64, u32);

/// What an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// A unit's first exposure to a running experiment.
    Exposure,
    /// A `FLAG.TRACK` metric event.
    Track,
    /// A sampled evaluation (`--eval-log-sample`).
    Eval,
}

impl EventType {
    /// The `type` field's value.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Exposure => "exposure",
            EventType::Track => "track",
            EventType::Eval => "eval",
        }
    }
}

/// One analytics event; fields a kind does not have are `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// exposure, track or eval.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The flag evaluated (exposure, eval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<String>,
    /// The experiment exposed to (exposure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
    /// The context's targeting key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The variation served (exposure, eval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variation: Option<String>,
    /// Why it was served (eval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The tracked event's name (track).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// The tracked VALUE (track).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Unix ms.
    pub ts: u64,
    /// The node that recorded it.
    pub node: u64,
}

impl Event {
    /// The entry's fields as (name, value) pairs in a fixed order, only
    /// those present.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::with_capacity(10);
        out.push(("type", self.kind.as_str().to_string()));
        let text = [
            ("flag", &self.flag),
            ("experiment", &self.experiment),
            ("unit", &self.unit),
            ("variation", &self.variation),
            ("reason", &self.reason),
            ("event", &self.event),
        ];
        for (name, v) in text {
            if let Some(v) = v {
                out.push((name, v.clone()));
            }
        }
        if let Some(v) = self.value {
            out.push(("value", v.to_string()));
        }
        out.push(("ts", self.ts.to_string()));
        out.push(("node", self.node.to_string()));
        out
    }
}

/// A line of the events file.
#[derive(Serialize, Deserialize)]
struct Line {
    id: EventId,
    #[serde(flatten)]
    event: Event,
}

/// What the writer thread is asked to do.
enum Job {
    Append(String),
    /// Rewrite the file with what memory holds (retention applied).
    Compact(Vec<(EventId, Arc<Event>)>),
    /// Flush and fsync, then signal.
    Sync(std::sync::mpsc::Sender<()>),
}

/// Limits of the stream.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Entries older than this (ms) are dropped.
    pub max_age_ms: u64,
    /// At most this many entries are kept.
    pub max_len: usize,
}

#[derive(Debug, Default)]
struct Ring {
    entries: VecDeque<(EventId, Arc<Event>)>,
    last: EventId,
    /// Lines appended to the file since it was last rewritten.
    appended: usize,
}

/// The node's event stream.
#[derive(Debug)]
pub struct EventLog {
    ring: Mutex<Ring>,
    retention: Retention,
    path: PathBuf,
    writer: Mutex<Option<Sender<Job>>>,
    /// The id of the newest entry as `ms << 32 | seq` (truncated), for
    /// XREAD BLOCK waiters.
    notify: tokio::sync::watch::Sender<u64>,
    appended_total: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl EventLog {
    /// A log kept in `dir/analytics/events.jsonl`.
    pub fn new(dir: &Path, retention: Retention) -> Self {
        EventLog {
            ring: Mutex::new(Ring::default()),
            retention,
            path: dir.join("analytics").join("events.jsonl"),
            writer: Mutex::new(None),
            notify: tokio::sync::watch::Sender::new(0),
            appended_total: AtomicU64::new(0),
        }
    }

    /// Reads the file back (retention applied), rewrites it compacted and
    /// starts the writer thread. Blocking: run off the runtime.
    pub fn load(&self, now: u64) -> std::io::Result<()> {
        let cutoff = now.saturating_sub(self.retention.max_age_ms);
        let mut entries: VecDeque<(EventId, Arc<Event>)> = VecDeque::new();
        match std::fs::File::open(&self.path) {
            Ok(file) => {
                for line in std::io::BufReader::new(file).lines() {
                    // A torn last line (a crash mid-append) is skipped.
                    let Ok(line) = serde_json::from_str::<Line>(&line?) else {
                        continue;
                    };
                    if line.id.0 < cutoff || entries.back().is_some_and(|(id, _)| *id >= line.id) {
                        continue;
                    }
                    entries.push_back((line.id, Arc::new(line.event)));
                    if entries.len() > self.retention.max_len {
                        entries.pop_front();
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let lines: Vec<String> = entries.iter().map(|(id, e)| line_text(*id, e)).collect();
        rewrite(&self.path, &lines)?;
        let last = entries.back().map_or((0, 0), |(id, _)| *id);
        {
            let mut ring = lock(&self.ring);
            ring.entries = entries;
            ring.last = last;
            ring.appended = 0;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let path = self.path.clone();
        std::thread::Builder::new()
            .name("events-writer".into())
            .spawn(move || write_loop(&path, rx))?;
        *lock(&self.writer) = Some(tx);
        Ok(())
    }

    /// Appends an event at `now` (Unix ms); returns its id. Cheap: a short
    /// lock, a JSON line handed to the writer thread.
    pub fn append(&self, event: Event, now: u64) -> EventId {
        let event = Arc::new(event);
        let (id, compact) = {
            let mut ring = lock(&self.ring);
            let id = if now > ring.last.0 {
                (now, 0)
            } else if ring.last.1 < u32::MAX {
                (ring.last.0, ring.last.1 + 1)
            } else {
                (ring.last.0 + 1, 0)
            };
            ring.last = id;
            ring.entries.push_back((id, event.clone()));
            self.trim(&mut ring, now);
            ring.appended += 1;
            // The file holds at most about twice the stream: rewrite it
            // from memory when it grows past that.
            let compact = ring.appended > self.retention.max_len.max(1024);
            if compact {
                ring.appended = 0;
            }
            (id, compact.then(|| snapshot_lines(&ring)))
        };
        self.appended_total.fetch_add(1, Ordering::Relaxed);
        if let Some(tx) = lock(&self.writer).as_ref() {
            let _ = tx.send(match compact {
                Some(lines) => Job::Compact(lines),
                None => Job::Append(line_text(id, &event)),
            });
        }
        self.notify.send_replace(encode_id(id));
        id
    }

    fn trim(&self, ring: &mut Ring, now: u64) {
        let cutoff = now.saturating_sub(self.retention.max_age_ms);
        while ring.entries.len() > self.retention.max_len
            || ring.entries.front().is_some_and(|(id, _)| id.0 < cutoff)
        {
            ring.entries.pop_front();
        }
    }

    /// Drops entries past the retention at `now`, and rewrites the file
    /// (on the writer thread) when any were dropped.
    pub fn expire(&self, now: u64) {
        let lines = {
            let mut ring = lock(&self.ring);
            let before = ring.entries.len();
            self.trim(&mut ring, now);
            if ring.entries.len() == before {
                return;
            }
            ring.appended = 0;
            snapshot_lines(&ring)
        };
        if let Some(tx) = lock(&self.writer).as_ref() {
            let _ = tx.send(Job::Compact(lines));
        }
    }

    /// Waits until everything appended so far is on disk. Blocking.
    pub fn sync(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        let sent = lock(&self.writer)
            .as_ref()
            .is_some_and(|w| w.send(Job::Sync(tx)).is_ok());
        if sent {
            let _ = rx.recv_timeout(Duration::from_secs(10));
        }
    }

    /// Entries retained at `now`.
    pub fn len(&self, now: u64) -> usize {
        let mut ring = lock(&self.ring);
        self.trim(&mut ring, now);
        ring.entries.len()
    }

    /// Whether no entry is retained at `now`.
    pub fn is_empty(&self, now: u64) -> bool {
        self.len(now) == 0
    }

    /// The newest entry's id, if any.
    pub fn last_id(&self) -> Option<EventId> {
        lock(&self.ring).entries.back().map(|(id, _)| *id)
    }

    /// The id the next XREAD `$` waits after: the newest id ever given.
    pub fn top_id(&self) -> EventId {
        lock(&self.ring).last
    }

    /// Up to `count` entries with ids in `from..=to` (newest first when
    /// `rev`), retention applied at `now`.
    pub fn range(
        &self,
        from: EventId,
        to: EventId,
        rev: bool,
        count: usize,
        now: u64,
    ) -> Vec<(EventId, Arc<Event>)> {
        let mut ring = lock(&self.ring);
        self.trim(&mut ring, now);
        if from > to {
            return Vec::new();
        }
        let start = ring.entries.partition_point(|(id, _)| *id < from);
        let end = ring.entries.partition_point(|(id, _)| *id <= to);
        let slice = ring.entries.range(start..end);
        if rev {
            slice.rev().take(count).cloned().collect()
        } else {
            slice.take(count).cloned().collect()
        }
    }

    /// How many entries have ids in `from..=to`.
    pub fn count(&self, from: EventId, to: EventId) -> usize {
        let ring = lock(&self.ring);
        if from > to {
            return 0;
        }
        let start = ring.entries.partition_point(|(id, _)| *id < from);
        let end = ring.entries.partition_point(|(id, _)| *id <= to);
        end.saturating_sub(start)
    }

    /// A receiver that changes whenever an entry is appended.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.notify.subscribe()
    }

    /// Events appended since the start.
    pub fn appended(&self) -> u64 {
        self.appended_total.load(Ordering::Relaxed)
    }
}

/// `rate` (0 to 1) as a threshold a uniform 64-bit number falls below
/// with that probability; 0 is off.
pub fn sample_threshold(rate: f64) -> u64 {
    if rate >= 1.0 {
        u64::MAX
    } else if rate > 0.0 {
        (rate * u64::MAX as f64) as u64
    } else {
        0
    }
}

/// Whether this evaluation is sampled, for a threshold from
/// [`sample_threshold`]: a per-thread xorshift generator, no lock, no
/// shared write.
#[inline]
pub fn sampled(threshold: u64) -> bool {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = const { Cell::new(0) };
    }
    if threshold == 0 {
        return false;
    }
    if threshold == u64::MAX {
        return true;
    }
    STATE.with(|s| {
        let mut x = s.get();
        if x == 0 {
            // Seeded per thread from its stack address and the clock.
            x = (&x as *const u64 as u64)
                ^ std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64)
                | 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x < threshold
    })
}

fn encode_id(id: EventId) -> u64 {
    (id.0 << 20) ^ u64::from(id.1)
}

fn line_text(id: EventId, event: &Event) -> String {
    serde_json::to_string(&Line {
        id,
        event: event.clone(),
    })
    .unwrap_or_default()
}

/// What memory holds, cheap to take under the lock (the lines are written
/// on the writer thread).
fn snapshot_lines(ring: &Ring) -> Vec<(EventId, Arc<Event>)> {
    ring.entries.iter().cloned().collect()
}

fn rewrite(path: &Path, lines: &[String]) -> std::io::Result<()> {
    let tmp = path.with_extension("jsonl.tmp");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    for line in lines {
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_data()?;
    std::fs::rename(&tmp, path)
}

fn open_append(path: &Path) -> std::io::Result<std::io::BufWriter<std::fs::File>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    Ok(std::io::BufWriter::with_capacity(256 * 1024, file))
}

/// The writer thread: appends lines, flushing to the OS whenever the queue
/// is drained (so a killed process loses nothing handed over), fsyncing
/// every second of activity.
fn write_loop(path: &Path, jobs: Receiver<Job>) {
    let mut out = match open_append(path) {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), "cannot write the events file");
            return;
        }
    };
    let mut dirty = false;
    let mut last_sync = std::time::Instant::now();
    loop {
        let job = match jobs.recv_timeout(Duration::from_millis(if dirty { 5 } else { 1000 })) {
            Ok(job) => Some(job),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let result = match job {
            Some(Job::Append(line)) => {
                dirty = true;
                out.write_all(line.as_bytes())
                    .and_then(|()| out.write_all(b"\n"))
            }
            Some(Job::Compact(entries)) => out.flush().and_then(|()| {
                let lines: Vec<String> = entries.iter().map(|(id, e)| line_text(*id, e)).collect();
                rewrite(path, &lines)?;
                out = open_append(path)?;
                Ok(())
            }),
            Some(Job::Sync(done)) => {
                let r = out.flush().and_then(|()| out.get_ref().sync_data());
                let _ = done.send(());
                r
            }
            None => {
                let r = out.flush();
                if dirty && last_sync.elapsed() >= Duration::from_secs(1) {
                    last_sync = std::time::Instant::now();
                    dirty = false;
                    let _ = out.get_ref().sync_data();
                }
                r
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "writing the events file failed");
        }
    }
    let _ = out.flush().and_then(|()| out.get_ref().sync_data());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(ts: u64) -> Event {
        Event {
            kind: EventType::Track,
            flag: None,
            experiment: None,
            unit: Some("u1".into()),
            variation: None,
            reason: None,
            event: Some("buy".into()),
            value: Some(2.5),
            ts,
            node: 1,
        }
    }

    #[test]
    fn ids_increase_within_a_millisecond_and_length_is_bounded() {
        let dir = std::env::temp_dir().join(format!("events-unit-{}", std::process::id()));
        let log = EventLog::new(
            &dir,
            Retention {
                max_age_ms: 1000,
                max_len: 3,
            },
        );
        assert_eq!(log.append(track(5000), 5000), (5000, 0));
        assert_eq!(log.append(track(5000), 5000), (5000, 1));
        assert_eq!(log.append(track(4000), 4000), (5000, 2));
        log.append(track(5001), 5001);
        assert_eq!(log.len(5001), 3);
        assert_eq!(
            log.range((0, 0), (u64::MAX, u32::MAX), false, 10, 5001)[0].0,
            (5000, 1)
        );
        // Age: everything older than 1 s at 6001 is gone.
        assert_eq!(log.len(6001), 1);
        let _ = std::fs::remove_dir_all(dir);
    }
}
