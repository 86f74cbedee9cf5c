//! The applied state and the deterministic function that changes it.

use std::sync::Arc;

use bytes::Bytes;
use imbl::{HashMap, OrdSet};

use super::render::{render_flag, render_segment};
use super::{OpError, OpOutcome, OpResult, WriteError, WriteOp, WriteRequest};
use crate::flag::compile::allocations_for;
use crate::flag::validate::{check_references, Catalog};
use crate::flag::{
    compile_flag, compile_segment, parse_flag, parse_segment, Allocations, CompiledFlag, CompiledSegment,
    FlagDef, FlagSource, SegmentDef,
};

/// A stored flag with its compiled form and metadata.
#[derive(Debug, Clone)]
pub struct FlagEntry {
    /// The definition as validated.
    pub def: FlagDef,
    /// The evaluation form.
    pub compiled: CompiledFlag,
    /// Sticky rollout allocations.
    pub allocations: Allocations,
    /// Per-key version, from 1.
    pub version: u64,
    /// Revision of the write that produced this version.
    pub revision: u64,
    /// Unix ms of that write.
    pub updated_at: u64,
    /// Who made it.
    pub updated_by: String,
    /// The `FLAG.GET` reply, rendered once per version.
    pub rendered: Bytes,
}

/// A stored segment.
#[derive(Debug, Clone)]
pub struct SegmentEntry {
    /// The definition as validated.
    pub def: SegmentDef,
    /// The membership form, shared with the flags that reference it.
    pub compiled: Arc<CompiledSegment>,
    /// Per-key version, from 1.
    pub version: u64,
    /// Revision of the write that produced this version.
    pub revision: u64,
    /// Unix ms of that write.
    pub updated_at: u64,
    /// Who made it.
    pub updated_by: String,
    /// The `SEGMENT.GET` reply.
    pub rendered: Bytes,
}

/// An immutable snapshot of everything stored.
#[derive(Debug, Clone, Default)]
pub struct StateView {
    /// Revision of the last applied write.
    pub revision: u64,
    /// Flags by key.
    pub flags: HashMap<Arc<str>, Arc<FlagEntry>>,
    /// Segments by key.
    pub segments: HashMap<Arc<str>, Arc<SegmentEntry>>,
    /// Flag keys ordered by a stable hash, for `FLAG.SCAN` cursors.
    pub scan_order: OrdSet<(u64, Arc<str>)>,
    /// Revision at which each key (flag or segment) last changed.
    key_revisions: HashMap<Arc<str>, u64>,
    /// Last version of deleted keys, so a re-created key continues counting.
    tombstones: HashMap<Arc<str>, u64>,
}

impl StateView {
    /// Revision at which a flag or segment with this key last changed.
    pub fn key_revision(&self, key: &str) -> u64 {
        self.key_revisions.get(key).copied().unwrap_or(0)
    }

    /// A flag entry.
    pub fn flag(&self, key: &str) -> Option<&Arc<FlagEntry>> {
        self.flags.get(key)
    }

    /// Flags that list `key` as a prerequisite, sorted.
    pub fn prerequisite_dependents(&self, key: &str) -> Vec<Arc<str>> {
        let mut out: Vec<Arc<str>> = self
            .flags
            .iter()
            .filter(|(_, e)| e.def.prerequisites.iter().any(|p| p.flag == key))
            .map(|(k, _)| k.clone())
            .collect();
        out.sort();
        out
    }

    /// Flags whose rules reference segment `key`, sorted.
    pub fn segment_dependents(&self, key: &str) -> Vec<Arc<str>> {
        let mut out: Vec<Arc<str>> = self
            .flags
            .iter()
            .filter(|(_, e)| e.def.segment_refs().any(|s| s == key))
            .map(|(k, _)| k.clone())
            .collect();
        out.sort();
        out
    }
}

impl FlagSource for StateView {
    fn flag(&self, key: &str) -> Option<&CompiledFlag> {
        self.flags.get(key).map(|e| &e.compiled)
    }
}

impl Catalog for StateView {
    fn flag(&self, key: &str) -> Option<&FlagDef> {
        self.flags.get(key).map(|e| &e.def)
    }

    fn has_segment(&self, key: &str) -> bool {
        self.segments.contains_key(key)
    }
}

/// A stable 64-bit hash (FNV-1a) of a key, never 0, for scan cursors.
pub fn scan_hash(key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.max(1)
}

fn join(keys: &[Arc<str>]) -> String {
    keys.iter().map(|k| &**k).collect::<Vec<_>>().join(", ")
}

/// Applies `req` at `revision` on top of `view`. Returns the new view (None
/// when nothing changed) and each operation's outcome. Deterministic: the
/// same inputs give the same outputs on every node.
pub fn apply(view: &StateView, revision: u64, req: &WriteRequest) -> Result<(Option<StateView>, Vec<OpResult>), WriteError> {
    if req.watch.iter().any(|(k, rev)| view.key_revision(k) != *rev) {
        return Err(WriteError::WatchFailed);
    }
    let mut next = view.clone();
    let mut changed = false;
    let mut results = Vec::with_capacity(req.ops.len());
    for op in &req.ops {
        let result = apply_op(&mut next, revision, req, op);
        if matches!(result, Ok(OpOutcome::Version(_)) | Ok(OpOutcome::Deleted(true))) {
            changed = true;
        }
        results.push(result);
    }
    if !changed {
        return Ok((None, results));
    }
    next.revision = revision;
    Ok((Some(next), results))
}

fn next_version(view: &StateView, existing: Option<u64>, key: &str) -> u64 {
    existing.or_else(|| view.tombstones.get(key).copied()).unwrap_or(0) + 1
}

fn apply_op(v: &mut StateView, revision: u64, req: &WriteRequest, op: &WriteOp) -> OpResult {
    match op {
        WriteOp::SetFlag { key, definition, if_version, .. } => {
            let current = v.flags.get(key.as_str()).cloned();
            if let Some(expected) = if_version {
                let have = current.as_ref().map_or(0, |e| e.version);
                if have != *expected {
                    return Err(OpError::Conflict(format!("flag {key} is at version {have}, not {expected}")));
                }
            }
            let def = parse_flag(key, definition.as_bytes())?;
            check_references(key, &def, v)?;
            for dependent in v.prerequisite_dependents(key) {
                let Some(dep) = v.flags.get(&dependent) else { continue };
                for p in dep.def.prerequisites.iter().filter(|p| p.flag == *key) {
                    if !def.variations.iter().any(|x| x.name == p.variation) {
                        return Err(OpError::Invalid {
                            path: "variations".into(),
                            why: format!("flag {dependent} requires variation {:?} as a prerequisite", p.variation),
                        });
                    }
                }
            }
            let prev_alloc = current.as_ref().map(|e| e.allocations.clone()).unwrap_or_default();
            let allocations = allocations_for(key, &def, &prev_alloc);
            let version = next_version(v, current.as_ref().map(|e| e.version), key);
            let entry = build_flag(v, key, def, allocations, version, revision, req.ts_ms, &req.actor)?;
            store_flag(v, key, entry, revision);
            Ok(OpOutcome::Version(version))
        }
        WriteOp::ToggleFlag { key, on, .. } => {
            let Some(current) = v.flags.get(key.as_str()).cloned() else {
                return Err(OpError::NotFound(format!("no such flag '{key}'")));
            };
            let mut def = current.def.clone();
            def.on = *on;
            let version = current.version + 1;
            let entry = build_flag(v, key, def, current.allocations.clone(), version, revision, req.ts_ms, &req.actor)?;
            store_flag(v, key, entry, revision);
            Ok(OpOutcome::Version(version))
        }
        WriteOp::DeleteFlag { key, .. } => {
            let Some(current) = v.flags.get(key.as_str()).cloned() else {
                return Ok(OpOutcome::Deleted(false));
            };
            let dependents = v.prerequisite_dependents(key);
            if !dependents.is_empty() {
                return Err(OpError::Referenced(format!("{key} is referenced by {}", join(&dependents))));
            }
            let k: Arc<str> = key.as_str().into();
            v.flags.remove(key.as_str());
            v.scan_order.remove(&(scan_hash(key), k.clone()));
            v.tombstones.insert(k.clone(), current.version);
            v.key_revisions.insert(k, revision);
            Ok(OpOutcome::Deleted(true))
        }
        WriteOp::SetSegment { key, definition, .. } => {
            let def = parse_segment(key, definition.as_bytes())?;
            let compiled = Arc::new(compile_segment(key, &def)?);
            let current = v.segments.get(key.as_str()).cloned();
            let version = next_version(v, current.as_ref().map(|e| e.version), key);
            let rendered = render_segment(&def, version, revision, req.ts_ms, &req.actor);
            let k: Arc<str> = key.as_str().into();
            v.segments.insert(
                k.clone(),
                Arc::new(SegmentEntry {
                    def,
                    compiled,
                    version,
                    revision,
                    updated_at: req.ts_ms,
                    updated_by: req.actor.clone(),
                    rendered,
                }),
            );
            v.key_revisions.insert(k, revision);
            // Flags that use the segment now point at its new compiled form.
            for dependent in v.segment_dependents(key) {
                if let Some(e) = v.flags.get(&dependent).cloned() {
                    let segments = |s: &str| v.segments.get(s).map(|e| e.compiled.clone());
                    let compiled = compile_flag(&dependent, &e.def, &e.allocations, &segments)?;
                    let mut e = (*e).clone();
                    e.compiled = compiled;
                    v.flags.insert(dependent, Arc::new(e));
                }
            }
            Ok(OpOutcome::Version(version))
        }
        WriteOp::DeleteSegment { key, .. } => {
            let Some(current) = v.segments.get(key.as_str()).cloned() else {
                return Ok(OpOutcome::Deleted(false));
            };
            let dependents = v.segment_dependents(key);
            if !dependents.is_empty() {
                return Err(OpError::Referenced(format!("{key} is referenced by {}", join(&dependents))));
            }
            let k: Arc<str> = key.as_str().into();
            v.segments.remove(key.as_str());
            v.tombstones.insert(k.clone(), current.version);
            v.key_revisions.insert(k, revision);
            Ok(OpOutcome::Deleted(true))
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn build_flag(
    v: &StateView,
    key: &str,
    def: FlagDef,
    allocations: Allocations,
    version: u64,
    revision: u64,
    ts_ms: u64,
    actor: &str,
) -> Result<FlagEntry, OpError> {
    let segments = |s: &str| v.segments.get(s).map(|e| e.compiled.clone());
    let compiled = compile_flag(key, &def, &allocations, &segments)?;
    let rendered = render_flag(&def, &allocations, version, revision, ts_ms, actor);
    Ok(FlagEntry {
        def,
        compiled,
        allocations,
        version,
        revision,
        updated_at: ts_ms,
        updated_by: actor.to_string(),
        rendered,
    })
}

fn store_flag(v: &mut StateView, key: &str, entry: FlagEntry, revision: u64) {
    let k: Arc<str> = key.into();
    if !v.flags.contains_key(key) {
        v.scan_order.insert((scan_hash(key), k.clone()));
    }
    v.flags.insert(k.clone(), Arc::new(entry));
    v.key_revisions.insert(k, revision);
}
