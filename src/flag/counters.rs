//! Evaluation counters kept beside a compiled flag: one relaxed atomic per
//! (variation, reason) pair, so counting an evaluation is a single
//! uncontended add with no lock and no allocation. Readers (the analytics
//! rollup) take snapshots and work with differences.

use std::sync::atomic::{AtomicU64, Ordering};

use super::eval::Reason;

/// The reason names counted, in the order of their cells.
pub const REASONS: [&str; 5] = [
    "OFF",
    "PREREQUISITE_FAILED",
    "TARGET_MATCH",
    "RULE_MATCH",
    "FALLTHROUGH",
];

/// Counts of evaluations of one compiled flag by variation and reason.
#[derive(Debug, Default)]
pub struct EvalCounters {
    cells: Box<[AtomicU64]>,
}

impl EvalCounters {
    /// Zeroed counters for a flag with `variations` variations.
    pub fn new(variations: usize) -> Self {
        EvalCounters {
            cells: (0..variations * REASONS.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    /// Counts one evaluation that served `variation` for `reason`.
    #[inline]
    pub fn record(&self, variation: usize, reason: &Reason) {
        let r = match reason {
            Reason::Off => 0,
            Reason::PrerequisiteFailed(_) => 1,
            Reason::TargetMatch => 2,
            Reason::RuleMatch { .. } => 3,
            Reason::Fallthrough => 4,
        };
        if let Some(cell) = self.cells.get(variation * REASONS.len() + r) {
            cell.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The current counts, `[variation * REASONS.len() + reason]`.
    pub fn snapshot(&self) -> Vec<u64> {
        self.cells
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// Total evaluations counted.
    pub fn total(&self) -> u64 {
        self.cells.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

impl Clone for EvalCounters {
    /// A copy holds the counts at the time of the copy.
    fn clone(&self) -> Self {
        EvalCounters {
            cells: self
                .cells
                .iter()
                .map(|c| AtomicU64::new(c.load(Ordering::Relaxed)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_in_their_variation_and_reason_cell() {
        let c = EvalCounters::new(2);
        c.record(1, &Reason::Fallthrough);
        c.record(1, &Reason::Fallthrough);
        c.record(0, &Reason::Off);
        let s = c.snapshot();
        assert_eq!(s[REASONS.len() + 4], 2);
        assert_eq!(s[0], 1);
        assert_eq!(c.total(), 3);
        // An index past the variations is ignored rather than panicking.
        c.record(7, &Reason::Off);
        assert_eq!(c.total(), 3);
    }
}
