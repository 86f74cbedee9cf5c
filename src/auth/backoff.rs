//! The always-on backoff for failed logins, per client address: the first
//! [`FREE_FAILURES`] failures cost nothing; after that every login attempt
//! from the address waits for its turn, and each failure pushes the next
//! turn back by a penalty that doubles per failure up to [`MAX_PENALTY`].
//! One address therefore gets at most one answer per penalty, however many
//! connections it opens. A success clears the address's record.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures from one address before the backoff starts.
pub const FREE_FAILURES: u32 = 5;
/// The first penalty.
pub const BASE_PENALTY: Duration = Duration::from_millis(10);
/// The longest penalty per failure.
pub const MAX_PENALTY: Duration = Duration::from_secs(1);
/// An address's record is forgotten after this long without a failure.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Most addresses tracked; older records are dropped first past this.
const MAX_TRACKED: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    next_turn: Instant,
    last_failure: Instant,
}

/// Failed-login records by client address (or by another key: the HTTP
/// console also keys one by user name).
#[derive(Debug)]
pub struct Backoff<K = IpAddr> {
    by_addr: Mutex<HashMap<K, Record>>,
}

impl<K> Default for Backoff<K> {
    fn default() -> Self {
        Backoff {
            by_addr: Mutex::new(HashMap::new()),
        }
    }
}

impl Record {
    /// How long an attempt at `now` waits for this address's turn (zero
    /// until its free failures are used up).
    fn turn(&self, now: Instant) -> Duration {
        if self.failures >= FREE_FAILURES {
            self.next_turn.saturating_duration_since(now)
        } else {
            Duration::ZERO
        }
    }
}

impl<K: Hash + Eq + Clone> Backoff<K> {
    /// How long a login attempt from `addr` must wait before it is answered
    /// (zero unless the address is in backoff).
    pub fn wait(&self, addr: &K, now: Instant) -> Duration {
        let map = self.by_addr.lock().unwrap_or_else(|p| p.into_inner());
        map.get(addr).map_or(Duration::ZERO, |r| r.turn(now))
    }

    /// Records a failure; returns how long its answer waits.
    pub fn failed(&self, addr: &K, now: Instant) -> Duration {
        let mut map = self.by_addr.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED && !map.contains_key(addr) {
            map.retain(|_, r| now.saturating_duration_since(r.last_failure) < FORGET_AFTER);
            if map.len() >= MAX_TRACKED {
                map.clear();
            }
        }
        let r = map.entry(addr.clone()).or_insert(Record {
            failures: 0,
            next_turn: now,
            last_failure: now,
        });
        if now.saturating_duration_since(r.last_failure) >= FORGET_AFTER {
            r.failures = 0;
        }
        r.failures += 1;
        r.last_failure = now;
        if r.failures <= FREE_FAILURES {
            return Duration::ZERO;
        }
        let doublings = (r.failures - FREE_FAILURES - 1).min(16);
        let penalty = BASE_PENALTY.saturating_mul(1 << doublings).min(MAX_PENALTY);
        r.next_turn = r.next_turn.max(now) + penalty;
        r.next_turn.saturating_duration_since(now)
    }

    /// Settles one login attempt from `addr`: records its outcome and
    /// returns how long its answer waits. While the address is in backoff
    /// every attempt waits for its turn, whatever its outcome, so a guesser
    /// learns nothing sooner. RESP's AUTH/HELLO and HTTP credentials share it.
    pub fn settle(&self, addr: &K, now: Instant, succeeded: bool) -> Duration {
        if succeeded {
            // One lock, and no hashing while no address is in backoff (every
            // HTTP request with a credential settles here).
            let mut map = self.by_addr.lock().unwrap_or_else(|p| p.into_inner());
            if map.is_empty() {
                return Duration::ZERO;
            }
            return map.remove(addr).map_or(Duration::ZERO, |r| r.turn(now));
        }
        self.wait(addr, now).max(self.failed(addr, now))
    }

    /// Clears an address's record after a successful login.
    pub fn succeeded(&self, addr: &K) {
        let mut map = self.by_addr.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn penalties_start_after_the_free_failures_and_queue_up() {
        let b: Backoff = Backoff::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let t = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert_eq!(b.failed(&ip, t), Duration::ZERO);
        }
        assert_eq!(b.failed(&ip, t), BASE_PENALTY);
        assert_eq!(b.failed(&ip, t), BASE_PENALTY * 3);
        assert_eq!(b.wait(&ip, t), BASE_PENALTY * 3);
        assert_eq!(b.wait(&other, t), Duration::ZERO);
        for _ in 0..20 {
            b.failed(&ip, t);
        }
        assert!(b.wait(&ip, t) > MAX_PENALTY * 10);
        b.succeeded(&ip);
        assert_eq!(b.wait(&ip, t), Duration::ZERO);
    }

    #[test]
    fn a_success_waits_its_turn_then_clears_the_address() {
        let b: Backoff = Backoff::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let t = Instant::now();
        assert_eq!(b.settle(&ip, t, true), Duration::ZERO);
        for _ in 0..FREE_FAILURES {
            assert_eq!(b.settle(&ip, t, false), Duration::ZERO);
        }
        assert_eq!(b.settle(&ip, t, false), BASE_PENALTY);
        assert_eq!(b.settle(&other, t, true), Duration::ZERO);
        assert_eq!(b.settle(&ip, t, true), BASE_PENALTY, "a success waits too");
        assert_eq!(b.wait(&ip, t), Duration::ZERO, "and clears the address");
        assert_eq!(b.settle(&ip, t, false), Duration::ZERO);
    }
}
