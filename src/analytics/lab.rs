//! The node-local side of experiments: which units were exposed to which
//! variation (deduplicated per experiment and unit) and the metric events
//! they tracked. Kept in memory for running and stopped experiments,
//! saved to `<data-dir>/analytics/units.json` every few seconds when they
//! changed (off the runtime), dropped with the experiment or past the
//! events retention; results merge every node's units.
//!
//! A unit is known only by a 64-bit hash of its key (xxh3, seeded by the
//! experiment's units key, so every node computes the same one and the same
//! user hashes differently in two experiments). Exposures sit in a packed
//! table of 16-byte entries (hash → exposure time and variation index);
//! units that tracked events have a wider record in a side table. Two
//! units whose hashes collide count as one: among n units that happens
//! with probability about n²/2⁶⁵ (3·10⁻⁸ for a million).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::flag::experiment::ExperimentDef;

/// One unit (targeting key) of one experiment on this node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Unit {
    /// The variation it was first exposed to (`None`: only pre-period events).
    pub variation: Option<Arc<str>>,
    /// When (Unix ms) it was first exposed.
    pub exposed_at: u64,
    /// Per metric then guardrail: (events after exposure, sum of their VALUEs).
    pub post: Vec<(u32, f64)>,
    /// Per metric: sum of the covariate event's VALUEs before exposure.
    pub pre: Vec<f64>,
    /// Events tracked here while the unit was not exposed here (it may have
    /// been exposed on another node): (Unix ms, slot, VALUE), where a slot
    /// below [`COVARIATE_SLOT`] is a metric or guardrail and one at or above
    /// it a metric's covariate. Resolved against the merged exposure time.
    #[serde(default)]
    pub pending: Vec<(u64, u32, f64)>,
}

/// Slots at or above this are CUPED covariates (`COVARIATE_SLOT + metric`).
pub const COVARIATE_SLOT: u32 = 1 << 16;
/// Events kept per unit while its exposure is unknown here.
pub const MAX_PENDING: usize = 256;

impl Unit {
    /// Merges the same unit's record from another node: the earliest
    /// exposure wins, events add up.
    pub fn merge(&mut self, other: &Unit) {
        let earlier = other.variation.is_some()
            && (self.variation.is_none() || other.exposed_at < self.exposed_at);
        if earlier {
            self.variation = other.variation.clone();
            self.exposed_at = other.exposed_at;
        }
        if self.post.len() < other.post.len() {
            self.post.resize(other.post.len(), (0, 0.0));
        }
        for (mine, theirs) in self.post.iter_mut().zip(&other.post) {
            mine.0 += theirs.0;
            mine.1 += theirs.1;
        }
        if self.pre.len() < other.pre.len() {
            self.pre.resize(other.pre.len(), 0.0);
        }
        for (mine, theirs) in self.pre.iter_mut().zip(&other.pre) {
            *mine += theirs;
        }
        self.pending.extend_from_slice(&other.pending);
    }

    /// Files the pending events by the (merged) exposure time: after it into
    /// their metric, before it into their covariate; others are dropped.
    pub fn resolve(&mut self, slots: usize, metrics: usize) {
        self.post.resize(slots.max(self.post.len()), (0, 0.0));
        self.pre.resize(metrics.max(self.pre.len()), 0.0);
        for (ts, slot, value) in std::mem::take(&mut self.pending) {
            let after = self.variation.is_some() && ts >= self.exposed_at;
            if slot >= COVARIATE_SLOT {
                if !after {
                    if let Some(p) = self.pre.get_mut((slot - COVARIATE_SLOT) as usize) {
                        *p += value;
                    }
                }
            } else if after {
                if let Some(p) = self.post.get_mut(slot as usize) {
                    p.0 += 1;
                    p.1 += value;
                }
            }
        }
    }
}

/// Hashes a unit key for the units of `units_key`: the same on every node.
pub fn unit_hash(units_key: &str, unit: &str) -> u64 {
    unit_hash_seeded(experiment_seed(units_key), unit)
}

fn experiment_seed(units_key: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(units_key.as_bytes())
}

fn unit_hash_seeded(seed: u64, unit: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(unit.as_bytes(), seed)
}

/// How a unit hash is written where a unit key used to be (exports to
/// other nodes, units.json): `#` and 16 hex digits.
pub fn hash_name(hash: u64) -> String {
    format!("#{hash:016x}")
}

fn parse_hash_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix('#')?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

/// Keys already uniformly hashed: the table uses them as they are.
#[derive(Default, Clone, Copy)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type ByHash<V> = HashMap<u64, V, BuildHasherDefault<Identity>>;

/// xxh3 for the units keys of the experiment set (shorter than SipHash on
/// the exposure path; the keys are not chosen by clients).
#[derive(Default, Clone, Copy)]
struct Fast(u64);

impl Hasher for Fast {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }
    fn write_u8(&mut self, n: u8) {
        self.0 = self.0.rotate_left(8) ^ u64::from(n);
    }
}

type ByKey = HashMap<Arc<str>, Arc<Units>, BuildHasherDefault<Fast>>;

/// Bits of a packed exposure holding the variation index.
const VARIATION_BITS: u32 = 16;

/// One exposure packed in a word: first-exposure time (Unix ms, 48 bits,
/// enough until the year 10889) above the variation index (16 bits).
#[derive(Debug, Clone, Copy)]
struct Exposure(u64);

impl Exposure {
    fn new(at: u64, variation: u16) -> Exposure {
        Exposure(
            (at.min((1 << (64 - VARIATION_BITS)) - 1) << VARIATION_BITS) | u64::from(variation),
        )
    }
    fn at(self) -> u64 {
        self.0 >> VARIATION_BITS
    }
    fn variation(self) -> usize {
        (self.0 & ((1 << VARIATION_BITS) - 1)) as usize
    }
}

/// The units of one experiment on this node.
#[derive(Debug, Default)]
struct Table {
    /// Exposed units: unit hash → exposure.
    exposed: ByHash<Exposure>,
    /// Units that tracked events (exposed or not); their `variation` and
    /// `exposed_at` are unused (the exposure is in `exposed`).
    events: ByHash<Unit>,
    /// Variation names, indexed by [`Exposure::variation`].
    variations: Vec<Arc<str>>,
}

impl Table {
    fn variation_index(&mut self, variation: &Arc<str>) -> Option<u16> {
        let i = match self.variations.iter().position(|v| v == variation) {
            Some(i) => i,
            None => {
                self.variations.push(variation.clone());
                self.variations.len() - 1
            }
        };
        u16::try_from(i).ok()
    }

    fn export(&self) -> Vec<(String, Unit)> {
        let mut out: Vec<(String, Unit)> = Vec::with_capacity(self.exposed.len());
        for (hash, e) in &self.exposed {
            let mut unit = self.events.get(hash).cloned().unwrap_or_default();
            unit.variation = self.variations.get(e.variation()).cloned();
            unit.exposed_at = e.at();
            out.push((hash_name(*hash), unit));
        }
        for (hash, unit) in &self.events {
            if !self.exposed.contains_key(hash) {
                out.push((hash_name(*hash), unit.clone()));
            }
        }
        out
    }

    fn insert(&mut self, hash: u64, mut unit: Unit) {
        if let Some(v) = unit.variation.take() {
            if let Some(i) = self.variation_index(&v) {
                self.exposed.insert(hash, Exposure::new(unit.exposed_at, i));
            }
        }
        unit.exposed_at = 0;
        if !(unit.post.is_empty() && unit.pre.is_empty() && unit.pending.is_empty()) {
            self.events.insert(hash, unit);
        }
    }
}

/// The units of one experiment: its handle, reached without a lock on
/// the set of experiments.
#[derive(Debug)]
pub struct Units {
    seed: u64,
    table: Mutex<Table>,
}

impl Units {
    fn new(units_key: &str) -> Units {
        Units {
            seed: experiment_seed(units_key),
            table: Mutex::new(Table::default()),
        }
    }

    /// Records that `unit` was served `variation`; only its first exposure
    /// counts. Returns whether this was the first.
    pub fn expose(&self, unit: &str, variation: &Arc<str>, now: u64) -> bool {
        let hash = unit_hash_seeded(self.seed, unit);
        let mut table = lock(&self.table);
        if table.exposed.contains_key(&hash) {
            return false;
        }
        let Some(i) = table.variation_index(variation) else {
            return false;
        };
        table.exposed.insert(hash, Exposure::new(now, i));
        true
    }
}

/// Every experiment's units on this node.
#[derive(Debug, Default)]
pub struct Lab {
    /// Units key → its units. Read without a lock; replaced (under
    /// `writer`) when an experiment appears or goes.
    experiments: ArcSwap<ByKey>,
    writer: Mutex<()>,
    /// Bumped on every change, so a save knows whether there is anything new.
    changes: AtomicU64,
    /// The value of `changes` the last save wrote.
    saved: AtomicU64,
}

/// The saved form (version 2): unit hashes, never unit keys.
#[derive(Serialize, Deserialize)]
struct Saved {
    version: u32,
    /// Units key → its units ([`hash_name`] → unit).
    experiments: HashMap<String, Vec<(String, Unit)>>,
}

/// The form saved before units were hashed: units key → (unit key, unit).
type SavedV1 = HashMap<String, Vec<(String, Unit)>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Lab {
    /// The handle of `experiment`'s units, created if new.
    pub fn units(&self, experiment: &str) -> Arc<Units> {
        if let Some(u) = self.experiments.load().get(experiment) {
            return u.clone();
        }
        let _w = lock(&self.writer);
        let current = self.experiments.load_full();
        if let Some(u) = current.get(experiment) {
            return u.clone();
        }
        let units = Arc::new(Units::new(experiment));
        let mut next = (*current).clone();
        next.insert(experiment.into(), units.clone());
        self.experiments.store(Arc::new(next));
        units
    }

    /// Replaces the set of experiments with `change` applied to a copy.
    fn update(&self, change: impl FnOnce(&mut ByKey)) -> bool {
        let _w = lock(&self.writer);
        let current = self.experiments.load_full();
        let mut next = (*current).clone();
        change(&mut next);
        let changed = next.len() != current.len();
        self.experiments.store(Arc::new(next));
        changed
    }

    /// Records that `unit` was served `variation` by `experiment`'s flag;
    /// only its first exposure counts. Returns whether this was the first.
    pub fn expose(
        &self,
        experiment: &Arc<str>,
        unit: &str,
        variation: &Arc<str>,
        now: u64,
    ) -> bool {
        let first = match self.experiments.load().get(&**experiment) {
            Some(units) => units.expose(unit, variation, now),
            None => self.units(experiment).expose(unit, variation, now),
        };
        if first {
            self.changes.fetch_add(1, Ordering::Relaxed);
        }
        first
    }

    /// Records a metric event of `unit` at `now` for every experiment in
    /// `running` (units key, definition) that reads `event`: straight into
    /// its metrics when the unit was exposed here, else kept pending until
    /// results know when (and whether) it was exposed anywhere.
    pub fn track<'a>(
        &self,
        running: impl Iterator<Item = (&'a Arc<str>, &'a ExperimentDef)>,
        unit: &str,
        event: &str,
        value: f64,
        now: u64,
    ) {
        for (key, def) in running {
            let post: Vec<u32> = def
                .metrics
                .iter()
                .map(|m| m.event.as_str())
                .chain(def.guardrails.iter().map(|g| g.event.as_str()))
                .enumerate()
                .filter(|(_, e)| *e == event)
                .map(|(i, _)| i as u32)
                .collect();
            let pre: Vec<u32> = def
                .metrics
                .iter()
                .enumerate()
                .filter(|(_, m)| m.covariate.as_deref() == Some(event))
                .map(|(i, _)| COVARIATE_SLOT + i as u32)
                .collect();
            if post.is_empty() && pre.is_empty() {
                continue;
            }
            self.changes.fetch_add(1, Ordering::Relaxed);
            let units = self.units(key);
            let hash = unit_hash_seeded(units.seed, unit);
            let mut table = lock(&units.table);
            let exposed = table.exposed.contains_key(&hash);
            let u = table.events.entry(hash).or_default();
            if exposed {
                let slots = def.metrics.len() + def.guardrails.len();
                u.post.resize(slots.max(u.post.len()), (0, 0.0));
                for i in post {
                    u.post[i as usize].0 += 1;
                    u.post[i as usize].1 += value;
                }
            } else {
                for slot in post.into_iter().chain(pre) {
                    if u.pending.len() < MAX_PENDING {
                        u.pending.push((now, slot, value));
                    }
                }
            }
        }
    }

    /// Every unit of `experiment` on this node, named by [`hash_name`].
    pub fn export(&self, experiment: &str) -> Vec<(String, Unit)> {
        let units = self.experiments.load().get(experiment).cloned();
        units.map_or_else(Vec::new, |u| lock(&u.table).export())
    }

    /// Forgets every unit of experiments not in `keep` (deleted ones).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        if self.update(|all| all.retain(|k, _| keep(k))) {
            self.changes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Forgets one experiment's units.
    pub fn drop_experiment(&self, experiment: &str) {
        if self.update(|all| {
            all.remove(experiment);
        }) {
            self.changes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Forgets units first exposed before `cutoff` (Unix ms), and events
    /// of unexposed units tracked before it: the events retention.
    pub fn expire(&self, cutoff: u64) {
        let all: Vec<Arc<Units>> = self.experiments.load().values().cloned().collect();
        for units in all {
            let mut guard = lock(&units.table);
            let table = &mut *guard;
            let (exposed_before, events_before) = (table.exposed.len(), table.events.len());
            let mut trimmed = false;
            let exposed = &table.exposed;
            table.events.retain(|hash, u| {
                if let Some(e) = exposed.get(hash) {
                    return e.at() >= cutoff;
                }
                let n = u.pending.len();
                u.pending.retain(|(ts, _, _)| *ts >= cutoff);
                trimmed |= u.pending.len() != n;
                !u.pending.is_empty()
            });
            table.exposed.retain(|_, e| e.at() >= cutoff);
            if trimmed
                || table.exposed.len() != exposed_before
                || table.events.len() != events_before
            {
                self.changes.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Writes every unit (by hash) to `path` (a temporary file, fsynced,
    /// renamed over it) if anything changed since the last save. Blocking:
    /// run off the runtime.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let generation = self.changes.load(Ordering::Relaxed);
        if generation == self.saved.load(Ordering::Relaxed) {
            return Ok(());
        }
        let all: Vec<(Arc<str>, Arc<Units>)> = self
            .experiments
            .load()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        // One experiment at a time, so a lock is held only while its units
        // are copied.
        out.write_all(b"{\"version\":2,\"experiments\":{")?;
        for (i, (key, units)) in all.iter().enumerate() {
            let copy = lock(&units.table).export();
            if i > 0 {
                out.write_all(b",")?;
            }
            serde_json::to_writer(&mut out, &**key)?;
            out.write_all(b":")?;
            serde_json::to_writer(&mut out, &copy)?;
        }
        out.write_all(b"}}")?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_data()?;
        std::fs::rename(&tmp, path)?;
        self.saved.store(generation, Ordering::Relaxed);
        Ok(())
    }

    /// Reads units saved by [`Lab::save`] (none if the file is absent). A
    /// file from before units were hashed (unit keys, no `version`) is
    /// read too, its keys hashed, and rewritten hashed at the next save.
    /// Blocking: run off the runtime.
    pub fn load(&self, path: &Path) -> std::io::Result<()> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let invalid = |e| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let (experiments, hashed) = match serde_json::from_slice::<Saved>(&text) {
            Ok(saved) => (saved.experiments, true),
            Err(_) => (
                serde_json::from_slice::<SavedV1>(&text).map_err(invalid)?,
                false,
            ),
        };
        if !hashed {
            tracing::info!("experiment units saved with unit keys: hashing them");
            self.changes.fetch_add(1, Ordering::Relaxed);
        }
        let mut loaded = ByKey::default();
        for (key, list) in experiments {
            let units = Units::new(&key);
            {
                let mut table = lock(&units.table);
                for (name, unit) in list {
                    let hash = match parse_hash_name(&name) {
                        Some(h) if hashed => h,
                        _ => unit_hash_seeded(units.seed, &name),
                    };
                    table.insert(hash, unit);
                }
            }
            loaded.insert(Arc::<str>::from(key), Arc::new(units));
        }
        self.update(|all| all.extend(loaded));
        Ok(())
    }
}
