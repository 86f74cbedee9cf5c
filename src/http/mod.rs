//! The HTTP port: OFREP evaluation, Prometheus `/metrics`, `/livez` and
//! `/readyz`. Handlers re-encode what the RESP commands compute
//! ([`crate::command::flag::detail_of`], the counters INFO reads); nothing
//! here evaluates flags or counts on its own.

pub mod api;
pub mod auth;
mod console;
mod cors;
mod health;
mod metrics;
mod ofrep;
mod timer;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Method, Request, Response, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

use crate::command::ServerState;

/// Largest request body accepted (413 above it).
pub const MAX_BODY: usize = 1024 * 1024;
/// A client that has not sent its request headers within this is disconnected (slowloris).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// On shutdown, how long answers in progress may take (every handler answers
/// in microseconds; what remains is a client still sending, not worth waiting for).
const DRAIN: Duration = Duration::from_secs(2);

/// What every handler reaches: the server's state and the HTTP-only parts.
#[derive(Debug)]
pub struct Http {
    /// The server's state (store, settings, counters).
    pub state: Arc<ServerState>,
    /// Per-user request budgets.
    pub limiter: auth::RateLimiter,
    /// HTTP counters, rendered by `/metrics`.
    pub stats: HttpStats,
    /// Console login sessions.
    pub sessions: api::session::Sessions,
    /// Failed console logins by user name (the address backoff is RESP's).
    pub login_backoff: crate::auth::Backoff<String>,
    /// Whether this port is served over TLS (session cookies get `Secure`).
    pub tls: bool,
}

/// HTTP request counters (by endpoint and status class).
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Requests answered, indexed by [`Endpoint`] then by status class (2xx..5xx).
    pub requests: [[AtomicU64; 4]; Endpoint::COUNT],
    /// Connections accepted on the HTTP port.
    pub connections: AtomicU64,
}

/// The endpoints counted apart in `/metrics`.
#[derive(Debug, Clone, Copy)]
pub enum Endpoint {
    /// `POST /ofrep/v1/evaluate/flags/{key}`.
    OfrepFlag = 0,
    /// `POST /ofrep/v1/evaluate/flags`.
    OfrepBulk,
    /// `/metrics`.
    Metrics,
    /// `/livez`, `/healthz`, `/readyz`.
    Health,
    /// Anything else.
    Other,
}

impl Endpoint {
    const COUNT: usize = 5;
    const ALL: [(Endpoint, &'static str); Endpoint::COUNT] = [
        (Endpoint::OfrepFlag, "ofrep_flag"),
        (Endpoint::OfrepBulk, "ofrep_bulk"),
        (Endpoint::Metrics, "metrics"),
        (Endpoint::Health, "health"),
        (Endpoint::Other, "other"),
    ];

    fn of(path: &str) -> Endpoint {
        match path {
            "/ofrep/v1/evaluate/flags" => Endpoint::OfrepBulk,
            p if p.starts_with("/ofrep/v1/evaluate/flags/") => Endpoint::OfrepFlag,
            "/metrics" => Endpoint::Metrics,
            "/livez" | "/healthz" | "/readyz" => Endpoint::Health,
            _ => Endpoint::Other,
        }
    }
}

/// A JSON response (`Content-Type: application/json`).
pub fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A plain-text response.
pub fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A JSON string literal for `s`.
pub fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// Appends `s` as a JSON string literal (what [`quote`] returns, without
/// the allocation when nothing needs escaping).
pub fn push_quoted(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&quote(s));
    }
}

fn router(http: Arc<Http>) -> Router {
    Router::new()
        .route("/livez", get(health::livez))
        .route("/healthz", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/ofrep/v1/evaluate/flags", post(ofrep::bulk))
        .route("/ofrep/v1/evaluate/flags/{key}", post(ofrep::single))
        .nest(api::PREFIX, api::routes())
        .merge(console::routes())
        .fallback(not_found)
        .with_state(http)
}

async fn not_found() -> Response<Body> {
    json(
        StatusCode::NOT_FOUND,
        r#"{"errorCode":"GENERAL","errorDetails":"no such endpoint"}"#.into(),
    )
}

/// Serves the HTTP port until `stop`, then lets in-flight requests finish.
/// The server cancels `stop` only after the RESP side has drained, so during
/// a graceful shutdown `/readyz` answers 503 (`shutting down`) first.
/// With `tls` (`--tls-http`), every connection is HTTPS with the client port's certificate.
pub async fn serve(
    listener: TcpListener,
    state: Arc<ServerState>,
    stop: CancellationToken,
    tls: Option<Arc<crate::auth::tls::Tls>>,
) {
    let http = Arc::new(Http {
        limiter: auth::RateLimiter::new(state.settings.http_rate_limit),
        stats: HttpStats::default(),
        sessions: api::session::Sessions::new(Duration::from_secs(state.settings.session_ttl)),
        login_backoff: crate::auth::Backoff::default(),
        // Under --tls-http the session cookie is marked Secure.
        tls: tls.is_some(),
        state: state.clone(),
    });
    let app = router(http.clone());
    let tracker = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        crate::metrics::add(&http.stats.connections, 1);
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(Connection {
            http: http.clone(),
            app: app.clone(),
            peer,
            last_login: auth::LastLogin::default(),
        });
        let shutdown = stop.clone();
        // The configs of this moment: a reload changes the next handshake only.
        let acceptor = tls
            .as_ref()
            .map(|t| tokio_rustls::TlsAcceptor::from(t.current().clients.clone()));
        tracker.spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                handle(conn.clone(), req)
            });
            let Some(acceptor) = acceptor else {
                return serve_connection(stream, service, shutdown).await;
            };
            // The handshake counts against the same slowloris bound as the headers.
            let handshake = tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream));
            let stream = tokio::select! {
                _ = shutdown.cancelled() => return,
                done = handshake => match done {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "HTTPS handshake failed");
                        return;
                    }
                    Err(_) => return,
                },
            };
            serve_connection(stream, service, shutdown).await;
        });
    }
    tracker.close();
    let grace = Duration::from_secs(state.settings.shutdown_timeout).min(DRAIN);
    let _ = tokio::time::timeout(grace, tracker.wait()).await;
}

/// Serves HTTP/1.1 on one connection until it ends or `shutdown`.
async fn serve_connection<IO, S>(stream: IO, service: S, shutdown: CancellationToken)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = Body>,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(timer::ConnectionTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        // One buffer, one `send`: answers are a few hundred bytes, and the
        // vectored path's queue cost ~1.4k instructions per request more
        // than copying the body behind the head (docs/benchmarks.md).
        .writev(false)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    // The shutdown future is polled once, which leaves this task's waker
    // with the token; after that each wake-up only asks the token whether it
    // is cancelled. Polling the future again on every request (`select!`)
    // re-checked its waker under a second lock, ~370 instructions each.
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let mut listening = false;
    let stopping = std::future::poll_fn(|cx| {
        if conn.as_mut().poll(cx).is_ready() {
            return Poll::Ready(false);
        }
        if !listening || shutdown.is_cancelled() {
            listening = true;
            if cancelled.as_mut().poll(cx).is_ready() {
                return Poll::Ready(true);
            }
        }
        Poll::Pending
    })
    .await;
    if stopping {
        conn.as_mut().graceful_shutdown();
        let _ = conn.await;
    }
}

/// What every request on one connection reaches.
struct Connection {
    http: Arc<Http>,
    app: Router,
    peer: SocketAddr,
    /// The connection's last login, which spares the next request with the
    /// same credential the password check.
    last_login: auth::LastLogin,
}

/// Every request: CORS, then the router, then the counters.
async fn handle(
    conn: Arc<Connection>,
    mut req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    let http = &conn.http;
    let endpoint = Endpoint::of(req.uri().path());
    let settings = &http.state.settings;
    // CORS headers go only to listed origins: without any, no lookup.
    let origin = if settings.http_cors_origins.is_empty() {
        None
    } else {
        req.headers().get(header::ORIGIN).cloned()
    };
    let response = match cors::preflight(settings, &req) {
        Some(r) => r,
        // The hot path, every OFREP evaluation: straight to its handler.
        None if matches!(endpoint, Endpoint::OfrepFlag)
            && req.method() == Method::POST
            && ofrep::is_single(req.uri().path()) =>
        {
            let mut r = ofrep::evaluate_one(http, conn.peer, Some(&conn.last_login), req).await;
            cors::decorate(settings, origin.as_ref(), &mut r);
            r
        }
        None => {
            req.extensions_mut().insert(ConnectInfo(conn.peer));
            // Boxed: the router's future stays out of the hot path's, which
            // hyper moves on every request.
            let mut r = Box::pin(conn.app.clone().call(req.map(Body::new))).await?;
            cors::decorate(settings, origin.as_ref(), &mut r);
            r
        }
    };
    let class = (response.status().as_u16() / 100).clamp(2, 5) as usize - 2;
    crate::metrics::add(&http.stats.requests[endpoint as usize][class], 1);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_quoted_writes_what_serde_json_writes() {
        for s in [
            "",
            "plain",
            "a\"b",
            "back\\slash",
            "tab\there",
            "\u{1}",
            "é ✓ \u{7f}",
            "new\nline",
        ] {
            let mut out = String::from("x");
            push_quoted(&mut out, s);
            assert_eq!(out, format!("x{}", quote(s)), "{s:?}");
        }
    }
}
