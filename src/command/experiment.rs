//! EXPERIMENT.* and FLAG.TRACK: experiments are replicated definitions (a
//! raft write each); exposures and metric events are node-local and merged
//! over the cluster bus when results are asked for.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::flag::{match_option, read_key, readable, restricted_reader, write, write_key};
use super::insight::{now, LocalQuery};
use super::{parse, Action, CommandError, Ctx, ServerState};
use crate::analytics::events::{Event, EventType};
use crate::analytics::lab::Unit;
use crate::flag::experiment::{
    check_against_flag, compiled_rollout_site, parse_experiment, ExperimentDef,
};
use crate::flag::{Context, Evaluation, Reason};
use crate::protocol::Reply;
use crate::store::{FlagEntry, OpResult, StateView, WriteOp};

/// Records an exposure when `entry`'s flag belongs to a running experiment
/// and served `e` from the experiment's rollout, and a sampled evaluation
/// event when `--eval-log-sample` asks for one. Two branches when no
/// experiment runs and sampling is off.
#[inline]
pub fn expose(
    state: &ServerState,
    view: &StateView,
    entry: &FlagEntry,
    context: &Context<'_>,
    e: &Evaluation,
) {
    if let Some(experiment) = view.experiments.running_on(&entry.compiled.key) {
        expose_unit(state, experiment, entry, context, e);
    }
    if state.eval_sample != 0 && crate::analytics::events::sampled(state.eval_sample) {
        log_evaluation(state, entry, context, e);
    }
}

/// Writes a sampled evaluation to `flagstaff:events`.
#[cold]
fn log_evaluation(state: &ServerState, entry: &FlagEntry, context: &Context<'_>, e: &Evaluation) {
    let ts = now();
    let event = Event {
        kind: EventType::Eval,
        flag: Some(entry.compiled.key.to_string()),
        experiment: None,
        unit: context.key().map(str::to_string),
        variation: Some(entry.compiled.variations[e.variation].name.to_string()),
        reason: Some(e.reason.name().to_string()),
        event: None,
        value: None,
        ts,
        node: state.settings.node_id,
    };
    state.events.append(event, ts);
}

#[cold]
fn expose_unit(
    state: &ServerState,
    (experiment, units_key): &(Arc<str>, Arc<str>),
    entry: &FlagEntry,
    context: &Context<'_>,
    e: &Evaluation,
) {
    let Some(unit) = context.key() else { return };
    // Only units the rollout assigned are in the experiment (not targets,
    // other rules, or an off flag).
    let from_rollout = match (&e.reason, compiled_rollout_site(&entry.compiled)) {
        (Reason::Fallthrough, Some(None)) => true,
        (Reason::RuleMatch { index, .. }, Some(Some(i))) => *index == i,
        _ => false,
    };
    if !from_rollout {
        return;
    }
    let name = &entry.compiled.variations[e.variation].name;
    let ts = now();
    if state.lab.expose(units_key, unit, name, ts) {
        let event = Event {
            kind: EventType::Exposure,
            flag: Some(entry.compiled.key.to_string()),
            experiment: Some(experiment.to_string()),
            unit: Some(unit.to_string()),
            variation: Some(name.to_string()),
            reason: None,
            event: None,
            value: None,
            ts,
            node: state.settings.node_id,
        };
        state.events.append(event, ts);
    }
}

fn render_deleted(r: OpResult) -> Reply {
    super::flag::render_deleted(r)
}

/// `EXPERIMENT.SET key json`: the experiment's new version. Checked on its
/// own here and against its flag at apply (`-INVALID <path>: <why>`).
pub fn set(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let key = write_key(&args[1])?;
    parse_experiment(&args[2]).map_err(|e| CommandError::Invalid(e.to_string()))?;
    let op = WriteOp::SetExperiment {
        key,
        definition: String::from_utf8_lossy(&args[2]).into_owned(),
    };
    Ok(write(ctx, op, super::flag::render_version))
}

/// `EXPERIMENT.GET key`: the definition with `state`, `version`,
/// `started_at`, `stopped_at`; nil if absent.
pub fn get(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let view = ctx.state.store.view();
    Ok(
        match read_key(&args[1]).and_then(|k| view.experiments.by_key.get(k)) {
            Some(e) => Reply::bulk(e.document()),
            None => Reply::Nil,
        }
        .into(),
    )
}

/// `EXPERIMENT.DEL key`: 1 if deleted (its units are dropped), 0 if absent.
pub fn del(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let key = write_key(&args[1])?;
    Ok(write(
        ctx,
        WriteOp::DeleteExperiment { key },
        render_deleted,
    ))
}

/// `EXPERIMENT.HISTORY key [COUNT n]`: who set, started, stopped or deleted
/// the experiment and when, newest first, as FLAG.HISTORY replies (before
/// and after are the definitions).
pub fn history(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let key = read_key(&args[1]).unwrap_or_default().to_string();
    let count = super::flag::history_count(&args[2..])?;
    super::flag::history_of(ctx, crate::store::Kind::Experiment, &key, count)
}

/// `EXPERIMENT.LIST [MATCH pattern]`: experiment keys, sorted.
pub fn list(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let pattern = match_option(&args[1..])?;
    let reader = restricted_reader(ctx);
    let view = ctx.state.store.view();
    let keys = view
        .experiments
        .by_key
        .keys()
        .filter(|k| pattern.is_none_or(|p| crate::glob::matches(p, k.as_bytes(), false)))
        .filter(|k| readable(&reader, k))
        .map(|k| Reply::bulk(k.as_str()))
        .collect();
    Ok(Reply::Array(keys).into())
}

/// `EXPERIMENT.START key`: the new version; exposures are recorded from now.
pub fn start(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let key = write_key(&args[1])?;
    let op = WriteOp::RunExperiment { key, running: true };
    Ok(write(ctx, op, super::flag::render_version))
}

/// `EXPERIMENT.STOP key`: the new version; nothing new is recorded.
pub fn stop(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let key = write_key(&args[1])?;
    let op = WriteOp::RunExperiment {
        key,
        running: false,
    };
    Ok(write(ctx, op, super::flag::render_version))
}

/// Parses a `VALUE` argument: a finite number.
pub fn track_value(arg: &[u8]) -> Result<f64, CommandError> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .ok_or_else(|| CommandError::err("VALUE must be a finite number"))
}

/// `FLAG.TRACK event context-json [VALUE number]`: records a metric event
/// for the context's key in every running experiment that reads it;
/// replies with how many experiments it counted for.
pub fn track(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let event = std::str::from_utf8(&args[1])
        .ok()
        .filter(|e| !e.is_empty() && e.len() <= 256)
        .ok_or_else(|| CommandError::err("event must be 1-256 bytes of UTF-8"))?;
    let context = Context::parse(&args[2]).map_err(|e| CommandError::err(e.to_string()))?;
    let [value] = parse::options(&args[3..], ["VALUE"])?;
    let value = value.map(|v| track_value(v)).transpose()?.unwrap_or(1.0);
    let unit = context
        .key()
        .ok_or_else(|| CommandError::err("the context has no \"key\" to track"))?;
    let view = ctx.state.store.view();
    let running: Vec<(Arc<str>, &ExperimentDef)> = view
        .experiments
        .running
        .values()
        .filter_map(|(k, units)| {
            view.experiments
                .by_key
                .get(&**k)
                .map(|e| (units.clone(), &e.def))
        })
        .collect();
    let counted = running
        .iter()
        .filter(|(_, d)| {
            d.metrics
                .iter()
                .any(|m| m.event == event || m.covariate.as_deref() == Some(event))
                || d.guardrails.iter().any(|g| g.event == event)
        })
        .count();
    let ts = now();
    ctx.state
        .lab
        .track(running.iter().map(|(k, d)| (k, *d)), unit, event, value, ts);
    let entry = Event {
        kind: EventType::Track,
        flag: None,
        experiment: None,
        unit: Some(unit.to_string()),
        variation: None,
        reason: None,
        event: Some(event.to_string()),
        value: Some(value),
        ts,
        node: ctx.state.settings.node_id,
    };
    ctx.state.events.append(entry, ts);
    Ok(Reply::Integer(counted as i64).into())
}

/// What this node contributes to `EXPERIMENT.RESULTS`, with what the
/// rendering needs.
#[derive(Debug, Serialize, Deserialize)]
struct LocalResults {
    key: String,
    document: String,
    state: String,
    weights: Vec<(String, u32)>,
    units: Vec<(String, Unit)>,
}

/// `EXPERIMENT.RESULTS key`: one JSON document of per-variation statistics
/// over every reachable node's units (`nodes` names those missing).
pub fn results(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let view = ctx.state.store.view();
    let key = read_key(&args[1]).unwrap_or_default();
    let Some(entry) = view.experiments.by_key.get(key) else {
        return Err(CommandError::err(format!("no such experiment '{key}'")));
    };
    let flag = match view.flags.get(entry.def.flag.as_str()) {
        Some(e) => Some(e.def().map_err(|e| CommandError::err(e.to_string()))?),
        None => None,
    };
    let (_, weights) = check_against_flag(&entry.def, flag.as_ref())
        .map_err(|e| CommandError::err(format!("experiment {key} cannot be read: {e}")))?;
    let units_key = entry.units_key(key);
    let local = LocalResults {
        key: key.to_string(),
        document: entry.document(),
        state: entry.state.name().to_string(),
        weights,
        units: ctx.state.lab.export(&units_key),
    };
    let me = ctx.state.settings.node_id;
    let local = Bytes::from(serde_json::to_vec(&local).unwrap_or_default());
    if ctx.state.raft.get().is_none() {
        return Ok(render_results(vec![(me, Ok(local))]).into());
    }
    let body = Bytes::from(
        serde_json::to_vec(&LocalQuery::Units {
            experiment: units_key,
        })
        .unwrap_or_default(),
    );
    Ok(Action::Cluster(super::raft::ClusterOp::Gather(
        super::raft::Gather {
            body,
            local: (me, local),
            render: render_results,
        },
    )))
}

/// This node's units of an experiment, for another node's RESULTS.
pub fn local_units(state: &ServerState, units_key: &str) -> Vec<(String, Unit)> {
    state.lab.export(units_key)
}

fn render_results(answers: Vec<(u64, Result<Bytes, String>)>) -> Reply {
    let mut answers = answers.into_iter();
    let Some((me, Ok(local))) = answers.next() else {
        return Reply::error("ERR internal error: no local results");
    };
    let Ok(local) = serde_json::from_slice::<LocalResults>(&local) else {
        return Reply::error("ERR internal error: malformed local results");
    };
    let Ok(def) = parse_experiment(local.document.as_bytes()) else {
        return Reply::error("ERR internal error: stored experiment does not parse");
    };
    let (mut answered, mut missing) = (vec![me], Vec::new());
    let mut all = vec![local.units];
    for (id, answer) in answers {
        match answer.and_then(|a| {
            serde_json::from_slice::<Vec<(String, Unit)>>(&a).map_err(|e| e.to_string())
        }) {
            Ok(units) => {
                answered.push(id);
                all.push(units);
            }
            Err(why) => {
                tracing::debug!(node = id, %why, "no experiment units from a member");
                missing.push(id);
            }
        }
    }
    answered.sort_unstable();
    missing.sort_unstable();
    let units = crate::analytics::results::merge_units(all);
    let doc = crate::analytics::results::results(
        &local.key,
        &def,
        &local.state,
        &local.weights,
        &units,
        serde_json::json!({"answered": answered, "missing": missing}),
    );
    Reply::bulk(doc.to_string())
}

/// Drops the units of experiments that no longer exist (deleted, or
/// deleted and created again).
pub fn forget_deleted(state: &ServerState) {
    let view = state.store.view();
    let live: std::collections::HashSet<String> = view
        .experiments
        .by_key
        .iter()
        .map(|(k, e)| e.units_key(k))
        .collect();
    state.lab.retain(|k| live.contains(k));
}
