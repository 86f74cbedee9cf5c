//! Test-only planted bugs (cargo feature `planted-bugs`, never in a release
//! build). Each is armed by its own environment variable set to `1`, so the
//! crash test and the fault harness (`cluster/soak.sh`, `cluster/planted.sh`)
//! can prove they catch it.

#[cfg(not(debug_assertions))]
compile_error!("the planted-bugs feature is for test builds only, never a release build");

/// The WAL writer acknowledges each write before writing it.
pub const ACK_BEFORE_LOG: &str = "FLAGSTAFF_UNSAFE_ACK_BEFORE_LOG";
/// The WAL writer acknowledges after `write(2)` but before `fdatasync`.
pub const ACK_BEFORE_FSYNC: &str = "FLAGSTAFF_PLANTED_ACK_BEFORE_FSYNC";
/// `RAFT.BARRIER` without a revision answers from the local applied index.
pub const BARRIER_WITHOUT_READ_INDEX: &str = "FLAGSTAFF_PLANTED_BARRIER_WITHOUT_READ_INDEX";
/// A write is answered with the outcome it would have on the local view,
/// before raft commits it.
pub const ACK_BEFORE_COMMIT: &str = "FLAGSTAFF_PLANTED_ACK_BEFORE_COMMIT";
/// One change event in 50 is not published to subscribers.
pub const DROP_CHANGE_EVENT: &str = "FLAGSTAFF_PLANTED_DROP_CHANGE_EVENT";
/// WAL replay does not check record checksums.
pub const SKIP_WAL_CHECKSUM: &str = "FLAGSTAFF_PLANTED_SKIP_WAL_CHECKSUM";

/// Every planted bug's variable.
pub const ALL: [&str; 6] = [
    ACK_BEFORE_LOG,
    ACK_BEFORE_FSYNC,
    BARRIER_WITHOUT_READ_INDEX,
    ACK_BEFORE_COMMIT,
    DROP_CHANGE_EVENT,
    SKIP_WAL_CHECKSUM,
];

/// Whether the planted bug named by `var` is armed.
pub fn armed(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == "1")
}

/// Logs every armed planted bug loudly (once, at start).
pub fn announce() {
    for var in ALL {
        if armed(var) {
            tracing::warn!("{var}=1: test-only planted bug armed");
        }
    }
}
