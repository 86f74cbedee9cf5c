//! Experiment definitions: which flag, which variation is control, what is
//! measured, and how strict the test is. Validated like flags, with
//! `<json path>: <why>` errors; the checks against the flag run at apply.

use serde::{Deserialize, Serialize};

use super::model::FlagDef;
use super::validate::Invalid;

/// How a metric reads a unit's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// The unit converts if it tracked the event at least once after exposure.
    Binary,
    /// The sum of the unit's event VALUEs after exposure.
    Continuous,
}

/// One measured metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    /// Name in the results.
    pub name: String,
    /// Binary or continuous.
    pub kind: MetricKind,
    /// The FLAG.TRACK event it reads.
    pub event: String,
    /// CUPED covariate: the event whose VALUEs before exposure are summed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covariate: Option<String>,
}

/// A metric that must not get worse by more than a tolerated share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guardrail {
    /// Name in the results.
    pub metric: String,
    /// Binary or continuous.
    pub kind: MetricKind,
    /// The FLAG.TRACK event it reads (an increase is a degradation).
    pub event: String,
    /// Tolerated relative increase (0.02 = 2 %).
    pub max_relative_change: f64,
}

fn default_alpha() -> f64 {
    0.05
}

fn default_power() -> f64 {
    0.8
}

/// An experiment on one flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentDef {
    /// What it tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The flag whose rollout assigns the variations.
    pub flag: String,
    /// The control variation's name.
    pub control: String,
    /// The metrics compared.
    #[serde(default)]
    pub metrics: Vec<Metric>,
    /// The guardrail metrics.
    #[serde(default)]
    pub guardrails: Vec<Guardrail>,
    /// Significance level.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Target power (for the MDE).
    #[serde(default = "default_power")]
    pub power: f64,
}

/// Fields `EXPERIMENT.GET` adds, accepted and ignored by `EXPERIMENT.SET`.
pub const READ_ONLY_FIELDS: [&str; 5] = [
    "state",
    "version",
    "started_at",
    "stopped_at",
    "created_revision",
];

/// Parses an experiment definition on its own (syntax, fields, ranges).
pub fn parse_experiment(json: &[u8]) -> Result<ExperimentDef, Invalid> {
    let mut value: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| Invalid::new("$", e.to_string()))?;
    let Some(object) = value.as_object_mut() else {
        return Err(Invalid::new("$", "an experiment is a JSON object"));
    };
    for field in READ_ONLY_FIELDS {
        object.remove(field);
    }
    let def: ExperimentDef = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." {
            "$".to_string()
        } else {
            format!("$.{path}")
        };
        Invalid::new(path, e.inner().to_string())
    })?;
    if !(def.alpha > 0.0 && def.alpha < 0.5) {
        return Err(Invalid::new("$.alpha", "must be between 0 and 0.5"));
    }
    if !(def.power > 0.0 && def.power < 1.0) {
        return Err(Invalid::new("$.power", "must be between 0 and 1"));
    }
    let mut names = std::collections::HashSet::new();
    for (i, m) in def.metrics.iter().enumerate() {
        if m.name.is_empty() || m.event.is_empty() {
            return Err(Invalid::new(
                format!("$.metrics[{i}]"),
                "name and event must not be empty",
            ));
        }
        if !names.insert(m.name.as_str()) {
            return Err(Invalid::new(
                format!("$.metrics[{i}].name"),
                format!("duplicate metric {:?}", m.name),
            ));
        }
        if m.covariate.is_some() && m.kind == MetricKind::Binary {
            return Err(Invalid::new(
                format!("$.metrics[{i}].covariate"),
                "only continuous metrics take a covariate",
            ));
        }
    }
    for (i, g) in def.guardrails.iter().enumerate() {
        if !(g.max_relative_change.is_finite() && g.max_relative_change > 0.0) {
            return Err(Invalid::new(
                format!("$.guardrails[{i}].max_relative_change"),
                "must be a positive number",
            ));
        }
    }
    Ok(def)
}

/// Where the flag's experiment rollout is: `None` for the fallthrough,
/// `Some(i)` for rule `i`; with its weights by variation name.
pub type RolloutSite = (Option<usize>, Vec<(String, u32)>);

/// Checks `def` against its flag (`None`: missing): it must exist, serve a
/// rollout (the fallthrough's, else the first rule's), and `control` must
/// be one of its variations. Returns where the rollout is.
pub fn check_against_flag(
    def: &ExperimentDef,
    flag: Option<&FlagDef>,
) -> Result<RolloutSite, Invalid> {
    let Some(flag) = flag else {
        return Err(Invalid::new(
            "$.flag",
            format!("no such flag {:?}", def.flag),
        ));
    };
    if !flag.variations.iter().any(|v| v.name == def.control) {
        return Err(Invalid::new(
            "$.control",
            format!("{:?} is not a variation of {}", def.control, def.flag),
        ));
    }
    let weights = |r: &Vec<super::model::WeightedVariation>| {
        r.iter()
            .map(|w| (w.variation.clone(), w.weight))
            .collect::<Vec<_>>()
    };
    if let Some(r) = &flag.fallthrough.rollout {
        return Ok((None, weights(r)));
    }
    for (i, rule) in flag.rules.iter().enumerate() {
        if let Some(r) = &rule.serve.rollout {
            return Ok((Some(i), weights(r)));
        }
    }
    Err(Invalid::new(
        "$.flag",
        format!("{} has no rollout to assign variations", def.flag),
    ))
}

/// Where `flag`'s experiment rollout is, without allocating: `Some(None)`
/// for the fallthrough, `Some(Some(i))` for rule `i`, `None` if it has none.
pub fn rollout_site(flag: &FlagDef) -> Option<Option<usize>> {
    if flag.fallthrough.rollout.is_some() {
        return Some(None);
    }
    flag.rules
        .iter()
        .position(|r| r.serve.rollout.is_some())
        .map(Some)
}

/// [`rollout_site`] read from the compiled form (the view keeps no tree):
/// a serve compiles to a rollout exactly when it serves one.
pub fn compiled_rollout_site(flag: &super::CompiledFlag) -> Option<Option<usize>> {
    use super::compile::CompiledServe;
    if matches!(flag.fallthrough, CompiledServe::Rollout(_)) {
        return Some(None);
    }
    flag.rules
        .iter()
        .position(|r| matches!(r.serve, CompiledServe::Rollout(_)))
        .map(Some)
}
