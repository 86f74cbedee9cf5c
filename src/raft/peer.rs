//! Talking to another member over the cluster bus: the shared-secret
//! handshake (both sides prove the secret without sending it) and a client
//! that sends one request and waits for its answer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::net::TcpStream;
use tokio_util::either::Either;

use super::frame::{BusStream, FrameConn};

/// Bus protocol version, sent in the greeting so mismatched builds refuse cleanly.
const BUS_VERSION: &[u8] = b"flagstaff-bus/1";

/// The TLS configs of the cluster bus (`--tls-cluster`), read at each new
/// connection so a certificate reload applies to the next one.
pub trait BusTls: Send + Sync + std::fmt::Debug {
    /// For accepting peers: requires a peer certificate chaining to the CA.
    fn server(&self) -> Option<Arc<rustls::ServerConfig>>;
    /// For dialling peers: presents this node's certificate.
    fn client(&self) -> Option<Arc<rustls::ClientConfig>>;
}

/// What a member proves itself with on the bus: the cluster secret (kept as
/// its key bytes) and, with `--tls-cluster`, its TLS certificate.
#[derive(Clone)]
pub struct Secret {
    key: Arc<[u8]>,
    tls: Option<Arc<dyn BusTls>>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// Wraps the configured secret.
    pub fn new(secret: &str) -> Self {
        Secret {
            key: secret.as_bytes().into(),
            tls: None,
        }
    }

    /// The same secret, with every bus connection (and the join request) over TLS.
    pub fn with_tls(mut self, tls: Option<Arc<dyn BusTls>>) -> Self {
        self.tls = tls;
        self
    }

    /// The bus TLS configs, when the bus runs over TLS.
    pub fn tls(&self) -> Option<&Arc<dyn BusTls>> {
        self.tls.as_ref()
    }

    /// The proof that the `role` side knows the secret, bound to both nonces.
    fn proof(&self, role: &[u8], client_nonce: &[u8], server_nonce: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(role);
        mac.update(client_nonce);
        mac.update(server_nonce);
        mac
    }
}

fn nonce() -> [u8; 32] {
    rand::random()
}

/// Why a call to a peer did not produce an answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The request was not sent (connection or handshake failed): it had no effect.
    #[error("{0}")]
    NotSent(String),
    /// The request was sent but no answer came: its effect is unknown.
    #[error("{0}")]
    Lost(String),
    /// The peer answered with an error.
    #[error("{0}")]
    Refused(String),
}

/// Accepts a peer's handshake on a fresh server-side connection.
pub async fn accept_handshake(conn: &mut FrameConn, secret: &Secret) -> std::io::Result<()> {
    let bad =
        |why: &str| std::io::Error::new(std::io::ErrorKind::PermissionDenied, why.to_string());
    let hello = conn.recv().await?;
    if hello.len() != 3 || hello[0].as_ref() != b"HELLO" {
        let _ = conn
            .send(&[b"ERR", b"expected HELLO <version> <nonce>"])
            .await;
        return Err(bad("peer did not greet"));
    }
    if hello[1].as_ref() != BUS_VERSION {
        let _ = conn.send(&[b"ERR", b"unsupported bus version"]).await;
        return Err(bad("peer speaks another bus version"));
    }
    let client_nonce = hello[2].clone();
    let server_nonce = nonce();
    let server_proof = secret
        .proof(b"server", &client_nonce, &server_nonce)
        .finalize()
        .into_bytes();
    conn.send(&[b"CHALLENGE", &server_nonce, &server_proof])
        .await?;
    let answer = conn.recv().await?;
    let valid = answer.len() == 2
        && answer[0].as_ref() == b"PROOF"
        && secret
            .proof(b"client", &client_nonce, &server_nonce)
            .verify_slice(&answer[1])
            .is_ok();
    if !valid {
        let _ = conn.send(&[b"ERR", b"cluster secret does not match"]).await;
        return Err(bad("peer does not know the cluster secret"));
    }
    conn.send(&[b"OK"]).await?;
    conn.trust();
    Ok(())
}

/// The name a peer's certificate must carry: the host of its address.
fn server_name(addr: &str) -> Result<rustls_pki_types::ServerName<'static>, String> {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    rustls_pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host:?} is not a host name for TLS: {e}"))
}

/// Why [`dial`] found no usable connection.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DialError {
    /// Nothing answered in time: worth retrying.
    #[error("{0}")]
    Unreachable(String),
    /// TLS failed (a certificate refused either way): retrying will not help.
    #[error("{0}")]
    Tls(String),
}

/// Connects to `addr`, over TLS (presenting this node's certificate and
/// verifying the peer's) when `secret` carries bus TLS.
pub async fn dial(
    addr: &str,
    secret: Option<&Secret>,
    timeout: Duration,
) -> Result<BusStream, DialError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| DialError::Unreachable("connect timed out".into()))?
        .map_err(|e| DialError::Unreachable(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let Some(tls) = secret.and_then(Secret::tls) else {
        return Ok(Either::Left(stream));
    };
    let config = tls
        .client()
        .ok_or_else(|| DialError::Tls("no TLS client configuration".into()))?;
    let name = server_name(addr).map_err(DialError::Tls)?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let stream = tokio::time::timeout(timeout, connector.connect(name, stream))
        .await
        .map_err(|_| DialError::Unreachable("TLS handshake timed out".into()))?
        .map_err(|e| match e.kind() {
            // rustls reports certificate and protocol failures as invalid data.
            std::io::ErrorKind::InvalidData => DialError::Tls(format!("TLS handshake failed: {e}")),
            _ => DialError::Unreachable(format!("TLS handshake failed: {e}")),
        })?;
    Ok(Either::Right(tokio_rustls::TlsStream::Client(stream)))
}

async fn connect(addr: &str, secret: &Secret, timeout: Duration) -> Result<FrameConn, CallError> {
    let not_sent = |why: String| CallError::NotSent(format!("cluster bus at {addr}: {why}"));
    let stream = dial(addr, Some(secret), timeout)
        .await
        .map_err(|e| match e {
            DialError::Unreachable(why) => not_sent(why),
            DialError::Tls(why) => CallError::Refused(format!("cluster bus at {addr}: {why}")),
        })?;
    let mut conn = FrameConn::new(stream);
    let handshake = async {
        let client_nonce = nonce();
        conn.send(&[b"HELLO", BUS_VERSION, &client_nonce])
            .await
            .map_err(|e| not_sent(e.to_string()))?;
        let challenge = conn.recv().await.map_err(|e| not_sent(e.to_string()))?;
        if challenge.first().map(Bytes::as_ref) == Some(b"ERR") {
            let why = challenge
                .get(1)
                .map(|b| String::from_utf8_lossy(b).into_owned());
            return Err(CallError::Refused(format!(
                "cluster bus at {addr} refused the handshake: {}",
                why.unwrap_or_default()
            )));
        }
        let server_ok = challenge.len() == 3
            && challenge[0].as_ref() == b"CHALLENGE"
            && secret
                .proof(b"server", &client_nonce, &challenge[1])
                .verify_slice(&challenge[2])
                .is_ok();
        if !server_ok {
            return Err(CallError::Refused(format!(
                "the node at {addr} does not share the cluster secret"
            )));
        }
        let proof = secret
            .proof(b"client", &client_nonce, &challenge[1])
            .finalize()
            .into_bytes();
        conn.send(&[b"PROOF", &proof])
            .await
            .map_err(|e| not_sent(e.to_string()))?;
        let verdict = conn.recv().await.map_err(|e| not_sent(e.to_string()))?;
        if verdict.first().map(Bytes::as_ref) != Some(b"OK") {
            return Err(CallError::Refused(format!(
                "the node at {addr} does not share the cluster secret"
            )));
        }
        Ok(())
    };
    tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| not_sent("handshake timed out".into()))??;
    conn.trust();
    Ok(conn)
}

/// A client for one peer's bus: connects (and authenticates) on first use,
/// reconnects after a failure, and runs one request at a time.
#[derive(Debug)]
pub struct PeerClient {
    addr: String,
    secret: Secret,
    conn: Option<FrameConn>,
}

impl PeerClient {
    /// A client for the bus at `addr`; nothing is dialled yet.
    pub fn new(addr: &str, secret: Secret) -> Self {
        PeerClient {
            addr: addr.to_string(),
            secret,
            conn: None,
        }
    }

    /// The address this client dials.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// A client for the same peer that will dial a connection of its own
    /// (test-only bus chaos: a held-back RPC must not block the usual one).
    #[cfg(feature = "chaos")]
    pub fn fresh(&self) -> PeerClient {
        PeerClient::new(&self.addr, self.secret.clone())
    }

    /// Sends `parts` and returns the answer's payload (after its `OK`).
    pub async fn call(
        &mut self,
        parts: &[&[u8]],
        timeout: Duration,
    ) -> Result<Vec<Bytes>, CallError> {
        if self.conn.as_ref().is_some_and(FrameConn::peer_closed) {
            self.conn = None;
        }
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => connect(&self.addr, &self.secret, timeout).await?,
        };
        let exchange = async {
            conn.send(parts).await?;
            conn.recv().await
        };
        let mut answer = match tokio::time::timeout(timeout, exchange).await {
            Err(_) => {
                return Err(CallError::Lost(format!(
                    "no answer from {} within {} ms",
                    self.addr,
                    timeout.as_millis()
                )))
            }
            Ok(Err(e)) => {
                return Err(CallError::Lost(format!(
                    "connection to {} broke: {e}",
                    self.addr
                )))
            }
            Ok(Ok(answer)) => answer,
        };
        self.conn = Some(conn);
        match answer.first().map(Bytes::as_ref) {
            Some(b"OK") => {
                answer.remove(0);
                Ok(answer)
            }
            _ => Err(CallError::Refused(
                answer
                    .get(1)
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_else(|| "malformed answer".into()),
            )),
        }
    }
}
