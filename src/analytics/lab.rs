//! The node-local side of experiments: which units were exposed to which
//! variation (deduplicated per experiment and unit) and the metric events
//! they tracked. Kept in memory for running and stopped experiments,
//! dropped with the experiment; results merge every node's units.

use std::collections::HashMap;
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
}

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
        match map.get_mut(unit) {
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
        }
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
        lock(&self.experiments).retain(|k, _| keep(k));
    }

    /// Forgets one experiment's units.
    pub fn drop_experiment(&self, experiment: &str) {
        lock(&self.experiments).remove(experiment);
    }
}
