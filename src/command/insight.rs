//! `FLAG.STATS` and `FLAG.STALE`: how and when flags are evaluated, from the
//! node-local insight (`analytics::insight`), merged over the cluster bus.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::flag::{read_key, readable, restricted_reader};
use super::{parse, Action, CommandError, Ctx};
use crate::analytics::insight::CountedFlag;
use crate::analytics::{FlagStats, Tally};
use crate::flag::EvalCounters;
use crate::protocol::Reply;
use crate::store::FlagEntry;

impl CountedFlag for FlagEntry {
    fn counters(&self) -> &EvalCounters {
        &self.compiled.counters
    }

    fn variation_name(&self, index: usize) -> &str {
        self.compiled.variations.get(index).map_or("", |v| &*v.name)
    }
}

/// Unix milliseconds now.
pub fn now() -> u64 {
    crate::clock::since_epoch().as_millis() as u64
}

/// Every current flag as the rollup sees it.
pub fn counted_flags(
    view: &crate::store::StateView,
) -> impl Iterator<Item = (&Arc<str>, Arc<dyn CountedFlag>)> {
    view.flags
        .iter()
        .map(|(k, e)| (k, e.clone() as Arc<dyn CountedFlag>))
}

/// The versions of `key` replaced since the last rollup.
fn retired(state: &super::ServerState, key: &str) -> Vec<Arc<dyn CountedFlag>> {
    state
        .store
        .retired(key)
        .into_iter()
        .map(|e| e as Arc<dyn CountedFlag>)
        .collect()
}

/// Every retired flag version, taken for the rollup.
pub fn take_retired(state: &super::ServerState) -> Vec<(Arc<str>, Arc<dyn CountedFlag>)> {
    state
        .store
        .take_retired()
        .into_iter()
        .map(|(k, e)| (k, e as Arc<dyn CountedFlag>))
        .collect()
}

/// This node's statistics for `key` since `since` (Unix ms), with a series
/// of `bucket_ms` buckets when asked for.
pub fn local_stats(
    state: &super::ServerState,
    key: &str,
    since: u64,
    bucket_ms: Option<u64>,
) -> FlagStats {
    let view = state.store.view();
    let entry = view.flags.get(key);
    state.insight.stats(
        key,
        entry.map(|e| &**e as &dyn CountedFlag),
        &retired(state, key),
        since,
        bucket_ms,
        now(),
    )
}

fn counts(map: &std::collections::BTreeMap<String, u64>) -> Reply {
    Reply::Map(
        map.iter()
            .map(|(k, n)| (Reply::bulk(k.as_str()), Reply::Integer(*n as i64)))
            .collect(),
    )
}

fn time_or_nil(t: Option<u64>) -> Reply {
    t.map_or(Reply::Nil, |t| Reply::Integer(t as i64))
}

fn ids(ids: &[u64]) -> Reply {
    Reply::Array(ids.iter().map(|i| Reply::Integer(*i as i64)).collect())
}

/// Renders merged statistics and which nodes answered.
pub fn render_stats(stats: &FlagStats, answered: &[u64], missing: &[u64]) -> Reply {
    let field = |name: &'static str, value: Reply| (Reply::bulk_static(name), value);
    let Tally {
        by_variation,
        by_reason,
    } = &stats.tally;
    let mut fields = vec![
        field("evaluations", Reply::Integer(stats.tally.total() as i64)),
        field("by_variation", counts(by_variation)),
        field("by_reason", counts(by_reason)),
        field("first_evaluated", time_or_nil(stats.first_evaluated)),
        field("last_evaluated", time_or_nil(stats.last_evaluated)),
    ];
    if let Some(series) = &stats.series {
        let buckets = series
            .iter()
            .map(|(start, by_variation)| {
                Reply::Map(vec![
                    field("start", Reply::Integer(*start as i64)),
                    field(
                        "evaluations",
                        Reply::Integer(by_variation.values().sum::<u64>() as i64),
                    ),
                    field("by_variation", counts(by_variation)),
                ])
            })
            .collect();
        fields.push(field("series", Reply::Array(buckets)));
    }
    fields.push(field(
        "nodes",
        Reply::Map(vec![
            field("answered", ids(answered)),
            field("missing", ids(missing)),
        ]),
    ));
    Reply::Map(fields)
}

/// A parsed `FLAG.STATS key [SINCE ts] [BUCKETS seconds] [LOCAL]`.
#[derive(Debug, Clone)]
pub struct StatsQuery {
    /// The flag.
    pub key: String,
    /// Unix ms; 0 for everything retained.
    pub since: u64,
    /// Series bucket width in ms (whole hours), if a series is asked for.
    pub bucket_ms: Option<u64>,
    /// Only this node.
    pub local: bool,
}

/// The widest series bucket: a year.
const MAX_BUCKET_SECS: u64 = 366 * 24 * 3600;

/// Parses the arguments of `FLAG.STATS` (name included).
pub fn parse_stats(args: &[Bytes]) -> Result<StatsQuery, CommandError> {
    let key = read_key(&args[1])
        .ok_or_else(|| CommandError::err("invalid key"))?
        .to_string();
    let mut query = StatsQuery {
        key,
        since: 0,
        bucket_ms: None,
        local: false,
    };
    let mut rest = &args[2..];
    while let Some(word) = rest.first() {
        if parse::is(word, "LOCAL") && !query.local {
            query.local = true;
            rest = &rest[1..];
        } else if parse::is(word, "SINCE") {
            let ts = rest.get(1).ok_or(CommandError::Syntax)?;
            query.since = parse::uint(ts).map_err(|_| {
                CommandError::err(
                    "SINCE must be a Unix time in milliseconds (a non-negative integer)",
                )
            })?;
            rest = &rest[2..];
        } else if parse::is(word, "BUCKETS") {
            let secs = rest.get(1).ok_or(CommandError::Syntax)?;
            // Rollups are hourly: a bucket is a whole number of hours.
            let secs = parse::uint(secs)
                .ok()
                .filter(|s| *s > 0 && s % 3600 == 0 && *s <= MAX_BUCKET_SECS)
                .ok_or_else(|| {
                    CommandError::err(
                        "BUCKETS must be a whole number of hours in seconds (3600, 86400, ...) up to a year",
                    )
                })?;
            query.bucket_ms = Some(secs * 1000);
            rest = &rest[2..];
        } else {
            return Err(CommandError::Syntax);
        }
    }
    Ok(query)
}

/// `FLAG.STATS key [SINCE ts] [BUCKETS seconds] [LOCAL]`: evaluations (total,
/// by variation, by reason), first and last evaluated, with `BUCKETS` a
/// `series` of buckets (start, evaluations, by variation) adding up to the
/// totals, over every reachable node (`nodes` says which answered and which
/// are missing), or this node with `LOCAL`.
pub fn stats(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let query = parse_stats(args)?;
    let state = ctx.state;
    let exists = state.store.view().flags.contains_key(query.key.as_str());
    let local = local_stats(state, &query.key, query.since, query.bucket_ms);
    if !exists && local.tally.total() == 0 {
        return Err(CommandError::err(format!("no such flag '{}'", query.key)));
    }
    let me = state.settings.node_id;
    if query.local || state.raft.get().is_none() {
        return Ok(render_stats(&local, &[me], &[]).into());
    }
    fn encode<T: Serialize>(v: &T) -> Bytes {
        Bytes::from(serde_json::to_vec(v).unwrap_or_default())
    }
    Ok(Action::Cluster(super::raft::ClusterOp::Gather(
        super::raft::Gather {
            body: encode(&LocalQuery::Stats {
                key: query.key,
                since: query.since,
                bucket_ms: query.bucket_ms,
            }),
            local: (me, encode(&local)),
            render: render_gathered_stats,
        },
    )))
}

/// A question one node asks the others about their node-local data.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalQuery {
    /// `FLAG.STATS key SINCE since [BUCKETS b] LOCAL`.
    Stats {
        /// The flag.
        key: String,
        /// Unix ms.
        since: u64,
        /// Series bucket width in ms, if asked for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bucket_ms: Option<u64>,
    },
    /// An experiment's units (for `EXPERIMENT.RESULTS`).
    Units {
        /// The experiment's units key.
        experiment: String,
    },
}

/// Answers another node's [`LocalQuery`] (JSON) from this node's data.
pub fn answer_local(state: &super::ServerState, body: &[u8]) -> Result<Vec<u8>, String> {
    let query: LocalQuery =
        serde_json::from_slice(body).map_err(|e| format!("malformed local query: {e}"))?;
    let answer = match query {
        LocalQuery::Stats {
            key,
            since,
            bucket_ms,
        } => serde_json::to_vec(&local_stats(state, &key, since, bucket_ms)),
        LocalQuery::Units { experiment } => {
            serde_json::to_vec(&super::experiment::local_units(state, &experiment))
        }
    };
    answer.map_err(|e| e.to_string())
}

fn render_gathered_stats(answers: Vec<(u64, Result<Bytes, String>)>) -> Reply {
    let mut merged = FlagStats::default();
    let (mut answered, mut missing) = (Vec::new(), Vec::new());
    for (id, answer) in answers {
        match answer
            .and_then(|a| serde_json::from_slice::<FlagStats>(&a).map_err(|e| e.to_string()))
        {
            Ok(stats) => {
                merged.merge(&stats);
                answered.push(id);
            }
            Err(why) => {
                tracing::debug!(node = id, %why, "no statistics from a member");
                missing.push(id);
            }
        }
    }
    answered.sort_unstable();
    missing.sort_unstable();
    render_stats(&merged, &answered, &missing)
}

/// `FLAG.STALE [DAYS n] [MATCH pattern]`: flags not evaluated for n days
/// (default 7), or serving one variation to every evaluation for n days, as
/// a map key → {why, last_evaluated, variation}.
pub fn stale(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let [days, pattern] = parse::options(&args[1..], ["DAYS", "MATCH"])?;
    let days = days
        .map(|d| parse::uint(d))
        .transpose()
        .map_err(|_| CommandError::err("DAYS must be a non-negative integer"))?
        .unwrap_or(7);
    let reader = restricted_reader(ctx);
    let view = ctx.state.store.view();
    let now = now();
    let mut keys: Vec<_> = view
        .flags
        .iter()
        .filter(|(k, _)| pattern.is_none_or(|p| crate::glob::matches(p, k.as_bytes(), false)))
        .filter(|(k, _)| readable(&reader, k))
        .collect();
    keys.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let field = |name: &'static str, value: Reply| (Reply::bulk_static(name), value);
    let pairs = keys
        .into_iter()
        .filter_map(|(k, e)| {
            ctx.state.insight.staleness(
                k,
                &**e as &dyn CountedFlag,
                e.updated_at,
                &retired(ctx.state, k),
                days,
                now,
            )
        })
        .map(|s| {
            (
                Reply::bulk(s.key.as_str()),
                Reply::Map(vec![
                    field("why", Reply::bulk_static(s.why)),
                    field("last_evaluated", time_or_nil(s.last_evaluated)),
                    field(
                        "variation",
                        s.variation.map_or(Reply::Nil, |v| Reply::bulk(v.as_str())),
                    ),
                ]),
            )
        })
        .collect();
    Ok(Reply::Map(pairs).into())
}
