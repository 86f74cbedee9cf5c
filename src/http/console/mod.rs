//! The admin console: static files embedded in the binary (plain JS modules
//! and CSS, no build step), served at `/`. The page itself is public; every
//! piece of data it shows comes from `/api/v1/`, which checks the caller, and
//! an unauthenticated visit shows the login form.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Path;
use axum::http::{header, HeaderValue, Response, StatusCode};
use axum::routing::get;
use axum::Router;

use super::Http;

/// The embedded files: name, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("assets/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/app.js"),
    ),
    (
        "editor.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/editor.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/api.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/style.css"),
    ),
];

/// The console's routes: `/` and `/console/{file}`.
pub fn routes() -> Router<Arc<Http>> {
    Router::new()
        .route("/", get(index))
        .route("/console/{file}", get(asset))
        .route("/favicon.ico", get(favicon))
}

fn serve(name: &str) -> Response<Body> {
    let Some((_, kind, bytes)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return super::text(StatusCode::NOT_FOUND, "no such console file\n".into());
    };
    let mut r = Response::new(Body::from(*bytes));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    // Everything comes from this origin: no CDN, no inline script.
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    r
}

async fn index() -> Response<Body> {
    serve("index.html")
}

async fn favicon() -> Response<Body> {
    serve("favicon.svg")
}

async fn asset(Path(file): Path<String>) -> Response<Body> {
    serve(&file)
}
