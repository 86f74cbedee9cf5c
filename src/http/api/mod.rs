//! The admin JSON API under `/api/v1/`: a thin re-encoding of the RESP
//! commands. Each endpoint builds an argv and hands it to
//! [`adapter::ApiSession::run`], which runs it through the same table, ACL
//! check and handlers as a RESP connection logged in as the caller; the
//! reply becomes JSON and an error reply `{error, code, path?}` with the
//! status its code maps to. See docs/console.md.

/// Unwraps a `Result<_, Response>` inside a handler.
macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}

pub mod adapter;
mod changes;
mod login;
pub mod session;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use self::adapter::{command_error, error, json_response, respond, ApiSession, Shape};
use self::session::Caller;
use super::Http;
use crate::protocol::Reply;

/// FLAG.DETAIL fields that hold JSON text of any type.
const DETAIL_JSON: &[&str] = &["value"];
/// Most flags one list page reads.
const MAX_PAGE: u64 = 1000;

/// Where the API is mounted on the HTTP port.
pub const PREFIX: &str = "/api/v1";

/// The API's routes, to be nested under [`PREFIX`].
pub fn routes() -> Router<Arc<Http>> {
    Router::new()
        .route("/login", post(login::login))
        .route("/logout", post(login::logout))
        .route("/session", get(whoami))
        .route("/flags", get(flags_list))
        .route(
            "/flags/{key}",
            get(flag_get).put(flag_put).delete(flag_delete),
        )
        .route("/flags/{key}/toggle", post(flag_toggle))
        .route("/flags/{key}/rollback", post(flag_rollback))
        .route("/flags/{key}/history", get(flag_history))
        .route("/flags/{key}/evaluate", post(flag_evaluate))
        .route("/flags/{key}/stats", get(flag_stats))
        .route("/stale", get(stale))
        .route("/segments", get(segments_list))
        .route(
            "/segments/{key}",
            get(segment_get).put(segment_put).delete(segment_delete),
        )
        .route("/experiments", get(experiments_list))
        .route(
            "/experiments/{key}",
            get(experiment_get)
                .put(experiment_put)
                .delete(experiment_delete),
        )
        .route("/experiments/{key}/start", post(experiment_start))
        .route("/experiments/{key}/stop", post(experiment_stop))
        .route("/experiments/{key}/results", get(experiment_results))
        .route("/cluster", get(cluster))
        .route("/users", get(users_list))
        .route(
            "/users/{name}",
            axum::routing::put(user_put).delete(user_delete),
        )
        .route("/changes", get(changes::changes))
        .fallback(no_endpoint)
}

async fn no_endpoint() -> Response<Body> {
    error(StatusCode::NOT_FOUND, "ERR", "no such API endpoint")
}

/// An admitted API request: who it acts as and its query parameters.
pub struct Call {
    http: Arc<Http>,
    caller: Caller,
    query: HashMap<String, String>,
    headers: HeaderMap,
}

impl FromRequestParts<Arc<Http>> for Call {
    type Rejection = Response<Body>;

    async fn from_request_parts(
        parts: &mut Parts,
        http: &Arc<Http>,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        // Nested: the path seen here is below the prefix.
        let what = format!("{} {PREFIX}{}", parts.method, parts.uri.path());
        let caller = session::admit(http, peer, &parts.method, &parts.headers, &what).await?;
        let query = parts
            .uri
            .query()
            .map(|q| {
                q.split('&')
                    .filter_map(|pair| {
                        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                        Some((decode(k)?, decode(v)?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Call {
            http: http.clone(),
            caller,
            query,
            headers: parts.headers.clone(),
        })
    }
}

/// Percent-decodes a query component (`+` is a space).
fn decode(s: &str) -> Option<String> {
    let s = s.replace('+', " ");
    percent_encoding::percent_decode_str(&s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

impl Call {
    /// A RESP session acting as the caller; `Err` is a 503 when `maxclients` is reached.
    #[allow(clippy::result_large_err)]
    fn session(&self) -> Result<ApiSession<'_>, Response<Body>> {
        ApiSession::open(&self.http.state, &self.caller.user, self.caller.peer).ok_or_else(|| {
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ERR",
                "max number of clients reached",
            )
        })
    }

    /// Runs one command as the caller.
    async fn run(&self, args: &[&[u8]]) -> Result<Reply, Response<Body>> {
        Ok(self.session()?.run(args).await)
    }

    /// A query parameter, if given and not empty.
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A numeric query parameter; `Err` names it when it is not a number.
    #[allow(clippy::result_large_err)]
    fn number(&self, name: &str) -> Result<Option<u64>, Response<Body>> {
        self.param(name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    error(
                        StatusCode::BAD_REQUEST,
                        "ERR",
                        &format!("query parameter '{name}' must be a non-negative integer"),
                    )
                })
            })
            .transpose()
    }
}

/// Reads a request body; 413 over the HTTP limit.
async fn body_bytes(body: Body) -> Result<bytes::Bytes, Response<Body>> {
    axum::body::to_bytes(body, super::MAX_BODY)
        .await
        .map_err(|_| {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "ERR",
                &format!("request body over {} bytes", super::MAX_BODY),
            )
        })
}

/// Reads a JSON object body (an empty body is `{}`); 400 naming the problem otherwise.
async fn body_object(body: Body) -> Result<serde_json::Map<String, Value>, Response<Body>> {
    let bytes = body_bytes(body).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(error(
            StatusCode::BAD_REQUEST,
            "ERR",
            "request body must be a JSON object",
        )),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            "ERR",
            &format!("request body is not JSON: {e}"),
        )),
    }
}

/// The optional `REASON text` of a write: the body's `reason`, else the `reason` query parameter.
fn reason_args<'a>(body_reason: Option<&'a str>, call: &'a Call, args: &mut Vec<&'a [u8]>) {
    if let Some(r) = body_reason
        .filter(|r| !r.is_empty())
        .or(call.param("reason"))
    {
        args.push(b"REASON");
        args.push(r.as_bytes());
    }
}

/// A `{"version": n}` answer with the version as the ETag.
fn version_response(reply: Reply) -> Response<Body> {
    match reply {
        Reply::Integer(v) => {
            let mut r = json_response(StatusCode::OK, &json!({"version": v}));
            if let Ok(tag) = HeaderValue::from_str(&format!("\"{v}\"")) {
                r.headers_mut().insert(header::ETAG, tag);
            }
            r
        }
        other => respond(other, Shape::Plain, "key"),
    }
}

/// `GET /session`: who the caller is, the CSRF token of its session, and
/// which kinds of command its user may run (the console hides what it may not).
async fn whoami(call: Call) -> Response<Body> {
    let users = &call.http.state.users;
    let user = users.get(&call.caller.user);
    let can = |name: &str| -> bool {
        let Some(u) = &user else { return false };
        let Some(id) = crate::command::acl::CATALOG.id(name) else {
            return false;
        };
        u.check(&crate::auth::Request {
            cmd: id,
            args: &[],
            keys: crate::auth::Keys::None,
            channels: crate::auth::Channels::None,
        })
        .is_ok()
    };
    json_response(
        StatusCode::OK,
        &json!({
            "user": call.caller.user,
            "csrf": call.caller.csrf,
            "session": call.caller.session.is_some(),
            "can": {
                "read": can("flag.get"),
                "write": can("flag.set"),
                "segments": can("segment.set"),
                "admin": can("acl|setuser"),
                "cluster": can("raft.info"),
            },
        }),
    )
}

/// `GET /flags?match=&tag=&cursor=&count=`: one `FLAG.SCAN` page, each key
/// read with `FLAG.GET` (and kept if it has `tag`). A page can be short,
/// or empty with a non-zero cursor: keep going until the cursor is `"0"`.
async fn flags_list(call: Call) -> Response<Body> {
    let cursor = call.param("cursor").unwrap_or("0").to_string();
    let count = tri!(call.number("count"))
        .unwrap_or(100)
        .clamp(1, MAX_PAGE)
        .to_string();
    let mut args: Vec<&[u8]> = vec![b"FLAG.SCAN", cursor.as_bytes()];
    if let Some(m) = call.param("match") {
        args.extend([b"MATCH".as_slice(), m.as_bytes()]);
    }
    args.extend([b"COUNT".as_slice(), count.as_bytes()]);
    let mut session = tri!(call.session());
    let (next, keys) = match session.run(&args).await {
        Reply::Array(mut parts) if parts.len() == 2 => {
            let keys = parts.pop();
            let next = parts.pop();
            match (next, keys) {
                (Some(Reply::Bulk(c)), Some(Reply::Array(keys))) => (c, keys),
                _ => {
                    return error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "ERR",
                        "unexpected FLAG.SCAN reply",
                    )
                }
            }
        }
        Reply::Error(e) => return command_error(&e),
        _ => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ERR",
                "unexpected FLAG.SCAN reply",
            )
        }
    };
    let tag = call.param("tag");
    let mut flags = Vec::with_capacity(keys.len());
    for key in keys {
        let Reply::Bulk(key) = key else { continue };
        let Reply::Bulk(definition) = session.run(&[b"FLAG.GET", &key]).await else {
            // Deleted since the scan, or not readable: skip it.
            continue;
        };
        let Ok(Value::Object(d)) = serde_json::from_slice::<Value>(&definition) else {
            continue;
        };
        let tags = d.get("tags").cloned().unwrap_or_else(|| json!([]));
        if let Some(tag) = tag {
            if !tags.as_array().is_some_and(|t| t.iter().any(|x| x == tag)) {
                continue;
            }
        }
        flags.push(json!({
            "key": String::from_utf8_lossy(&key),
            "description": d.get("description").cloned().unwrap_or(Value::Null),
            "tags": tags,
            "on": d.get("on").cloned().unwrap_or(Value::Bool(false)),
            "version": d.get("version").cloned().unwrap_or(Value::Null),
            "updated_at": d.get("updated_at").cloned().unwrap_or(Value::Null),
            "updated_by": d.get("updated_by").cloned().unwrap_or(Value::Null),
        }));
    }
    json_response(
        StatusCode::OK,
        &json!({"cursor": String::from_utf8_lossy(&next), "flags": flags}),
    )
}

/// `GET /flags/{key}`: `FLAG.GET`, with the version as the ETag.
async fn flag_get(call: Call, Path(key): Path<String>) -> Response<Body> {
    let reply = tri!(call.run(&[b"FLAG.GET", key.as_bytes()]).await);
    let Reply::Bulk(text) = &reply else {
        return respond(reply, Shape::Plain, "flag");
    };
    let definition = adapter::to_json(Reply::Bulk(text.clone()), Shape::Plain);
    let mut r = json_response(StatusCode::OK, &definition);
    if let Some(Ok(tag)) = definition
        .get("version")
        .and_then(Value::as_u64)
        .map(|v| HeaderValue::from_str(&format!("\"{v}\"")))
    {
        r.headers_mut().insert(header::ETAG, tag);
    }
    r
}

/// The version an `If-Match` header names (`"7"`, `W/"7"` or `7`); `Err` is a 400.
#[allow(clippy::result_large_err)]
fn if_match(headers: &HeaderMap) -> Result<Option<String>, Response<Body>> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = v.to_str().unwrap_or("").trim();
    let bare = text.trim_start_matches("W/").trim_matches('"');
    if !bare.is_empty() && bare.bytes().all(|b| b.is_ascii_digit()) {
        Ok(Some(bare.to_string()))
    } else {
        Err(error(
            StatusCode::BAD_REQUEST,
            "ERR",
            "If-Match must be the flag's version as a quoted ETag, e.g. \"7\"",
        ))
    }
}

/// `PUT /flags/{key}` (body: the definition; `If-Match: "7"` → IFVERSION 7;
/// `?reason=`): `FLAG.SET`, answering `{version}`.
async fn flag_put(call: Call, Path(key): Path<String>, body: Body) -> Response<Body> {
    put_definition(call, b"FLAG.SET", key, body).await
}

async fn put_definition(call: Call, command: &[u8], key: String, body: Body) -> Response<Body> {
    let body = tri!(body_bytes(body).await);
    let version = tri!(if_match(&call.headers));
    let mut args: Vec<&[u8]> = vec![command, key.as_bytes(), &body];
    if let Some(v) = &version {
        args.extend([b"IFVERSION".as_slice(), v.as_bytes()]);
    }
    reason_args(None, &call, &mut args);
    version_response(tri!(call.run(&args).await))
}

/// `DELETE /{flags,segments}/{key}?reason=`: `{deleted: true}`, 404 if absent.
async fn delete_key(call: Call, command: &[u8], key: String, what: &str) -> Response<Body> {
    let mut args: Vec<&[u8]> = vec![command, key.as_bytes()];
    reason_args(None, &call, &mut args);
    match tri!(call.run(&args).await) {
        Reply::Integer(0) => error(
            StatusCode::NOT_FOUND,
            "ERR",
            &format!("no such {what} '{key}'"),
        ),
        Reply::Integer(_) => json_response(StatusCode::OK, &json!({"deleted": true})),
        other => respond(other, Shape::Plain, what),
    }
}

async fn flag_delete(call: Call, Path(key): Path<String>) -> Response<Body> {
    delete_key(call, b"FLAG.DEL", key, "flag").await
}

/// `POST /flags/{key}/toggle` `{on, reason}`: `FLAG.TOGGLE`, the kill switch.
async fn flag_toggle(call: Call, Path(key): Path<String>, body: Body) -> Response<Body> {
    let body = tri!(body_object(body).await);
    let on = match body.get("on") {
        Some(Value::Bool(true)) => b"ON".as_slice(),
        Some(Value::Bool(false)) => b"OFF".as_slice(),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "ERR",
                "body must name \"on\": true or false",
            )
        }
    };
    let reason = body.get("reason").and_then(Value::as_str);
    let mut args: Vec<&[u8]> = vec![b"FLAG.TOGGLE", key.as_bytes(), on];
    reason_args(reason, &call, &mut args);
    version_response(tri!(call.run(&args).await))
}

/// `POST /flags/{key}/rollback` `{version, reason}`: `FLAG.ROLLBACK`.
async fn flag_rollback(call: Call, Path(key): Path<String>, body: Body) -> Response<Body> {
    let body = tri!(body_object(body).await);
    let Some(version) = body
        .get("version")
        .and_then(Value::as_u64)
        .map(|v| v.to_string())
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "ERR",
            "body must name the \"version\" to restore",
        );
    };
    let reason = body.get("reason").and_then(Value::as_str);
    let mut args: Vec<&[u8]> = vec![b"FLAG.ROLLBACK", key.as_bytes(), version.as_bytes()];
    reason_args(reason, &call, &mut args);
    version_response(tri!(call.run(&args).await))
}

/// `GET /flags/{key}/history?count=50`: `FLAG.HISTORY`, newest first.
async fn flag_history(call: Call, Path(key): Path<String>) -> Response<Body> {
    let count = tri!(call.number("count"))
        .unwrap_or(50)
        .clamp(1, MAX_PAGE)
        .to_string();
    let reply = tri!(
        call.run(&[b"FLAG.HISTORY", key.as_bytes(), b"COUNT", count.as_bytes()])
            .await
    );
    respond(reply, Shape::Plain, "flag")
}

/// `POST /flags/{key}/evaluate` (body: the context): `FLAG.DETAIL`.
async fn flag_evaluate(call: Call, Path(key): Path<String>, body: Body) -> Response<Body> {
    let body = tri!(body_bytes(body).await);
    let mut args: Vec<&[u8]> = vec![b"FLAG.DETAIL", key.as_bytes()];
    if !body.iter().all(u8::is_ascii_whitespace) {
        args.push(&body);
    }
    respond(
        tri!(call.run(&args).await),
        Shape::JsonFields(DETAIL_JSON),
        "flag",
    )
}

/// `GET /flags/{key}/stats?since=&buckets=`: `FLAG.STATS` (501 until
/// analytics exists); `buckets` (seconds) adds the time series.
async fn flag_stats(call: Call, Path(key): Path<String>) -> Response<Body> {
    let mut args: Vec<&[u8]> = vec![b"FLAG.STATS", key.as_bytes()];
    if let Some(s) = call.param("since") {
        args.extend([b"SINCE".as_slice(), s.as_bytes()]);
    }
    if let Some(b) = call.param("buckets") {
        args.extend([b"BUCKETS".as_slice(), b.as_bytes()]);
    }
    respond(tri!(call.run(&args).await), Shape::Plain, "flag")
}

/// `GET /stale?days=&match=`: `FLAG.STALE`.
async fn stale(call: Call) -> Response<Body> {
    let mut args: Vec<&[u8]> = vec![b"FLAG.STALE"];
    if let Some(d) = call.param("days") {
        args.extend([b"DAYS".as_slice(), d.as_bytes()]);
    }
    if let Some(m) = call.param("match") {
        args.extend([b"MATCH".as_slice(), m.as_bytes()]);
    }
    respond(tri!(call.run(&args).await), Shape::Plain, "flag")
}

/// `GET /segments?match=`: `SEGMENT.LIST`.
async fn segments_list(call: Call) -> Response<Body> {
    let mut args: Vec<&[u8]> = vec![b"SEGMENT.LIST"];
    if let Some(m) = call.param("match") {
        args.extend([b"MATCH".as_slice(), m.as_bytes()]);
    }
    respond(tri!(call.run(&args).await), Shape::Plain, "segment")
}

async fn segment_get(call: Call, Path(key): Path<String>) -> Response<Body> {
    respond(
        tri!(call.run(&[b"SEGMENT.GET", key.as_bytes()]).await),
        Shape::Plain,
        "segment",
    )
}

async fn segment_put(call: Call, Path(key): Path<String>, body: Body) -> Response<Body> {
    put_definition(call, b"SEGMENT.SET", key, body).await
}

async fn segment_delete(call: Call, Path(key): Path<String>) -> Response<Body> {
    delete_key(call, b"SEGMENT.DEL", key, "segment").await
}

async fn experiments_list(call: Call) -> Response<Body> {
    respond(
        tri!(call.run(&[b"EXPERIMENT.LIST"]).await),
        Shape::Plain,
        "experiment",
    )
}

async fn experiment_get(call: Call, Path(key): Path<String>) -> Response<Body> {
    respond(
        tri!(call.run(&[b"EXPERIMENT.GET", key.as_bytes()]).await),
        Shape::Plain,
        "experiment",
    )
}

async fn experiment_put(call: Call, Path(key): Path<String>, body: Body) -> Response<Body> {
    let body = tri!(body_bytes(body).await);
    respond(
        tri!(call.run(&[b"EXPERIMENT.SET", key.as_bytes(), &body]).await),
        Shape::Plain,
        "experiment",
    )
}

async fn experiment_delete(call: Call, Path(key): Path<String>) -> Response<Body> {
    respond(
        tri!(call.run(&[b"EXPERIMENT.DEL", key.as_bytes()]).await),
        Shape::Plain,
        "experiment",
    )
}

async fn experiment_start(call: Call, Path(key): Path<String>) -> Response<Body> {
    respond(
        tri!(call.run(&[b"EXPERIMENT.START", key.as_bytes()]).await),
        Shape::Plain,
        "experiment",
    )
}

async fn experiment_stop(call: Call, Path(key): Path<String>) -> Response<Body> {
    respond(
        tri!(call.run(&[b"EXPERIMENT.STOP", key.as_bytes()]).await),
        Shape::Plain,
        "experiment",
    )
}

async fn experiment_results(call: Call, Path(key): Path<String>) -> Response<Body> {
    respond(
        tri!(call.run(&[b"EXPERIMENT.RESULTS", key.as_bytes()]).await),
        Shape::Plain,
        "experiment",
    )
}

/// `GET /cluster`: `RAFT.INFO`'s `field:value` lines as one object.
async fn cluster(call: Call) -> Response<Body> {
    match tri!(call.run(&[b"RAFT.INFO"]).await) {
        Reply::Verbatim(text) | Reply::Bulk(text) => {
            let mut info = serde_json::Map::new();
            for line in String::from_utf8_lossy(&text).lines() {
                if let Some((k, v)) = line.trim().split_once(':') {
                    if !k.starts_with('#') {
                        info.insert(k.to_string(), Value::String(v.to_string()));
                    }
                }
            }
            json_response(StatusCode::OK, &Value::Object(info))
        }
        other => respond(other, Shape::Plain, "node"),
    }
}

/// `GET /users` (admin): `ACL USERS`, then `ACL GETUSER` for each, without
/// the password hashes.
async fn users_list(call: Call) -> Response<Body> {
    let mut session = tri!(call.session());
    let names = match session.run(&[b"ACL", b"USERS"]).await {
        Reply::Array(names) => names,
        other => return respond(other, Shape::Plain, "user"),
    };
    let mut users = Vec::with_capacity(names.len());
    for name in names {
        let Reply::Bulk(name) = name else { continue };
        let reply = session.run(&[b"ACL", b"GETUSER", &name]).await;
        if let Value::Object(mut user) = adapter::to_json(reply, Shape::Plain) {
            user.remove("passwords");
            user.insert(
                "name".into(),
                Value::String(String::from_utf8_lossy(&name).into()),
            );
            users.push(Value::Object(user));
        }
    }
    json_response(StatusCode::OK, &Value::Array(users))
}

/// `PUT /users/{name}` `{rules: ["on", ">password", "~prod:*", "+@flag-read"]}` (admin): `ACL SETUSER`.
async fn user_put(call: Call, Path(name): Path<String>, body: Body) -> Response<Body> {
    let body = tri!(body_object(body).await);
    let Some(rules) = body.get("rules").and_then(Value::as_array) else {
        return error(
            StatusCode::BAD_REQUEST,
            "ERR",
            "body must hold \"rules\": an array of ACL rules",
        );
    };
    let rules: Vec<&str> = rules.iter().filter_map(Value::as_str).collect();
    let mut args: Vec<&[u8]> = vec![b"ACL", b"SETUSER", name.as_bytes()];
    args.extend(rules.iter().map(|r| r.as_bytes()));
    match tri!(call.run(&args).await) {
        Reply::Ok => json_response(StatusCode::OK, &json!({"ok": true})),
        other => respond(other, Shape::Plain, "user"),
    }
}

/// `DELETE /users/{name}` (admin): `ACL DELUSER`; the user's sessions end with it.
async fn user_delete(call: Call, Path(name): Path<String>) -> Response<Body> {
    match tri!(call.run(&[b"ACL", b"DELUSER", name.as_bytes()]).await) {
        Reply::Integer(0) => error(
            StatusCode::NOT_FOUND,
            "ERR",
            &format!("no such user '{name}'"),
        ),
        Reply::Integer(_) => json_response(StatusCode::OK, &json!({"deleted": true})),
        other => respond(other, Shape::Plain, "user"),
    }
}
