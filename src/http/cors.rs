//! CORS for browser OFREP clients: only the origins `--http-cors-origins`
//! lists (none by default) get the Fetch standard's response headers.

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request, Response, StatusCode};

use crate::config::Settings;

const ALLOWED_HEADERS: &str = "authorization, content-type, if-none-match, x-api-key";

/// The `Access-Control-Allow-Origin` value for `origin`, if it is allowed.
fn allowed(settings: &Settings, origin: &HeaderValue) -> Option<HeaderValue> {
    let o = origin.to_str().ok()?;
    if settings.http_cors_origins.iter().any(|a| a == "*") {
        return Some(HeaderValue::from_static("*"));
    }
    settings
        .http_cors_origins
        .iter()
        .any(|a| a.eq_ignore_ascii_case(o))
        .then(|| origin.clone())
}

/// Answers a CORS preflight (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`); `None` for any other request.
pub fn preflight<B>(settings: &Settings, req: &Request<B>) -> Option<Response<Body>> {
    let h = req.headers();
    if req.method() != Method::OPTIONS || !h.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
        return None;
    }
    let origin = h.get(header::ORIGIN)?;
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    let out = r.headers_mut();
    out.insert(header::VARY, HeaderValue::from_static("Origin"));
    // A refused origin gets no CORS headers: the browser then blocks the call.
    let Some(allow) = allowed(settings, origin) else {
        *r.status_mut() = StatusCode::FORBIDDEN;
        return Some(r);
    };
    out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    out.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    out.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOWED_HEADERS),
    );
    out.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    Some(r)
}

/// Adds the CORS headers to the answer of an actual cross-origin request.
pub fn decorate(settings: &Settings, origin: Option<&HeaderValue>, r: &mut Response<Body>) {
    let Some(allow) = origin.and_then(|o| allowed(settings, o)) else {
        return;
    };
    let h = r.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("ETag, Retry-After"),
    );
}
