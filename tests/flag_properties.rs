//! Property tests of evaluation and allocation, on the pure `flag` library.

use flagstaff::flag::allocation::{allocate, Allocation};
use flagstaff::flag::compile::allocations_for;
use flagstaff::flag::context::AttrValue;
use flagstaff::flag::model::WeightedVariation;
use flagstaff::flag::{
    compile_flag, evaluate, parse_flag, CompiledFlag, CompiledSegment, Context, FlagSource,
};
use proptest::prelude::*;
use serde_json::json;

struct NoFlags;
impl FlagSource for NoFlags {
    fn flag(&self, _: &str) -> Option<&CompiledFlag> {
        None
    }
    fn segment(&self, _: &str) -> Option<&CompiledSegment> {
        None
    }
}

fn rollout_flag(key: &str, salt: &str, weights: &[u32]) -> CompiledFlag {
    let variations: Vec<_> = (0..weights.len())
        .map(|i| json!({"name": format!("v{i}"), "value": i}))
        .collect();
    let rollout: Vec<_> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| json!({"variation": format!("v{i}"), "weight": w}))
        .collect();
    let def = json!({"on": true, "variations": variations, "off_variation": "v0",
                     "fallthrough": {"rollout": rollout}, "salt": salt});
    let def = parse_flag(key, def.to_string().as_bytes()).unwrap();
    let alloc = allocations_for(key, &def, &Default::default());
    compile_flag(key, &def, &alloc, &|_| false).unwrap()
}

fn variation_for(flag: &CompiledFlag, key: &str) -> usize {
    let ctx = Context::empty().with("key", AttrValue::Str(key.into()));
    evaluate(flag, &ctx, &NoFlags, 0.0).variation
}

/// Deterministic pseudo-random user keys (xorshift), so runs are reproducible.
fn keys(seed: u64, n: usize) -> Vec<String> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("user-{x:016x}")
        })
        .collect()
}

fn shares(flag: &CompiledFlag, n_variations: usize, keys: &[String]) -> Vec<f64> {
    let mut counts = vec![0usize; n_variations];
    for k in keys {
        counts[variation_for(flag, k)] += 1;
    }
    counts
        .iter()
        .map(|c| *c as f64 / keys.len() as f64 * 100.0)
        .collect()
}

#[test]
fn a_50_50_and_a_5_way_rollout_are_within_one_point_over_100000_keys() {
    let users = keys(42, 100_000);
    for weights in [vec![5000, 5000], vec![1000, 2000, 3000, 2500, 1500]] {
        let flag = rollout_flag("prod:split", "prod:split", &weights);
        let got = shares(&flag, weights.len(), &users);
        for (g, w) in got.iter().zip(&weights) {
            let want = *w as f64 / 100.0;
            assert!((g - want).abs() <= 1.0, "weights {weights:?}: got {got:?}");
        }
    }
}

#[test]
fn flags_with_different_salts_bucket_independently() {
    let users = keys(7, 100_000);
    let a = rollout_flag("a", "salt-a", &[5000, 5000]);
    let b = rollout_flag("b", "salt-b", &[3000, 7000]);
    let mut joint = [[0usize; 2]; 2];
    for k in &users {
        joint[variation_for(&a, k)][variation_for(&b, k)] += 1;
    }
    for (i, pa) in [0.5, 0.5].iter().enumerate() {
        for (j, pb) in [0.3, 0.7].iter().enumerate() {
            let got = joint[i][j] as f64 / users.len() as f64 * 100.0;
            assert!((got - pa * pb * 100.0).abs() <= 1.0, "joint {joint:?}");
        }
    }
}

fn weights_strategy(n: usize) -> impl Strategy<Value = Vec<u32>> {
    proptest::collection::vec(0u32..=100, n).prop_map(|raw| {
        let total: u32 = raw.iter().sum::<u32>().max(1);
        let mut w: Vec<u32> = raw.iter().map(|r| r * 10_000 / total).collect();
        let sum: u32 = w.iter().sum();
        w[0] += 10_000 - sum;
        w
    })
}

fn owner(a: &Allocation, bucket: u16) -> Option<&str> {
    a.ranges
        .iter()
        .find(|(_, rs)| rs.iter().any(|r| r[0] <= bucket && bucket < r[1]))
        .map(|(name, _)| name.as_str())
}

fn weighted(w: &[u32]) -> Vec<WeightedVariation> {
    w.iter()
        .enumerate()
        .map(|(i, w)| WeightedVariation {
            variation: format!("v{i}"),
            weight: *w,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_same_input_gives_the_same_result(key in "[a-z0-9-]{1,24}", w in weights_strategy(3)) {
        let f = rollout_flag("prod:x", "prod:x", &w);
        prop_assert_eq!(variation_for(&f, &key), variation_for(&f, &key));
        let g = rollout_flag("prod:x", "prod:x", &w);
        prop_assert_eq!(variation_for(&f, &key), variation_for(&g, &key));
    }

    #[test]
    fn a_weight_change_moves_only_users_of_shrinking_variations(old in weights_strategy(4), new in weights_strategy(4)) {
        let a = allocate(None, &weighted(&old), "s", "key");
        let b = allocate(Some(&a), &weighted(&new), "s", "key");
        for (i, w) in new.iter().enumerate() {
            let size: u32 = b.ranges[&format!("v{i}")].iter().map(|r| u32::from(r[1] - r[0])).sum();
            prop_assert_eq!(size, *w, "variation v{} has the wrong share", i);
        }
        for bucket in 0..10_000u16 {
            let (before, after) = (owner(&a, bucket), owner(&b, bucket));
            prop_assert!(before.is_some() && after.is_some(), "bucket {} unowned", bucket);
            if before != after {
                let from: usize = before.unwrap()[1..].parse().unwrap();
                let to: usize = after.unwrap()[1..].parse().unwrap();
                prop_assert!(new[from] < old[from], "bucket {} left v{} which did not shrink", bucket, from);
                prop_assert!(new[to] > old[to], "bucket {} went to v{} which did not grow", bucket, to);
            }
        }
    }
}
