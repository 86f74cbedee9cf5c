//! Server counters, read by `INFO` and counted where the work happens.

use std::sync::atomic::{AtomicU64, Ordering};

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
    /// Writes applied.
    pub writes_applied: AtomicU64,
    /// Bytes read from clients.
    pub net_input_bytes: AtomicU64,
    /// Bytes written to clients.
    pub net_output_bytes: AtomicU64,
    /// Connections closed for a protocol error.
    pub protocol_errors: AtomicU64,
    /// Flag evaluations by reason, in [`REASONS`] order.
    pub evaluation_reasons: [AtomicU64; 5],
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
    /// Pub/sub messages dropped because a peer's queue was full.
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
    pages * 4096
}
