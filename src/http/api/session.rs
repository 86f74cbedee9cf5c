//! Console logins: server-side sessions behind an `HttpOnly`,
//! `SameSite=Strict` cookie, each with a CSRF token that every write must
//! echo in `X-CSRF-Token`, and [`Caller`], who an API request acts as
//! (a session, or a bearer credential as OFREP takes it).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};

use super::adapter::error;
use crate::http::auth::{credential, login, AuthError};
use crate::http::Http;

/// The session cookie's name.
pub const COOKIE: &str = "flagstaff_session";
/// The header a cookie-authenticated write must carry its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Most sessions held; the oldest expire first past this.
const MAX_SESSIONS: usize = 10_000;

/// One logged-in browser.
#[derive(Debug, Clone)]
struct LoginSession {
    user: String,
    csrf: String,
    expires: Instant,
}

/// Server-side sessions by cookie token.
#[derive(Debug)]
pub struct Sessions {
    ttl: Duration,
    by_token: Mutex<HashMap<String, LoginSession>>,
}

/// 32 random bytes as hex, from the OS-seeded CSPRNG.
fn token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    /// Sessions that expire after `ttl` without a request.
    pub fn new(ttl: Duration) -> Self {
        Sessions {
            ttl,
            by_token: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, LoginSession>> {
        self.by_token.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long a session lasts without a request.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Starts a session for `user`: its cookie token and CSRF token.
    pub fn create(&self, user: &str) -> (String, String) {
        let now = Instant::now();
        let mut map = self.map();
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| s.expires > now);
            if map.len() >= MAX_SESSIONS {
                if let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, s)| s.expires)
                    .map(|(k, _)| k.clone())
                {
                    map.remove(&oldest);
                }
            }
        }
        let (cookie, csrf) = (token(), token());
        map.insert(
            cookie.clone(),
            LoginSession {
                user: user.to_string(),
                csrf: csrf.clone(),
                expires: now + self.ttl,
            },
        );
        (cookie, csrf)
    }

    /// The live session of a cookie token (extending it), or `None`.
    fn touch(&self, token: &str) -> Option<LoginSession> {
        let now = Instant::now();
        let mut map = self.map();
        match map.get_mut(token) {
            Some(s) if s.expires > now => {
                s.expires = now + self.ttl;
                Some(s.clone())
            }
            Some(_) => {
                map.remove(token);
                None
            }
            None => None,
        }
    }

    /// Whether a cookie token still names a live session (without extending it).
    pub fn alive(&self, token: &str) -> bool {
        self.map()
            .get(token)
            .is_some_and(|s| s.expires > Instant::now())
    }

    /// Ends a session.
    pub fn end(&self, token: &str) {
        self.map().remove(token);
    }
}

/// Who an API request acts as.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The ACL user.
    pub user: String,
    /// The cookie token, when the request came with a session.
    pub session: Option<String>,
    /// The session's CSRF token.
    pub csrf: Option<String>,
    /// The client's address.
    pub peer: SocketAddr,
}

/// The session cookie's value, if the request carries one.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// Whether a method changes something (and so needs the CSRF token).
fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Who the request acts as, or the refusal: a bearer credential (checked as
/// OFREP checks it, with RESP AUTH's per-address backoff, ACL LOG entry and
/// counter for a wrong one), else the session cookie (live, its user still
/// existing and enabled, and on writes the CSRF token). Then the per-user
/// rate limit. `what` names the request for the ACL LOG (`POST /api/v1/…`).
#[allow(clippy::result_large_err)]
pub async fn admit(
    http: &Http,
    peer: SocketAddr,
    method: &Method,
    headers: &HeaderMap,
    what: &str,
) -> Result<Caller, Response<Body>> {
    // Replicated ACL changes apply lazily: a follower that serves only HTTP
    // must install them before it checks a user.
    crate::command::acl::sync_users(&http.state);
    let users = &http.state.users;
    let has_credential =
        headers.contains_key(header::AUTHORIZATION) || headers.contains_key("x-api-key");
    let caller = match session_cookie(headers) {
        Some(token) if !has_credential => {
            let Some(s) = http.sessions.touch(token) else {
                return Err(unauthorized("session expired or logged out: log in again"));
            };
            if !users.get(&s.user).is_some_and(|u| u.enabled()) {
                http.sessions.end(token);
                return Err(unauthorized(&format!(
                    "user '{}' was deleted or disabled: the session ended",
                    s.user
                )));
            }
            if is_write(method) {
                let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
                if sent.is_none_or(|t| !constant_time_eq(t.as_bytes(), s.csrf.as_bytes())) {
                    return Err(error(
                        StatusCode::FORBIDDEN,
                        "CSRF",
                        "missing or wrong X-CSRF-Token: writes with a session cookie must echo the session's CSRF token",
                    ));
                }
            }
            Caller {
                user: s.user,
                session: Some(token.to_string()),
                csrf: Some(s.csrf),
                peer,
            }
        }
        _ => {
            let identity = login(&http.state, credential(headers), peer, what)
                .await
                .map_err(|e| match e {
                    AuthError::Protected => error(StatusCode::FORBIDDEN, "DENIED", &e.to_string()),
                    AuthError::Missing | AuthError::Wrong => unauthorized(&e.to_string()),
                })?;
            Caller {
                user: identity.user,
                session: None,
                csrf: None,
                peer,
            }
        }
    };
    if let Err(wait) = http.limiter.take(&caller.user) {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "RATELIMIT",
            &format!(
                "rate limit exceeded for user {}; retry after {secs} s",
                caller.user
            ),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return Err(r);
    }
    Ok(caller)
}

/// A 401 with `WWW-Authenticate: Bearer`.
pub fn unauthorized(message: &str) -> Response<Body> {
    let mut r = error(StatusCode::UNAUTHORIZED, "NOAUTH", message);
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `Set-Cookie` value for a session (`Secure` when served over TLS).
pub fn set_cookie(token: &str, ttl: Duration, secure: bool) -> String {
    format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        ttl.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_end() {
        let s = Sessions::new(Duration::from_millis(30));
        let (cookie, csrf) = s.create("alice");
        assert_ne!(cookie, csrf);
        assert_eq!(cookie.len(), 64);
        assert_eq!(s.touch(&cookie).map(|x| x.user), Some("alice".into()));
        std::thread::sleep(Duration::from_millis(60));
        assert!(s.touch(&cookie).is_none());
        let (cookie, _) = s.create("bob");
        s.end(&cookie);
        assert!(!s.alive(&cookie));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; flagstaff_session=xyz; b=2"),
        );
        assert_eq!(session_cookie(&h), Some("xyz"));
    }
}
