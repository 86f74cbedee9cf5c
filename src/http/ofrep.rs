//! OFREP 0.3.0: `POST /ofrep/v1/evaluate/flags/{key}` and the bulk
//! `POST /ofrep/v1/evaluate/flags`. Each answer re-encodes
//! [`detail_of`], the evaluation `FLAG.DETAIL` replies with.

// The `Err` of these helpers is the refusal sent as is, once per request.
#![allow(clippy::result_large_err)]

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::auth::{credential, login_cached, AuthError, Identity, LastLogin};
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
    last: Option<&LastLogin>,
    headers: &HeaderMap,
    path: &str,
    key: Option<&str>,
) -> Result<Identity, Response<Body>> {
    let identity = login_cached(&http.state, last, credential(headers), peer, path)
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

/// Reads the body; 413 over [`MAX_BODY`] (or when the client breaks it off).
/// A body that arrives as one chunk (every small request) is that chunk,
/// not a copy.
async fn read_body<B>(mut body: B, key: Option<&str>) -> Result<Bytes, Response<Body>>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    let refuse = || {
        failure(
            StatusCode::PAYLOAD_TOO_LARGE,
            key,
            "GENERAL",
            &format!("request body over {MAX_BODY} bytes"),
        )
    };
    let mut whole: Option<Bytes> = None;
    let mut joined = bytes::BytesMut::new();
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        // Trailers carry no body bytes.
        let Ok(data) = frame.map_err(|_| refuse())?.into_data() else {
            continue;
        };
        match whole.take() {
            None if joined.is_empty() => whole = Some(data),
            first => {
                joined.extend_from_slice(first.as_deref().unwrap_or_default());
                joined.extend_from_slice(&data);
            }
        }
        if whole.as_ref().map_or(joined.len(), Bytes::len) > MAX_BODY {
            return Err(refuse());
        }
    }
    Ok(whole.unwrap_or_else(|| joined.freeze()))
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

/// A request's context: its raw bytes (what the ETag hashes) and the
/// context parsed from them, or why it does not parse.
type RequestContext<'a> = (&'a [u8], Result<Context<'a>, String>);

/// The context of a request body: its raw text (what the ETag hashes) and
/// the context parsed from it, or the response refusing the body.
fn request_context<'a>(
    body: &'a [u8],
    key: Option<&str>,
) -> Result<RequestContext<'a>, Response<Body>> {
    if let Some((text, context)) = sole_context(body) {
        return Ok((text, Ok(targeting_key(context))));
    }
    let text = context_text(body, key)?;
    Ok((text.as_bytes(), parse_context(text)))
}

/// The context of a body that is exactly `{"context":{...}}` (JSON
/// whitespace around the tokens allowed), the shape OpenFeature SDKs send,
/// parsed in one scan instead of an envelope scan and then a context scan.
/// `None` for anything else (other members, an escaped name, a value that
/// is not an object the context parse accepts): such a body takes the
/// envelope scan, which gives the answer and the errors it always gave.
/// When this accepts a body, the envelope scan would have found the same
/// context text: the body is the one member around one complete object.
fn sole_context(body: &[u8]) -> Option<(&[u8], Context<'_>)> {
    let inner = trim_json(body).strip_prefix(b"{")?.strip_suffix(b"}")?;
    let inner = trim_json(inner).strip_prefix(b"\"context\"")?;
    let value = trim_json(trim_json(inner).strip_prefix(b":")?);
    if value.first() != Some(&b'{') {
        return None;
    }
    // The parse refuses anything after the object (`{..},"x":1`), and
    // text that is not UTF-8.
    let context = Context::parse(value).ok()?;
    Some((value, context))
}

/// `s` without JSON whitespace at either end.
fn trim_json(s: &[u8]) -> &[u8] {
    let ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let start = s.iter().position(|b| !ws(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !ws(b)).map_or(start, |i| i + 1);
    &s[start..end]
}

/// Parses a context the way `FLAG.DETAIL` does; OpenFeature's `targetingKey`
/// is flagstaff's `key` (unless the context also has a `key`).
fn parse_context(text: &str) -> Result<Context<'_>, String> {
    if text.is_empty() {
        return Ok(Context::empty());
    }
    let ctx = Context::parse(text.as_bytes()).map_err(|e| e.to_string())?;
    Ok(targeting_key(ctx))
}

/// OpenFeature's `targetingKey` as flagstaff's `key`, unless `key` is given.
fn targeting_key(ctx: Context<'_>) -> Context<'_> {
    if ctx.get("key").is_none() {
        if let Some(AttrValue::Str(k)) = ctx.get("targetingKey").cloned() {
            return ctx.with("key", AttrValue::Str(k));
        }
    }
    ctx
}

/// `"<revision>-<hash of user, key, context and what else moves an answer>"`:
/// a new flag set or a different context gives a different tag. `volatile`
/// carries what changes answers without a new revision: staleness (in the
/// metadata) and, for flags that read `$now`, the current second. The hash
/// is xxh3-128, a cache validator and no secret (docs/decisions.md, "OFREP
/// ETag").
fn etag(revision: u64, user: &str, key: &str, context: &[u8], volatile: &str) -> String {
    // One-shot hashing of the joined parts: cheaper than the streaming state
    // for the short inputs of a request (the buffer spills to the heap only
    // for a context over a few hundred bytes).
    let mut joined = smallvec::SmallVec::<[u8; 384]>::new();
    for part in [
        user.as_bytes(),
        key.as_bytes(),
        context,
        volatile.as_bytes(),
    ] {
        // Each part is followed by its length: no two lists of parts join
        // into the same bytes.
        joined.extend_from_slice(part);
        joined.extend_from_slice(&(part.len() as u64).to_le_bytes());
    }
    let digest = xxhash_rust::xxh3::xxh3_128(&joined);
    let mut n = itoa::Buffer::new();
    let revision = n.format(revision);
    // Exactly the tag's length: the header value then takes the buffer as is.
    let mut tag = String::with_capacity(revision.len() + 35);
    tag.push('"');
    tag.push_str(revision);
    tag.push('-');
    for i in (0..32).rev() {
        let nibble = (digest >> (i * 4)) as usize & 15;
        tag.push(char::from(b"0123456789abcdef"[nibble]));
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
    volatile_for(stale, uses_now)
}

/// [`volatile`] when whether a flag read `$now` is known (one flag's
/// [`Detail`] says it).
fn volatile_for(stale: bool, uses_now: bool) -> Cow<'static, str> {
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

fn not_modified(tag: String) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NOT_MODIFIED;
    with_etag(r, tag)
}

fn with_etag(mut r: Response<Body>, tag: String) -> Response<Body> {
    // The tag's own buffer, not a copy (it is ASCII, always a valid value).
    if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(tag)) {
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
            let mut n = itoa::Buffer::new();
            out.push_str(",\"metadata\":{\"version\":");
            out.push_str(n.format(d.version.unwrap_or(0)));
            out.push_str(",\"revision\":");
            out.push_str(n.format(d.revision));
            out.push_str(if d.stale {
                ",\"stale\":true"
            } else {
                ",\"stale\":false"
            });
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

/// `POST /ofrep/v1/evaluate/flags/{key}`, as the router calls it.
pub async fn single(
    State(http): State<Arc<Http>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request<Body>,
) -> Response<Body> {
    evaluate_one(&http, peer, None, request).await
}

/// Whether `POST path` is the single-flag evaluation [`evaluate_one`]
/// answers: one non-empty segment after the prefix, which is what the
/// router's `/ofrep/v1/evaluate/flags/{key}` matches.
pub fn is_single(path: &str) -> bool {
    path.strip_prefix("/ofrep/v1/evaluate/flags/")
        .is_some_and(|k| !k.is_empty() && !k.contains('/'))
}

/// `POST /ofrep/v1/evaluate/flags/{key}`: the handler, called by the
/// router's [`single`] and directly by the connection's fast path (every
/// OFREP evaluation, so it skips the router's matching and extensions),
/// which passes its connection's [`LastLogin`].
pub async fn evaluate_one<B>(
    http: &Http,
    peer: SocketAddr,
    last: Option<&LastLogin>,
    request: Request<B>,
) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    // The whole request, not the `Uri` and `HeaderMap` extractors: those
    // clone the header map on every evaluation.
    let (parts, body) = request.into_parts();
    let (uri, headers) = (&parts.uri, &parts.headers);
    // The raw segment: axum's own decoding would refuse invalid UTF-8 with a
    // plain-text body, and OFREP clients expect JSON.
    let raw = uri.path().rsplit('/').next().unwrap_or("");
    let key = match percent_encoding::percent_decode_str(raw).decode_utf8() {
        Ok(k) => k,
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
    let key = &*key;
    let identity = match admit(http, peer, last, headers, uri.path(), Some(key)).await {
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
    let (text, context) = match request_context(&body, Some(key)) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let view = http.state.store.view();
    let detail = detail_of(&http.state, &view, Some(key), context);
    let (status, out) = encode(key, &detail);
    if status != StatusCode::OK {
        return json(status, out);
    }
    let tag = etag(
        view.revision,
        &identity.user,
        key,
        text,
        &volatile_for(detail.stale, detail.uses_now),
    );
    if matches(headers, &tag) {
        return not_modified(tag);
    }
    // The answer's headers go into the request's header map, emptied: hyper
    // keeps the answer's map for the connection's next request, so no map is
    // allocated per request. The body is the answer's own buffer, trimmed
    // (in place), which `Bytes` then takes without a second allocation.
    let mut r = Response::new(Body::from(Bytes::from(out.into_bytes().into_boxed_slice())));
    let reply_headers = r.headers_mut();
    *reply_headers = parts.headers;
    reply_headers.clear();
    reply_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    with_etag(r, tag)
}

/// `POST /ofrep/v1/evaluate/flags`: every flag the user may read, sorted by key.
pub async fn bulk(
    State(http): State<Arc<Http>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response<Body> {
    let identity = match admit(
        &http,
        peer,
        None,
        &headers,
        "/ofrep/v1/evaluate/flags",
        None,
    )
    .await
    {
        Ok(i) => i,
        Err(r) => return r,
    };
    let body = match read_body(body, None).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (text, context) = match request_context(&body, None) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let context = match context {
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
        return not_modified(tag);
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
    with_etag(json(StatusCode::OK, out), tag)
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
    fn the_one_scan_context_is_the_envelope_scans() {
        for body in [
            r#"{"context":{"targetingKey":"u1","country":"US","beta":true}}"#,
            " { \"context\" :\n{\"a\":[1,2,{\"b\":null}]} } ",
            r#"{"context":{}}"#,
            r#"{"context":{"key":"k","targetingKey":"t"}}"#,
            r#"{"context":{"s":"\u00e9\n"}}"#,
        ] {
            let (text, context) = sole_context(body.as_bytes()).expect(body);
            let Ok(envelope) = context_text(body.as_bytes(), None) else {
                panic!("the envelope scan refused {body}");
            };
            assert_eq!(text, envelope.as_bytes(), "{body}");
            assert_eq!(
                Ok(targeting_key(context)),
                parse_context(envelope),
                "{body}"
            );
        }
        // Anything else takes the envelope scan (and its errors).
        for body in [
            r#"{"context":{"a":1},"other":2}"#,
            r#"{"context":{"a":1}},"x":{}"#,
            r#"{"context":[1]}"#,
            r#"{"context":null}"#,
            r#"{"context":{"a":}}"#,
            r#"{"con\u0074ext":{"a":1}}"#,
            r#"{"context":{"a":1}"#,
            "",
            "{}",
        ] {
            assert!(sole_context(body.as_bytes()).is_none(), "{body}");
        }
    }

    #[test]
    fn etag_is_the_revision_and_32_hex_digits() {
        let tag = etag(42, "default", "k", b"{}", "false:");
        let inner = tag.strip_prefix("\"42-").and_then(|t| t.strip_suffix('"'));
        let hex = inner.unwrap_or_default();
        assert_eq!(hex.len(), 32, "{tag}");
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
        let tag = etag(7, "default", "", b"{}", "false:");
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
        assert_ne!(tag, etag(7, "default", "", b"{\"a\":1}", "false:"));
        assert_ne!(tag, etag(8, "default", "", b"{}", "false:"));
        assert_ne!(tag, etag(7, "default", "", b"{}", "true:"));
        assert_ne!(tag, etag(7, "default", "", b"{}", "false:1764633600"));
    }
}
