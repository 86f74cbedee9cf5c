//! Evaluation insight: the counters of every compiled flag are read once a
//! minute, the differences folded into hourly tallies per flag (by variation
//! and by reason, with first and last evaluation time) and appended to a
//! node-local file under the data directory. At start the file is read back
//! and rewritten with only the hours inside the retention.
//!
//! Times are Unix milliseconds; first/last evaluated have the precision of
//! the rollup (a minute), except that counts not yet rolled up are reported
//! as evaluated "now".

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::flag::counters::REASONS;
use crate::flag::EvalCounters;

/// One hour in milliseconds.
pub const HOUR_MS: u64 = 3_600_000;
/// One day in milliseconds.
pub const DAY_MS: u64 = 24 * HOUR_MS;

/// A compiled flag as the rollup sees it: its counters and variation names.
pub trait CountedFlag: Send + Sync {
    /// The evaluation counters of this compiled version.
    fn counters(&self) -> &EvalCounters;
    /// The name of variation `index`.
    fn variation_name(&self, index: usize) -> &str;
}

/// Evaluations by variation name and by reason name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Variation name → evaluations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_variation: BTreeMap<String, u64>,
    /// Reason name → evaluations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_reason: BTreeMap<String, u64>,
}

impl Tally {
    /// Total evaluations.
    pub fn total(&self) -> u64 {
        self.by_variation.values().sum()
    }

    /// Adds `other` into this tally.
    pub fn add(&mut self, other: &Tally) {
        for (k, n) in &other.by_variation {
            *self.by_variation.entry(k.clone()).or_default() += n;
        }
        for (k, n) in &other.by_reason {
            *self.by_reason.entry(k.clone()).or_default() += n;
        }
    }

    fn from_cells(flag: &dyn CountedFlag, cells: &[u64], seen: &[u64]) -> Tally {
        let mut t = Tally::default();
        for (i, n) in cells.iter().enumerate() {
            let d = n.saturating_sub(seen.get(i).copied().unwrap_or(0));
            if d == 0 {
                continue;
            }
            let (variation, reason) = (i / REASONS.len(), REASONS[i % REASONS.len()]);
            *t.by_variation
                .entry(flag.variation_name(variation).to_string())
                .or_default() += d;
            *t.by_reason.entry(reason.to_string()).or_default() += d;
        }
        t
    }
}

/// Evaluations by variation name in one bucket of a series.
pub type BucketCounts = BTreeMap<String, u64>;

/// What `FLAG.STATS` reports for one flag on one node (or merged).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagStats {
    /// Evaluations by variation and reason.
    pub tally: Tally,
    /// First evaluation seen (Unix ms).
    pub first_evaluated: Option<u64>,
    /// Last evaluation seen (Unix ms).
    pub last_evaluated: Option<u64>,
    /// When a series was asked for: bucket start (Unix ms, aligned to the
    /// epoch) → evaluations by variation, every bucket from the first to the
    /// one holding "now" (empty buckets included). Its counts add up to `tally`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<BTreeMap<u64, BucketCounts>>,
}

impl FlagStats {
    /// Merges another node's answer into this one.
    pub fn merge(&mut self, other: &FlagStats) {
        self.tally.add(&other.tally);
        self.first_evaluated = match (self.first_evaluated, other.first_evaluated) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_evaluated = self.last_evaluated.max(other.last_evaluated);
        if let Some(theirs) = &other.series {
            let mine = self.series.get_or_insert_with(BTreeMap::new);
            for (start, counts) in theirs {
                let bucket = mine.entry(*start).or_default();
                for (variation, n) in counts {
                    *bucket.entry(variation.clone()).or_default() += n;
                }
            }
        }
    }
}

/// Why `FLAG.STALE` lists a flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleFlag {
    /// The flag's key.
    pub key: String,
    /// `not_evaluated` or `single_variation`.
    pub why: &'static str,
    /// The last evaluation seen, if any.
    pub last_evaluated: Option<u64>,
    /// For `single_variation`: the variation every evaluation got.
    pub variation: Option<String>,
}

/// One flag's hourly history.
#[derive(Debug, Default)]
struct History {
    first: Option<u64>,
    last: Option<u64>,
    hours: BTreeMap<u64, Tally>,
}

/// One line of the insight file: evaluations of one flag in one hour.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    key: String,
    hour: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    first: Option<u64>,
    last: u64,
    #[serde(flatten)]
    tally: Tally,
}

/// A compiled flag being watched and the counts already rolled up from it.
struct Watched {
    flag: Arc<dyn CountedFlag>,
    seen: Vec<u64>,
}

#[derive(Default)]
struct Book {
    history: HashMap<String, History>,
    watched: HashMap<Arc<str>, Watched>,
}

/// Node-local evaluation insight for every flag.
pub struct Insight {
    book: Mutex<Book>,
    path: PathBuf,
    retention_ms: u64,
}

impl std::fmt::Debug for Insight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Insight").field("path", &self.path).finish()
    }
}

/// Adds a tally's counts by variation into a bucket.
fn add_counts(bucket: &mut BucketCounts, tally: &Tally) {
    for (variation, n) in &tally.by_variation {
        *bucket.entry(variation.clone()).or_default() += n;
    }
}

/// The hour a time falls in.
fn hour_of(ms: u64) -> u64 {
    ms - ms % HOUR_MS
}

fn same_flag(a: &Arc<dyn CountedFlag>, b: &Arc<dyn CountedFlag>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

impl Insight {
    /// Insight kept in `dir/evaluations.jsonl`, keeping `retention_days` of hours.
    pub fn new(dir: &Path, retention_days: u64) -> Self {
        Insight {
            book: Mutex::new(Book::default()),
            path: dir.join("analytics").join("evaluations.jsonl"),
            retention_ms: retention_days.saturating_mul(DAY_MS),
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        // A panic while holding the lock leaves only counts: keep going.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the file back, drops hours past the retention and rewrites it
    /// compacted (one line per flag and hour). Blocking: run off the runtime.
    pub fn load(&self, now: u64) -> std::io::Result<()> {
        let cutoff = now.saturating_sub(self.retention_ms);
        let mut history: HashMap<String, History> = HashMap::new();
        match std::fs::File::open(&self.path) {
            Ok(file) => {
                for line in std::io::BufReader::new(file).lines() {
                    // A torn last line (crash mid-append) is skipped.
                    let Ok(line) = serde_json::from_str::<Line>(&line?) else {
                        continue;
                    };
                    let h = history.entry(line.key).or_default();
                    let first = line.first.unwrap_or(line.last);
                    h.first = Some(h.first.map_or(first, |f| f.min(first)));
                    h.last = h.last.max(Some(line.last));
                    h.hours.entry(line.hour).or_default().add(&line.tally);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        for h in history.values_mut() {
            h.hours.retain(|hour, _| hour + HOUR_MS > cutoff);
        }
        history.retain(|_, h| !h.hours.is_empty());
        self.rewrite(&history)?;
        self.book().history = history;
        Ok(())
    }

    fn rewrite(&self, history: &HashMap<String, History>) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("jsonl.tmp");
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        for (key, h) in history {
            let mut first = h.first;
            for (hour, tally) in &h.hours {
                let line = Line {
                    key: key.clone(),
                    hour: *hour,
                    first: first.take(),
                    last: h.last.unwrap_or(*hour).max(*hour),
                    tally: tally.clone(),
                };
                serde_json::to_writer(&mut out, &line)?;
                out.write_all(b"\n")?;
            }
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_data()?;
        std::fs::rename(&tmp, &self.path)
    }

    /// Folds what the counters of `flags` (the current compiled flags) gained
    /// since the last rollup into the hour of `now`, and appends it to the
    /// file. Blocking: run off the runtime.
    /// `retired` are versions replaced or deleted since the last rollup.
    pub fn roll_up<'a>(
        &self,
        retired: Vec<(Arc<str>, Arc<dyn CountedFlag>)>,
        flags: impl Iterator<Item = (&'a Arc<str>, Arc<dyn CountedFlag>)>,
        now: u64,
    ) -> std::io::Result<()> {
        let mut lines = Vec::new();
        {
            let mut book = self.book();
            let Book { history, watched } = &mut *book;
            let mut record = |key: &str, tally: Tally| {
                if tally.total() == 0 {
                    return;
                }
                let h = history.entry(key.to_string()).or_default();
                h.first.get_or_insert(now);
                h.last = h.last.max(Some(now));
                h.hours.entry(hour_of(now)).or_default().add(&tally);
                lines.push(Line {
                    key: key.to_string(),
                    hour: hour_of(now),
                    first: None,
                    last: now,
                    tally,
                });
            };
            let retired_ptrs: std::collections::HashSet<*const u8> = retired
                .iter()
                .map(|(_, f)| Arc::as_ptr(f) as *const u8)
                .collect();
            for (key, flag) in retired {
                let cells = flag.counters().snapshot();
                match watched.get(&key) {
                    Some(w) if same_flag(&w.flag, &flag) => {
                        record(&key, Tally::from_cells(&*flag, &cells, &w.seen));
                        watched.remove(&key);
                    }
                    _ => record(&key, Tally::from_cells(&*flag, &cells, &[])),
                }
            }
            let mut present = std::collections::HashSet::new();
            for (key, flag) in flags {
                present.insert(key.clone());
                if retired_ptrs.contains(&(Arc::as_ptr(&flag) as *const u8)) {
                    continue;
                }
                let cells = flag.counters().snapshot();
                match watched.get_mut(key) {
                    Some(w) if same_flag(&w.flag, &flag) => {
                        record(key, Tally::from_cells(&*flag, &cells, &w.seen));
                        w.seen = cells;
                    }
                    previous => {
                        // A new compiled version: finish the old one first.
                        if let Some(w) = previous {
                            let old = w.flag.counters().snapshot();
                            record(key, Tally::from_cells(&*w.flag, &old, &w.seen));
                        }
                        record(key, Tally::from_cells(&*flag, &cells, &[]));
                        watched.insert(key.clone(), Watched { flag, seen: cells });
                    }
                }
            }
            watched.retain(|key, w| {
                if present.contains(key) {
                    return true;
                }
                let old = w.flag.counters().snapshot();
                record(key, Tally::from_cells(&*w.flag, &old, &w.seen));
                false
            });
            let cutoff = now.saturating_sub(self.retention_ms);
            for h in history.values_mut() {
                while let Some((&hour, _)) = h.hours.first_key_value() {
                    if hour + HOUR_MS > cutoff {
                        break;
                    }
                    h.hours.pop_first();
                }
            }
        }
        if lines.is_empty() {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut out = Vec::new();
        for line in &lines {
            serde_json::to_writer(&mut out, line)?;
            out.push(b'\n');
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        file.write_all(&out)
    }

    /// Pending (not yet rolled up) counts of `flag`, the current version of `key`.
    fn pending(
        book: &Book,
        key: &str,
        flag: Option<&dyn CountedFlag>,
        retired: &[Arc<dyn CountedFlag>],
    ) -> Tally {
        let watched = book.watched.get(key);
        let mut t = Tally::default();
        let mut watched_done = false;
        for old in retired {
            let seen = match watched {
                Some(w) if same_flag(&w.flag, old) => {
                    watched_done = true;
                    &w.seen[..]
                }
                _ => &[],
            };
            t.add(&Tally::from_cells(&**old, &old.counters().snapshot(), seen));
        }
        let Some(flag) = flag else {
            return t;
        };
        let cells = flag.counters().snapshot();
        let watched = watched.filter(|_| !watched_done);
        let current = match watched {
            Some(w)
                if std::ptr::addr_eq(
                    Arc::as_ptr(&w.flag) as *const u8,
                    flag as *const dyn CountedFlag as *const u8,
                ) =>
            {
                Tally::from_cells(flag, &cells, &w.seen)
            }
            Some(w) => {
                // Replaced since the last rollup: the old version's rest too.
                let mut t = Tally::from_cells(&*w.flag, &w.flag.counters().snapshot(), &w.seen);
                t.add(&Tally::from_cells(flag, &cells, &[]));
                t
            }
            None => Tally::from_cells(flag, &cells, &[]),
        };
        t.add(&current);
        t
    }

    /// This node's statistics for `key` from the hour containing `since` on
    /// (all retained hours when `since` is 0); `flag` is its current compiled
    /// version, if it exists.
    /// `retired` are its versions replaced since the last rollup.
    /// With `bucket_ms` (a whole number of hours) the answer carries a series
    /// of those buckets too; counts not yet rolled up fall in the bucket of `now`.
    pub fn stats(
        &self,
        key: &str,
        flag: Option<&dyn CountedFlag>,
        retired: &[Arc<dyn CountedFlag>],
        since: u64,
        bucket_ms: Option<u64>,
        now: u64,
    ) -> FlagStats {
        let book = self.book();
        let mut out = FlagStats::default();
        // Buckets are aligned to the epoch, so every node's line up when merged.
        let bucket_ms = bucket_ms.filter(|b| *b > 0);
        let bucket_of = |ms: u64| bucket_ms.map_or(0, |b| ms - ms % b);
        let mut series: BTreeMap<u64, BucketCounts> = BTreeMap::new();
        if let Some(h) = book.history.get(key) {
            for (hour, tally) in h.hours.range(hour_of(since)..) {
                out.tally.add(tally);
                if bucket_ms.is_some() {
                    add_counts(series.entry(bucket_of(*hour)).or_default(), tally);
                }
            }
            if out.tally.total() > 0 {
                out.first_evaluated = h.first.map(|f| f.max(since));
                out.last_evaluated = h.last;
            }
        }
        let pending = Self::pending(&book, key, flag, retired);
        if pending.total() > 0 {
            out.tally.add(&pending);
            out.first_evaluated.get_or_insert(now);
            out.last_evaluated = Some(now);
            if bucket_ms.is_some() {
                add_counts(series.entry(bucket_of(now)).or_default(), &pending);
            }
        }
        if let Some(b) = bucket_ms {
            // Every bucket from the first asked for (or the first with data)
            // to now, never before the retention: the chart needs the zeros.
            let oldest = bucket_of(now.saturating_sub(self.retention_ms));
            let first = if since > 0 {
                Some(bucket_of(since))
            } else {
                series.keys().next().copied()
            };
            if let Some(first) = first {
                let mut start = first.max(oldest);
                while start <= now {
                    series.entry(start).or_default();
                    let Some(next) = start.checked_add(b) else {
                        break;
                    };
                    start = next;
                }
            }
            out.series = Some(series);
        }
        out
    }

    /// Whether `key` (current version `flag`, replaced versions `retired`)
    /// is stale over the last `days`: not evaluated since
    /// `max(cutoff, changed_at)`, or every evaluation in the window served one
    /// variation.
    pub fn staleness(
        &self,
        key: &str,
        flag: &dyn CountedFlag,
        changed_at: u64,
        retired: &[Arc<dyn CountedFlag>],
        days: u64,
        now: u64,
    ) -> Option<StaleFlag> {
        let cutoff = now.saturating_sub(days.saturating_mul(DAY_MS));
        let window = self.stats(key, Some(flag), retired, cutoff, None, now);
        let ever = self.stats(key, Some(flag), retired, 0, None, now);
        let evaluated_in_window = window.last_evaluated.is_some_and(|l| l >= cutoff);
        if !evaluated_in_window {
            // A flag changed inside the window is still being worked on.
            if changed_at >= cutoff && days > 0 {
                return None;
            }
            return Some(StaleFlag {
                key: key.to_string(),
                why: "not_evaluated",
                last_evaluated: ever.last_evaluated,
                variation: None,
            });
        }
        // One variation for the whole window: the evaluations must cover it.
        let covers = ever.first_evaluated.is_some_and(|f| f <= cutoff);
        let served: Vec<_> = window
            .tally
            .by_variation
            .iter()
            .filter(|(_, n)| **n > 0)
            .collect();
        if served.len() == 1 && (covers || days == 0) {
            return Some(StaleFlag {
                key: key.to_string(),
                why: "single_variation",
                last_evaluated: window.last_evaluated,
                variation: Some(served[0].0.clone()),
            });
        }
        None
    }
}
