//! Parsing and validation of definitions. Every problem is reported with the
//! JSON path where it is (`rules[2].serve.rollout: weights sum to 9000, need
//! 10000`). Checks that need other keys (references, cycles) take a
//! [`Catalog`] of what is stored, so the state machine runs them at apply.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::graph::check_prerequisite_graph;
use super::key::key_problem;
use super::limits::*;
use super::model::{Clause, FlagDef, Op, SegmentDef, Serve};

/// A refused definition: where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {why}")]
pub struct Invalid {
    /// JSON path of the problem (`$` is the whole definition).
    pub path: String,
    /// What is wrong.
    pub why: String,
}

impl Invalid {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, why: impl Into<String>) -> Self {
        Invalid {
            path: path.into(),
            why: why.into(),
        }
    }
}

fn fail<T>(path: impl Into<String>, why: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid::new(path, why))
}

/// What the reference checks read of a flag: its variation names and its
/// prerequisites. A stored flag answers from its compiled form, so the view
/// keeps no definition tree for these checks.
pub trait FlagRefs {
    /// Whether the flag has a variation named `name`.
    fn has_variation(&self, name: &str) -> bool;
    /// The prerequisite flags' keys, in definition order.
    fn prerequisite_keys(&self) -> Vec<&str>;
}

impl FlagRefs for FlagDef {
    fn has_variation(&self, name: &str) -> bool {
        self.variations.iter().any(|v| v.name == name)
    }

    fn prerequisite_keys(&self) -> Vec<&str> {
        self.prerequisites.iter().map(|p| p.flag.as_str()).collect()
    }
}

impl FlagRefs for super::compile::CompiledFlag {
    fn has_variation(&self, name: &str) -> bool {
        self.variations.iter().any(|v| &*v.name == name)
    }

    fn prerequisite_keys(&self) -> Vec<&str> {
        self.prerequisites.iter().map(|p| &*p.flag).collect()
    }
}

/// What is stored, for checks that involve other keys.
pub trait Catalog {
    /// A stored flag's variations and prerequisites.
    fn flag(&self, key: &str) -> Option<&dyn FlagRefs>;
    /// Whether a segment exists.
    fn has_segment(&self, key: &str) -> bool;
    /// The stored flags that list `key` as a prerequisite.
    fn dependents(&self, key: &str) -> Vec<&str>;
}

/// Deserialises `json` as `T`, turning serde's error into a path-precise one.
fn deserialize<T: serde::de::DeserializeOwned>(json: &[u8]) -> Result<T, Invalid> {
    // serde would also accept a struct written as an array; a definition is an object.
    if json.iter().find(|c| !c.is_ascii_whitespace()) != Some(&b'{') {
        return fail("$", "definition must be a JSON object");
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let msg = e.inner().to_string();
        let msg = match msg.rfind(" at line ") {
            Some(i) if !e.inner().is_syntax() && !e.inner().is_eof() => msg[..i].to_string(),
            _ => msg,
        };
        let base = if path == "." { String::new() } else { path };
        if let Some(field) = msg
            .strip_prefix("missing field `")
            .and_then(|m| m.strip_suffix('`'))
        {
            let path = if base.is_empty() {
                field.to_string()
            } else {
                format!("{base}.{field}")
            };
            return Invalid::new(path, "required field is missing");
        }
        Invalid::new(
            if base.is_empty() {
                "$".to_string()
            } else {
                base
            },
            msg,
        )
    })?;
    de.end().map_err(|e| Invalid::new("$", e.to_string()))?;
    Ok(value)
}

/// Parses and checks a flag definition on its own (no other keys consulted).
pub fn parse_flag(key: &str, json: &[u8]) -> Result<FlagDef, Invalid> {
    if let Some(why) = key_problem(key.as_bytes()) {
        return fail("key", why);
    }
    if json.len() > MAX_FLAG_BYTES {
        return fail(
            "$",
            format!(
                "definition is {} bytes, the limit is {MAX_FLAG_BYTES}",
                json.len()
            ),
        );
    }
    let def: FlagDef = deserialize(json)?;
    validate_flag(key, &def)?;
    Ok(def)
}

/// Parses and checks a segment definition on its own.
pub fn parse_segment(key: &str, json: &[u8]) -> Result<SegmentDef, Invalid> {
    if let Some(why) = key_problem(key.as_bytes()) {
        return fail("key", why);
    }
    if json.len() > MAX_SEGMENT_BYTES {
        return fail(
            "$",
            format!(
                "definition is {} bytes, the limit is {MAX_SEGMENT_BYTES}",
                json.len()
            ),
        );
    }
    let def: SegmentDef = deserialize(json)?;
    validate_segment(&def)?;
    Ok(def)
}

fn check_name(path: &str, s: &str) -> Result<(), Invalid> {
    if s.is_empty() {
        return fail(path, "must not be empty");
    }
    if s.len() > MAX_NAME_LEN {
        return fail(
            path,
            format!("is {} bytes, the limit is {MAX_NAME_LEN}", s.len()),
        );
    }
    Ok(())
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Checks everything about a flag that does not need other keys.
pub fn validate_flag(key: &str, def: &FlagDef) -> Result<(), Invalid> {
    if let Some(d) = &def.description {
        if d.len() > MAX_DESCRIPTION_LEN {
            return fail(
                "description",
                format!("is {} bytes, the limit is {MAX_DESCRIPTION_LEN}", d.len()),
            );
        }
    }
    if def.tags.len() > MAX_TAGS {
        return fail(
            "tags",
            format!("has {} tags, the limit is {MAX_TAGS}", def.tags.len()),
        );
    }
    for (i, t) in def.tags.iter().enumerate() {
        check_name(&format!("tags[{i}]"), t)?;
    }
    if def.variations.is_empty() {
        return fail("variations", "a flag needs at least one variation");
    }
    if def.variations.len() > MAX_VARIATIONS {
        return fail(
            "variations",
            format!(
                "has {} variations, the limit is {MAX_VARIATIONS}",
                def.variations.len()
            ),
        );
    }
    let mut names = HashSet::new();
    let first_type = json_type(&def.variations[0].value);
    for (i, v) in def.variations.iter().enumerate() {
        check_name(&format!("variations[{i}].name"), &v.name)?;
        if !names.insert(v.name.as_str()) {
            return fail(
                format!("variations[{i}].name"),
                format!("duplicate variation name {:?}", v.name),
            );
        }
        let t = json_type(&v.value);
        if t != first_type {
            return fail(
                format!("variations[{i}].value"),
                format!("is a {t}, but variations[0].value is a {first_type}; all variations must share one JSON type"),
            );
        }
    }
    let known = |path: &str, name: &str| -> Result<(), Invalid> {
        if names.contains(name) {
            Ok(())
        } else {
            fail(path, format!("unknown variation {name:?}"))
        }
    };
    known("off_variation", &def.off_variation)?;
    if def.prerequisites.len() > MAX_PREREQUISITES {
        return fail(
            "prerequisites",
            format!(
                "has {} entries, the limit is {MAX_PREREQUISITES}",
                def.prerequisites.len()
            ),
        );
    }
    let mut prereq_flags = HashSet::new();
    for (i, p) in def.prerequisites.iter().enumerate() {
        if let Some(why) = key_problem(p.flag.as_bytes()) {
            return fail(format!("prerequisites[{i}].flag"), why);
        }
        if p.flag == key {
            return fail(
                format!("prerequisites[{i}].flag"),
                "a flag cannot be its own prerequisite",
            );
        }
        if !prereq_flags.insert(p.flag.as_str()) {
            return fail(
                format!("prerequisites[{i}].flag"),
                format!("{:?} is listed twice", p.flag),
            );
        }
        check_name(&format!("prerequisites[{i}].variation"), &p.variation)?;
    }
    let mut targeted: HashMap<&str, usize> = HashMap::new();
    let mut total_keys = 0;
    for (i, t) in def.targets.iter().enumerate() {
        known(&format!("targets[{i}].variation"), &t.variation)?;
        total_keys += t.keys.len();
        if total_keys > MAX_TARGET_KEYS {
            return fail(
                format!("targets[{i}].keys"),
                format!("more than {MAX_TARGET_KEYS} targeted keys in all"),
            );
        }
        for (j, k) in t.keys.iter().enumerate() {
            check_name(&format!("targets[{i}].keys[{j}]"), k)?;
            if let Some(prev) = targeted.insert(k.as_str(), i) {
                return fail(
                    format!("targets[{i}].keys[{j}]"),
                    format!("{k:?} is already targeted by targets[{prev}]"),
                );
            }
        }
    }
    if def.rules.len() > MAX_RULES {
        return fail(
            "rules",
            format!("has {} rules, the limit is {MAX_RULES}", def.rules.len()),
        );
    }
    let mut rule_ids = HashSet::new();
    for (i, r) in def.rules.iter().enumerate() {
        let path = format!("rules[{i}]");
        if let Some(id) = &r.id {
            check_name(&format!("{path}.id"), id)?;
            if id == "fallthrough" {
                return fail(
                    format!("{path}.id"),
                    "\"fallthrough\" is reserved for the fallthrough rollout",
                );
            }
            if !rule_ids.insert(id.as_str()) {
                return fail(format!("{path}.id"), format!("duplicate rule id {id:?}"));
            }
        } else if r.serve.rollout.is_some() {
            return fail(
                format!("{path}.id"),
                "a rule that serves a rollout needs an id (it names the rollout's allocation)",
            );
        }
        if r.clauses.len() > MAX_CLAUSES {
            return fail(
                format!("{path}.clauses"),
                format!(
                    "has {} clauses, the limit is {MAX_CLAUSES}",
                    r.clauses.len()
                ),
            );
        }
        for (j, c) in r.clauses.iter().enumerate() {
            validate_clause(&format!("{path}.clauses[{j}]"), c, true)?;
        }
        validate_serve(&format!("{path}.serve"), &r.serve, &known)?;
    }
    validate_serve("fallthrough", &def.fallthrough, &known)?;
    if let Some(salt) = &def.salt {
        check_name("salt", salt)?;
    }
    Ok(())
}

fn validate_serve(
    path: &str,
    s: &Serve,
    known: &dyn Fn(&str, &str) -> Result<(), Invalid>,
) -> Result<(), Invalid> {
    match (&s.variation, &s.rollout) {
        (Some(v), None) => {
            known(&format!("{path}.variation"), v)?;
            if s.bucket_by.is_some() {
                return fail(
                    format!("{path}.bucket_by"),
                    "only a rollout buckets; remove bucket_by or serve a rollout",
                );
            }
            Ok(())
        }
        (None, Some(rollout)) => {
            let path = format!("{path}.rollout");
            if rollout.is_empty() {
                return fail(path, "a rollout needs at least one variation");
            }
            let mut seen = HashSet::new();
            let mut sum: u64 = 0;
            for (i, w) in rollout.iter().enumerate() {
                known(&format!("{path}[{i}].variation"), &w.variation)?;
                if !seen.insert(w.variation.as_str()) {
                    return fail(
                        format!("{path}[{i}].variation"),
                        format!("{:?} appears twice in the rollout", w.variation),
                    );
                }
                if w.weight > 10_000 {
                    return fail(
                        format!("{path}[{i}].weight"),
                        format!("{} is more than 10000 basis points", w.weight),
                    );
                }
                sum += u64::from(w.weight);
            }
            if sum != 10_000 {
                return fail(path, format!("weights sum to {sum}, need 10000"));
            }
            if let Some(b) = &s.bucket_by {
                check_name(
                    &format!("{}.bucket_by", path.trim_end_matches(".rollout")),
                    b,
                )?;
            }
            Ok(())
        }
        (Some(_), Some(_)) => fail(path, "serve either a variation or a rollout, not both"),
        (None, None) => fail(path, "needs a variation or a rollout"),
    }
}

/// Checks a clause: operands of the right type, regexes that compile,
/// versions and times that parse.
pub fn validate_clause(path: &str, c: &Clause, in_flag: bool) -> Result<(), Invalid> {
    match (&c.attribute, c.op) {
        (_, Op::InSegment) => {}
        (None, _) => return fail(format!("{path}.attribute"), "required for this operator"),
        (Some(a), _) => check_name(&format!("{path}.attribute"), a)?,
    }
    if c.values.len() > MAX_CLAUSE_VALUES {
        return fail(
            format!("{path}.values"),
            format!(
                "has {} values, the limit is {MAX_CLAUSE_VALUES}",
                c.values.len()
            ),
        );
    }
    if c.values.is_empty() && c.op != Op::Exists {
        return fail(format!("{path}.values"), "needs at least one value");
    }
    for (i, v) in c.values.iter().enumerate() {
        let vpath = format!("{path}.values[{i}]");
        match c.op {
            Op::Eq | Op::In => {
                if !matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
                    return fail(
                        vpath,
                        format!("must be a string, number or boolean, not {}", json_type(v)),
                    );
                }
            }
            Op::Contains | Op::StartsWith | Op::EndsWith => {
                string_value(&vpath, v)?;
            }
            Op::Matches => {
                let re = string_value(&vpath, v)?;
                compile_regex(re).map_err(|why| Invalid::new(vpath, why))?;
            }
            Op::Lt | Op::Lte | Op::Gt | Op::Gte => {
                if !v.is_number() {
                    return fail(vpath, format!("must be a number, not {}", json_type(v)));
                }
            }
            Op::SemverEq | Op::SemverLt | Op::SemverGt => {
                let s = string_value(&vpath, v)?;
                if parse_semver(s).is_none() {
                    return fail(vpath, format!("{s:?} is not a semantic version"));
                }
            }
            Op::Before | Op::After => {
                if time_ms(v).is_none() {
                    return fail(
                        vpath,
                        "must be an RFC 3339 time string or a number of epoch milliseconds",
                    );
                }
            }
            Op::InSegment => {
                if !in_flag {
                    return fail(
                        format!("{path}.op"),
                        "segments cannot reference other segments",
                    );
                }
                let s = string_value(&vpath, v)?;
                if let Some(why) = key_problem(s.as_bytes()) {
                    return fail(vpath, why);
                }
            }
            Op::Exists => {}
        }
    }
    Ok(())
}

fn string_value<'a>(path: &str, v: &'a Value) -> Result<&'a str, Invalid> {
    v.as_str()
        .ok_or_else(|| Invalid::new(path, format!("must be a string, not {}", json_type(v))))
}

/// Compiles a clause regex with the size limits in [`super::limits`].
pub fn compile_regex(pattern: &str) -> Result<regex::Regex, String> {
    if pattern.len() > MAX_REGEX_LEN {
        return Err(format!(
            "regex is {} bytes, the limit is {MAX_REGEX_LEN}",
            pattern.len()
        ));
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(MAX_REGEX_SIZE)
        .dfa_size_limit(MAX_REGEX_SIZE)
        .build()
        .map_err(|e| format!("invalid regex: {}", e.to_string().replace('\n', " ")))
}

/// Parses a semantic version, accepting `1` and `1.2` as `1.0.0` and `1.2.0`.
pub fn parse_semver(s: &str) -> Option<semver::Version> {
    if let Some(v) = plain_semver(s) {
        return Some(v);
    }
    if let Ok(v) = semver::Version::parse(s) {
        return Some(v);
    }
    let split = s.find(['-', '+']).unwrap_or(s.len());
    let (core, rest) = s.split_at(split);
    let parts = core.split('.').count();
    if core.is_empty()
        || parts > 2
        || !core
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let padded = format!("{core}{}{rest}", ".0".repeat(3 - parts));
    semver::Version::parse(&padded).ok()
}

/// `MAJOR.MINOR.PATCH` with no pre-release or build, parsed without the
/// general parser (the common case at evaluation time).
fn plain_semver(s: &str) -> Option<semver::Version> {
    let mut parts = [0u64; 3];
    let mut fields = s.split('.');
    for part in &mut parts {
        let f = fields.next()?;
        if f.is_empty()
            || f.len() > 19
            || (f.len() > 1 && f.starts_with('0'))
            || !f.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        *part = f.parse().ok()?;
    }
    if fields.next().is_some() {
        return None;
    }
    Some(semver::Version::new(parts[0], parts[1], parts[2]))
}

/// A time operand in epoch milliseconds: an RFC 3339 string or a number.
pub fn time_ms(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => rfc3339_ms(s),
        _ => None,
    }
}

/// Parses an RFC 3339 time to epoch milliseconds.
pub fn rfc3339_ms(s: &str) -> Option<f64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as f64)
}

/// Checks a segment on its own.
pub fn validate_segment(def: &SegmentDef) -> Result<(), Invalid> {
    if let Some(d) = &def.description {
        if d.len() > MAX_DESCRIPTION_LEN {
            return fail(
                "description",
                format!("is {} bytes, the limit is {MAX_DESCRIPTION_LEN}", d.len()),
            );
        }
    }
    for (field, keys) in [("included", &def.included), ("excluded", &def.excluded)] {
        if keys.len() > MAX_SEGMENT_KEYS {
            return fail(
                field,
                format!("has {} keys, the limit is {MAX_SEGMENT_KEYS}", keys.len()),
            );
        }
        for (i, k) in keys.iter().enumerate() {
            check_name(&format!("{field}[{i}]"), k)?;
        }
    }
    if def.rules.len() > MAX_SEGMENT_RULES {
        return fail(
            "rules",
            format!(
                "has {} rules, the limit is {MAX_SEGMENT_RULES}",
                def.rules.len()
            ),
        );
    }
    for (i, r) in def.rules.iter().enumerate() {
        if r.clauses.len() > MAX_CLAUSES {
            return fail(
                format!("rules[{i}].clauses"),
                format!(
                    "has {} clauses, the limit is {MAX_CLAUSES}",
                    r.clauses.len()
                ),
            );
        }
        for (j, c) in r.clauses.iter().enumerate() {
            validate_clause(&format!("rules[{i}].clauses[{j}]"), c, false)?;
        }
    }
    Ok(())
}

/// Checks a flag's references against what is stored: prerequisite flags and
/// their variations exist, segments exist, and the prerequisite graph stays
/// acyclic and within its limits (see [`check_prerequisite_graph`]).
pub fn check_references(key: &str, def: &FlagDef, catalog: &dyn Catalog) -> Result<(), Invalid> {
    for (i, p) in def.prerequisites.iter().enumerate() {
        let Some(other) = catalog.flag(&p.flag) else {
            return fail(
                format!("prerequisites[{i}].flag"),
                format!("unknown flag {:?}", p.flag),
            );
        };
        if !other.has_variation(&p.variation) {
            return fail(
                format!("prerequisites[{i}].variation"),
                format!("flag {:?} has no variation {:?}", p.flag, p.variation),
            );
        }
    }
    check_prerequisite_graph(key, def, catalog)?;
    for (i, r) in def.rules.iter().enumerate() {
        for (j, c) in r.clauses.iter().enumerate() {
            if c.op != Op::InSegment {
                continue;
            }
            for (k, v) in c.values.iter().enumerate() {
                let s = v.as_str().unwrap_or_default();
                if !catalog.has_segment(s) {
                    return fail(
                        format!("rules[{i}].clauses[{j}].values[{k}]"),
                        format!("unknown segment {s:?}"),
                    );
                }
            }
        }
    }
    Ok(())
}
