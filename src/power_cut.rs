//! Test-only power cuts (cargo feature `power-cut`, never in a release
//! build). The WAL writer reports how far its tail segment is fsynced; on
//! SIGUSR2 the process truncates the tail to that length — every byte not
//! yet fsynced is gone, as after a power loss — and, every other cut, also
//! deletes sled's tree (sled is not the durability point: it may have lost
//! anything), then aborts at once. `cluster/soak.sh`'s power-cut row restarts
//! the node and checks that no acknowledged write was lost.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

#[cfg(not(debug_assertions))]
compile_error!("the power-cut feature is for test builds only, never a release build");

/// What survives a cut.
#[derive(Debug, Default)]
pub struct Durable {
    /// The WAL tail segment and how many of its bytes are fsynced.
    tail: Option<(PathBuf, u64)>,
    /// The data dir (sled lives in `state/`).
    data_dir: Option<PathBuf>,
}

static GATE: Mutex<Durable> = Mutex::new(Durable {
    tail: None,
    data_dir: None,
});

/// Holds off a cut while the WAL writer changes its files; a cut holds it
/// until the process is gone, so nothing is written after the cut.
pub fn gate() -> MutexGuard<'static, Durable> {
    GATE.lock().unwrap_or_else(|e| e.into_inner())
}

impl Durable {
    /// Records that `path` is durable up to `len` bytes.
    pub fn synced(&mut self, path: &Path, len: u64) {
        self.tail = Some((path.to_path_buf(), len));
    }
}

/// Cuts the power: drops the un-fsynced tail (and, every other cut, sled)
/// and aborts the process without running any destructor.
pub fn cut() {
    let g = gate();
    if let Some((path, len)) = &g.tail {
        let dropped = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| {
                let size = f.metadata()?.len();
                f.set_len(*len)?;
                Ok(size.saturating_sub(*len))
            });
        eprintln!(
            "power cut: {} cut to its fsynced {len} bytes ({dropped:?} dropped)",
            path.display()
        );
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    if let Some(dir) = &g.data_dir {
        if nanos.is_multiple_of(2) {
            let state = dir.join("state");
            eprintln!("power cut: sled tree {} lost", state.display());
            let _ = std::fs::remove_dir_all(state);
        }
    }
    // Ends the process at once, the gate still held: nothing more is written.
    std::process::abort()
}

/// Arms the cut for the node whose data lives in `data_dir`: SIGUSR2 cuts.
pub fn install(data_dir: &Path) {
    gate().data_dir = Some(data_dir.to_path_buf());
    tokio::spawn(async {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut usr2) = signal(SignalKind::user_defined2()) else {
            tracing::error!("power-cut build: cannot listen for SIGUSR2");
            return;
        };
        tracing::warn!("power-cut build: SIGUSR2 drops every byte not fsynced and exits");
        if usr2.recv().await.is_some() {
            let _ = tokio::task::spawn_blocking(cut).await;
        }
    });
}
