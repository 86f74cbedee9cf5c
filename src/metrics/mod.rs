//! Server counters, read by `INFO` and counted where the work happens.

pub mod alloc;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Process-wide counters. Relaxed atomics: they are statistics, not control.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted since start.
    pub connections_received: AtomicU64,
    /// Connections refused (max clients, protected mode).
    pub rejected_connections: AtomicU64,
    /// Commands executed (including refused ones).
    pub commands_processed: AtomicU64,
    /// Flag evaluations answered.
    pub evaluations: AtomicU64,
    /// Bytes read from clients.
    pub net_input_bytes: AtomicU64,
    /// Bytes written to clients.
    pub net_output_bytes: AtomicU64,
    /// Connections closed for a protocol error.
    pub protocol_errors: AtomicU64,
    /// Error replies sent (refused commands and errors inside `EXEC` included).
    pub error_replies: AtomicU64,
    /// Failed logins (INFO `acl_access_denied_auth`).
    pub acl_denied_auth: AtomicU64,
    /// Commands denied by ACL.
    pub acl_denied_cmd: AtomicU64,
    /// Key accesses denied by ACL.
    pub acl_denied_key: AtomicU64,
    /// Channel accesses denied by ACL.
    pub acl_denied_channel: AtomicU64,
    /// Rates over the last 1.6 s, sampled every 100 ms.
    pub rates: Mutex<Rates>,
    /// Flag evaluations by reason, in [`REASONS`] order.
    pub evaluation_reasons: [AtomicU64; 5],
    /// Per-command counters, one slot per command table entry (empty until
    /// the server sizes it with [`Stats::with_commands`]).
    pub commands: Box<[CommandStat]>,
    /// Time commands took to run, all commands together.
    pub command_duration: Histogram,
    /// Error replies by kind (the first word of the error).
    pub errors: ErrorStats,
}

/// One command's counters, as Redis's `INFO commandstats` shows them.
#[derive(Debug, Default)]
pub struct CommandStat {
    /// Times it ran.
    pub calls: AtomicU64,
    /// Nanoseconds it ran for, in total.
    pub nanos: AtomicU64,
    /// Times it was refused before running (arity, authentication, ACL, loading...).
    pub rejected: AtomicU64,
    /// Times it ran and answered an error.
    pub failed: AtomicU64,
}

/// Buckets of [`Histogram`]s of durations, in microseconds (upper bounds).
pub const DURATION_BUCKETS_US: &[u64] = &[
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000, 2_500_000,
];

/// Buckets of [`Histogram`]s of counts (a batch's size).
pub const SIZE_BUCKETS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096];

/// Most finite buckets a [`Histogram`] holds.
const MAX_BUCKETS: usize = 17;

/// A histogram with fixed upper bounds, counted with relaxed atomics; the
/// last slot counts values above every bound (`+Inf`).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    buckets: [AtomicU64; MAX_BUCKETS + 1],
    sum: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new(DURATION_BUCKETS_US)
    }
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending, at most 17).
    pub const fn new(bounds: &'static [u64]) -> Self {
        assert!(bounds.len() <= MAX_BUCKETS);
        Histogram {
            bounds,
            buckets: [const { AtomicU64::new(0) }; MAX_BUCKETS + 1],
            sum: AtomicU64::new(0),
        }
    }

    /// Counts one value.
    pub fn observe(&self, v: u64) {
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        add(&self.buckets[i], 1);
        add(&self.sum, v);
    }

    /// Counts `n` values of `v` each, `sum` in total.
    pub fn observe_n(&self, v: u64, n: u64, sum: u64) {
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        add(&self.buckets[i], n);
        add(&self.sum, sum);
    }

    /// The upper bounds and the count of values in each bucket (not
    /// cumulative), `u64::MAX` standing for `+Inf`.
    pub fn buckets(&self) -> Vec<(u64, u64)> {
        self.bounds
            .iter()
            .copied()
            .chain([u64::MAX])
            .zip(&self.buckets)
            .map(|(b, n)| (b, get(n)))
            .collect()
    }

    /// How many values were counted.
    pub fn count(&self) -> u64 {
        self.buckets[..=self.bounds.len()].iter().map(get).sum()
    }

    /// The sum of the values counted.
    pub fn sum(&self) -> u64 {
        get(&self.sum)
    }
}

/// Distinct error kinds counted before new ones are ignored, as Redis caps
/// `errorstats` (a client cannot grow the table without bound).
pub const ERROR_KINDS_LIMIT: usize = 128;

/// Error replies by kind: `ERR`, `NOPERM`, `WRONGPASS`...
#[derive(Debug, Default)]
pub struct ErrorStats(Mutex<std::collections::BTreeMap<String, u64>>);

impl ErrorStats {
    /// Counts one error reply by its first word.
    pub fn count(&self, text: &str) {
        let kind = text.split(' ').next().unwrap_or("");
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(kind) {
            *n += 1;
        } else if map.len() < ERROR_KINDS_LIMIT {
            map.insert(kind.to_string(), 1);
        }
    }

    /// Every kind seen and its count, by kind.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(k, n)| (k.clone(), *n)).collect()
    }
}

/// Counters of the storage paths (the write-ahead log's writer thread, the
/// state machine's apply and snapshots), which run below the server state
/// and so count into this one process-wide set.
#[derive(Debug)]
pub struct StorageStats {
    /// Write requests applied to the state (on every node).
    pub writes_applied: AtomicU64,
    /// Time each write-ahead log `fdatasync` took, in microseconds.
    pub wal_fsync: Histogram,
    /// Records written per write-ahead log batch (one sync each).
    pub wal_batch: Histogram,
    /// Snapshots built on this node (installed ones are not counted).
    pub snapshots: AtomicU64,
    /// Time each snapshot built here took to build and write, in microseconds.
    pub snapshot_duration: Histogram,
}

/// The storage counters of this process.
pub static STORAGE: StorageStats = StorageStats {
    writes_applied: AtomicU64::new(0),
    wal_fsync: Histogram::new(DURATION_BUCKETS_US),
    wal_batch: Histogram::new(SIZE_BUCKETS),
    snapshots: AtomicU64::new(0),
    snapshot_duration: Histogram::new(DURATION_BUCKETS_US),
};

/// Samples a rate is averaged over, as Redis does (`STATS_METRIC_SAMPLES`).
const RATE_SAMPLES: usize = 16;

/// One rate: the last [`RATE_SAMPLES`] per-second readings of a counter.
#[derive(Debug, Default, Clone)]
pub struct Rate {
    samples: [u64; RATE_SAMPLES],
    next: usize,
    last: Option<(Instant, u64)>,
}

impl Rate {
    /// Records the counter's value at `now`: the rate since the previous
    /// reading becomes one sample.
    pub fn record(&mut self, now: Instant, value: u64) {
        if let Some((at, before)) = self.last {
            let ms = now.duration_since(at).as_millis() as u64;
            let per_sec = (value.saturating_sub(before) * 1000)
                .checked_div(ms)
                .unwrap_or(0);
            self.samples[self.next] = per_sec;
            self.next = (self.next + 1) % RATE_SAMPLES;
        }
        self.last = Some((now, value));
    }

    /// The mean of the samples, per second (slots not yet sampled count as 0,
    /// as in Redis).
    pub fn per_sec(&self) -> u64 {
        self.samples.iter().sum::<u64>() / RATE_SAMPLES as u64
    }
}

/// The rates INFO reports as `instantaneous_*`.
#[derive(Debug, Default, Clone)]
pub struct Rates {
    /// Commands per second.
    pub ops: Rate,
    /// Bytes read from clients per second.
    pub input: Rate,
    /// Bytes written to clients per second.
    pub output: Rate,
}

impl Stats {
    /// Counters with `n` per-command slots.
    pub fn with_commands(n: usize) -> Self {
        Stats {
            commands: (0..n).map(|_| CommandStat::default()).collect(),
            ..Stats::default()
        }
    }

    /// Counts one run of the command in `slot` that took `elapsed` (`None`:
    /// it blocked, so its time is not its cost, as Redis excludes it).
    pub fn count_call(&self, slot: usize, elapsed: Option<std::time::Duration>, failed: bool) {
        if let Some(c) = self.commands.get(slot) {
            add(&c.calls, 1);
            if failed {
                add(&c.failed, 1);
            }
            if let Some(d) = elapsed {
                let nanos = d.as_nanos() as u64;
                add(&c.nanos, nanos);
                self.command_duration.observe(nanos / 1000);
            }
        }
    }

    /// Counts `calls` runs of the command in `slot`, `failed` of them
    /// answering an error, that took `elapsed` together (each counted in the
    /// duration histogram at their mean).
    pub fn count_calls(&self, slot: usize, calls: u64, failed: u64, elapsed: std::time::Duration) {
        if calls == 0 {
            return;
        }
        if let Some(c) = self.commands.get(slot) {
            add(&c.calls, calls);
            if failed > 0 {
                add(&c.failed, failed);
            }
            let nanos = elapsed.as_nanos() as u64;
            add(&c.nanos, nanos);
            self.command_duration
                .observe_n(nanos / 1000 / calls, calls, nanos / 1000);
        }
    }

    /// Counts a refusal of the command in `slot`.
    pub fn count_rejected(&self, slot: usize) {
        if let Some(c) = self.commands.get(slot) {
            add(&c.rejected, 1);
        }
    }

    /// Takes one sample of every rate; called every 100 ms.
    pub fn sample_rates(&self) {
        let now = Instant::now();
        let mut rates = self.rates.lock().unwrap_or_else(|p| p.into_inner());
        rates.ops.record(now, get(&self.commands_processed));
        rates.input.record(now, get(&self.net_input_bytes));
        rates.output.record(now, get(&self.net_output_bytes));
    }

    /// A copy of the rates.
    pub fn rates(&self) -> Rates {
        self.rates.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Runs of one fast command on one connection, counted locally and added to
/// [`Stats`] once per run: a pipeline of the same command then costs one
/// clock pair and one set of atomic adds per read batch instead of per
/// command. A call of another command, a command that is not fast, and the
/// end of every read batch flush it, so a command sees every call before it
/// counted.
#[derive(Debug, Default)]
pub struct Tally {
    slot: usize,
    calls: u64,
    failed: u64,
    started: Option<Instant>,
}

impl Tally {
    /// Starts a call of the command in `slot`: flushes another command's run,
    /// and reads the clock when this call starts a run.
    pub fn begin(&mut self, stats: &Stats, slot: usize) {
        if self.started.is_some() && self.slot != slot {
            self.flush(stats);
        }
        if self.started.is_none() {
            self.slot = slot;
            self.started = Some(Instant::now());
        }
    }

    /// Ends the call [`Tally::begin`] started.
    pub fn end(&mut self, failed: bool) {
        self.calls += 1;
        self.failed += u64::from(failed);
    }

    /// Adds the run so far to `stats` (its time: from its first call's start
    /// until now).
    pub fn flush(&mut self, stats: &Stats) {
        if let Some(started) = self.started.take() {
            stats.count_calls(self.slot, self.calls, self.failed, started.elapsed());
        }
        self.calls = 0;
        self.failed = 0;
    }
}

/// The evaluation reasons counted apart, as `FLAG.DETAIL` names them.
pub const REASONS: [&str; 5] = [
    "OFF",
    "PREREQUISITE_FAILED",
    "TARGET_MATCH",
    "RULE_MATCH",
    "FALLTHROUGH",
];

/// Counts the reason of one flag evaluation (the total is counted apart).
pub fn count_reason(stats: &Stats, reason: &crate::flag::Reason) {
    use crate::flag::Reason;
    let i = match reason {
        Reason::Off => 0,
        Reason::PrerequisiteFailed(_) => 1,
        Reason::TargetMatch => 2,
        Reason::RuleMatch { .. } => 3,
        Reason::Fallthrough => 4,
    };
    add(&stats.evaluation_reasons[i], 1);
}

/// Cluster counters, read by `RAFT.INFO`.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Writes this node forwarded to its leader.
    pub writes_forwarded: AtomicU64,
    /// Writes refused with -CLUSTERDOWN (no leader, no quorum, leader unreachable).
    pub writes_refused: AtomicU64,
    /// Writes answered -TIMEOUT: sent, outcome unknown.
    pub writes_unknown: AtomicU64,
    /// Bus connections refused for not proving the cluster secret.
    pub bus_peers_refused: AtomicU64,
    /// Pub/sub messages not delivered to a peer: its queue was full, the bus
    /// call failed, or a message was larger than a bus message.
    pub peer_messages_dropped: AtomicU64,
}

/// Adds `n` to a counter.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Reads a counter.
pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Resident set size of this process in bytes (0 where /proc is unavailable).
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * rustix::param::page_size() as u64
}

/// CPU time this process used, `(system, user)` in seconds (`None` where
/// /proc is unavailable).
pub fn cpu_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may contain spaces; fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    (ticks > 0.0).then(|| (stime / ticks, utime / ticks))
}
