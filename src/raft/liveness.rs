//! How recently this node heard from the rest of its cluster, which decides
//! whether it is stale and whether it may take writes. openraft 0.9 has no
//! check-quorum (an isolated leader stays leader), so a leader tracks when a
//! majority last acknowledged it and a follower when its leader last spoke.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use openraft::{RaftMetrics, ServerState};

use super::types::{Member, NodeId};

/// The cluster's timing settings.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// Leader heartbeat interval.
    pub heartbeat: Duration,
    /// Lower bound of the election timeout (the upper is 1.5 times this).
    pub election_timeout: Duration,
    /// No contact for this long makes a node stale.
    pub stale_after: Duration,
}

impl Timings {
    /// Upper bound of the election timeout, which is also openraft's leader lease.
    pub fn election_timeout_max(&self) -> Duration {
        self.election_timeout * 3 / 2
    }

    /// Without contact for this long, the leader is gone (a follower would
    /// already be electing a new one): writes fail fast instead of waiting.
    pub fn leader_lost(&self) -> Duration {
        self.election_timeout_max() + self.election_timeout
    }
}

/// Contact times, lock-free (milliseconds since `origin`, 0 for never).
#[derive(Debug)]
pub struct Liveness {
    origin: Instant,
    leader_contact: AtomicU64,
    quorum_ack: AtomicU64,
    /// The term in which this process committed an entry as leader (reads
    /// may use a read index only then; see `writes::read_index`).
    read_primed_term: AtomicU64,
    leader_since: AtomicU64,
    leader_commit: AtomicU64,
    /// The timings.
    pub timings: Timings,
}

/// Whether only this node votes (a one-member cluster, perhaps with learners).
pub fn sole_voter(metrics: &RaftMetrics<NodeId, Member>) -> bool {
    // The joint config's sets as they are: `voter_ids()` collects their
    // union into a new set, and this runs on every read that reports
    // staleness (each OFREP evaluation). The union is exactly this node
    // when every voter of every set is this node and there is one.
    let sets = metrics.membership_config.membership().get_joint_config();
    let mut voters = sets.iter().flatten().peekable();
    voters.peek().is_some() && voters.all(|v| *v == metrics.id)
}

impl Liveness {
    /// Nothing heard yet.
    pub fn new(timings: Timings) -> Self {
        Liveness {
            origin: Instant::now(),
            leader_contact: AtomicU64::new(0),
            quorum_ack: AtomicU64::new(0),
            read_primed_term: AtomicU64::new(0),
            leader_since: AtomicU64::new(0),
            leader_commit: AtomicU64::new(0),
            timings,
        }
    }

    fn stamp(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_millis() as u64 + 1
    }

    fn since(&self, stamp: &AtomicU64) -> Option<Duration> {
        match stamp.load(Ordering::Relaxed) {
            0 => None,
            s => {
                let at = self.origin + Duration::from_millis(s - 1);
                Some(Instant::now().saturating_duration_since(at))
            }
        }
    }

    /// Whether this process has committed an entry as leader in `term`.
    pub fn read_index_primed(&self, term: u64) -> bool {
        self.read_primed_term.load(Ordering::Acquire) == term
    }

    /// Records that this process committed an entry as leader in `term`.
    pub fn prime_read_index(&self, term: u64) {
        self.read_primed_term.fetch_max(term, Ordering::AcqRel);
    }

    /// The leader just spoke to this node (an append or snapshot it accepted).
    pub fn leader_contact(&self) {
        self.leader_contact_aged(Duration::ZERO);
    }

    /// The leader just spoke to this node, but last heard from its majority
    /// `age` ago: this node's contact is only as fresh as that.
    pub fn leader_contact_aged(&self, age: Duration) {
        let now = Instant::now();
        let at = now - age.min(now - self.origin);
        self.leader_contact.store(self.stamp(at), Ordering::Relaxed);
    }

    /// The commit index a leader announced to this node.
    pub fn leader_committed(&self, index: u64) {
        self.leader_commit.fetch_max(index, Ordering::Relaxed);
    }

    /// The highest commit index a leader announced to this node.
    pub fn leader_commit(&self) -> u64 {
        self.leader_commit.load(Ordering::Relaxed)
    }

    /// Records what openraft reports: when a leader was last acknowledged by a majority.
    pub fn observe(&self, m: &RaftMetrics<NodeId, Member>) {
        let now = Instant::now();
        if m.state == ServerState::Leader {
            if self.leader_since.load(Ordering::Relaxed) == 0 {
                self.leader_since.store(self.stamp(now), Ordering::Relaxed);
            }
            if let Some(ms) = m.millis_since_quorum_ack {
                let at = now - Duration::from_millis(ms).min(now - self.origin);
                self.quorum_ack.store(self.stamp(at), Ordering::Relaxed);
            }
            // A leader is in contact with itself.
            self.leader_contact
                .store(self.stamp(now), Ordering::Relaxed);
        } else {
            self.leader_since.store(0, Ordering::Relaxed);
            self.quorum_ack.store(0, Ordering::Relaxed);
        }
    }

    /// Time since the leader last spoke to this node (`None`: never).
    pub fn since_leader_contact(&self) -> Option<Duration> {
        self.since(&self.leader_contact)
    }

    /// For a leader: time since a majority last acknowledged it (or since it
    /// became leader, before the first acknowledgement).
    pub fn since_quorum_ack(&self) -> Option<Duration> {
        self.since(&self.quorum_ack)
            .or_else(|| self.since(&self.leader_since))
    }

    /// How long this node has been out of contact, if it has at all: a
    /// leader without its majority, anyone else without its leader.
    fn out_of_contact(&self, m: &RaftMetrics<NodeId, Member>) -> Duration {
        if m.state == ServerState::Leader {
            if sole_voter(m) {
                return Duration::ZERO;
            }
            return self
                .since_quorum_ack()
                .unwrap_or_else(|| self.origin.elapsed());
        }
        // Never heard from a leader: out of contact since this process started.
        self.since_leader_contact()
            .unwrap_or_else(|| self.origin.elapsed())
    }

    /// Why this node's answers may be out of date, if they may be.
    pub fn stale(&self, m: &RaftMetrics<NodeId, Member>) -> Option<String> {
        let out = self.out_of_contact(m);
        (out > self.timings.stale_after).then(|| describe(m, out))
    }

    /// Why this node must refuse writes now (fail fast, nothing sent), if it must.
    pub fn write_refusal(&self, m: &RaftMetrics<NodeId, Member>) -> Option<String> {
        if m.membership_config.membership().get_node(&m.id).is_none() {
            return Some("This node is not a member of a raft cluster".into());
        }
        let bound = self.timings.leader_lost();
        if m.state != ServerState::Leader && m.current_leader.is_none() {
            return Some("No raft leader".into());
        }
        let out = self.out_of_contact(m);
        (out > bound).then(|| describe(m, out))
    }
}

fn describe(m: &RaftMetrics<NodeId, Member>, out: Duration) -> String {
    let ms = format!("{} ms", out.as_millis());
    if m.state == ServerState::Leader {
        format!("No quorum: this leader has not been acknowledged by a majority for {ms}")
    } else {
        format!("No contact with the raft leader for {ms}")
    }
}
