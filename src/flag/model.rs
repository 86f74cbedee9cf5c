//! Flag and segment definitions, exactly as stored and as given to
//! `FLAG.SET` / `SEGMENT.SET` (see DESIGN.md "Flag model").

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// A field that `FLAG.GET` adds (`version`, `revision`, ...): accepted by
/// `FLAG.SET` and ignored, so GET → edit → SET works.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadOnly;

impl<'de> Deserialize<'de> for ReadOnly {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| ReadOnly)
    }
}

/// A feature flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagDef {
    /// What the flag is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The kill switch: when false, everyone gets `off_variation`.
    pub on: bool,
    /// The values the flag can serve.
    pub variations: Vec<Variation>,
    /// Served when the flag is off or a prerequisite fails.
    pub off_variation: String,
    /// Other flags that must serve a given variation first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prerequisites: Vec<Prerequisite>,
    /// Individually targeted keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<Target>,
    /// Rules, tried in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// Served when nothing else matched.
    pub fallthrough: Serve,
    /// Bucketing salt; defaults to the flag's full key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    #[serde(default, skip_serializing)]
    version: Option<ReadOnly>,
    #[serde(default, skip_serializing)]
    revision: Option<ReadOnly>,
    #[serde(default, skip_serializing)]
    updated_at: Option<ReadOnly>,
    #[serde(default, skip_serializing)]
    updated_by: Option<ReadOnly>,
    #[serde(default, skip_serializing)]
    allocations: Option<ReadOnly>,
}

/// One value a flag can serve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variation {
    /// Unique name within the flag.
    pub name: String,
    /// Any JSON value; all variations of a flag share one JSON type.
    pub value: Value,
}

/// A flag that must serve `variation` for this flag to be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prerequisite {
    /// The prerequisite flag's full key.
    pub flag: String,
    /// The variation name it must serve.
    pub variation: String,
}

/// Keys that always get `variation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// The variation served.
    pub variation: String,
    /// Targeting keys.
    pub keys: Vec<String>,
}

/// A rule: when every clause matches, serve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Stable id; required when the rule serves a rollout (it names the allocation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// All must match.
    #[serde(default)]
    pub clauses: Vec<Clause>,
    /// What the rule serves.
    pub serve: Serve,
}

/// One condition on a context attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clause {
    /// The attribute tested (`key` is the targeting key; `$now` is server time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
    /// The operator.
    pub op: Op,
    /// Operands; the clause matches if any matches.
    #[serde(default)]
    pub values: Vec<Value>,
    /// Inverts the result (a missing attribute still does not match).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub negate: bool,
}

/// Clause operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Equal to any value.
    Eq,
    /// Equal to any value (meant for long lists).
    In,
    /// String contains any value.
    Contains,
    /// String starts with any value.
    StartsWith,
    /// String ends with any value.
    EndsWith,
    /// String matches any regex (linear-time engine).
    Matches,
    /// Number less than a value.
    Lt,
    /// Number at most a value.
    Lte,
    /// Number greater than a value.
    Gt,
    /// Number at least a value.
    Gte,
    /// Semantic version equal.
    SemverEq,
    /// Semantic version lower.
    SemverLt,
    /// Semantic version higher.
    SemverGt,
    /// Time before (RFC 3339 or epoch ms).
    Before,
    /// Time after (RFC 3339 or epoch ms).
    After,
    /// The context is in any of the named segments.
    InSegment,
    /// The attribute is present.
    Exists,
}

/// What a rule or the fallthrough serves: one variation, or a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Serve {
    /// A fixed variation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variation: Option<String>,
    /// A weighted split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Vec<WeightedVariation>>,
    /// Attribute the rollout buckets by; defaults to the targeting key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_by: Option<String>,
}

/// One share of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedVariation {
    /// Variation name.
    pub variation: String,
    /// Share in basis points; a rollout's weights sum to 10000.
    pub weight: u32,
}

/// A reusable set of contexts.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentDef {
    /// What the segment is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Keys always in (unless excluded).
    #[serde(default)]
    pub included: Vec<String>,
    /// Keys never in.
    #[serde(default)]
    pub excluded: Vec<String>,
    /// Any rule matching puts the context in.
    #[serde(default)]
    pub rules: Vec<SegmentRule>,
    #[serde(default, skip_serializing)]
    version: Option<ReadOnly>,
    #[serde(default, skip_serializing)]
    revision: Option<ReadOnly>,
    #[serde(default, skip_serializing)]
    updated_at: Option<ReadOnly>,
    #[serde(default, skip_serializing)]
    updated_by: Option<ReadOnly>,
}

/// A segment rule: all clauses must match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentRule {
    /// All must match.
    pub clauses: Vec<Clause>,
}

impl FlagDef {
    /// The salt bucketing uses: `salt`, or the flag's full key.
    pub fn effective_salt<'a>(&'a self, key: &'a str) -> &'a str {
        self.salt.as_deref().unwrap_or(key)
    }

    /// Every rollout in the flag with the id that names its allocation
    /// (`fallthrough`, or the rule's id).
    pub fn rollouts(&self) -> impl Iterator<Item = (&str, &Serve)> {
        self.rules
            .iter()
            .filter(|r| r.serve.rollout.is_some())
            .map(|r| (r.id.as_deref().unwrap_or(""), &r.serve))
            .chain(
                self.fallthrough
                    .rollout
                    .is_some()
                    .then_some(("fallthrough", &self.fallthrough)),
            )
    }

    /// Segment keys the flag's clauses reference.
    pub fn segment_refs(&self) -> impl Iterator<Item = &str> {
        self.rules
            .iter()
            .flat_map(|r| r.clauses.iter())
            .filter(|c| c.op == Op::InSegment)
            .flat_map(|c| c.values.iter().filter_map(Value::as_str))
    }
}
