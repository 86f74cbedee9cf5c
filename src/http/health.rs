//! `/livez` (the process answers; never depends on peers), `/healthz` (its
//! old name) and `/readyz` (loaded, a leader known within the staleness
//! bound, applied caught up with the known commit, not shutting down).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{Response, StatusCode};

use super::{text, Http};

fn verbose(query: &Option<String>) -> bool {
    query.as_deref().is_some_and(|q| {
        q.split('&')
            .any(|p| p == "verbose" || p.starts_with("verbose="))
    })
}

/// Renders checks the way Kubernetes' API server does: 200 `ok` when all
/// pass; otherwise 503 naming the failures. `?verbose` lists each as `[+]name ok`.
fn render(what: &str, checks: &[(&str, Result<(), String>)], verbose: bool) -> Response<Body> {
    let passed = checks.iter().all(|(_, r)| r.is_ok());
    let status = if passed {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut out = String::new();
    for (name, r) in checks {
        match r {
            Ok(()) if verbose => out.push_str(&format!("[+]{name} ok\n")),
            Ok(()) => {}
            Err(why) => out.push_str(&format!("[-]{name} failed: {why}\n")),
        }
    }
    if passed && !verbose {
        out.push_str("ok");
    } else if passed {
        out.push_str(&format!("{what} check passed\n"));
    } else {
        out.push_str(&format!("{what} check failed\n"));
    }
    text(status, out)
}

/// `GET /livez` and `/healthz`.
pub async fn livez(RawQuery(q): RawQuery) -> Response<Body> {
    render("livez", &[("ping", Ok(()))], verbose(&q))
}

/// `GET /readyz`.
pub async fn readyz(State(http): State<Arc<Http>>, RawQuery(q): RawQuery) -> Response<Body> {
    let state = &http.state;
    let shutdown = if state.shutdown.is_cancelled() {
        Err("shutting down".to_string())
    } else {
        Ok(())
    };
    let node = state.raft.get().filter(|_| !state.is_loading());
    let loaded = match node {
        Some(_) => Ok(()),
        None => Err("loading data".to_string()),
    };
    let status = node.map(|n| n.status());
    let leader = match &status {
        None => Err("not loaded".to_string()),
        Some(s) => match (&s.leader, &s.stale) {
            (None, _) => Err("no raft leader known".to_string()),
            (Some(_), Some(why)) => Err(why.clone()),
            (Some(_), None) => Ok(()),
        },
    };
    let applied = match &status {
        None => Err("not loaded".to_string()),
        Some(s) if s.applied >= s.commit => Ok(()),
        Some(s) => Err(format!(
            "applied index {} is behind the commit index {}",
            s.applied, s.commit
        )),
    };
    render(
        "readyz",
        &[
            ("shutdown", shutdown),
            ("loaded", loaded),
            ("leader", leader),
            ("applied", applied),
        ],
        verbose(&q),
    )
}
