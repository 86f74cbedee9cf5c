//! OFREP 0.3.0: `POST /ofrep/v1/evaluate/flags/{key}` and the bulk
//! `POST /ofrep/v1/evaluate/flags`. Each answer re-encodes
//! [`detail_of`], the evaluation `FLAG.DETAIL` replies with.

// The `Err` of these helpers is the refusal sent as is, once per request.
#![allow(clippy::result_large_err)]

use std::borrow::Cow;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::auth::{credential, login, AuthError, Identity};
use super::{json, push_quoted, quote, Http, MAX_BODY};
use crate::command::flag::{detail_of, Detail, DetailError};
use crate::flag::context::AttrValue;
use crate::flag::Context;

/// The request body: `{"context": {...}}` (other members are ignored).
#[derive(Deserialize)]
struct EvaluationRequest<'a> {
    #[serde(borrow, default)]
    context: Option<&'a RawValue>,
}

/// An OFREP failure body: `{key?, errorCode, errorDetails}`.
fn failure(status: StatusCode, key: Option<&str>, code: &str, details: &str) -> Response<Body> {
    let key = key.map_or(String::new(), |k| format!("\"key\":{},", quote(k)));
    json(
        status,
        format!(
            "{{{key}\"errorCode\":{},\"errorDetails\":{}}}",
            quote(code),
            quote(details)
        ),
    )
}

/// Who the request acts as, or the response refusing it (401, 403, 429, 503).
async fn admit(
    http: &Http,
    peer: SocketAddr,
    headers: &HeaderMap,
    path: &str,
    key: Option<&str>,
) -> Result<Identity, Response<Body>> {
    let identity = login(&http.state, credential(headers), peer, path)
        .await
        .map_err(|e| {
            let status = match e {
                AuthError::Protected => StatusCode::FORBIDDEN,
                AuthError::Missing | AuthError::Wrong => StatusCode::UNAUTHORIZED,
            };
            let mut r = failure(status, key, "GENERAL", &e.to_string());
            if status == StatusCode::UNAUTHORIZED {
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            r
        })?;
    if let Err(wait) = http.limiter.take(&identity.user) {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut r = failure(
            StatusCode::TOO_MANY_REQUESTS,
            key,
            "GENERAL",
            &format!(
                "rate limit exceeded for user {}; retry after {secs} s",
                identity.user
            ),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return Err(r);
    }
    if http.state.is_loading() {
        let mut r = failure(
            StatusCode::SERVICE_UNAVAILABLE,
            key,
            "GENERAL",
            "flagstaff is loading its data",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return Err(r);
    }
    Ok(identity)
}

/// Reads the body; 413 over [`MAX_BODY`].
async fn read_body(body: Body, key: Option<&str>) -> Result<bytes::Bytes, Response<Body>> {
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        failure(
            StatusCode::PAYLOAD_TOO_LARGE,
            key,
            "GENERAL",
            &format!("request body over {MAX_BODY} bytes"),
        )
    })
}

/// The raw context text of a request body; an empty body is an empty context.
fn context_text<'a>(body: &'a [u8], key: Option<&str>) -> Result<&'a str, Response<Body>> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Ok(""),
        Some(b'{') => {}
        Some(_) => {
            return Err(failure(
                StatusCode::BAD_REQUEST,
                key,
                "PARSE_ERROR",
                "request body must be a JSON object: {\"context\": {...}}",
            ))
        }
    }
    let request: EvaluationRequest<'_> = serde_json::from_slice(body).map_err(|e| {
        failure(
            StatusCode::BAD_REQUEST,
            key,
            "PARSE_ERROR",
            &format!("request body is not an OFREP evaluation request: {e}"),
        )
    })?;
    Ok(request.context.map_or("", |c| c.get()))
}

/// Parses a context the way `FLAG.DETAIL` does; OpenFeature's `targetingKey`
/// is flagstaff's `key` (unless the context also has a `key`).
fn parse_context(text: &str) -> Result<Context<'_>, String> {
    if text.is_empty() {
        return Ok(Context::empty());
    }
    let ctx = Context::parse(text.as_bytes()).map_err(|e| e.to_string())?;
    if ctx.get("key").is_none() {
        if let Some(AttrValue::Str(k)) = ctx.get("targetingKey").cloned() {
            return Ok(ctx.with("key", AttrValue::Str(k)));
        }
    }
    Ok(ctx)
}

/// `"<revision>-<hash of user, key, context and what else moves an answer>"`:
/// a new flag set or a different context gives a different tag. `volatile`
/// carries what changes answers without a new revision: staleness (in the
/// metadata) and, for flags that read `$now`, the current second.
fn etag(revision: u64, user: &str, key: &str, context: &str, volatile: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [user, key, context, volatile] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    let mut tag = format!("\"{revision}-");
    for b in digest.iter().take(10) {
        tag.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        tag.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    tag.push('"');
    tag
}

/// The `volatile` part of [`etag`] for answers from these flags (`stale`:
/// whether the node serves stale data, as the answers' metadata says).
fn volatile<'a>(
    stale: bool,
    view: &crate::store::StateView,
    keys: impl IntoIterator<Item = &'a str>,
) -> Cow<'static, str> {
    let uses_now = keys
        .into_iter()
        .any(|k| view.flags.get(k).is_some_and(|e| e.compiled.uses_now));
    if !uses_now {
        return Cow::Borrowed(if stale { "true:" } else { "false:" });
    }
    let now = (crate::command::flag::now_ms() / 1000.0).floor();
    Cow::Owned(format!("{stale}:{now}"))
}

/// Whether `If-None-Match` names `tag` (weak tags and `*` included).
fn matches(headers: &HeaderMap, tag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| t == "*" || t.trim_start_matches("W/") == tag)
}

fn not_modified(tag: &str) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NOT_MODIFIED;
    if let Ok(v) = HeaderValue::from_str(tag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

fn with_etag(mut r: Response<Body>, tag: &str) -> Response<Body> {
    if let Ok(v) = HeaderValue::from_str(tag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

/// One flag's OFREP object: `evaluationSuccess`, or the failure with its
/// status (404 `FLAG_NOT_FOUND`, 400 `INVALID_CONTEXT`, 400
/// `TARGETING_KEY_MISSING` when a rollout split by targeting key served a
/// context without one).
fn encode(key: &str, d: &Detail) -> (StatusCode, String) {
    match &d.result {
        Ok(s) if s.targeting_key_missing => (
            StatusCode::BAD_REQUEST,
            failure_body(
                key,
                "TARGETING_KEY_MISSING",
                &format!(
                    "flag {key} splits users by targeting key and the context has no targetingKey"
                ),
            ),
        ),
        Ok(s) => {
            // Written straight into one buffer: this is the hot path of every
            // OFREP evaluation.
            let value = std::str::from_utf8(&s.value).unwrap_or("null");
            let mut out = String::with_capacity(160 + key.len() + value.len());
            out.push_str("{\"key\":");
            push_quoted(&mut out, key);
            out.push_str(",\"value\":");
            out.push_str(value);
            out.push_str(",\"reason\":\"");
            out.push_str(s.openfeature_reason);
            out.push_str("\",\"variant\":");
            push_quoted(&mut out, &s.variation);
            let _ = write!(
                out,
                ",\"metadata\":{{\"version\":{},\"revision\":{},\"stale\":{}",
                d.version.unwrap_or(0),
                d.revision,
                d.stale
            );
            match &s.reason {
                crate::flag::Reason::RuleMatch { id: Some(id), .. } => {
                    out.push_str(",\"rule_id\":");
                    push_quoted(&mut out, id);
                }
                crate::flag::Reason::PrerequisiteFailed(p) => {
                    out.push_str(",\"prerequisite\":");
                    push_quoted(&mut out, p);
                }
                _ => {}
            }
            out.push_str("}}");
            (StatusCode::OK, out)
        }
        Err(e) => {
            let (status, code, details) = match e {
                DetailError::FlagNotFound => (
                    StatusCode::NOT_FOUND,
                    "FLAG_NOT_FOUND",
                    format!("flag {key} was not found"),
                ),
                DetailError::MalformedContext(why) => {
                    (StatusCode::BAD_REQUEST, "INVALID_CONTEXT", why.clone())
                }
            };
            (status, failure_body(key, code, &details))
        }
    }
}

/// An `evaluationFailure` object: `key`, `errorCode`, `errorDetails`.
fn failure_body(key: &str, code: &str, details: &str) -> String {
    format!(
        "{{\"key\":{},\"errorCode\":\"{code}\",\"errorDetails\":{}}}",
        quote(key),
        quote(details)
    )
}

/// `POST /ofrep/v1/evaluate/flags/{key}`.
pub async fn single(
    State(http): State<Arc<Http>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request<Body>,
) -> Response<Body> {
    // The whole request, not the `Uri` and `HeaderMap` extractors: those
    // clone the header map on every evaluation.
    let (parts, body) = request.into_parts();
    let (uri, headers) = (&parts.uri, &parts.headers);
    // The raw segment: axum's own decoding would refuse invalid UTF-8 with a
    // plain-text body, and OFREP clients expect JSON.
    let raw = uri.path().rsplit('/').next().unwrap_or("");
    let key = match percent_encoding::percent_decode_str(raw).decode_utf8() {
        Ok(k) => k.into_owned(),
        Err(_) => {
            let lossy = percent_encoding::percent_decode_str(raw)
                .decode_utf8_lossy()
                .into_owned();
            return failure(
                StatusCode::BAD_REQUEST,
                Some(&lossy),
                "PARSE_ERROR",
                "the flag key is not valid UTF-8 once percent-decoded",
            );
        }
    };
    let key = key.as_str();
    let identity = match admit(&http, peer, headers, uri.path(), Some(key)).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    if !identity.may_read(key) {
        return failure(
            StatusCode::FORBIDDEN,
            Some(key),
            "GENERAL",
            &format!(
                "user {} has no permission to read flag {key}",
                identity.user
            ),
        );
    }
    let body = match read_body(body, Some(key)).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let text = match context_text(&body, Some(key)) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let view = http.state.store.view();
    let detail = detail_of(&http.state, &view, Some(key), parse_context(text));
    let (status, out) = encode(key, &detail);
    if status != StatusCode::OK {
        return json(status, out);
    }
    let tag = etag(
        view.revision,
        &identity.user,
        key,
        text,
        &volatile(detail.stale, &view, [key]),
    );
    if matches(headers, &tag) {
        return not_modified(&tag);
    }
    with_etag(json(status, out), &tag)
}

/// `POST /ofrep/v1/evaluate/flags`: every flag the user may read, sorted by key.
pub async fn bulk(
    State(http): State<Arc<Http>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response<Body> {
    let identity = match admit(&http, peer, &headers, "/ofrep/v1/evaluate/flags", None).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let body = match read_body(body, None).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let text = match context_text(&body, None) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let context = match parse_context(text) {
        Ok(c) => c,
        Err(why) => return failure(StatusCode::BAD_REQUEST, None, "INVALID_CONTEXT", &why),
    };
    let view = http.state.store.view();
    let mut keys: Vec<&str> = view
        .flags
        .keys()
        .map(|k| &**k)
        .filter(|k| identity.may_read(k))
        .collect();
    keys.sort_unstable();
    let tag = etag(
        view.revision,
        &identity.user,
        "",
        text,
        &volatile(http.state.is_stale(), &view, keys.iter().copied()),
    );
    if matches(&headers, &tag) {
        return not_modified(&tag);
    }
    let mut out = String::from("{\"flags\":[");
    for (i, key) in keys.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let detail = detail_of(&http.state, &view, Some(key), Ok(context.clone()));
        out.push_str(&encode(key, &detail).1);
    }
    out.push_str("]}");
    with_etag(json(StatusCode::OK, out), &tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targeting_key_becomes_the_key_unless_one_is_given() {
        let c = parse_context(r#"{"targetingKey":"u1"}"#).unwrap();
        assert_eq!(c.key(), Some("u1"));
        let c = parse_context(r#"{"targetingKey":"u1","key":"k"}"#).unwrap();
        assert_eq!(c.key(), Some("k"));
        assert!(parse_context("[1]").is_err());
        assert_eq!(parse_context("").unwrap().key(), None);
    }

    #[test]
    fn etag_is_the_revision_and_20_hex_digits() {
        let tag = etag(42, "default", "k", "{}", "false:");
        let inner = tag.strip_prefix("\"42-").and_then(|t| t.strip_suffix('"'));
        let hex = inner.unwrap_or_default();
        assert_eq!(hex.len(), 20, "{tag}");
        assert!(hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }

    #[test]
    fn volatile_is_staleness_then_the_second_only_for_now() {
        let view = crate::store::StateView::default();
        assert_eq!(volatile(false, &view, ["k"]), "false:");
        assert_eq!(volatile(true, &view, ["k"]), "true:");
    }

    #[test]
    fn if_none_match_accepts_weak_tags_lists_and_star() {
        let tag = etag(7, "default", "", "{}", "false:");
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"x\", W/{tag}")).unwrap(),
        );
        assert!(matches(&h, &tag));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(matches(&h, &tag));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"7-00\""));
        assert!(!matches(&h, &tag));
        assert_ne!(tag, etag(7, "default", "", "{\"a\":1}", "false:"));
        assert_ne!(tag, etag(8, "default", "", "{}", "false:"));
        assert_ne!(tag, etag(7, "default", "", "{}", "true:"));
        assert_ne!(tag, etag(7, "default", "", "{}", "false:1764633600"));
    }
}
