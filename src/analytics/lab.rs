//! The node-local side of experiments: which units were exposed to which
//! variation (deduplicated per experiment and unit) and the metric events
//! they tracked. Kept in memory for running and stopped experiments,
//! saved to `<data-dir>/analytics/units.json` every few seconds when they
//! changed (off the runtime), dropped with the experiment or past the
//! events retention; results merge every node's units.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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

/// The units of one experiment.
#[derive(Debug, Default)]
pub struct Units {
    units: Mutex<HashMap<Box<str>, Unit>>,
}

/// Every experiment's units on this node.
#[derive(Debug, Default)]
pub struct Lab {
    experiments: Mutex<HashMap<Arc<str>, Arc<Units>>>,
    /// Bumped on every change, so a save knows whether there is anything new.
    changes: AtomicU64,
    /// The value of `changes` the last save wrote.
    saved: AtomicU64,
}

/// The saved form: units key → its units.
type Saved = HashMap<String, Vec<(String, Unit)>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Lab {
    fn units(&self, experiment: &Arc<str>) -> Arc<Units> {
        lock(&self.experiments)
            .entry(experiment.clone())
            .or_default()
            .clone()
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
        let units = self.units(experiment);
        let mut map = lock(&units.units);
        let first = match map.get_mut(unit) {
            Some(u) if u.variation.is_some() => false,
            Some(u) => {
                u.variation = Some(variation.clone());
                u.exposed_at = now;
                true
            }
            None => {
                map.insert(
                    unit.into(),
                    Unit {
                        variation: Some(variation.clone()),
                        exposed_at: now,
                        ..Unit::default()
                    },
                );
                true
            }
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
            let mut map = lock(&units.units);
            let u = map.entry(unit.into()).or_default();
            if u.variation.is_some() {
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

    /// Every unit of `experiment` on this node.
    pub fn export(&self, experiment: &str) -> Vec<(String, Unit)> {
        let units = lock(&self.experiments).get(experiment).cloned();
        units.map_or_else(Vec::new, |u| {
            lock(&u.units)
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect()
        })
    }

    /// Forgets every unit of experiments not in `keep` (deleted ones).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut experiments = lock(&self.experiments);
        let before = experiments.len();
        experiments.retain(|k, _| keep(k));
        if experiments.len() != before {
            self.changes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Forgets one experiment's units.
    pub fn drop_experiment(&self, experiment: &str) {
        if lock(&self.experiments).remove(experiment).is_some() {
            self.changes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Forgets units first exposed before `cutoff` (Unix ms), and events
    /// of unexposed units tracked before it: the events retention.
    pub fn expire(&self, cutoff: u64) {
        let all: Vec<Arc<Units>> = lock(&self.experiments).values().cloned().collect();
        for units in all {
            let mut map = lock(&units.units);
            let before = map.len();
            let mut trimmed = false;
            map.retain(|_, u| {
                if u.variation.is_some() {
                    return u.exposed_at >= cutoff;
                }
                let n = u.pending.len();
                u.pending.retain(|(ts, _, _)| *ts >= cutoff);
                trimmed |= u.pending.len() != n;
                !u.pending.is_empty()
            });
            if trimmed || map.len() != before {
                self.changes.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Writes every unit to `path` (a temporary file, fsynced, renamed over
    /// it) if anything changed since the last save. Blocking: run off the
    /// runtime.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let generation = self.changes.load(Ordering::Relaxed);
        if generation == self.saved.load(Ordering::Relaxed) {
            return Ok(());
        }
        let all: Vec<(Arc<str>, Arc<Units>)> = lock(&self.experiments)
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
        out.write_all(b"{")?;
        for (i, (key, units)) in all.iter().enumerate() {
            let copy: Vec<(String, Unit)> = lock(&units.units)
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            if i > 0 {
                out.write_all(b",")?;
            }
            serde_json::to_writer(&mut out, &**key)?;
            out.write_all(b":")?;
            serde_json::to_writer(&mut out, &copy)?;
        }
        out.write_all(b"}")?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_data()?;
        std::fs::rename(&tmp, path)?;
        self.saved.store(generation, Ordering::Relaxed);
        Ok(())
    }

    /// Reads units saved by [`Lab::save`] (none if the file is absent).
    /// Blocking: run off the runtime.
    pub fn load(&self, path: &Path) -> std::io::Result<()> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let saved: Saved = serde_json::from_slice(&text)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let mut experiments = lock(&self.experiments);
        for (key, units) in saved {
            let map = units
                .into_iter()
                .map(|(k, u)| (k.into_boxed_str(), u))
                .collect();
            experiments.insert(
                key.into(),
                Arc::new(Units {
                    units: Mutex::new(map),
                }),
            );
        }
        Ok(())
    }
}
