//! Experiments as replicated objects: the definition and its lifecycle
//! (draft → running → stopped), stored as one JSON document per key.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::flag::experiment::{parse_experiment, ExperimentDef};
use crate::flag::Invalid;

/// Where an experiment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Defined, not started: no exposures recorded.
    Draft,
    /// Exposures and metric events are recorded.
    Running,
    /// Stopped: results stay readable, nothing new is recorded.
    Stopped,
}

impl Lifecycle {
    /// The name replied in `state`.
    pub fn name(self) -> &'static str {
        match self {
            Lifecycle::Draft => "draft",
            Lifecycle::Running => "running",
            Lifecycle::Stopped => "stopped",
        }
    }
}

/// A stored experiment.
#[derive(Debug, Clone)]
pub struct ExperimentEntry {
    /// The definition.
    pub def: ExperimentDef,
    /// Its lifecycle state.
    pub state: Lifecycle,
    /// Bumped by every change.
    pub version: u64,
    /// When it last started (Unix ms).
    pub started_at: Option<u64>,
    /// When it last stopped (Unix ms).
    pub stopped_at: Option<u64>,
    /// Revision that created it: a deleted and re-created experiment is a
    /// new one, with no units of the old.
    pub created_revision: u64,
}

impl ExperimentEntry {
    /// The key its node-local units are kept under (`key@created_revision`).
    pub fn units_key(&self, key: &str) -> String {
        format!("{key}@{}", self.created_revision)
    }

    /// The stored and replied document: the definition with `state`,
    /// `version`, `started_at` and `stopped_at` added.
    pub fn document(&self) -> String {
        let mut v = serde_json::to_value(&self.def).unwrap_or_else(|_| json!({}));
        if let Some(o) = v.as_object_mut() {
            o.insert("state".into(), json!(self.state.name()));
            o.insert("version".into(), json!(self.version));
            o.insert("started_at".into(), json!(self.started_at));
            o.insert("stopped_at".into(), json!(self.stopped_at));
            o.insert("created_revision".into(), json!(self.created_revision));
        }
        v.to_string()
    }

    /// Reads a stored document back.
    pub fn from_document(doc: &str) -> Result<ExperimentEntry, Invalid> {
        let def = parse_experiment(doc.as_bytes())?;
        let v: Value = serde_json::from_str(doc).map_err(|e| Invalid::new("$", e.to_string()))?;
        let state = match v.get("state").and_then(Value::as_str) {
            Some("running") => Lifecycle::Running,
            Some("stopped") => Lifecycle::Stopped,
            _ => Lifecycle::Draft,
        };
        Ok(ExperimentEntry {
            def,
            state,
            version: v.get("version").and_then(Value::as_u64).unwrap_or(1),
            started_at: v.get("started_at").and_then(Value::as_u64),
            stopped_at: v.get("stopped_at").and_then(Value::as_u64),
            created_revision: v
                .get("created_revision")
                .and_then(Value::as_u64)
                .unwrap_or(0),
        })
    }
}

/// Every experiment, and which flags have a running one.
#[derive(Debug, Clone, Default)]
pub struct Experiments {
    /// Experiment key → entry.
    pub by_key: BTreeMap<String, Arc<ExperimentEntry>>,
    /// Flag key → the running experiment on it: (key, units key).
    pub running: HashMap<Arc<str>, (Arc<str>, Arc<str>)>,
}

impl Experiments {
    /// Recomputes `running` after a change.
    pub fn reindex(&mut self) {
        self.running = self
            .by_key
            .iter()
            .filter(|(_, e)| e.state == Lifecycle::Running)
            .map(|(k, e)| {
                let units: Arc<str> = e.units_key(k).into();
                (
                    Arc::from(e.def.flag.as_str()),
                    (Arc::from(k.as_str()), units),
                )
            })
            .collect();
    }

    /// The running experiment flag `key` belongs to, if any: one branch
    /// when nothing runs.
    #[inline]
    pub fn running_on(&self, flag: &str) -> Option<&(Arc<str>, Arc<str>)> {
        if self.running.is_empty() {
            return None;
        }
        self.running.get(flag)
    }
}
