//! The applied state and the deterministic function that changes it.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use imbl::{HashMap, OrdSet};
use serde_json::Value;

use super::records::{
    AuditRecord, Change, Event, FlagRecord, FlagRecordText, Kind, SegmentRecord, StateImage,
};
use super::render::{render_flag_json, render_segment};
use super::storage::StorageError;
use super::{OpError, OpOutcome, OpResult, WriteError, WriteOp, WriteRequest};
use crate::flag::compile::allocations_for;
use crate::flag::validate::{check_references, Catalog, FlagRefs};
use crate::flag::{
    compile_flag, compile_segment, parse_flag, parse_segment, Allocations, CompiledFlag,
    CompiledSegment, FlagDef, FlagSource, Invalid, SegmentDef,
};

/// A stored flag with its compiled form and metadata.
#[derive(Debug, Clone)]
pub struct FlagEntry {
    /// The definition as validated, as compact JSON (`serde_json`'s text of
    /// the [`FlagDef`]): evaluation reads only `compiled`, so the tree is
    /// parsed back on the rare paths that need it (writes, snapshots); GET
    /// splices this text. A tree cost ~1 KB per flag of small allocations.
    definition: Box<str>,
    /// The evaluation form.
    pub compiled: CompiledFlag,
    /// Sticky rollout allocations as compact JSON ("" when none): read only
    /// on writes, GET and snapshots, and as maps they cost ~1.8 KB per flag.
    allocations: Box<str>,
    /// Per-key version, from 1.
    pub version: u64,
    /// Revision of the write that produced this version.
    pub revision: u64,
    /// Unix ms of that write.
    pub updated_at: u64,
    /// Who made it (shared by the flags one write or load gave the same actor).
    pub updated_by: Arc<str>,
}

impl FlagEntry {
    /// Sticky rollout allocations.
    pub fn allocations(&self) -> Allocations {
        if self.allocations.is_empty() {
            return Allocations::new();
        }
        // Written by `compact_allocations` from the same type: cannot fail.
        serde_json::from_str(&self.allocations).unwrap_or_default()
    }

    /// The definition, parsed from the kept text (written by `serde_json`
    /// from a valid [`FlagDef`], so an error here is a bug, reported as one).
    pub fn def(&self) -> Result<FlagDef, Invalid> {
        serde_json::from_str(&self.definition)
            .map_err(|e| Invalid::new("$", format!("stored definition unreadable: {e}")))
    }

    /// The definition as compact JSON.
    pub fn definition_json(&self) -> &str {
        &self.definition
    }

    /// The `FLAG.GET` reply, rendered on demand: GET is rare next to
    /// evaluation, and keeping it resident cost ~0.5 KB per flag.
    pub fn rendered(&self) -> Bytes {
        let allocations = if self.allocations.is_empty() {
            "{}"
        } else {
            &self.allocations
        };
        render_flag_json(
            &self.definition,
            allocations,
            self.version,
            self.revision,
            self.updated_at,
            &self.updated_by,
        )
    }

    /// The persisted form.
    pub fn record(&self, key: &str) -> Result<FlagRecord, Invalid> {
        Ok(self.record_with(key, self.def()?))
    }

    /// The persisted form with `definition` (this entry's, already parsed).
    fn record_with(&self, key: &str, definition: FlagDef) -> FlagRecord {
        FlagRecord {
            key: key.to_string(),
            definition,
            allocations: self.allocations(),
            version: self.version,
            revision: self.revision,
            updated_at: self.updated_at,
            updated_by: self.updated_by.to_string(),
        }
    }

    /// The audit form of the definition (a JSON tree, as `before`/`after`).
    fn def_value(&self) -> Option<Value> {
        serde_json::from_str(&self.definition).ok()
    }
}

/// A stored segment.
#[derive(Debug, Clone)]
pub struct SegmentEntry {
    /// The definition as validated.
    pub def: SegmentDef,
    /// The membership form; flags reach it through the view by key.
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

impl SegmentEntry {
    /// The persisted form.
    pub fn record(&self, key: &str) -> SegmentRecord {
        SegmentRecord {
            key: key.to_string(),
            definition: self.def.clone(),
            version: self.version,
            revision: self.revision,
            updated_at: self.updated_at,
            updated_by: self.updated_by.clone(),
        }
    }
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
    /// Last version of deleted flags.
    flag_tombstones: HashMap<Arc<str>, u64>,
    /// Last version of deleted segments.
    segment_tombstones: HashMap<Arc<str>, u64>,
    /// Prerequisite flag key → flags that list it.
    prerequisite_users: HashMap<Arc<str>, OrdSet<Arc<str>>>,
    /// Segment key → flags whose rules reference it.
    segment_users: HashMap<Arc<str>, OrdSet<Arc<str>>>,
    /// ACL users (name → `ACL LIST` line), replicated like flags.
    pub users: Arc<std::collections::BTreeMap<String, String>>,
    /// Revision of the last write that changed `users` (0: never).
    pub users_revision: u64,
    /// Experiments, replicated like flags.
    pub experiments: Arc<super::experiments::Experiments>,
}

impl StateView {
    /// Revision at which a flag or segment with this key last changed.
    pub fn key_revision(&self, key: &str) -> u64 {
        self.key_revisions.get(key).copied().unwrap_or(0)
    }

    /// Flags that list `key` as a prerequisite, sorted.
    pub fn prerequisite_dependents(&self, key: &str) -> Vec<Arc<str>> {
        self.prerequisite_users
            .get(key)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Flags whose rules reference segment `key`, sorted.
    pub fn segment_dependents(&self, key: &str) -> Vec<Arc<str>> {
        self.segment_users
            .get(key)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Updates the reverse-dependency indexes for flag `key` going from `old` to `new`.
    fn index_references(
        &mut self,
        key: &Arc<str>,
        old: Option<&CompiledFlag>,
        new: Option<&CompiledFlag>,
    ) {
        fn unlink(map: &mut HashMap<Arc<str>, OrdSet<Arc<str>>>, target: &str, key: &Arc<str>) {
            if let Some(users) = map.get_mut(target) {
                users.remove(key);
                if users.is_empty() {
                    map.remove(target);
                }
            }
        }
        if let Some(old) = old {
            for p in &old.prerequisites {
                unlink(&mut self.prerequisite_users, &p.flag, key);
            }
            for s in old.segment_refs() {
                unlink(&mut self.segment_users, s, key);
            }
        }
        if let Some(new) = new {
            for p in &new.prerequisites {
                self.prerequisite_users
                    .entry(p.flag.clone())
                    .or_default()
                    .insert(key.clone());
            }
            for s in new.segment_refs() {
                self.segment_users
                    .entry(s.clone())
                    .or_default()
                    .insert(key.clone());
            }
        }
    }

    /// Rebuilds a view from persisted records (at start, or from a snapshot).
    pub fn from_image(image: &StateImage) -> Result<StateView, Invalid> {
        Self::from_owned_image(image.clone())
    }

    /// [`Self::from_image`] consuming the records: each definition moves into
    /// the view instead of being copied (a restart's peak was the records and
    /// the view side by side).
    pub fn from_owned_image(mut image: StateImage) -> Result<StateView, Invalid> {
        let mut v = StateView {
            revision: image.revision,
            ..StateView::default()
        };
        for r in &image.segments {
            let compiled = Arc::new(compile_segment(&r.key, &r.definition)?);
            let rendered = render_segment(
                &r.definition,
                r.version,
                r.revision,
                r.updated_at,
                &r.updated_by,
            );
            let k: Arc<str> = r.key.as_str().into();
            v.key_revisions.insert(k.clone(), r.revision);
            v.revision = v.revision.max(r.revision);
            v.segments.insert(
                k,
                Arc::new(SegmentEntry {
                    def: r.definition.clone(),
                    compiled,
                    version: r.version,
                    revision: r.revision,
                    updated_at: r.updated_at,
                    updated_by: r.updated_by.clone(),
                    rendered,
                }),
            );
        }
        // Compiling is most of a restart's CPU: spread it over the cores,
        // then insert in the image's order as before.
        let build = |r: FlagRecord| {
            let entry = build_flag(
                &v.segments,
                &r.key,
                &r.definition,
                r.allocations,
                r.version,
                r.revision,
                r.updated_at,
                r.updated_by.as_str().into(),
            )
            .map_err(|e| Invalid::new(format!("stored flag {}", r.key), e.to_string()));
            (r.key, r.revision, entry)
        };
        let flags = std::mem::take(&mut image.flags);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let chunk = flags.len().div_ceil(threads).max(1024);
        let built: Vec<(String, u64, Result<FlagEntry, Invalid>)> = if flags.len() <= chunk {
            flags.into_iter().map(build).collect()
        } else {
            let mut parts: Vec<Vec<FlagRecord>> = Vec::new();
            let mut rest = flags;
            while rest.len() > chunk {
                let tail = rest.split_off(chunk);
                parts.push(rest);
                rest = tail;
            }
            parts.push(rest);
            std::thread::scope(|scope| {
                let handles: Vec<_> = parts
                    .into_iter()
                    .map(|part| scope.spawn(|| part.into_iter().map(build).collect::<Vec<_>>()))
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| match h.join() {
                        Ok(entries) => entries,
                        Err(_) => vec![(
                            String::new(),
                            0,
                            Err(Invalid::new("stored flags", "compile panicked")),
                        )],
                    })
                    .collect()
            })
        };
        // Flags share their actor's name (few people write flags).
        let mut actors: std::collections::HashSet<Arc<str>> = Default::default();
        for (key, revision, entry) in built {
            let mut entry = entry?;
            match actors.get(&entry.updated_by) {
                Some(a) => entry.updated_by = a.clone(),
                None => {
                    actors.insert(entry.updated_by.clone());
                }
            }
            v.revision = v.revision.max(revision);
            store_flag(&mut v, &key, entry, revision);
        }
        for (kind, key, version) in &image.tombstones {
            match kind {
                Kind::Flag => v.flag_tombstones.insert(key.as_str().into(), *version),
                Kind::Segment => v.segment_tombstones.insert(key.as_str().into(), *version),
                Kind::User | Kind::Experiment => None,
            };
        }
        v.users = Arc::new(image.users.iter().cloned().collect());
        let mut experiments = super::experiments::Experiments::default();
        for (key, doc) in &image.experiments {
            let entry = super::experiments::ExperimentEntry::from_document(doc)?;
            experiments.by_key.insert(key.clone(), Arc::new(entry));
        }
        experiments.reindex();
        v.experiments = Arc::new(experiments);
        v.users_revision = if image.users.is_empty() {
            0
        } else {
            v.revision.max(1)
        };
        Ok(v)
    }

    /// Rebuilds the view at start from `image` plus the stored flag records
    /// `records` yields as (storage key, JSON) bytes. Each record's
    /// definition is parsed once and compiled straight into its view entry,
    /// chunk by chunk on every core while the caller's thread reads the next
    /// records, so no tree of all records ever exists (it was most of a
    /// restart's time and, freed but kept mapped, of its memory).
    pub fn from_stored<K, V>(
        image: StateImage,
        records: impl Iterator<Item = Result<(K, V), StorageError>>,
    ) -> Result<StateView, StorageError>
    where
        K: AsRef<[u8]> + Send,
        V: AsRef<[u8]> + Send,
    {
        let mut v = Self::from_owned_image(image).map_err(|e| StorageError::Corrupt {
            key: "state".into(),
            why: e.to_string(),
        })?;
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let segments = v.segments.clone();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let stopped = || stop.load(std::sync::atomic::Ordering::Relaxed);
        let view = &mut v;
        std::thread::scope(|scope| -> Result<(), StorageError> {
            let (raw_tx, raw_rx) = std::sync::mpsc::sync_channel::<RecordChunk<K, V>>(2 * workers);
            // Shared by the workers only: when the last one ends (even by a
            // panic) the reader's sends fail instead of blocking.
            let raw_rx = Arc::new(std::sync::Mutex::new(raw_rx));
            let (built_tx, built_rx) = std::sync::mpsc::channel();
            let mut handles = Vec::with_capacity(workers);
            for _ in 0..workers {
                let (raw_rx, built_tx, segments) = (raw_rx.clone(), built_tx.clone(), &segments);
                let stopped = &stopped;
                handles.push(scope.spawn(move || {
                    let mut actor: Option<Arc<str>> = None;
                    loop {
                        let next = raw_rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok(chunk) = next else { break };
                        // After an error the rest is drained, not built.
                        if stopped() {
                            continue;
                        }
                        // Each entry is allocated here, where it stays: a
                        // chunk of whole entries moved to the builder took
                        // fresh pages for every chunk (freed on another
                        // thread, the allocator does not reuse them at once).
                        let built = chunk.and_then(|records| {
                            let mut entries = Vec::with_capacity(records.len());
                            for (k, val) in &records {
                                let (entry, revision) =
                                    stored_flag(segments, &mut actor, k.as_ref(), val.as_ref())?;
                                entries.push((Arc::new(entry), revision));
                            }
                            Ok(entries)
                        });
                        // The builder ended on an error: keep draining.
                        let _ = built_tx.send(built);
                    }
                }));
            }
            drop((raw_rx, built_tx));
            let stop = &stop;
            let builder = scope.spawn(move || -> Result<(), StorageError> {
                // Flags share their actor's name (few people write flags).
                let mut actors: std::collections::HashSet<Arc<str>> = Default::default();
                for built in built_rx {
                    let entries = built.inspect_err(|_| {
                        stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    })?;
                    for (mut entry, revision) in entries {
                        if let Some(e) = Arc::get_mut(&mut entry) {
                            match actors.get(&e.updated_by) {
                                Some(a) => e.updated_by = a.clone(),
                                None => {
                                    actors.insert(e.updated_by.clone());
                                }
                            }
                        }
                        view.revision = view.revision.max(revision);
                        let key = entry.compiled.key.clone();
                        store_flag_arc(view, &key, entry, revision);
                    }
                }
                Ok(())
            });
            let mut chunk = Vec::with_capacity(LOAD_CHUNK);
            for item in records {
                if stopped() {
                    break;
                }
                match item {
                    Ok(record) => chunk.push(record),
                    Err(e) => {
                        let _ = raw_tx.send(Err(e));
                        break;
                    }
                }
                if chunk.len() == LOAD_CHUNK {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(LOAD_CHUNK));
                    if raw_tx.send(Ok(full)).is_err() {
                        break;
                    }
                }
            }
            if !chunk.is_empty() {
                let _ = raw_tx.send(Ok(chunk));
            }
            drop(raw_tx);
            let panicked = || StorageError::Corrupt {
                key: "f:".into(),
                why: "building the stored flags panicked".into(),
            };
            let mut outcome = builder.join().unwrap_or_else(|_| Err(panicked()));
            for h in handles {
                if h.join().is_err() && outcome.is_ok() {
                    outcome = Err(panicked());
                }
            }
            outcome
        })?;
        // As `from_owned_image` sets it, now that every flag's revision is in.
        if !v.users.is_empty() {
            v.users_revision = v.revision.max(1);
        }
        Ok(v)
    }

    /// The persisted form of everything (audit excluded).
    pub fn image(&self) -> Result<StateImage, Invalid> {
        let mut flags: Vec<FlagRecord> = self
            .flags
            .iter()
            .map(|(k, e)| e.record(k))
            .collect::<Result<_, _>>()?;
        flags.sort_by(|a, b| a.key.cmp(&b.key));
        let mut segments: Vec<SegmentRecord> =
            self.segments.iter().map(|(k, e)| e.record(k)).collect();
        segments.sort_by(|a, b| a.key.cmp(&b.key));
        let mut tombstones: Vec<(Kind, String, u64)> = self
            .flag_tombstones
            .iter()
            .map(|(k, v)| (Kind::Flag, k.to_string(), *v))
            .chain(
                self.segment_tombstones
                    .iter()
                    .map(|(k, v)| (Kind::Segment, k.to_string(), *v)),
            )
            .collect();
        tombstones.sort();
        Ok(StateImage {
            meta: None,
            revision: self.revision,
            flags,
            segments,
            tombstones,
            audit: Vec::new(),
            users: self
                .users
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            experiments: self
                .experiments
                .by_key
                .iter()
                .map(|(k, e)| (k.clone(), e.document()))
                .collect(),
        })
    }

    /// `FLAG.DUMP`: every flag and segment (matching `pattern`) and the revision, as one JSON document.
    pub fn dump(&self, pattern: Option<&[u8]>) -> String {
        self.dump_where(|k| pattern.is_none_or(|p| crate::glob::matches(p, k.as_bytes(), false)))
    }

    /// [`Self::dump_where`] plus the ACL users (`"users"`: name → `ACL LIST`
    /// line, passwords as SHA-256 hashes), for a caller who administers users.
    pub fn dump_with_users(&self, keep: impl Fn(&str) -> bool) -> String {
        let mut doc = self.dump_where(keep);
        doc.pop();
        doc.push_str(",\"users\":");
        doc.push_str(&serde_json::to_string(&*self.users).unwrap_or_else(|_| "{}".into()));
        doc.push('}');
        doc
    }

    /// [`Self::dump`] of the keys `keep` accepts (a user's readable keys).
    pub fn dump_where(&self, keep: impl Fn(&str) -> bool) -> String {
        let flags = self
            .flags
            .iter()
            .filter(|(k, _)| keep(k))
            .map(|(k, e)| (k, &**e));
        let segments = self
            .segments
            .iter()
            .filter(|(k, _)| keep(k))
            .map(|(k, e)| (k, &**e));
        format!(
            "{{\"revision\":{},\"stream_id\":\"{}-{}\",\"flags\":{},\"segments\":{}}}",
            self.revision,
            self.revision,
            u32::MAX,
            json_object(flags, FlagEntry::rendered),
            json_object(segments, |e| e.rendered.clone())
        )
    }
}

impl FlagSource for StateView {
    fn flag(&self, key: &str) -> Option<&CompiledFlag> {
        self.flags.get(key).map(|e| &e.compiled)
    }

    fn segment(&self, key: &str) -> Option<&CompiledSegment> {
        self.segments.get(key).map(|e| &*e.compiled)
    }
}

impl Catalog for StateView {
    fn flag(&self, key: &str) -> Option<&dyn FlagRefs> {
        self.flags.get(key).map(|e| &e.compiled as &dyn FlagRefs)
    }

    fn has_segment(&self, key: &str) -> bool {
        self.segments.contains_key(key)
    }

    fn dependents(&self, key: &str) -> Vec<&str> {
        self.prerequisite_users
            .get(key)
            .map(|users| users.iter().map(|k| &**k).collect())
            .unwrap_or_default()
    }
}

/// A JSON object of key → rendered JSON, sorted by key; each entry is
/// rendered as it is written, so no second copy of the whole dump is held.
fn json_object<'a, E: 'a>(
    entries: impl Iterator<Item = (&'a Arc<str>, &'a E)>,
    render: impl Fn(&E) -> Bytes,
) -> String {
    let mut entries: Vec<_> = entries.collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = String::from("{");
    for (i, (k, entry)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::from(&**k).to_string());
        out.push(':');
        out.push_str(&String::from_utf8_lossy(&render(entry)));
    }
    out.push('}');
    out
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

/// Refuses to delete `key` while other flags depend on it.
fn refuse_if_referenced(key: &str, dependents: &[Arc<str>]) -> Result<(), OpError> {
    if dependents.is_empty() {
        return Ok(());
    }
    let names = dependents
        .iter()
        .map(|k| &**k)
        .collect::<Vec<_>>()
        .join(", ");
    Err(OpError::Referenced(format!(
        "{key} is referenced by {names}"
    )))
}

/// The outcome of applying one write request.
#[derive(Debug, Default)]
pub struct Applied {
    /// The new view, when anything changed.
    pub view: Option<StateView>,
    /// Each operation's outcome, in order.
    pub results: Vec<OpResult>,
    /// Keys changed, for persistence.
    pub changes: Vec<Change>,
    /// Audit records (and change events), in order.
    pub audit: Vec<AuditRecord>,
}

/// Applies `req` at `revision` on top of `view`. Deterministic: the same
/// inputs give the same outputs on every node. `seq_base` numbers this
/// request's audit records after those of requests applied earlier at the
/// same revision.
pub fn apply(
    view: &StateView,
    revision: u64,
    seq_base: u32,
    req: &WriteRequest,
) -> Result<Applied, WriteError> {
    if req
        .watch
        .iter()
        .any(|(k, rev)| view.key_revision(k) != *rev)
    {
        return Err(WriteError::WatchFailed);
    }
    let mut ctx = ApplyCtx {
        v: view.clone(),
        actor: req.actor.as_str().into(),
        revision,
        seq_base,
        req,
        changes: Vec::new(),
        audit: Vec::new(),
    };
    let mut results = Vec::with_capacity(req.ops.len());
    for op in &req.ops {
        results.push(ctx.op(op));
    }
    let changed = !ctx.changes.is_empty();
    let mut v = ctx.v;
    if changed {
        v.revision = revision;
    }
    Ok(Applied {
        view: changed.then_some(v),
        results,
        changes: ctx.changes,
        audit: ctx.audit,
    })
}

struct ApplyCtx<'a> {
    v: StateView,
    /// `req.actor`, shared by every flag this write sets (an import's 100,000).
    actor: Arc<str>,
    revision: u64,
    seq_base: u32,
    req: &'a WriteRequest,
    changes: Vec<Change>,
    audit: Vec<AuditRecord>,
}

fn def_json<T: serde::Serialize>(def: &T) -> Option<Value> {
    serde_json::to_value(def).ok()
}

impl ApplyCtx<'_> {
    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        kind: Kind,
        key: &str,
        version: u64,
        event: Event,
        reason: &Option<String>,
        before: Option<Value>,
        after: Option<Value>,
    ) {
        let seq = self.seq_base + self.audit.len() as u32;
        let document = match (kind, &after) {
            (_, None) => None,
            (Kind::Flag, Some(_)) => self.v.flags.get(key).map(|e| e.rendered()),
            (Kind::Segment, Some(_)) => self.v.segments.get(key).map(|e| e.rendered.clone()),
            (Kind::User, Some(_)) => None,
            (Kind::Experiment, Some(_)) => self
                .v
                .experiments
                .by_key
                .get(key)
                .map(|e| bytes::Bytes::from(e.document())),
        };
        self.audit.push(AuditRecord {
            kind,
            key: key.to_string(),
            revision: self.revision,
            seq,
            version,
            event,
            actor: self.req.actor.clone(),
            ts: self.req.ts_ms,
            reason: reason.clone(),
            before,
            after,
            document,
        });
    }

    /// Records a deleted key: its tombstone version, revision, change and audit record.
    fn forget(
        &mut self,
        kind: Kind,
        key: &str,
        version: u64,
        before: Option<Value>,
        reason: &Option<String>,
    ) {
        let k: Arc<str> = key.into();
        let (tombstones, change) = match kind {
            Kind::Flag => (
                &mut self.v.flag_tombstones,
                Change::FlagDeleted {
                    key: key.to_string(),
                    version,
                },
            ),
            Kind::Segment => (
                &mut self.v.segment_tombstones,
                Change::SegmentDeleted {
                    key: key.to_string(),
                    version,
                },
            ),
            // Users are deleted by `set_users`, experiments by
            // `put_experiment`, without tombstones.
            Kind::User | Kind::Experiment => return,
        };
        tombstones.insert(k.clone(), version);
        self.v.key_revisions.insert(k, self.revision);
        self.changes.push(change);
        self.record(kind, key, version, Event::Delete, reason, before, None);
    }

    fn next_version(&self, kind: Kind, key: &str) -> u64 {
        let (current, tomb) = match kind {
            Kind::Flag => (
                self.v.flags.get(key).map(|e| e.version),
                self.v.flag_tombstones.get(key),
            ),
            Kind::Segment => (
                self.v.segments.get(key).map(|e| e.version),
                self.v.segment_tombstones.get(key),
            ),
            Kind::User | Kind::Experiment => (None, None),
        };
        current.or(tomb.copied()).unwrap_or(0) + 1
    }

    /// Sets a flag from a definition as a client sent it (or as the audit log
    /// kept it), keeping the key's current sticky allocations as the seed.
    fn set_flag_definition(
        &mut self,
        key: &str,
        definition: &str,
        event: Event,
        reason: &Option<String>,
    ) -> OpResult {
        let def = parse_flag(key, definition.as_bytes())?;
        let prev = self
            .v
            .flags
            .get(key)
            .map(|e| e.allocations())
            .unwrap_or_default();
        self.set_flag(key, def, &prev, event, reason)
    }

    /// Sets a flag whose definition is already parsed; `prev_alloc` seeds the allocation.
    fn set_flag(
        &mut self,
        key: &str,
        def: FlagDef,
        prev_alloc: &Allocations,
        event: Event,
        reason: &Option<String>,
    ) -> OpResult {
        check_references(key, &def, &self.v)?;
        for dependent in self.v.prerequisite_dependents(key) {
            let Some(dep) = self.v.flags.get(&dependent) else {
                continue;
            };
            for p in dep
                .compiled
                .prerequisites
                .iter()
                .filter(|p| &*p.flag == key)
            {
                if !def.variations.iter().any(|x| *x.name == *p.variation) {
                    return Err(OpError::Invalid {
                        path: "variations".into(),
                        why: format!(
                            "flag {dependent} requires variation {:?} as a prerequisite",
                            p.variation
                        ),
                    });
                }
            }
        }
        let allocations = allocations_for(key, &def, prev_alloc);
        let version = self.next_version(Kind::Flag, key);
        self.put_flag(key, def, allocations, version, event, reason)
    }

    /// Compiles and stores a flag version, and records its change and audit entry.
    fn put_flag(
        &mut self,
        key: &str,
        def: FlagDef,
        allocations: Allocations,
        version: u64,
        event: Event,
        reason: &Option<String>,
    ) -> OpResult {
        let before = self.v.flags.get(key).and_then(|e| e.def_value());
        let after = def_json(&def);
        let entry = build_flag(
            &self.v.segments,
            key,
            &def,
            allocations,
            version,
            self.revision,
            self.req.ts_ms,
            self.actor.clone(),
        )?;
        self.changes.push(Change::Flag(entry.record_with(key, def)));
        store_flag(&mut self.v, key, entry, self.revision);
        self.v.flag_tombstones.remove(key);
        self.record(Kind::Flag, key, version, event, reason, before, after);
        Ok(OpOutcome::Version(version))
    }

    fn set_segment(&mut self, key: &str, def: SegmentDef, reason: &Option<String>) -> OpResult {
        let compiled = Arc::new(compile_segment(key, &def)?);
        let before = self.v.segments.get(key).and_then(|e| def_json(&e.def));
        let version = self.next_version(Kind::Segment, key);
        let rendered = render_segment(
            &def,
            version,
            self.revision,
            self.req.ts_ms,
            &self.req.actor,
        );
        let entry = SegmentEntry {
            def,
            compiled,
            version,
            revision: self.revision,
            updated_at: self.req.ts_ms,
            updated_by: self.req.actor.clone(),
            rendered,
        };
        let after = def_json(&entry.def);
        self.changes.push(Change::Segment(entry.record(key)));
        let k: Arc<str> = key.into();
        self.v.segments.insert(k.clone(), Arc::new(entry));
        self.v.segment_tombstones.remove(key);
        self.v.key_revisions.insert(k, self.revision);
        // Compiled flags name segments by key and evaluation looks them up in
        // the view, so the flags that use this segment need no recompiling.
        self.record(
            Kind::Segment,
            key,
            version,
            Event::Set,
            reason,
            before,
            after,
        );
        Ok(OpOutcome::Version(version))
    }

    fn op(&mut self, op: &WriteOp) -> OpResult {
        match op {
            WriteOp::SetUsers { users, replace_all } => {
                Ok(OpOutcome::Version(self.set_users(users, *replace_all)))
            }
            WriteOp::SetFlag {
                key,
                definition,
                if_version,
                reason,
            } => {
                if let Some(expected) = if_version {
                    let have = self.v.flags.get(key.as_str()).map_or(0, |e| e.version);
                    if have != *expected {
                        return Err(OpError::Conflict(format!(
                            "flag {key} is at version {have}, not {expected}"
                        )));
                    }
                }
                self.set_flag_definition(key, definition, Event::Set, reason)
            }
            WriteOp::RollbackFlag {
                key,
                definition,
                reason,
                ..
            } => self.set_flag_definition(key, definition, Event::Rollback, reason),
            WriteOp::ToggleFlag { key, on, reason } => {
                let Some(current) = self.v.flags.get(key.as_str()).cloned() else {
                    return Err(OpError::NotFound(format!("no such flag '{key}'")));
                };
                let mut def = current.def()?;
                def.on = *on;
                let allocations = current.allocations();
                self.put_flag(
                    key,
                    def,
                    allocations,
                    current.version + 1,
                    Event::Toggle,
                    reason,
                )
            }
            WriteOp::DeleteFlag { key, reason } => {
                let Some(current) = self.v.flags.get(key.as_str()).cloned() else {
                    return Ok(OpOutcome::Deleted(false));
                };
                refuse_if_referenced(key, &self.v.prerequisite_dependents(key))?;
                let k: Arc<str> = key.as_str().into();
                self.v.index_references(&k, Some(&current.compiled), None);
                self.v.flags.remove(key.as_str());
                self.v.scan_order.remove(&(scan_hash(key), k));
                self.forget(
                    Kind::Flag,
                    key,
                    current.version,
                    current.def_value(),
                    reason,
                );
                Ok(OpOutcome::Deleted(true))
            }
            WriteOp::SetSegment {
                key,
                definition,
                reason,
            } => {
                let def = parse_segment(key, definition.as_bytes())?;
                self.set_segment(key, def, reason)
            }
            WriteOp::DeleteSegment { key, reason } => {
                let Some(current) = self.v.segments.get(key.as_str()).cloned() else {
                    return Ok(OpOutcome::Deleted(false));
                };
                refuse_if_referenced(key, &self.v.segment_dependents(key))?;
                self.v.segments.remove(key.as_str());
                self.forget(
                    Kind::Segment,
                    key,
                    current.version,
                    def_json(&current.def),
                    reason,
                );
                Ok(OpOutcome::Deleted(true))
            }
            WriteOp::Import { document, reason } => self.import(document, reason),
            WriteOp::SetExperiment { key, definition } => {
                let def = crate::flag::experiment::parse_experiment(definition.as_bytes())?;
                let flag = match self.v.flags.get(def.flag.as_str()) {
                    Some(e) => Some(e.def()?),
                    None => None,
                };
                crate::flag::experiment::check_against_flag(&def, flag.as_ref())?;
                let previous = self.v.experiments.by_key.get(key.as_str()).cloned();
                let entry = super::experiments::ExperimentEntry {
                    def,
                    state: previous
                        .as_ref()
                        .map_or(super::experiments::Lifecycle::Draft, |p| p.state),
                    version: previous.as_ref().map_or(1, |p| p.version + 1),
                    started_at: previous.as_ref().and_then(|p| p.started_at),
                    stopped_at: previous.as_ref().and_then(|p| p.stopped_at),
                    created_revision: previous
                        .as_ref()
                        .map_or(self.revision, |p| p.created_revision),
                };
                let version = entry.version;
                self.put_experiment(key, Some(entry), Event::Set);
                Ok(OpOutcome::Version(version))
            }
            WriteOp::DeleteExperiment { key } => {
                if !self.v.experiments.by_key.contains_key(key.as_str()) {
                    return Ok(OpOutcome::Deleted(false));
                }
                self.put_experiment(key, None, Event::Delete);
                Ok(OpOutcome::Deleted(true))
            }
            WriteOp::RunExperiment { key, running } => {
                use super::experiments::Lifecycle;
                let Some(current) = self.v.experiments.by_key.get(key.as_str()).cloned() else {
                    return Err(OpError::NotFound(format!("no such experiment '{key}'")));
                };
                let mut entry = (*current).clone();
                if *running {
                    // The flag may have changed since SET: check again.
                    let flag = match self.v.flags.get(entry.def.flag.as_str()) {
                        Some(e) => Some(e.def()?),
                        None => None,
                    };
                    crate::flag::experiment::check_against_flag(&entry.def, flag.as_ref())?;
                    if let Some((other, _)) = self.v.experiments.running_on(&entry.def.flag) {
                        if **other != **key {
                            return Err(OpError::Conflict(format!(
                                "experiment {other} already runs on flag {}",
                                entry.def.flag
                            )));
                        }
                    }
                    if entry.state != Lifecycle::Running {
                        entry.started_at = Some(self.req.ts_ms);
                    }
                    entry.state = Lifecycle::Running;
                } else {
                    if entry.state == Lifecycle::Running {
                        entry.stopped_at = Some(self.req.ts_ms);
                    }
                    entry.state = Lifecycle::Stopped;
                }
                entry.version += 1;
                let version = entry.version;
                let event = if *running { Event::Start } else { Event::Stop };
                self.put_experiment(key, Some(entry), event);
                Ok(OpOutcome::Version(version))
            }
        }
    }

    /// Sets (`Some` line) or deletes (`None`) ACL users, or replaces them
    /// all; returns how many of the named users existed before.
    fn set_users(&mut self, users: &[(String, Option<String>)], replace_all: bool) -> u64 {
        let mut map = if replace_all {
            std::collections::BTreeMap::new()
        } else {
            (*self.v.users).clone()
        };
        let mut existed = 0;
        for (name, acl) in users {
            if self.v.users.contains_key(name) {
                existed += 1;
            }
            match acl {
                Some(line) => map.insert(name.clone(), line.clone()),
                None => map.remove(name),
            };
        }
        let names: std::collections::BTreeSet<&String> =
            self.v.users.keys().chain(map.keys()).collect();
        let mut changed = Vec::new();
        for name in names {
            let after = map.get(name);
            let before = self.v.users.get(name);
            if before != after {
                changed.push((name.clone(), before.cloned(), after.cloned()));
                self.changes.push(Change::User {
                    name: name.clone(),
                    acl: after.cloned(),
                });
            }
        }
        // Audited as `acl:<name>` in FLAG.HISTORY: who changed which user and
        // when, with the ACL LIST line (hashes, never clear text); the
        // version of a user is the revision of its change.
        let as_json = |line: Option<String>| line.map(|l| serde_json::json!({ "acl": l }));
        let any = !changed.is_empty();
        for (name, before, after) in changed {
            let event = if after.is_some() {
                Event::Set
            } else {
                Event::Delete
            };
            let version = self.revision;
            self.record(
                Kind::User,
                &name,
                version,
                event,
                &None,
                as_json(before),
                as_json(after),
            );
        }
        if any {
            self.v.users_revision = self.revision;
        }
        self.v.users = Arc::new(map);
        existed
    }

    /// Stores (or with `None` deletes) an experiment and records the change,
    /// its audit record and its change-stream entry (`kind` experiment).
    fn put_experiment(
        &mut self,
        key: &str,
        entry: Option<super::experiments::ExperimentEntry>,
        event: Event,
    ) {
        let previous = self.v.experiments.by_key.get(key).cloned();
        let before = previous.as_ref().and_then(|p| def_json(&p.def));
        let after = entry.as_ref().and_then(|e| def_json(&e.def));
        let version = entry
            .as_ref()
            .or(previous.as_deref())
            .map_or(0, |e| e.version);
        let mut experiments = (*self.v.experiments).clone();
        let document = entry.as_ref().map(|e| e.document());
        match entry {
            Some(e) => experiments.by_key.insert(key.to_string(), Arc::new(e)),
            None => experiments.by_key.remove(key),
        };
        experiments.reindex();
        self.v.experiments = Arc::new(experiments);
        self.changes.push(Change::Experiment {
            key: key.to_string(),
            document,
        });
        self.record(Kind::Experiment, key, version, event, &None, before, after);
    }

    /// Applies a `FLAG.DUMP` document: every definition is checked first,
    /// and either all of it applies or none of it does. Users the document
    /// carries are set (others are kept), in the same entry.
    fn import(&mut self, document: &str, reason: &Option<String>) -> OpResult {
        let parsed = parse_dump(document)?;
        let saved = (self.v.clone(), self.changes.len(), self.audit.len());
        let mut count = 0u64;
        let result = (|| {
            for (key, def) in parsed.segments {
                self.set_segment(&key, def, reason)
                    .map_err(|e| prefix_error(e, &format!("segments[{key:?}]")))?;
                count += 1;
            }
            let order = import_order(&parsed.flags, &self.v);
            // Each definition moves into the state once (no copy of the dump).
            let mut flags: Vec<Option<_>> = parsed.flags.into_iter().map(Some).collect();
            for i in order {
                let Some((key, def, alloc)) = flags.get_mut(i).and_then(Option::take) else {
                    continue;
                };
                self.set_flag(&key, def, &alloc, Event::Set, reason)
                    .map_err(|e| prefix_error(e, &format!("flags[{key:?}]")))?;
                count += 1;
            }
            if !parsed.users.is_empty() {
                let users: Vec<(String, Option<String>)> = parsed
                    .users
                    .iter()
                    .map(|(n, l)| (n.clone(), Some(l.clone())))
                    .collect();
                self.set_users(&users, false);
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(OpOutcome::Version(count)),
            Err(e) => {
                self.v = saved.0;
                self.changes.truncate(saved.1);
                self.audit.truncate(saved.2);
                Err(e)
            }
        }
    }
}

/// The order in which an import sets its flags: each after those of its
/// prerequisites that the import brings and the store does not hold yet; among
/// the flags ready at a step, the first in key order. Kahn's algorithm with a
/// min-heap, O((n + e) log n), giving the order the quadratic scan it replaces
/// gave, so a log written before replays the same. Flags left on a cycle come
/// last, where setting them is refused as a cycle or an unknown flag.
fn import_order(flags: &[(String, FlagDef, Allocations)], view: &StateView) -> Vec<usize> {
    use std::cmp::Reverse;
    use std::collections::{BinaryHeap, HashMap as StdHashMap};

    let index: StdHashMap<&str, usize> = flags
        .iter()
        .enumerate()
        .filter(|(_, (k, _, _))| !view.flags.contains_key(k.as_str()))
        .map(|(i, (k, _, _))| (k.as_str(), i))
        .collect();
    let mut waiting_on = vec![0usize; flags.len()];
    let mut unblocks: Vec<Vec<usize>> = vec![Vec::new(); flags.len()];
    for (i, (_, def, _)) in flags.iter().enumerate() {
        for p in &def.prerequisites {
            if let Some(&j) = index.get(p.flag.as_str()) {
                waiting_on[i] += 1;
                unblocks[j].push(i);
            }
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> = (0..flags.len())
        .filter(|&i| waiting_on[i] == 0)
        .map(Reverse)
        .collect();
    let mut order = Vec::with_capacity(flags.len());
    let mut placed = vec![false; flags.len()];
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        placed[i] = true;
        for &j in &unblocks[i] {
            waiting_on[j] -= 1;
            if waiting_on[j] == 0 {
                ready.push(Reverse(j));
            }
        }
    }
    order.extend((0..flags.len()).filter(|&i| !placed[i]));
    order
}

fn prefix_error(e: OpError, prefix: &str) -> OpError {
    match e {
        OpError::Invalid { path, why } => OpError::Invalid {
            path: format!("{prefix}.{path}"),
            why,
        },
        other => other,
    }
}

/// A parsed `FLAG.DUMP` document.
pub struct Dump {
    /// Revision the dump reflects.
    pub revision: u64,
    /// (key, definition, allocations), by key.
    pub flags: Vec<(String, FlagDef, Allocations)>,
    /// (key, definition), by key.
    pub segments: Vec<(String, SegmentDef)>,
    /// ACL users: (name, `ACL LIST` line), by name; checked by the caller,
    /// which knows the ACL grammar.
    pub users: Vec<(String, String)>,
}

/// Parses and checks a dump document on its own: every definition valid.
/// Each definition is parsed once from its own slice of the document (no
/// JSON tree of the whole dump), so a 40 MB import holds the text and the
/// parsed definitions, not several copies of it.
pub fn parse_dump(document: &str) -> Result<Dump, OpError> {
    use serde_json::value::RawValue;
    let invalid = |path: &str, why: String| OpError::Invalid {
        path: path.into(),
        why,
    };
    let top: BTreeMap<String, &RawValue> = match serde_json::from_str(document) {
        Ok(top) => top,
        // Not an object (or not JSON): say which, as a tree parse would.
        Err(e) => {
            return Err(
                match serde_json::from_str::<serde::de::IgnoredAny>(document) {
                    Err(syntax) => invalid("$", syntax.to_string()),
                    Ok(_) if e.is_data() => invalid("$", "a dump is a JSON object".into()),
                    Ok(_) => invalid("$", e.to_string()),
                },
            )
        }
    };
    for k in top.keys() {
        if !matches!(
            k.as_str(),
            "revision" | "stream_id" | "flags" | "segments" | "users"
        ) {
            return Err(invalid(k, "unknown field".into()));
        }
    }
    let section = |name: &str| -> Result<BTreeMap<String, &RawValue>, OpError> {
        match top.get(name) {
            None => Ok(BTreeMap::new()),
            Some(raw) => serde_json::from_str(raw.get())
                .map_err(|_| invalid(name, "must be an object of key → definition".into())),
        }
    };
    // The definition as parse_flag/parse_segment's size limit counts it:
    // compact, as the tree parse re-serialised it (a pretty-printed dump
    // must not trip the limit).
    fn compact<'r>(raw: &'r RawValue, limit: usize) -> std::borrow::Cow<'r, str> {
        if raw.get().len() <= limit {
            return raw.get().into();
        }
        match serde_json::from_str::<Value>(raw.get()) {
            Ok(v) => v.to_string().into(),
            Err(_) => raw.get().into(),
        }
    }
    let mut segments = Vec::new();
    for (key, raw) in section("segments")? {
        let text = compact(raw, crate::flag::limits::MAX_SEGMENT_BYTES);
        let parsed = parse_segment(&key, text.as_bytes())
            .map_err(|e| invalid(&format!("segments[{key:?}].{}", e.path), e.why))?;
        segments.push((key, parsed));
    }
    /// Only the `allocations` field of a dumped flag; the rest is skipped.
    #[derive(serde::Deserialize)]
    struct AllocationsOnly {
        #[serde(default, deserialize_with = "present")]
        allocations: Option<Box<RawValue>>,
    }
    /// A present field, `null` included (a plain `Option` reads `null` as absent).
    fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
        <Box<RawValue> as serde::Deserialize>::deserialize(d).map(Some)
    }
    let mut flags = Vec::new();
    for (key, raw) in section("flags")? {
        let allocations: Allocations = match serde_json::from_str::<AllocationsOnly>(raw.get()) {
            Ok(AllocationsOnly {
                allocations: Some(a),
            }) => serde_json::from_str(a.get())
                .map_err(|e| invalid(&format!("flags[{key:?}].allocations"), e.to_string()))?,
            _ => Allocations::new(),
        };
        for (id, a) in &allocations {
            if let Some(why) = a.problem() {
                return Err(invalid(&format!("flags[{key:?}].allocations.{id}"), why));
            }
        }
        let text = compact(raw, crate::flag::limits::MAX_FLAG_BYTES);
        let parsed = parse_flag(&key, text.as_bytes())
            .map_err(|e| invalid(&format!("flags[{key:?}].{}", e.path), e.why))?;
        flags.push((key, parsed, allocations));
    }
    let mut users = Vec::new();
    for (name, raw) in section("users")? {
        let Ok(line) = serde_json::from_str::<String>(raw.get()) else {
            return Err(invalid(
                &format!("users[{name:?}]"),
                "must be an ACL LIST line".into(),
            ));
        };
        users.push((name, line));
    }
    let revision = top
        .get("revision")
        .and_then(|r| serde_json::from_str::<u64>(r.get()).ok())
        .unwrap_or(0);
    Ok(Dump {
        revision,
        flags,
        segments,
        users,
    })
}

/// Stored flag records per chunk of a restart's load: large enough that
/// handing chunks between threads costs nothing next to compiling them,
/// small enough that the chunks in flight stay a few MB.
const LOAD_CHUNK: usize = 512;

/// Stored flag records read for one worker of a restart's load.
type RecordChunk<K, V> = Result<Vec<(K, V)>, StorageError>;

/// A view entry and its revision from a stored flag record's bytes (`k`, the
/// storage key, names it in errors). `actor` is the last writer seen, whose
/// name the next entries share when they have the same.
fn stored_flag(
    segments: &HashMap<Arc<str>, Arc<SegmentEntry>>,
    actor: &mut Option<Arc<str>>,
    k: &[u8],
    value: &[u8],
) -> Result<(FlagEntry, u64), StorageError> {
    let corrupt = |why: String| StorageError::Corrupt {
        key: String::from_utf8_lossy(k).into_owned(),
        why,
    };
    let r: FlagRecordText<'_> =
        serde_json::from_slice(value).map_err(|e| corrupt(e.to_string()))?;
    let def: FlagDef =
        serde_json::from_str(r.definition.get()).map_err(|e| corrupt(e.to_string()))?;
    let allocations: Allocations = match r.allocations {
        Some(a) => serde_json::from_str(a.get()).map_err(|e| corrupt(e.to_string()))?,
        None => Allocations::new(),
    };
    let updated_by = match actor {
        Some(a) if **a == *r.updated_by => a.clone(),
        _ => actor.insert(Arc::from(&*r.updated_by)).clone(),
    };
    let entry = build_flag(
        segments,
        &r.key,
        &def,
        allocations,
        r.version,
        r.revision,
        r.updated_at,
        updated_by,
    )
    .map_err(|e| corrupt(format!("stored flag {}: {e}", r.key)))?;
    Ok((entry, r.revision))
}

#[allow(clippy::too_many_arguments)]
fn build_flag(
    segments: &HashMap<Arc<str>, Arc<SegmentEntry>>,
    key: &str,
    def: &FlagDef,
    allocations: Allocations,
    version: u64,
    revision: u64,
    ts_ms: u64,
    actor: Arc<str>,
) -> Result<FlagEntry, OpError> {
    let segment_exists = |s: &str| segments.contains_key(s);
    let compiled = compile_flag(key, def, &allocations, &segment_exists)?;
    let definition = serde_json::to_string(def)
        .map_err(|e| Invalid::new("$", format!("definition not serialisable: {e}")))?;
    Ok(FlagEntry {
        definition: definition.into_boxed_str(),
        compiled,
        allocations: compact_allocations(&allocations),
        version,
        revision,
        updated_at: ts_ms,
        updated_by: actor,
    })
}

/// The stored form of a flag's allocations (see [`FlagEntry::allocations`]).
fn compact_allocations(allocations: &Allocations) -> Box<str> {
    if allocations.is_empty() {
        return "".into();
    }
    serde_json::to_string(allocations)
        .unwrap_or_default()
        .into_boxed_str()
}

fn store_flag(v: &mut StateView, key: &str, entry: FlagEntry, revision: u64) {
    store_flag_arc(v, key, Arc::new(entry), revision);
}

fn store_flag_arc(v: &mut StateView, key: &str, entry: Arc<FlagEntry>, revision: u64) {
    // The compiled form's key is the one copy of the key every map shares.
    let k: Arc<str> = entry.compiled.key.clone();
    let old = v.flags.get(key).cloned();
    v.index_references(&k, old.as_ref().map(|e| &e.compiled), Some(&entry.compiled));
    if old.is_none() {
        v.scan_order.insert((scan_hash(key), k.clone()));
    }
    v.flags.insert(k.clone(), entry);
    v.key_revisions.insert(k, revision);
}
