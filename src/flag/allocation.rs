//! Sticky rollout allocations: which buckets each variation of a rollout owns.
//!
//! A new rollout gives each variation one cumulative range in list order. When
//! weights change, a variation that shrinks by d gives up its d highest
//! buckets; the freed buckets, ascending, go to the variations that grow, in
//! list order. Users of unchanged variations never move. A new salt or
//! `bucket_by` starts afresh. `docs/flags.md` has worked vectors.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::bucket::BUCKETS;
use super::model::WeightedVariation;

/// Half-open bucket range `[start, end)`.
pub type BucketRange = [u16; 2];

/// One rollout's allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allocation {
    /// The salt the buckets were computed with.
    pub salt: String,
    /// The attribute bucketed by.
    pub bucket_by: String,
    /// Variation name → its sorted, disjoint bucket ranges.
    pub ranges: BTreeMap<String, Vec<BucketRange>>,
}

/// A flag's allocations, by rollout id (`fallthrough` or a rule id).
pub type Allocations = BTreeMap<String, Allocation>;

impl Allocation {
    /// What makes this allocation unusable, if anything: every variation's
    /// ranges must be non-empty, sorted and within the buckets, and together
    /// they must hold each bucket exactly once. Allocations computed here
    /// always are; one brought by `FLAG.IMPORT` may not be.
    pub fn problem(&self) -> Option<String> {
        let mut all: Vec<BucketRange> = Vec::new();
        for (name, ranges) in &self.ranges {
            if let Some(r) = ranges.iter().find(|r| r[0] >= r[1] || r[1] > BUCKETS) {
                return Some(format!(
                    "{name:?} has range [{}, {}]; a range is [start, end) with start < end <= {BUCKETS}",
                    r[0], r[1]
                ));
            }
            if ranges.windows(2).any(|w| w[0][1] > w[1][0]) {
                return Some(format!(
                    "the ranges of {name:?} are not sorted and disjoint"
                ));
            }
            all.extend_from_slice(ranges);
        }
        all.sort_unstable();
        let mut next = 0;
        for r in &all {
            if r[0] != next {
                return Some(if r[0] < next {
                    format!("bucket {} is in two ranges", r[0])
                } else {
                    format!("bucket {next} is in no range")
                });
            }
            next = r[1];
        }
        (next != BUCKETS).then(|| format!("bucket {next} is in no range"))
    }
}

fn size(ranges: &[BucketRange]) -> u32 {
    ranges.iter().map(|r| u32::from(r[1] - r[0])).sum()
}

fn normalize(ranges: &mut Vec<BucketRange>) {
    ranges.retain(|r| r[0] < r[1]);
    ranges.sort_unstable();
    let mut out: Vec<BucketRange> = Vec::with_capacity(ranges.len());
    for r in ranges.drain(..) {
        match out.last_mut() {
            Some(last) if last[1] >= r[0] => last[1] = last[1].max(r[1]),
            _ => out.push(r),
        }
    }
    *ranges = out;
}

/// Removes the `n` highest buckets of `ranges`, returning them.
fn take_highest(ranges: &mut Vec<BucketRange>, mut n: u32) -> Vec<BucketRange> {
    let mut freed = Vec::new();
    while n > 0 {
        let Some(last) = ranges.last_mut() else { break };
        let len = u32::from(last[1] - last[0]);
        if len <= n {
            freed.push(*last);
            ranges.pop();
            n -= len;
        } else {
            let cut = last[1] - n as u16;
            freed.push([cut, last[1]]);
            last[1] = cut;
            n = 0;
        }
    }
    freed
}

/// Removes the `n` lowest buckets of the sorted `pool`, returning them.
fn take_lowest(pool: &mut Vec<BucketRange>, mut n: u32) -> Vec<BucketRange> {
    let mut taken = Vec::new();
    while n > 0 && !pool.is_empty() {
        let first = &mut pool[0];
        let len = u32::from(first[1] - first[0]);
        if len <= n {
            taken.push(*first);
            pool.remove(0);
            n -= len;
        } else {
            let cut = first[0] + n as u16;
            taken.push([first[0], cut]);
            first[0] = cut;
            n = 0;
        }
    }
    taken
}

/// The allocation for `rollout`, moving as few users as possible from `prev`.
pub fn allocate(
    prev: Option<&Allocation>,
    rollout: &[WeightedVariation],
    salt: &str,
    bucket_by: &str,
) -> Allocation {
    let fresh = || {
        let mut start = 0u16;
        let ranges = rollout
            .iter()
            .map(|w| {
                let end = start + w.weight as u16;
                let r = if end > start {
                    vec![[start, end]]
                } else {
                    vec![]
                };
                start = end;
                (w.variation.clone(), r)
            })
            .collect();
        Allocation {
            salt: salt.into(),
            bucket_by: bucket_by.into(),
            ranges,
        }
    };
    // Only a previous allocation that splits the buckets exactly is kept from;
    // any other (an imported one) would make the result overlap or underflow.
    let Some(prev) =
        prev.filter(|p| p.salt == salt && p.bucket_by == bucket_by && p.problem().is_none())
    else {
        return fresh();
    };
    let mut ranges: BTreeMap<String, Vec<BucketRange>> = BTreeMap::new();
    let mut freed = Vec::new();
    // Variations no longer in the rollout give up everything.
    for (name, r) in &prev.ranges {
        if !rollout.iter().any(|w| &w.variation == name) {
            freed.extend(r.iter().copied());
        }
    }
    for w in rollout {
        let mut mine = prev.ranges.get(&w.variation).cloned().unwrap_or_default();
        let old = size(&mine);
        if old > w.weight {
            freed.extend(take_highest(&mut mine, old - w.weight));
        }
        ranges.insert(w.variation.clone(), mine);
    }
    normalize(&mut freed);
    for w in rollout {
        let Some(mine) = ranges.get_mut(&w.variation) else {
            continue;
        };
        let have = size(mine);
        if have < w.weight {
            mine.extend(take_lowest(&mut freed, w.weight - have));
            normalize(mine);
        }
    }
    Allocation {
        salt: salt.into(),
        bucket_by: bucket_by.into(),
        ranges,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(pairs: &[(&str, u32)]) -> Vec<WeightedVariation> {
        pairs
            .iter()
            .map(|(v, weight)| WeightedVariation {
                variation: v.to_string(),
                weight: *weight,
            })
            .collect()
    }

    #[test]
    fn a_new_rollout_gets_cumulative_ranges_in_list_order() {
        let a = allocate(None, &w(&[("on", 2000), ("off", 8000)]), "s", "key");
        assert_eq!(a.ranges["on"], vec![[0, 2000]]);
        assert_eq!(a.ranges["off"], vec![[2000, 10000]]);
    }

    #[test]
    fn growing_one_variation_takes_the_top_of_the_shrinking_one() {
        let a = allocate(
            None,
            &w(&[("a", 5000), ("b", 3000), ("c", 2000)]),
            "s",
            "key",
        );
        let b = allocate(
            Some(&a),
            &w(&[("a", 3000), ("b", 3000), ("c", 4000)]),
            "s",
            "key",
        );
        assert_eq!(b.ranges["a"], vec![[0, 3000]]);
        assert_eq!(b.ranges["b"], vec![[5000, 8000]]);
        assert_eq!(b.ranges["c"], vec![[3000, 5000], [8000, 10000]]);
    }

    #[test]
    fn a_removed_variation_frees_its_buckets_for_the_growers_in_list_order() {
        let a = allocate(
            None,
            &w(&[("a", 2500), ("b", 2500), ("c", 2500), ("d", 2500)]),
            "s",
            "key",
        );
        let b = allocate(
            Some(&a),
            &w(&[("a", 4000), ("c", 3000), ("d", 3000)]),
            "s",
            "key",
        );
        assert_eq!(b.ranges["a"], vec![[0, 4000]]);
        assert_eq!(b.ranges["c"], vec![[4000, 4500], [5000, 7500]]);
        assert_eq!(b.ranges["d"], vec![[4500, 5000], [7500, 10000]]);
        assert!(!b.ranges.contains_key("b"));
    }

    #[test]
    fn a_new_salt_starts_afresh() {
        let a = allocate(None, &w(&[("a", 5000), ("b", 5000)]), "s", "key");
        let b = allocate(Some(&a), &w(&[("b", 5000), ("a", 5000)]), "t", "key");
        assert_eq!(b.ranges["b"], vec![[0, 5000]]);
    }
}
