//! `GET /api/v1/changes`: the change stream `flagstaff:changes` as
//! Server-Sent Events. Each event's `id` is its stream id, so a browser's
//! `EventSource` resumes after a reconnect with `Last-Event-ID` exactly
//! where it stopped. Entries are read with `XRANGE` through the adapter, as
//! the caller, so a user sees only the keys it may read, and the feed ends
//! when its session or user does.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Response, StatusCode};
use bytes::Bytes;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::adapter::{command_error, ApiSession};
use super::Call;
use crate::protocol::Reply;

/// Entries read per `XRANGE`.
const BATCH: &str = "100";
/// A comment is sent this often on an idle feed, so proxies keep it open and
/// a vanished client is noticed.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// A valid stream id `R-S`.
fn stream_id(text: &str) -> Option<(u64, u32)> {
    let (r, s) = text.trim().split_once('-')?;
    Some((r.parse().ok()?, s.parse().ok()?))
}

/// One stream entry (`[id, [field, value, ...]]`) as an SSE event, the
/// fields as a JSON object (numbers as numbers, the definition as JSON).
fn event(entry: Reply) -> Option<(String, String)> {
    let Reply::Array(mut parts) = entry else {
        return None;
    };
    let fields = parts.pop()?;
    let Reply::Bulk(id) = parts.pop()? else {
        return None;
    };
    let Reply::Array(fields) = fields else {
        return None;
    };
    let mut object = Map::new();
    let id = String::from_utf8_lossy(&id).into_owned();
    object.insert("id".into(), Value::String(id.clone()));
    let mut it = fields.into_iter();
    while let (Some(Reply::Bulk(k)), Some(Reply::Bulk(v))) = (it.next(), it.next()) {
        let name = String::from_utf8_lossy(&k).into_owned();
        let value = match name.as_str() {
            "version" | "revision" | "definition" => {
                serde_json::from_slice(&v).unwrap_or(Value::Null)
            }
            _ => Value::String(String::from_utf8_lossy(&v).into_owned()),
        };
        object.insert(name, value);
    }
    let data = Value::Object(object).to_string();
    Some((
        id.clone(),
        format!("id: {id}\nevent: change\ndata: {data}\n\n"),
    ))
}

/// `GET /changes` (header `Last-Event-ID` or `?last_event_id=`): the feed,
/// from just after that id, or from now.
pub async fn changes(call: Call) -> Response<Body> {
    let state = &call.http.state;
    let resume = call
        .headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or(call.param("last_event_id"));
    let mut last = match resume {
        Some(text) => match stream_id(text) {
            Some(id) => id,
            None => {
                return super::adapter::error(
                    StatusCode::BAD_REQUEST,
                    "ERR",
                    "Last-Event-ID must be a stream id such as 42-0",
                )
            }
        },
        None => (state.store.view().revision, u32::MAX),
    };
    // Refuse at once (403, 501...) what the first read would refuse.
    let probe = {
        let Some(mut s) = ApiSession::open(state, &call.caller.user, call.caller.peer) else {
            return super::adapter::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ERR",
                "max number of clients reached",
            );
        };
        s.run(&[b"XLEN", b"flagstaff:changes"]).await
    };
    if let Reply::Error(e) = probe {
        return command_error(&e);
    }
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let http = call.http.clone();
    let caller = call.caller.clone();
    tokio::spawn(async move {
        let state = &http.state;
        if tx
            .send(Bytes::from_static(b"retry: 2000\n: connected\n\n"))
            .await
            .is_err()
        {
            return;
        }
        loop {
            let still_valid = state.users.get(&caller.user).is_some_and(|u| u.enabled())
                && caller
                    .session
                    .as_ref()
                    .is_none_or(|t| http.sessions.alive(t));
            if !still_valid {
                let _ = tx
                    .send(Bytes::from_static(
                        b"event: end\ndata: {\"error\":\"session ended\"}\n\n",
                    ))
                    .await;
                return;
            }
            let mut changed = state.changes.subscribe();
            let start = format!("({}-{}", last.0, last.1);
            let reply = match ApiSession::open(state, &caller.user, caller.peer) {
                Some(mut s) => {
                    s.run(&[
                        b"XRANGE",
                        b"flagstaff:changes",
                        start.as_bytes(),
                        b"+",
                        b"COUNT",
                        BATCH.as_bytes(),
                    ])
                    .await
                }
                None => Reply::Array(Vec::new()),
            };
            let entries = match reply {
                Reply::Array(entries) => entries,
                Reply::Error(e) => {
                    let data = serde_json::json!({"error": e.as_ref()}).to_string();
                    let _ = tx
                        .send(Bytes::from(format!("event: end\ndata: {data}\n\n")))
                        .await;
                    return;
                }
                _ => Vec::new(),
            };
            let full = entries.len().to_string() == BATCH;
            for entry in entries {
                let Some((id, text)) = event(entry) else {
                    continue;
                };
                if let Some(id) = stream_id(&id) {
                    last = id;
                }
                if tx.send(Bytes::from(text)).await.is_err() {
                    return;
                }
            }
            if full {
                continue;
            }
            tokio::select! {
                _ = changed.changed() => {}
                _ = tokio::time::sleep(KEEPALIVE) => {
                    if tx.send(Bytes::from_static(b": keepalive\n\n")).await.is_err() {
                        return;
                    }
                }
                _ = tx.closed() => return,
                _ = state.shutdown.cancelled() => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let mut r = Response::new(Body::from_stream(stream));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}
