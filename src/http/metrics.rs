//! `GET /metrics`: the counters `INFO` and `RAFT.INFO` read, rendered in the
//! OpenMetrics text format with prometheus-client (one source, two renderings).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::auth::{credential, login};
use super::{text, Endpoint, Http};
use crate::metrics::get;

type Labels = Vec<(&'static str, String)>;

/// A [`crate::metrics::Histogram`] read at one instant, ready to encode.
#[derive(Debug)]
struct Buckets {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl Buckets {
    /// The histogram's values times `scale` (1e-6 turns microseconds into seconds).
    fn of(h: &crate::metrics::Histogram, scale: f64) -> Self {
        let buckets = h
            .buckets()
            .into_iter()
            .map(|(bound, n)| {
                let le = if bound == u64::MAX {
                    f64::INFINITY
                } else {
                    bound as f64 * scale
                };
                (le, n)
            })
            .collect::<Vec<_>>();
        Buckets {
            sum: h.sum() as f64 * scale,
            count: buckets.iter().map(|(_, n)| n).sum(),
            buckets,
        }
    }
}

impl EncodeMetric for Buckets {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// A counter family with one label, from `(label value, count)` pairs.
fn labelled(
    r: &mut Registry,
    name: &str,
    help: &str,
    label: &'static str,
    values: impl IntoIterator<Item = (String, u64)>,
) {
    let family = Family::<Labels, Counter<u64>>::default();
    for (value, n) in values {
        family.get_or_create(&vec![(label, value)]).inc_by(n);
    }
    r.register(name, help, family);
}

/// A counter family in seconds with one label, from `(label value, seconds)` pairs.
fn labelled_seconds(
    r: &mut Registry,
    name: &str,
    help: &str,
    label: &'static str,
    values: impl IntoIterator<Item = (String, f64)>,
) {
    let family = Family::<Labels, Counter<f64, AtomicU64>>::default();
    for (value, secs) in values {
        family.get_or_create(&vec![(label, value)]).inc_by(secs);
    }
    r.register_with_unit(name, help, Unit::Seconds, family);
}

/// Per-command, error and ACL counters: what `INFO commandstats`,
/// `INFO errorstats` and `INFO stats` show.
fn commands(r: &mut Registry, s: &crate::metrics::Stats) {
    let used = || {
        crate::command::SLOT_NAMES
            .iter()
            .zip(&s.commands)
            .filter(|(_, c)| get(&c.calls) + get(&c.rejected) > 0)
    };
    labelled(
        r,
        "commands",
        "Commands run, by command (INFO commandstats calls)",
        "cmd",
        used().map(|(n, c)| (n.to_string(), get(&c.calls))),
    );
    labelled_seconds(
        r,
        "commands_duration",
        "Time spent running each command (INFO commandstats usec)",
        "cmd",
        used().map(|(n, c)| (n.to_string(), get(&c.nanos) as f64 / 1e9)),
    );
    labelled(
        r,
        "commands_rejected_calls",
        "Commands refused before running, by command (INFO commandstats rejected_calls)",
        "cmd",
        used().map(|(n, c)| (n.to_string(), get(&c.rejected))),
    );
    labelled(
        r,
        "commands_failed_calls",
        "Commands that ran and answered an error, by command (INFO commandstats failed_calls)",
        "cmd",
        used().map(|(n, c)| (n.to_string(), get(&c.failed))),
    );
    r.register_with_unit(
        "command_duration",
        "Time each command took to run, all commands together",
        Unit::Seconds,
        Buckets::of(&s.command_duration, 1e-6),
    );
    labelled(
        r,
        "errors",
        "Error replies by kind, the error's first word (INFO errorstats)",
        "kind",
        s.errors.snapshot(),
    );
    labelled(
        r,
        "acl_denied",
        "Accesses ACL refused, by reason (INFO acl_access_denied_*)",
        "reason",
        [
            ("auth", &s.acl_denied_auth),
            ("cmd", &s.acl_denied_cmd),
            ("key", &s.acl_denied_key),
            ("channel", &s.acl_denied_channel),
        ]
        .map(|(reason, n)| (reason.to_string(), get(n))),
    );
}

/// The storage paths' counters: INFO persistence's `wal_*` and `snapshot*`.
fn storage(r: &mut Registry) {
    let disk = &crate::metrics::STORAGE;
    counter(
        r,
        "writes_applied",
        "Write requests applied to the state (INFO writes_applied)",
        get(&disk.writes_applied),
    );
    r.register_with_unit(
        "wal_fsync_duration",
        "Time each write-ahead log fdatasync took",
        Unit::Seconds,
        Buckets::of(&disk.wal_fsync, 1e-6),
    );
    r.register(
        "wal_batch_records",
        "Records written per write-ahead log batch (group commit)",
        Buckets::of(&disk.wal_batch, 1.0),
    );
    counter(
        r,
        "snapshots",
        "Snapshots built on this node",
        get(&disk.snapshots),
    );
    r.register_with_unit(
        "snapshot_duration",
        "Time each snapshot built here took to build and write",
        Unit::Seconds,
        Buckets::of(&disk.snapshot_duration, 1e-6),
    );
}

fn counter(r: &mut Registry, name: &str, help: &str, v: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(v);
    r.register(name, help, c);
}

fn gauge(r: &mut Registry, name: &str, help: &str, v: i64) {
    let g = Gauge::<i64>::default();
    g.set(v);
    r.register(name, help, g);
}

/// The exposition text for the server's current counters.
pub fn render(http: &Http) -> String {
    let st = &http.state;
    let s = &st.stats;
    let mut r = Registry::with_prefix("flagstaff");
    gauge(
        &mut r,
        "up",
        "Whether the server answers (always 1 when scraped)",
        1,
    );
    r.register(
        "build",
        "Build information",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION").to_string())]),
    );
    gauge(
        &mut r,
        "uptime_seconds",
        "Seconds since the process started",
        st.started.elapsed().as_secs() as i64,
    );
    gauge(
        &mut r,
        "loading",
        "1 while the node loads its data",
        i64::from(st.is_loading()),
    );
    gauge(
        &mut r,
        "connected_clients",
        "RESP client connections open",
        st.clients.count() as i64,
    );
    counter(
        &mut r,
        "connections_received",
        "RESP connections accepted",
        get(&s.connections_received),
    );
    counter(
        &mut r,
        "rejected_connections",
        "RESP connections refused (max clients, protected mode)",
        get(&s.rejected_connections),
    );
    counter(
        &mut r,
        "commands_processed",
        "RESP commands executed (refused ones included)",
        get(&s.commands_processed),
    );
    counter(
        &mut r,
        "flag_evaluations",
        "Flag evaluations answered (RESP and HTTP)",
        get(&s.evaluations),
    );
    let reasons = Family::<Labels, Counter<u64>>::default();
    for (name, n) in crate::metrics::REASONS.iter().zip(&s.evaluation_reasons) {
        reasons
            .get_or_create(&vec![("reason", name.to_string())])
            .inc_by(get(n));
    }
    r.register(
        "flag_evaluation_reasons",
        "Flag evaluations by reason (FLAG.DETAIL's names)",
        reasons,
    );
    commands(&mut r, s);
    storage(&mut r);
    counter(
        &mut r,
        "net_input_bytes",
        "Bytes read from RESP clients",
        get(&s.net_input_bytes),
    );
    counter(
        &mut r,
        "net_output_bytes",
        "Bytes written to RESP clients",
        get(&s.net_output_bytes),
    );
    counter(
        &mut r,
        "protocol_errors",
        "RESP connections closed for a protocol error",
        get(&s.protocol_errors),
    );
    gauge(
        &mut r,
        "pubsub_channels",
        "Channels with at least one subscriber",
        st.hub.channels(None).len() as i64,
    );
    gauge(
        &mut r,
        "pubsub_patterns",
        "Pattern subscriptions",
        st.hub.numpat() as i64,
    );
    counter(
        &mut r,
        "pubsub_disconnections",
        "Subscribers disconnected for exceeding their output buffer",
        get(&st.hub.disconnected),
    );
    let counts = st.store.counts();
    gauge(&mut r, "flags", "Flags stored", counts.flags as i64);
    gauge(
        &mut r,
        "segments",
        "Segments stored",
        counts.segments as i64,
    );
    gauge(
        &mut r,
        "revision",
        "Revision of the last applied write",
        counts.revision as i64,
    );
    gauge(
        &mut r,
        "stale",
        "1 when this node's answers may be out of date",
        i64::from(st.is_stale()),
    );
    gauge(
        &mut r,
        "resident_memory_bytes",
        "Resident set size of the process",
        crate::metrics::rss_bytes() as i64,
    );
    if let Some(node) = st.raft.get() {
        let status = node.status();
        gauge(&mut r, "raft_term", "Current raft term", status.term as i64);
        gauge(
            &mut r,
            "raft_is_leader",
            "1 on the raft leader",
            i64::from(status.is_leader),
        );
        gauge(
            &mut r,
            "raft_leader_id",
            "Id of the known leader (-1: none)",
            status.leader.map_or(-1, |l| l as i64),
        );
        gauge(
            &mut r,
            "raft_commit_index",
            "Commit index this node knows of",
            status.commit as i64,
        );
        gauge(
            &mut r,
            "raft_last_applied_index",
            "Last applied log index",
            status.applied as i64,
        );
        gauge(
            &mut r,
            "raft_last_log_index",
            "Last log index",
            status.last_log as i64,
        );
        let lag = Family::<Labels, Gauge<i64>>::default();
        for (id, behind) in &status.lag {
            lag.get_or_create(&vec![("follower", id.to_string())])
                .set(*behind as i64);
        }
        r.register(
            "raft_follower_lag_entries",
            "Entries a member lags behind this leader",
            lag,
        );
        gauge(
            &mut r,
            "raft_log_entries",
            "Entries held in the log since the last compaction",
            node.log_entries() as i64,
        );
        // Read at what storage holds (as XLEN does): a write applied to the
        // view but not yet persisted must not hide the gauge.
        let readable = node.readable_revision(st.store.view().revision);
        if let Ok(n) = node.stream_len(readable) {
            gauge(
                &mut r,
                "stream_length",
                "Entries in the change stream flagstaff:changes (XLEN)",
                n as i64,
            );
        }
        let (wal, state) = node.disk_bytes();
        gauge(
            &mut r,
            "wal_bytes",
            "Bytes of the write-ahead log on disk",
            wal as i64,
        );
        gauge(
            &mut r,
            "state_bytes",
            "Bytes of the state store on disk",
            state as i64,
        );
    }
    let requests = Family::<Labels, Counter<u64>>::default();
    for (endpoint, name) in Endpoint::ALL {
        for (class, code) in ["2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
            let n = get(&http.stats.requests[endpoint as usize][class]);
            if n > 0 {
                requests
                    .get_or_create(&vec![
                        ("endpoint", name.to_string()),
                        ("code", code.to_string()),
                    ])
                    .inc_by(n);
            }
        }
    }
    r.register(
        "http_requests",
        "HTTP requests answered, by endpoint and status class",
        requests,
    );
    counter(
        &mut r,
        "http_connections",
        "HTTP connections accepted",
        get(&http.stats.connections),
    );
    let mut out = String::with_capacity(8192);
    if encode(&mut out, &r).is_err() {
        out.clear();
    }
    out
}

/// `GET /metrics`; credentials only with `--metrics-auth yes`, protected mode otherwise.
pub async fn metrics(
    State(http): State<Arc<Http>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response<Body> {
    let settings = &http.state.settings;
    let cred = if settings.metrics_auth {
        credential(&headers)
    } else {
        None
    };
    let unchecked = !settings.metrics_auth && !http.state.users.default_is_open();
    if !unchecked {
        if let Err(e) = login(&http.state, cred, peer, "/metrics").await {
            let status = match e {
                super::auth::AuthError::Protected => StatusCode::FORBIDDEN,
                _ => StatusCode::UNAUTHORIZED,
            };
            return text(status, format!("{e}\n"));
        }
    }
    // Counting the change stream and reading /proc touch the disk: off the runtime thread.
    let body = tokio::task::spawn_blocking(move || render(&http))
        .await
        .unwrap_or_default();
    let mut resp = text(StatusCode::OK, body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}
