//! Test-only bus chaos (cargo feature `chaos`, never in a release build):
//! delays and reorders the raft RPCs this node sends, per peer, as the file
//! `<data-dir>/chaos.json` says (re-read every 100 ms by a thread of its own,
//! so the fault harness can switch it on and off), e.g.
//! `{"2": {"delay_ms": 40, "jitter_ms": 60, "reorder_pct": 25, "hold_ms": 900}}`.
//!
//! - *delay*: each RPC to that peer waits `delay_ms` plus a uniform
//!   `0..=jitter_ms` before it is sent (on the usual connection, so RPCs to
//!   one peer keep their order).
//! - *reorder*: `reorder_pct` % of the RPCs to that peer are instead held for
//!   a uniform `0..=hold_ms` and sent on a connection of their own, so later
//!   RPCs overtake them; one the sender gave up on (its deadline passed) is
//!   still delivered, late. One bus connection carries one request at a
//!   time over TCP, so this is reordering at the message level.
//!
//! Counters go to `<data-dir>/chaos.stats` (JSON) with every re-read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Duration;

#[cfg(not(debug_assertions))]
compile_error!("the chaos feature is for test builds only, never a release build");

/// What happens to the RPCs sent to one peer.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
#[serde(default)]
pub struct Link {
    /// Fixed delay before each RPC is sent.
    pub delay_ms: u64,
    /// Extra uniform random delay, up to this.
    pub jitter_ms: u64,
    /// Percent of RPCs held back on a connection of their own.
    pub reorder_pct: u8,
    /// Longest hold of a reordered RPC.
    pub hold_ms: u64,
}

/// What to do with one RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Wait this long, then send as usual.
    Delay(Duration),
    /// Hold this long on a connection of its own, then send.
    Reorder(Duration),
}

static LINKS: RwLock<Option<HashMap<u64, Link>>> = RwLock::new(None);

/// RPCs delayed.
pub static DELAYED: AtomicU64 = AtomicU64::new(0);
/// RPCs held back (reordered).
pub static REORDERED: AtomicU64 = AtomicU64::new(0);
/// Held-back RPCs delivered after their sender had given up on them.
pub static LATE: AtomicU64 = AtomicU64::new(0);
/// Total milliseconds of delay and hold added.
pub static ADDED_MS: AtomicU64 = AtomicU64::new(0);

fn uniform(max_ms: u64) -> u64 {
    if max_ms == 0 {
        0
    } else {
        rand::random::<u64>() % (max_ms + 1)
    }
}

/// The plan for the next RPC to node `target`, if its link is disturbed.
pub fn plan(target: u64) -> Option<Plan> {
    let link = {
        let links = LINKS.read().unwrap_or_else(|e| e.into_inner());
        *links.as_ref()?.get(&target)?
    };
    if link.reorder_pct > 0 && uniform(99) < u64::from(link.reorder_pct) {
        let hold = uniform(link.hold_ms);
        REORDERED.fetch_add(1, Ordering::Relaxed);
        ADDED_MS.fetch_add(hold, Ordering::Relaxed);
        return Some(Plan::Reorder(Duration::from_millis(hold)));
    }
    let delay = link.delay_ms + uniform(link.jitter_ms);
    if delay == 0 {
        return None;
    }
    DELAYED.fetch_add(1, Ordering::Relaxed);
    ADDED_MS.fetch_add(delay, Ordering::Relaxed);
    Some(Plan::Delay(Duration::from_millis(delay)))
}

fn reload(control: &Path, stats: &Path) {
    let links = std::fs::read(control).ok().and_then(|b| {
        match serde_json::from_slice::<HashMap<String, Link>>(&b) {
            Ok(m) => Some(
                m.into_iter()
                    .filter_map(|(k, v)| Some((k.parse::<u64>().ok()?, v)))
                    .collect::<HashMap<_, _>>(),
            ),
            Err(e) => {
                tracing::warn!(path = %control.display(), error = %e, "chaos: unreadable control file ignored");
                None
            }
        }
    });
    *LINKS.write().unwrap_or_else(|e| e.into_inner()) = links;
    let counters = serde_json::json!({
        "delayed": DELAYED.load(Ordering::Relaxed),
        "reordered": REORDERED.load(Ordering::Relaxed),
        "late": LATE.load(Ordering::Relaxed),
        "added_ms": ADDED_MS.load(Ordering::Relaxed),
    });
    let tmp = stats.with_extension("stats.tmp");
    if std::fs::write(&tmp, counters.to_string()).is_ok() {
        let _ = std::fs::rename(&tmp, stats);
    }
}

/// Starts following `<data_dir>/chaos.json` (on a thread: it reads files).
pub fn install(data_dir: &Path) {
    let control: PathBuf = data_dir.join("chaos.json");
    let stats = data_dir.join("chaos.stats");
    tracing::warn!(path = %control.display(), "chaos build: the bus delays and reorders raft RPCs as this file says");
    let spawned = std::thread::Builder::new()
        .name("chaos".into())
        .spawn(move || loop {
            reload(&control, &stats);
            std::thread::sleep(Duration::from_millis(100));
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "chaos build: cannot start the control thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_delays_and_reorders_as_its_control_file_says() {
        let dir = std::env::temp_dir().join(format!("chaos-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (control, stats) = (dir.join("chaos.json"), dir.join("chaos.stats"));
        std::fs::write(&control, r#"{"7": {"delay_ms": 30, "jitter_ms": 10}}"#).unwrap();
        reload(&control, &stats);
        for _ in 0..50 {
            match plan(7) {
                Some(Plan::Delay(d)) => assert!((30..=40).contains(&d.as_millis())),
                other => panic!("expected a delay, got {other:?}"),
            }
        }
        assert_eq!(plan(8), None, "an unlisted peer is not disturbed");
        std::fs::write(&control, r#"{"7": {"reorder_pct": 100, "hold_ms": 5}}"#).unwrap();
        reload(&control, &stats);
        assert!(matches!(plan(7), Some(Plan::Reorder(d)) if d.as_millis() <= 5));
        std::fs::remove_file(&control).unwrap();
        reload(&control, &stats);
        assert_eq!(plan(7), None, "no control file, no chaos");
        let counters: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
        assert!(counters["delayed"].as_u64().unwrap() >= 50);
        let _ = std::fs::remove_dir_all(dir);
    }
}
