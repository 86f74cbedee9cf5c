//! Who an HTTP request acts as, and how fast it may go.
//!
//! [`authenticate`] is the one place a credential becomes an [`Identity`]:
//! the ACL user it names (the same users RESP's AUTH checks), whose key
//! patterns scope what the request may read.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, HeaderName};

/// The user a request acts as.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The user name.
    pub user: String,
    /// The ACL user, whose key patterns scope what the request may read.
    pub acl: crate::auth::Identity,
}

impl Identity {
    /// Whether this identity may read the flag `key`.
    pub fn may_read(&self, key: &str) -> bool {
        self.acl.can_read(key.as_bytes())
    }
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A password is set and the request carries no credential (401).
    #[error("authentication required: send Authorization: Bearer <user>:<password> or X-API-Key")]
    Missing,
    /// The credential names no user or the password is wrong (401).
    #[error("invalid username-password pair or user is disabled")]
    Wrong,
    /// No password is set and the client is not on loopback (403).
    #[error("flagstaff is running in protected mode because no password is set: only loopback clients are served; set --requirepass or give the default user a password")]
    Protected,
}

/// The credential a request carries: `Authorization: Bearer <token>` or `X-API-Key: <token>`.
pub fn credential(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, token) = v.trim().split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then_some(token.trim());
    }
    headers.get(&X_API_KEY).and_then(|v| v.to_str().ok())
}

/// `X-API-Key`, as a ready name (a `&str` name is parsed on every lookup).
static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// Turns a credential (`user:password`, or a bare password for `default`)
/// from a client at `peer` into the ACL user it acts as. While `default` is
/// `nopass`, protected mode serves loopback clients only, as RESP does.
pub fn authenticate(
    users: &crate::auth::Users,
    credential: Option<&str>,
    peer: IpAddr,
) -> Result<Identity, AuthError> {
    let open = users.default_is_open();
    if open && !peer.is_loopback() {
        return Err(AuthError::Protected);
    }
    let (user, password) = match credential {
        Some(token) => token.split_once(':').unwrap_or(("default", token)),
        None if open => ("default", ""),
        None => return Err(AuthError::Missing),
    };
    let acl = users
        .authenticate(user.as_bytes(), password.as_bytes())
        .map_err(|_| AuthError::Wrong)?;
    Ok(Identity {
        user: user.to_string(),
        acl,
    })
}

/// The last successful login of one connection: its credential (none for
/// an open `default`), the users' generation it was checked against and
/// who it acts as. The next request on the connection with the same
/// credential, while the users are unchanged, skips [`authenticate`] (the
/// password hash). Any ACL change (local `ACL SETUSER`/`DELUSER`, an aclfile
/// load, a change replicated from the cluster) bumps the generation, so the
/// next request checks its credential again; a refused credential is never
/// kept. One entry per connection, dropped with it.
#[derive(Default)]
pub struct LastLogin(Mutex<Option<CachedLogin>>);

impl std::fmt::Debug for LastLogin {
    // Never the credential: it holds a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LastLogin")
    }
}

struct CachedLogin {
    credential: Option<Box<str>>,
    generation: u64,
    identity: Identity,
}

impl LastLogin {
    /// Who `credential` acts as, if it is the one last accepted here at `generation`.
    fn get(&self, credential: Option<&str>, generation: u64) -> Option<Identity> {
        let last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let c = last.as_ref().filter(|c| c.generation == generation)?;
        let same = match (credential, c.credential.as_deref()) {
            (None, None) => true,
            // Constant time over the length, as the password check is.
            (Some(a), Some(b)) => crate::auth::ct_eq(a.as_bytes(), b.as_bytes()),
            _ => false,
        };
        same.then(|| c.identity.clone())
    }

    fn put(&self, credential: Option<&str>, generation: u64, identity: &Identity) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(CachedLogin {
            credential: credential.map(Box::from),
            generation,
            identity: identity.clone(),
        });
    }
}

/// [`authenticate`] with the login rules RESP's AUTH follows: a request
/// that carries a credential waits its turn in the per-address backoff
/// RESP shares, and a wrong one counts in INFO `acl_access_denied_auth` and
/// `ACL LOG`. `what` says what was asked (`POST /metrics`), for the log.
pub async fn login(
    state: &crate::command::ServerState,
    credential: Option<&str>,
    peer: std::net::SocketAddr,
    what: &str,
) -> Result<Identity, AuthError> {
    login_cached(state, None, credential, peer, what).await
}

/// [`login`], answered from the connection's [`LastLogin`] when it holds
/// this credential for the current users; the backoff is settled either way.
pub async fn login_cached(
    state: &crate::command::ServerState,
    last: Option<&LastLogin>,
    credential: Option<&str>,
    peer: std::net::SocketAddr,
    what: &str,
) -> Result<Identity, AuthError> {
    crate::command::acl::sync_users(state);
    // Read before the check: a change racing with it bumps the generation
    // past the one kept, so the next request checks again.
    let generation = state.users.generation();
    let result = match last.and_then(|l| l.get(credential, generation)) {
        Some(identity) => Ok(identity),
        None => {
            let result = authenticate(&state.users, credential, peer.ip());
            if let (Some(last), Ok(identity)) = (last, &result) {
                last.put(credential, generation, identity);
            }
            result
        }
    };
    let Some(token) = credential else {
        return result;
    };
    if matches!(result, Err(AuthError::Protected)) {
        return result;
    }
    let wait = state
        .auth_backoff
        .settle(&peer.ip(), Instant::now(), result.is_ok());
    if result.is_err() {
        let user = token.split_once(':').map_or("default", |(u, _)| u);
        let path: String = what.chars().take(128).collect();
        let info = format!("addr={peer} http={path}");
        crate::command::acl::deny_http_login(state, user, info);
    }
    if !wait.is_zero() {
        // Boxed: the timer stays out of every request's future (hyper
        // moves that future once per request).
        Box::pin(wait_turn(state, wait)).await;
    }
    result
}

/// Waits `wait` (an address in login backoff), or until shutdown.
async fn wait_turn(state: &crate::command::ServerState, wait: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = state.shutdown.cancelled() => {}
    }
}

/// A token bucket per user: `rate` requests a second, bursts up to `rate`.
#[derive(Debug)]
pub struct RateLimiter {
    rate: u32,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// A limiter allowing `rate` requests a second per user; 0 allows everything.
    pub fn new(rate: u32) -> Self {
        RateLimiter {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `user`; `Err(wait)` when there is none yet.
    pub fn take(&self, user: &str) -> Result<(), Duration> {
        if self.rate == 0 {
            return Ok(());
        }
        let rate = f64::from(self.rate);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, at) = buckets.entry(user.to_string()).or_insert((rate, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(rate);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_pass(p: Option<&str>) -> crate::auth::Users {
        crate::auth::Users::new(&crate::command::acl::CATALOG, p)
    }

    #[test]
    fn credentials_name_a_user_up_to_the_first_colon() {
        let s = with_pass(Some("s3:cret"));
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(authenticate(&s, Some("s3:cret"), lo).is_err());
        assert_eq!(
            authenticate(&s, Some("default:s3:cret"), lo).unwrap().user,
            "default"
        );
        assert_eq!(authenticate(&s, None, lo).unwrap_err(), AuthError::Missing);
        assert_eq!(
            authenticate(&s, Some("alice:s3:cret"), lo).unwrap_err(),
            AuthError::Wrong
        );
        let bare = with_pass(Some("pw"));
        assert!(authenticate(&bare, Some("pw"), lo).is_ok());
    }

    #[test]
    fn without_a_password_only_loopback_is_served() {
        let s = with_pass(None);
        assert!(authenticate(&s, None, "127.0.0.1".parse().unwrap()).is_ok());
        assert_eq!(
            authenticate(&s, None, "10.0.0.1".parse().unwrap()).unwrap_err(),
            AuthError::Protected
        );
    }

    #[test]
    fn the_bucket_refills_at_the_rate() {
        let l = RateLimiter::new(2);
        assert!(l.take("a").is_ok());
        assert!(l.take("a").is_ok());
        let wait = l.take("a").unwrap_err();
        assert!(wait <= Duration::from_millis(500));
        assert!(l.take("b").is_ok(), "buckets are per user");
        assert!(RateLimiter::new(0).take("a").is_ok());
    }
}
