//! `GET /metrics`: the counters `INFO` and `RAFT.INFO` read, rendered in the
//! OpenMetrics text format with prometheus-client (one source, two renderings).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use super::auth::{authenticate, credential};
use super::{text, Endpoint, Http};
use crate::metrics::get;

type Labels = Vec<(&'static str, String)>;

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
    counter(
        &mut r,
        "writes_applied",
        "Writes applied to the state",
        get(&s.writes_applied),
    );
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
        if let Err(e) = authenticate(&http.state.users, cred, peer.ip()) {
            let status = match e {
                super::auth::AuthError::Protected => StatusCode::FORBIDDEN,
                _ => StatusCode::UNAUTHORIZED,
            };
            return text(status, format!("{e}\n"));
        }
    }
    let mut resp = text(StatusCode::OK, render(&http));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}
