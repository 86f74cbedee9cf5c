//! Compilation of validated definitions into their evaluation form: regexes
//! compiled once, long `in` lists as hash sets, versions and times parsed,
//! and each variation's value rendered to JSON text once. Segments and
//! prerequisites are referenced by key and looked up in the evaluated state,
//! so replacing a segment or a prerequisite recompiles nothing else.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use super::allocation::{allocate, Allocations};
use super::bucket::BucketHasher;
use super::model::{Clause, FlagDef, Op, SegmentDef, Serve};
use super::validate::{compile_regex, parse_semver, time_ms, Invalid};

/// Lists longer than this are hashed; shorter ones are scanned.
const HASH_THRESHOLD: usize = 8;

/// `v` without spare capacity. A `Vec` collected from an iterator without a
/// size hint (`filter_map`, `collect::<Result<..>>`) starts at 4 elements:
/// for one rule and one clause that was ~0.5 KB of a flag's ~1.3 KB.
fn exact<T>(mut v: Vec<T>) -> Vec<T> {
    v.shrink_to_fit();
    v
}

/// A set of strings, scanned when small and hashed when large.
#[derive(Debug, Clone)]
pub enum StrSet {
    /// A few strings.
    Few(Vec<Box<str>>),
    /// Many strings.
    Many(HashSet<Box<str>>),
}

impl StrSet {
    fn new<'a>(items: impl Iterator<Item = &'a str>) -> Self {
        let items: Vec<Box<str>> = items.map(Box::from).collect();
        if items.len() > HASH_THRESHOLD {
            StrSet::Many(items.into_iter().collect())
        } else {
            StrSet::Few(exact(items))
        }
    }

    /// Whether `s` is in the set.
    pub fn contains(&self, s: &str) -> bool {
        match self {
            StrSet::Few(v) => v.iter().any(|x| &**x == s),
            StrSet::Many(h) => h.contains(s),
        }
    }
}

/// The attribute a clause or rollout reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attr {
    /// Server time in epoch milliseconds (`$now`).
    Now,
    /// A context attribute (`key` is the targeting key).
    Named(Box<str>),
}

/// Comparison for numbers, versions and times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// Less than.
    Lt,
    /// At most.
    Lte,
    /// Greater than.
    Gt,
    /// At least.
    Gte,
    /// Equal.
    Eq,
}

/// A compiled clause operator with its operands.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// Equality with any string, number or boolean operand.
    Equals {
        /// String operands.
        strs: StrSet,
        /// Number operands.
        nums: Vec<f64>,
        /// Boolean operands: [false allowed, true allowed].
        bools: [bool; 2],
    },
    /// Substring.
    Contains(Vec<Box<str>>),
    /// Prefix.
    StartsWith(Vec<Box<str>>),
    /// Suffix.
    EndsWith(Vec<Box<str>>),
    /// Regex search.
    Matches(Vec<regex::Regex>),
    /// Numeric comparison.
    Number(Cmp, Vec<f64>),
    /// Semantic-version comparison.
    Semver(Cmp, Vec<semver::Version>),
    /// Time comparison in epoch milliseconds.
    Time(Cmp, Vec<f64>),
    /// Segment membership, by segment key.
    InSegment(Vec<Arc<str>>),
    /// Presence.
    Exists,
}

/// A compiled clause.
#[derive(Debug, Clone)]
pub struct CompiledClause {
    /// What it reads.
    pub attr: Attr,
    /// Whether the result is inverted.
    pub negate: bool,
    /// How it matches.
    pub matcher: Matcher,
    /// A slot in a per-evaluation cache shared by the identical clauses
    /// of one flag's rules (`None`: the clause occurs once).
    pub memo: Option<u8>,
}

/// A compiled rollout: a primed hash and a bucket → variation table.
#[derive(Debug, Clone)]
pub struct CompiledRollout {
    /// The attribute bucketed by.
    pub bucket_by: Attr,
    /// SHA-256 primed with `salt:flag_key:`.
    pub hasher: BucketHasher,
    /// (first bucket, variation index), sorted; covers every bucket.
    pub table: Vec<(u16, usize)>,
}

impl CompiledRollout {
    /// The variation that owns `bucket`.
    pub fn variation_for(&self, bucket: u16) -> usize {
        let i = self.table.partition_point(|(start, _)| *start <= bucket);
        self.table[i.saturating_sub(1)].1
    }
}

/// What a rule or the fallthrough serves.
#[derive(Debug, Clone)]
pub enum CompiledServe {
    /// A fixed variation index.
    Variation(usize),
    /// A rollout.
    Rollout(Box<CompiledRollout>),
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    /// Its id, if any.
    pub id: Option<Arc<str>>,
    /// All must match.
    pub clauses: Vec<CompiledClause>,
    /// What it serves.
    pub serve: CompiledServe,
}

/// One variation: its name and its value as JSON text (the EVAL reply).
#[derive(Debug, Clone)]
pub struct CompiledVariation {
    /// Name.
    pub name: Arc<str>,
    /// The value rendered as JSON.
    pub json: Bytes,
}

/// A prerequisite: flag key and required variation name.
#[derive(Debug, Clone)]
pub struct CompiledPrerequisite {
    /// The prerequisite flag's key.
    pub flag: Arc<str>,
    /// The variation it must serve.
    pub variation: Box<str>,
}

/// The context attributes an evaluation of a flag may read, besides `key`
/// (which is always read): FLAG.EVAL keeps only these from the context.
#[derive(Debug, Clone, Default)]
pub struct Reads {
    /// Any attribute: the flag has prerequisites (which read their own).
    pub all: bool,
    /// Attributes its clauses and rollouts read.
    pub names: Box<[Box<str>]>,
    /// Segments it tests, whose rules may read others (they change
    /// without the flag being recompiled, so they are asked at evaluation).
    pub segments: Box<[Arc<str>]>,
}

impl Reads {
    fn of<'a>(
        clauses: impl Iterator<Item = &'a CompiledClause>,
        serves: &[&CompiledServe],
    ) -> Self {
        let mut names: Vec<Box<str>> = Vec::new();
        let mut segments: Vec<Arc<str>> = Vec::new();
        let mut add = |a: &Attr| {
            if let Attr::Named(n) = a {
                if &**n != "key" && !names.contains(n) {
                    names.push(n.clone());
                }
            }
        };
        for c in clauses {
            match &c.matcher {
                Matcher::InSegment(keys) => {
                    for k in keys {
                        if !segments.contains(k) {
                            segments.push(k.clone());
                        }
                    }
                }
                _ => add(&c.attr),
            }
        }
        for s in serves {
            if let CompiledServe::Rollout(r) = s {
                add(&r.bucket_by);
            }
        }
        Reads {
            all: false,
            names: names.into(),
            segments: segments.into(),
        }
    }

    /// Whether an evaluation may read the attribute `name`.
    pub fn reads(&self, name: &str, source: &dyn super::FlagSource) -> bool {
        self.all
            || name == "key"
            || self.names.iter().any(|n| &**n == name)
            || self.segments.iter().any(|s| {
                source
                    .segment(s)
                    .is_none_or(|seg| seg.reads.iter().any(|n| &**n == name))
            })
    }
}

/// A flag ready for evaluation.
#[derive(Debug, Clone)]
pub struct CompiledFlag {
    /// Full key.
    pub key: Arc<str>,
    /// Kill switch.
    pub on: bool,
    /// Variations, in definition order.
    pub variations: Vec<CompiledVariation>,
    /// Index of the off variation.
    pub off_variation: usize,
    /// Prerequisites, in order.
    pub prerequisites: Vec<CompiledPrerequisite>,
    /// Targeting key → variation index.
    pub targets: HashMap<Box<str>, usize>,
    /// Rules, in order.
    pub rules: Vec<CompiledRule>,
    /// Fallthrough.
    pub fallthrough: CompiledServe,
    /// Whether evaluation may read server time (`$now` here, or possibly in a
    /// segment or a prerequisite), so callers read the clock only then.
    pub uses_now: bool,
    /// The context attributes an evaluation may read.
    pub reads: Reads,
    /// Evaluations served by this compiled version, by variation and reason.
    pub counters: super::EvalCounters,
}

impl CompiledFlag {
    /// Segment keys the flag's clauses reference.
    pub fn segment_refs(&self) -> impl Iterator<Item = &Arc<str>> {
        self.rules
            .iter()
            .flat_map(|r| r.clauses.iter())
            .flat_map(|c| match &c.matcher {
                Matcher::InSegment(keys) => keys.as_slice(),
                _ => &[],
            })
    }
}

/// A segment ready for membership tests.
#[derive(Debug, Clone)]
pub struct CompiledSegment {
    /// Full key.
    pub key: Arc<str>,
    /// Always in (unless excluded).
    pub included: StrSet,
    /// Never in.
    pub excluded: StrSet,
    /// Each rule is a list of clauses that must all match.
    pub rules: Vec<Vec<CompiledClause>>,
    /// The attributes its rules read, besides `key`.
    pub reads: Box<[Box<str>]>,
}

fn attr(name: &str) -> Attr {
    if name == "$now" {
        Attr::Now
    } else {
        Attr::Named(name.into())
    }
}

fn strs(values: &[Value]) -> Vec<Box<str>> {
    exact(
        values
            .iter()
            .filter_map(Value::as_str)
            .map(Box::from)
            .collect(),
    )
}

fn compile_clause(
    path: &str,
    c: &Clause,
    segment_exists: &dyn Fn(&str) -> bool,
) -> Result<CompiledClause, Invalid> {
    let nums = || exact(c.values.iter().filter_map(Value::as_f64).collect());
    let semvers = || {
        exact(
            c.values
                .iter()
                .filter_map(|v| v.as_str().and_then(parse_semver))
                .collect(),
        )
    };
    let times = || exact(c.values.iter().filter_map(time_ms).collect());
    let matcher = match c.op {
        Op::Eq | Op::In => Matcher::Equals {
            strs: StrSet::new(c.values.iter().filter_map(Value::as_str)),
            nums: nums(),
            bools: [
                c.values.iter().any(|v| v.as_bool() == Some(false)),
                c.values.iter().any(|v| v.as_bool() == Some(true)),
            ],
        },
        Op::Contains => Matcher::Contains(strs(&c.values)),
        Op::StartsWith => Matcher::StartsWith(strs(&c.values)),
        Op::EndsWith => Matcher::EndsWith(strs(&c.values)),
        Op::Matches => Matcher::Matches(exact(
            c.values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    compile_regex(v.as_str().unwrap_or_default())
                        .map_err(|why| Invalid::new(format!("{path}.values[{i}]"), why))
                })
                .collect::<Result<_, _>>()?,
        )),
        Op::Lt => Matcher::Number(Cmp::Lt, nums()),
        Op::Lte => Matcher::Number(Cmp::Lte, nums()),
        Op::Gt => Matcher::Number(Cmp::Gt, nums()),
        Op::Gte => Matcher::Number(Cmp::Gte, nums()),
        Op::SemverEq => Matcher::Semver(Cmp::Eq, semvers()),
        Op::SemverLt => Matcher::Semver(Cmp::Lt, semvers()),
        Op::SemverGt => Matcher::Semver(Cmp::Gt, semvers()),
        Op::Before => Matcher::Time(Cmp::Lt, times()),
        Op::After => Matcher::Time(Cmp::Gt, times()),
        Op::InSegment => Matcher::InSegment(exact(
            c.values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let key = v.as_str().unwrap_or_default();
                    if segment_exists(key) {
                        Ok(Arc::from(key))
                    } else {
                        Err(Invalid::new(
                            format!("{path}.values[{i}]"),
                            format!("unknown segment {key:?}"),
                        ))
                    }
                })
                .collect::<Result<_, _>>()?,
        )),
        Op::Exists => Matcher::Exists,
    };
    Ok(CompiledClause {
        attr: attr(c.attribute.as_deref().unwrap_or("key")),
        negate: c.negate,
        matcher,
        memo: None,
    })
}

/// Rules often repeat a guard (`country in [...]`, a version check): each
/// clause that occurs more than once among the rules gets a cache slot, so
/// an evaluation tests it once (clauses are pure functions of the context,
/// the time and the stored segments, all fixed during one evaluation).
fn share_identical_clauses(def: &FlagDef, rules: &mut [CompiledRule]) {
    let mut seen: HashMap<String, (usize, Option<u8>)> = HashMap::new();
    let mut slots = 0u8;
    let texts: Vec<Vec<String>> = def
        .rules
        .iter()
        .map(|r| {
            r.clauses
                .iter()
                .map(|c| serde_json::to_string(c).unwrap_or_default())
                .collect()
        })
        .collect();
    for text in texts.iter().flatten() {
        seen.entry(text.clone()).or_insert((0, None)).0 += 1;
    }
    for (rule, texts) in rules.iter_mut().zip(&texts) {
        for (clause, text) in rule.clauses.iter_mut().zip(texts) {
            let Some((count, slot)) = seen.get_mut(text) else {
                continue;
            };
            if *count < 2 || text.is_empty() {
                continue;
            }
            if slot.is_none() && slots < 64 {
                *slot = Some(slots);
                slots += 1;
            }
            clause.memo = *slot;
        }
    }
}

/// Compiles a segment (which has been validated).
pub fn compile_segment(key: &str, def: &SegmentDef) -> Result<CompiledSegment, Invalid> {
    let no_segments = |_: &str| false;
    let rules: Vec<Vec<CompiledClause>> = def
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            r.clauses
                .iter()
                .enumerate()
                .map(|(j, c)| compile_clause(&format!("rules[{i}].clauses[{j}]"), c, &no_segments))
                .collect::<Result<Vec<_>, _>>()
                .map(exact)
        })
        .collect::<Result<Vec<_>, _>>()
        .map(exact)?;
    let reads = Reads::of(rules.iter().flatten(), &[]).names;
    Ok(CompiledSegment {
        key: key.into(),
        included: StrSet::new(def.included.iter().map(String::as_str)),
        excluded: StrSet::new(def.excluded.iter().map(String::as_str)),
        rules,
        reads,
    })
}

/// The allocations a definition needs, keeping what `prev` had where the
/// rollout, salt and `bucket_by` allow.
pub fn allocations_for(key: &str, def: &FlagDef, prev: &Allocations) -> Allocations {
    let salt = def.effective_salt(key);
    def.rollouts()
        .map(|(id, serve)| {
            let bucket_by = serve.bucket_by.as_deref().unwrap_or("key");
            let rollout = serve.rollout.as_deref().unwrap_or_default();
            (
                id.to_string(),
                allocate(prev.get(id), rollout, salt, bucket_by),
            )
        })
        .collect()
}

/// Compiles a validated flag with its allocations; `segment_exists` says
/// whether a segment key is stored.
pub fn compile_flag(
    key: &str,
    def: &FlagDef,
    allocations: &Allocations,
    segment_exists: &dyn Fn(&str) -> bool,
) -> Result<CompiledFlag, Invalid> {
    let index: HashMap<&str, usize> = def
        .variations
        .iter()
        .enumerate()
        .map(|(i, v)| (v.name.as_str(), i))
        .collect();
    let var = |path: &str, name: &str| {
        index
            .get(name)
            .copied()
            .ok_or_else(|| Invalid::new(path, format!("unknown variation {name:?}")))
    };
    let salt = def.effective_salt(key);
    let serve = |path: &str, id: &str, s: &Serve| -> Result<CompiledServe, Invalid> {
        if let Some(v) = &s.variation {
            return Ok(CompiledServe::Variation(var(path, v)?));
        }
        let bucket_by = s.bucket_by.as_deref().unwrap_or("key");
        let fresh;
        let alloc = match allocations.get(id) {
            Some(a) => a,
            None => {
                fresh = allocate(
                    None,
                    s.rollout.as_deref().unwrap_or_default(),
                    salt,
                    bucket_by,
                );
                &fresh
            }
        };
        let mut table = Vec::new();
        for (name, ranges) in &alloc.ranges {
            let v = var(path, name)?;
            table.extend(ranges.iter().map(|r| (r[0], v)));
        }
        table.sort_unstable();
        table.shrink_to_fit();
        if table.first().map(|t| t.0) != Some(0) {
            return Err(Invalid::new(path, "allocation does not cover bucket 0"));
        }
        Ok(CompiledServe::Rollout(Box::new(CompiledRollout {
            bucket_by: attr(bucket_by),
            hasher: BucketHasher::new(salt, key),
            table,
        })))
    };
    let mut targets = HashMap::new();
    for (i, t) in def.targets.iter().enumerate() {
        let v = var(&format!("targets[{i}].variation"), &t.variation)?;
        for k in &t.keys {
            targets.entry(Box::from(k.as_str())).or_insert(v);
        }
    }
    let mut rules: Vec<CompiledRule> = def
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let clauses = r
                .clauses
                .iter()
                .enumerate()
                .map(|(j, c)| {
                    compile_clause(&format!("rules[{i}].clauses[{j}]"), c, segment_exists)
                })
                .collect::<Result<Vec<_>, _>>()
                .map(exact)?;
            Ok(CompiledRule {
                id: r.id.as_deref().map(Arc::from),
                clauses,
                serve: serve(
                    &format!("rules[{i}].serve"),
                    r.id.as_deref().unwrap_or(""),
                    &r.serve,
                )?,
            })
        })
        .collect::<Result<Vec<_>, Invalid>>()
        .map(exact)?;
    share_identical_clauses(def, &mut rules);
    // A segment may start reading `$now` without the flag being recompiled.
    let clause_uses_now =
        |c: &CompiledClause| matches!(c.matcher, Matcher::InSegment(_)) || c.attr == Attr::Now;
    let uses_now = !def.prerequisites.is_empty()
        || rules
            .iter()
            .any(|r: &CompiledRule| r.clauses.iter().any(clause_uses_now));
    let off_variation = var("off_variation", &def.off_variation)?;
    let fallthrough = serve("fallthrough", "fallthrough", &def.fallthrough)?;
    let mut serves: Vec<&CompiledServe> = rules.iter().map(|r| &r.serve).collect();
    serves.push(&fallthrough);
    let mut reads = Reads::of(rules.iter().flat_map(|r| &r.clauses), &serves);
    reads.all = !def.prerequisites.is_empty();
    Ok(CompiledFlag {
        key: key.into(),
        on: def.on,
        variations: def
            .variations
            .iter()
            .map(|v| CompiledVariation {
                name: v.name.as_str().into(),
                json: Bytes::from(v.value.to_string()),
            })
            .collect(),
        off_variation,
        prerequisites: def
            .prerequisites
            .iter()
            .map(|p| CompiledPrerequisite {
                flag: p.flag.as_str().into(),
                variation: p.variation.as_str().into(),
            })
            .collect(),
        targets,
        rules,
        fallthrough,
        uses_now,
        reads,
        counters: super::EvalCounters::new(def.variations.len()),
    })
}
