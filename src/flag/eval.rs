//! Evaluation: OFF → prerequisites → targets → rules in order → fallthrough,
//! as DESIGN.md orders them. It never fails. A flag without prerequisites
//! allocates nothing; one with prerequisites evaluates each flag it reaches
//! once, however many paths lead there.

use std::collections::HashMap;
use std::sync::Arc;

use super::compile::{Attr, CompiledClause, CompiledFlag, CompiledSegment, CompiledServe, Matcher};
use super::context::{AttrValue, Context, Num, NumText};
use super::limits::MAX_PREREQUISITE_DEPTH;
use super::validate::{parse_semver, rfc3339_ms};

/// Looks up other flags (prerequisites) and segments, as stored now.
pub trait FlagSource {
    /// The compiled flag stored under `key`.
    fn flag(&self, key: &str) -> Option<&CompiledFlag>;
    /// The compiled segment stored under `key`.
    fn segment(&self, key: &str) -> Option<&CompiledSegment>;
}

/// Why a variation was served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The flag is off.
    Off,
    /// This prerequisite flag did not serve the required variation.
    PrerequisiteFailed(Arc<str>),
    /// The targeting key is individually targeted.
    TargetMatch,
    /// A rule matched.
    RuleMatch {
        /// Its position.
        index: usize,
        /// Its id.
        id: Option<Arc<str>>,
    },
    /// Nothing matched.
    Fallthrough,
}

impl Reason {
    /// The reason's name as replied (`RULE_MATCH`).
    pub fn name(&self) -> &'static str {
        match self {
            Reason::Off => "OFF",
            Reason::PrerequisiteFailed(_) => "PREREQUISITE_FAILED",
            Reason::TargetMatch => "TARGET_MATCH",
            Reason::RuleMatch { .. } => "RULE_MATCH",
            Reason::Fallthrough => "FALLTHROUGH",
        }
    }
}

/// The outcome of evaluating a flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// Index of the variation served.
    pub variation: usize,
    /// Why.
    pub reason: Reason,
}

/// Evaluates `flag` for `ctx`. `now_ms` is server time (the `$now` attribute).
pub fn evaluate(
    flag: &CompiledFlag,
    ctx: &Context<'_>,
    source: &dyn FlagSource,
    now_ms: f64,
) -> Evaluation {
    let mut eval = Evaluator {
        ctx,
        source,
        now: now_ms,
        served: Served::default(),
    };
    eval.flag(flag, 0)
}

/// Variations already served by prerequisite flags during one evaluation,
/// keyed by the compiled flag's address (stable while `source` is borrowed).
/// A short list is scanned; a long one moves to a hash map. Empty, it costs
/// nothing to make (no allocation, no hasher seed).
#[derive(Default)]
struct Served {
    few: Vec<(usize, usize)>,
    many: Option<HashMap<usize, usize>>,
}

impl Served {
    /// Entries kept in the scanned list.
    const FEW: usize = 16;

    fn get(&self, flag: usize) -> Option<usize> {
        match &self.many {
            None => self.few.iter().find(|(f, _)| *f == flag).map(|(_, v)| *v),
            Some(many) => many.get(&flag).copied(),
        }
    }

    fn insert(&mut self, flag: usize, variation: usize) {
        match &mut self.many {
            None if self.few.len() < Self::FEW => self.few.push((flag, variation)),
            None => {
                let mut many: HashMap<usize, usize> = self.few.drain(..).collect();
                many.insert(flag, variation);
                self.many = Some(many);
            }
            Some(many) => {
                many.insert(flag, variation);
            }
        }
    }
}

struct Evaluator<'s, 'c> {
    ctx: &'s Context<'c>,
    source: &'s dyn FlagSource,
    now: f64,
    served: Served,
}

impl Evaluator<'_, '_> {
    fn flag(&mut self, flag: &CompiledFlag, depth: usize) -> Evaluation {
        if !flag.on {
            return Evaluation {
                variation: flag.off_variation,
                reason: Reason::Off,
            };
        }
        for p in &flag.prerequisites {
            let passed = match self.source.flag(&p.flag) {
                // Stored graphs are never deeper than the limit; this bounds a walk regardless.
                Some(pf) if depth < MAX_PREREQUISITE_DEPTH => {
                    *pf.variations[self.prerequisite(pf, depth + 1)].name == *p.variation
                }
                _ => false,
            };
            if !passed {
                return Evaluation {
                    variation: flag.off_variation,
                    reason: Reason::PrerequisiteFailed(p.flag.clone()),
                };
            }
        }
        let ctx = self.ctx;
        if !flag.targets.is_empty() {
            if let Some(v) = ctx.key().and_then(|k| flag.targets.get(k)) {
                return Evaluation {
                    variation: *v,
                    reason: Reason::TargetMatch,
                };
            }
        }
        // Results of shared clauses (`CompiledClause::memo`) in this flag.
        let (mut known, mut held) = (0u64, 0u64);
        for (index, rule) in flag.rules.iter().enumerate() {
            if rule.clauses.iter().all(|c| match c.memo {
                None => clause_matches(c, ctx, self.source, self.now),
                Some(slot) => {
                    let bit = 1u64 << slot;
                    if known & bit != 0 {
                        return held & bit != 0;
                    }
                    let hit = clause_matches(c, ctx, self.source, self.now);
                    known |= bit;
                    if hit {
                        held |= bit;
                    }
                    hit
                }
            }) {
                return Evaluation {
                    variation: serve(&rule.serve, ctx),
                    reason: Reason::RuleMatch {
                        index,
                        id: rule.id.clone(),
                    },
                };
            }
        }
        Evaluation {
            variation: serve(&flag.fallthrough, ctx),
            reason: Reason::Fallthrough,
        }
    }

    /// The variation prerequisite `pf` serves, evaluated once per evaluation.
    fn prerequisite(&mut self, pf: &CompiledFlag, depth: usize) -> usize {
        let id = pf as *const CompiledFlag as usize;
        if let Some(v) = self.served.get(id) {
            return v;
        }
        let v = self.flag(pf, depth).variation;
        self.served.insert(id, v);
        v
    }
}

/// The variation a serve picks for `ctx`.
pub fn serve(s: &CompiledServe, ctx: &Context<'_>) -> usize {
    match s {
        CompiledServe::Variation(v) => *v,
        CompiledServe::Rollout(r) => {
            let bucket = match &r.bucket_by {
                Attr::Named(name) => match ctx.get(name) {
                    Some(AttrValue::Str(s)) => r.hasher.bucket(s.as_bytes()),
                    Some(AttrValue::Num(n)) => r
                        .hasher
                        .bucket(n.json_text(&mut NumText::default()).as_bytes()),
                    Some(AttrValue::Bool(b)) => {
                        r.hasher.bucket(if *b { b"true" } else { b"false" })
                    }
                    _ => 0,
                },
                Attr::Now => 0,
            };
            r.variation_for(bucket)
        }
    }
}

fn clause_matches(
    c: &CompiledClause,
    ctx: &Context<'_>,
    source: &dyn FlagSource,
    now: f64,
) -> bool {
    if let Matcher::InSegment(segments) = &c.matcher {
        // A segment cannot be deleted while a flag uses it; a missing one holds no one.
        let member = segments.iter().any(|key| {
            source
                .segment(key)
                .is_some_and(|s| in_segment(s, ctx, source, now))
        });
        return member != c.negate;
    }
    let now_value;
    let value = match &c.attr {
        Attr::Now => {
            now_value = AttrValue::Num(Num::F(now));
            Some(&now_value)
        }
        Attr::Named(name) => ctx.get(name),
    };
    if let Matcher::Exists = c.matcher {
        return value.is_some() != c.negate;
    }
    let Some(value) = value else {
        return false;
    };
    let hit = match value {
        AttrValue::List(items) => items.iter().any(|v| scalar_matches(&c.matcher, v)),
        v => scalar_matches(&c.matcher, v),
    };
    hit != c.negate
}

fn scalar_matches(m: &Matcher, v: &AttrValue<'_>) -> bool {
    match (m, v) {
        (Matcher::Equals { strs, .. }, AttrValue::Str(s)) => strs.contains(s),
        (Matcher::Equals { nums, .. }, AttrValue::Num(n)) => nums.contains(&n.as_f64()),
        (Matcher::Equals { bools, .. }, AttrValue::Bool(b)) => bools[usize::from(*b)],
        (Matcher::Contains(vals), AttrValue::Str(s)) => vals.iter().any(|x| s.contains(&**x)),
        (Matcher::StartsWith(vals), AttrValue::Str(s)) => vals.iter().any(|x| s.starts_with(&**x)),
        (Matcher::EndsWith(vals), AttrValue::Str(s)) => vals.iter().any(|x| s.ends_with(&**x)),
        (Matcher::Matches(res), AttrValue::Str(s)) => res.iter().any(|re| re.is_match(s)),
        (Matcher::Number(cmp, vals), AttrValue::Num(n)) => {
            vals.iter().any(|x| cmp.test_f64(n.as_f64(), *x))
        }
        (Matcher::Semver(cmp, vals), AttrValue::Str(s)) => match parse_semver(s) {
            Some(ver) => vals.iter().any(|x| cmp.test_ord(&ver, x)),
            None => false,
        },
        (Matcher::Time(cmp, vals), v) => {
            let t = match v {
                AttrValue::Num(n) => Some(n.as_f64()),
                AttrValue::Str(s) => rfc3339_ms(s),
                _ => None,
            };
            t.is_some_and(|t| vals.iter().any(|x| cmp.test_f64(t, *x)))
        }
        _ => false,
    }
}

/// Whether `ctx` is in `segment`: excluded beats included, included beats rules.
pub fn in_segment(
    segment: &CompiledSegment,
    ctx: &Context<'_>,
    source: &dyn FlagSource,
    now: f64,
) -> bool {
    if let Some(key) = ctx.key() {
        if segment.excluded.contains(key) {
            return false;
        }
        if segment.included.contains(key) {
            return true;
        }
    }
    segment
        .rules
        .iter()
        .any(|clauses| clauses.iter().all(|c| clause_matches(c, ctx, source, now)))
}

impl super::compile::Cmp {
    fn test_f64(self, a: f64, b: f64) -> bool {
        self.test_ord(&a, &b)
    }

    fn test_ord<T: PartialOrd>(self, a: &T, b: &T) -> bool {
        use super::compile::Cmp::*;
        match self {
            Lt => a < b,
            Lte => a <= b,
            Gt => a > b,
            Gte => a >= b,
            Eq => a == b,
        }
    }
}
