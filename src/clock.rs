//! Wall-clock time as the rest of the crate reads it: one leaf helper that
//! every room may use (audit timestamps, `$now`, INFO, TIME, client ages).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time since the Unix epoch (zero if the clock is set before it).
pub fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Unix time in milliseconds.
pub fn unix_ms() -> u64 {
    since_epoch().as_millis() as u64
}
