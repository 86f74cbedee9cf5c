//! `EXPERIMENT.RESULTS`: every node's units merged (a unit seen on several
//! nodes counts once), then per variation and metric the statistics of
//! [`super::stats`], as one JSON document.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::lab::Unit;
use super::stats::{compare, cuped, srm_p_value, Comparison, Design, Kind, Moments};
use crate::flag::experiment::{ExperimentDef, MetricKind};

/// Results flag a sample-ratio mismatch below this p-value.
pub const SRM_THRESHOLD: f64 = 0.001;

/// Merges the units answered by several nodes.
pub fn merge_units(
    answers: impl IntoIterator<Item = Vec<(String, Unit)>>,
) -> HashMap<String, Unit> {
    let mut merged: HashMap<String, Unit> = HashMap::new();
    for answer in answers {
        for (key, unit) in answer {
            merged.entry(key).or_default().merge(&unit);
        }
    }
    merged
}

fn finite(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else {
        Value::Null
    }
}

fn comparison_json(variation: &str, c: &Comparison, alpha: f64, control_mean: f64) -> Value {
    json!({
        "variation": variation,
        "lift": finite(c.lift),
        "ci_low": finite(c.ci_low),
        "ci_high": finite(c.ci_high),
        "relative_lift": finite(c.relative_lift),
        "relative_ci_low": finite(c.relative_ci_low),
        "relative_ci_high": finite(c.relative_ci_high),
        "p_value": finite(c.p_value),
        "significant": c.p_value < alpha,
        "sequential_p_value": finite(c.sequential_p_value),
        "sequential_verdict": if c.sequential_p_value <= alpha {
            if c.lift > 0.0 { "treatment_better" } else { "treatment_worse" }
        } else {
            "keep_running"
        },
        "mde": finite(c.mde),
        "mde_relative": finite(c.mde / control_mean.abs()),
    })
}

/// The results document for `def` with the rollout `weights` (variation
/// name, basis points), from the merged `units`; `nodes` is the
/// answered/missing part, added as is.
pub fn results(
    key: &str,
    def: &ExperimentDef,
    state: &str,
    weights: &[(String, u32)],
    units: &HashMap<String, Unit>,
    nodes: Value,
) -> Value {
    let design = Design {
        alpha: def.alpha,
        power: def.power,
        ..Design::default()
    };
    let names: Vec<&str> = weights.iter().map(|(n, _)| n.as_str()).collect();
    let slot_count = def.metrics.len() + def.guardrails.len();
    let resolved: Vec<Unit> = units
        .values()
        .filter(|u| u.variation.is_some())
        .map(|u| {
            let mut u = u.clone();
            u.resolve(slot_count, def.metrics.len());
            u
        })
        .collect();
    let exposed: Vec<&Unit> = resolved.iter().collect();
    let arm = |u: &Unit| {
        u.variation
            .as_deref()
            .and_then(|v| names.iter().position(|n| *n == v))
    };
    let mut counts = vec![0u64; names.len()];
    for u in &exposed {
        if let Some(i) = arm(u) {
            counts[i] += 1;
        }
    }
    let w: Vec<f64> = weights.iter().map(|(_, w)| f64::from(*w)).collect();
    let srm = srm_p_value(&counts, &w);
    let control = names.iter().position(|n| *n == def.control);

    // Per metric (then guardrail) slot: moments per arm.
    let slots: Vec<(String, MetricKind, bool)> = def
        .metrics
        .iter()
        .map(|m| (m.name.clone(), m.kind, m.covariate.is_some()))
        .chain(
            def.guardrails
                .iter()
                .map(|g| (g.metric.clone(), g.kind, false)),
        )
        .collect();
    let moments = |slot: usize, kind: MetricKind| {
        let mut per_arm = vec![Moments::default(); names.len()];
        let mut converted = vec![0u64; names.len()];
        for u in &exposed {
            let Some(i) = arm(u) else { continue };
            let (n, sum) = u.post.get(slot).copied().unwrap_or((0, 0.0));
            let y = match kind {
                MetricKind::Binary => f64::from(u8::from(n > 0)),
                MetricKind::Continuous => sum,
            };
            converted[i] += u64::from(n > 0);
            let x = u.pre.get(slot).copied().unwrap_or(0.0);
            per_arm[i].add(y, x);
        }
        (per_arm, converted)
    };
    let kind_of = |k: MetricKind| match k {
        MetricKind::Binary => Kind::Binary,
        MetricKind::Continuous => Kind::Continuous,
    };
    let mut metrics = Vec::new();
    let mut guardrails = Vec::new();
    for (slot, (name, kind, has_covariate)) in slots.iter().enumerate() {
        let (per_arm, converted) = moments(slot, *kind);
        let variations: Vec<Value> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let m = &per_arm[i];
                let variance = match kind {
                    MetricKind::Binary => m.mean() * (1.0 - m.mean()),
                    MetricKind::Continuous => m.variance(),
                };
                json!({"variation": n, "units": m.n as u64, "count": converted[i],
                       "mean": finite(m.mean()), "variance": finite(variance)})
            })
            .collect();
        let mut comparisons = Vec::new();
        if let Some(c) = control {
            for (i, n) in names.iter().enumerate() {
                if i == c {
                    continue;
                }
                let cmp = compare(kind_of(*kind), &per_arm[c], &per_arm[i], &design);
                let mut doc = comparison_json(n, &cmp, def.alpha, per_arm[c].mean());
                if *has_covariate {
                    let (theta, ac, at, reduction) = cuped(&per_arm[c], &per_arm[i]);
                    let adj = compare(Kind::Continuous, &ac, &at, &design);
                    doc["cuped"] = json!({
                        "theta": finite(theta),
                        "lift": finite(adj.lift),
                        "ci_low": finite(adj.ci_low),
                        "ci_high": finite(adj.ci_high),
                        "p_value": finite(adj.p_value),
                        "variance_reduction": finite(reduction),
                    });
                }
                comparisons.push((cmp, doc));
            }
        }
        if slot < def.metrics.len() {
            metrics.push(json!({
                "name": name,
                "kind": if *kind == MetricKind::Binary { "binary" } else { "continuous" },
                "variations": variations,
                "comparisons": comparisons.into_iter().map(|(_, d)| d).collect::<Vec<_>>(),
            }));
        } else {
            let g = &def.guardrails[slot - def.metrics.len()];
            // An increase is a degradation: violated once the interval of
            // the relative change lies above the tolerance, ok once below.
            let status = comparisons
                .iter()
                .map(|(c, _)| {
                    if c.relative_ci_low > g.max_relative_change {
                        "violated"
                    } else if c.relative_ci_high < g.max_relative_change {
                        "ok"
                    } else {
                        "inconclusive"
                    }
                })
                .max_by_key(|s| match *s {
                    "violated" => 2,
                    "inconclusive" => 1,
                    _ => 0,
                })
                .unwrap_or("inconclusive");
            guardrails.push(json!({
                "metric": name,
                "max_relative_change": g.max_relative_change,
                "status": status,
                "variations": variations,
                "comparisons": comparisons.into_iter().map(|(_, d)| d).collect::<Vec<_>>(),
            }));
        }
    }
    json!({
        "experiment": key,
        "flag": def.flag,
        "control": def.control,
        "state": state,
        "alpha": def.alpha,
        "power": def.power,
        "units": exposed.iter().filter(|u| arm(u).is_some()).count(),
        "variations": names.iter().zip(&counts).zip(weights).map(|((n, c), (_, w))| json!({
            "variation": n, "units": c, "expected_share": f64::from(*w) / 10_000.0,
        })).collect::<Vec<_>>(),
        "srm_p_value": finite(srm),
        "srm": srm < SRM_THRESHOLD,
        "metrics": metrics,
        "guardrails": guardrails,
        "nodes": nodes,
    })
}
