//! `POST /api/v1/login` and `POST /api/v1/logout`. A login is RESP's `AUTH`
//! run through the adapter, so it gets the same per-address backoff, the
//! same `ACL LOG` entry and the same counters; on top, failures are also
//! backed off per user name, so spreading guesses over addresses does not help.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use serde_json::{json, Value};

use super::adapter::{error, json_response, ApiSession};
use super::body_object;
use super::session::{self, clear_cookie, set_cookie, unauthorized};
use crate::http::Http;
use crate::protocol::Reply;

/// `POST /login` `{user, password}`: a session cookie and `{user, csrf, expires_in}`.
pub async fn login(
    State(http): State<Arc<Http>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response<Body> {
    // A cross-site HTML form cannot send JSON, and a cross-site fetch that
    // does needs a CORS preflight: so no other site can log a browser in.
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if !json_body {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "ERR",
            "send the login as Content-Type: application/json",
        );
    }
    let body = tri!(body_object(body).await);
    let (Some(user), Some(password)) = (
        body.get("user").and_then(Value::as_str),
        body.get("password").and_then(Value::as_str),
    ) else {
        return error(
            StatusCode::BAD_REQUEST,
            "ERR",
            "body must be {\"user\": \"...\", \"password\": \"...\"}",
        );
    };
    if http.state.users.default_is_open() && !peer.ip().is_loopback() {
        return error(
            StatusCode::FORBIDDEN,
            "DENIED",
            &crate::http::auth::AuthError::Protected.to_string(),
        );
    }
    let now = Instant::now();
    let user_wait = http.login_backoff.wait(&user.to_string(), now);
    let Some(mut resp) = ApiSession::open(&http.state, "default", peer) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ERR",
            "max number of clients reached",
        );
    };
    // The address backoff is applied inside, as for any AUTH.
    let reply = resp
        .run(&[b"AUTH", user.as_bytes(), password.as_bytes()])
        .await;
    drop(resp);
    let ok = matches!(reply, Reply::Ok);
    let wait = if ok {
        http.login_backoff.succeeded(&user.to_string());
        user_wait
    } else {
        user_wait.max(http.login_backoff.failed(&user.to_string(), now))
    };
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    if !ok {
        return unauthorized("invalid username-password pair or user is disabled");
    }
    let (cookie, csrf) = http.sessions.create(user);
    let ttl = http.sessions.ttl();
    let mut r = json_response(
        StatusCode::OK,
        &json!({"user": user, "csrf": csrf, "expires_in": ttl.as_secs()}),
    );
    if let Ok(v) = HeaderValue::from_str(&set_cookie(&cookie, ttl, http.tls)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `POST /logout` (with the session's CSRF token): ends the session and clears the cookie.
pub async fn logout(
    State(http): State<Arc<Http>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response<Body> {
    let what = format!("POST {}/logout", super::PREFIX);
    let caller = tri!(session::admit(&http, peer, &Method::POST, &headers, &what).await);
    if let Some(token) = &caller.session {
        http.sessions.end(token);
    }
    let mut r = json_response(StatusCode::OK, &json!({"ok": true}));
    if let Ok(v) = HeaderValue::from_str(&clear_cookie(http.tls)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}
