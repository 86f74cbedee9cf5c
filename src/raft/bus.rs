//! The cluster bus server: accepts peers that prove the cluster secret, then
//! answers raft RPCs, writes and membership changes forwarded to this node as
//! leader, read-index requests, and pub/sub messages published elsewhere.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::raft::{AppendEntriesResponse, InstallSnapshotRequest};
use openraft::Raft;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use super::frame::{BusStream, FrameConn};
use super::liveness::Liveness;
use super::membership::{self, MemberChange, MEMBER, PING};
use super::network::{APPEND, SNAPSHOT, VOTE};
use super::peer::{accept_handshake, Secret};
use super::types::TypeConfig;
use super::writes::{read_index, Committed, WriteQueue, WRITE};
use crate::metrics::{add, ClusterStats};
use crate::store::{WriteError, WriteRequest};

/// Bus verb asking the leader for a linearizable read index.
pub const READ_INDEX: &[u8] = b"READINDEX";
/// Bus verb carrying messages published on another node.
pub const PUBLISH: &[u8] = b"PUBLISH";
/// Bus verb asking for node-local data (analytics) that is not replicated.
pub const LOCAL_QUERY: &[u8] = b"LOCALQUERY";

/// Answers a [`LOCAL_QUERY`] body with this node's own data; set by the
/// server once it can answer (the bus knows nothing of what is asked).
pub type LocalQueryHook = Arc<std::sync::OnceLock<LocalAnswer>>;

/// How a node answers a node-local query body.
pub type LocalAnswer = Box<dyn Fn(&[u8]) -> Result<Vec<u8>, String> + Send + Sync>;

/// What the bus server serves with.
#[derive(Clone)]
pub struct BusContext {
    /// The local raft.
    pub raft: Raft<TypeConfig>,
    /// The shared secret.
    pub secret: Secret,
    /// Contact tracking (an accepted append is leader contact).
    pub liveness: Arc<Liveness>,
    /// The write path.
    pub writes: WriteQueue,
    /// Messages published on other nodes, for local subscribers.
    pub published: mpsc::UnboundedSender<(Bytes, Bytes)>,
    /// How long a forwarded write may take.
    pub write_timeout: Duration,
    /// Counters.
    pub stats: Arc<ClusterStats>,
    /// Answers node-local queries.
    pub local_query: LocalQueryHook,
}

impl std::fmt::Debug for BusContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BusContext")
    }
}

/// Accepts peers until `shutdown`.
pub async fn serve(listener: TcpListener, ctx: BusContext, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let ctx = ctx.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve_peer(stream, &ctx).await {
                            tracing::debug!(%peer, error = %e, "cluster bus connection ended");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cluster bus accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Wraps an accepted peer in TLS when the bus runs over TLS; the peer must
/// present a certificate that chains to the CA.
async fn accept_stream(stream: TcpStream, ctx: &BusContext) -> Result<BusStream, String> {
    let Some(tls) = ctx.secret.tls() else {
        return Ok(Either::Left(stream));
    };
    let config = tls
        .server()
        .ok_or_else(|| "no TLS server configuration".to_string())?;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    match tokio::time::timeout(Duration::from_secs(5), acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Ok(Either::Right(tokio_rustls::TlsStream::Server(tls))),
        Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
        Err(_) => Err("TLS handshake timed out".into()),
    }
}

async fn serve_peer(stream: TcpStream, ctx: &BusContext) -> std::io::Result<()> {
    let peer = stream.peer_addr().ok();
    let stream = match accept_stream(stream, ctx).await {
        Ok(s) => s,
        Err(why) => {
            add(&ctx.stats.bus_peers_refused, 1);
            tracing::warn!(?peer, error = %why, "refused a cluster bus peer");
            return Ok(());
        }
    };
    let mut conn = FrameConn::new(stream);
    let handshake = tokio::time::timeout(
        Duration::from_secs(5),
        accept_handshake(&mut conn, &ctx.secret),
    )
    .await;
    match handshake {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            add(&ctx.stats.bus_peers_refused, 1);
            tracing::warn!(?peer, error = %e, "refused a cluster bus peer");
            return Ok(());
        }
        Err(_) => return Ok(()),
    }
    loop {
        let request = conn.recv().await?;
        let answer = handle(ctx, &request).await;
        let parts: Vec<&[u8]> = match &answer {
            Ok(payload) => std::iter::once(&b"OK"[..])
                .chain(payload.iter().map(Vec::as_slice))
                .collect(),
            Err(why) => vec![b"ERR", why.as_bytes()],
        };
        conn.send(&parts).await?;
    }
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode<T: serde::de::DeserializeOwned>(request: &[Bytes]) -> Result<T, String> {
    let body = request
        .get(1)
        .ok_or_else(|| "missing request body".to_string())?;
    serde_json::from_slice(body).map_err(|e| format!("malformed request body: {e}"))
}

async fn handle(ctx: &BusContext, request: &[Bytes]) -> Result<Vec<Vec<u8>>, String> {
    let verb = request.first().map(Bytes::as_ref).unwrap_or_default();
    match verb {
        APPEND => {
            let rpc: openraft::raft::AppendEntriesRequest<TypeConfig> = decode(request)?;
            let commit = rpc.leader_commit.map_or(0, |l| l.index);
            // The leader's own quorum age (absent from older peers: fresh).
            let quorum_age = request
                .get(2)
                .and_then(|b| std::str::from_utf8(b).ok()?.parse::<u64>().ok())
                .unwrap_or(0);
            let result = ctx.raft.append_entries(rpc).await;
            if matches!(
                result,
                Ok(AppendEntriesResponse::Success | AppendEntriesResponse::PartialSuccess(_))
                    | Ok(AppendEntriesResponse::Conflict)
            ) {
                ctx.liveness
                    .leader_contact_aged(Duration::from_millis(quorum_age));
                ctx.liveness.leader_committed(commit);
            }
            Ok(vec![json(&result)])
        }
        VOTE => Ok(vec![json(&ctx.raft.vote(decode(request)?).await)]),
        SNAPSHOT => {
            let mut rpc: InstallSnapshotRequest<TypeConfig> = decode(request)?;
            rpc.data = request.get(2).map(|b| b.to_vec()).unwrap_or_default();
            let result = ctx.raft.install_snapshot(rpc).await;
            if result.is_ok() {
                ctx.liveness.leader_contact();
            }
            Ok(vec![json(&result)])
        }
        WRITE => {
            let requests: Vec<WriteRequest> = decode(request)?;
            let mut receivers = Vec::with_capacity(requests.len());
            for r in requests {
                receivers.push(ctx.writes.enqueue(r, false));
            }
            let mut outcomes: Vec<Committed> = Vec::with_capacity(receivers.len());
            for rx in receivers {
                let outcome = match rx {
                    Err(e) => Err(e),
                    Ok(rx) => match tokio::time::timeout(ctx.write_timeout, rx).await {
                        Err(_) => Err(WriteError::Timeout(ctx.write_timeout.as_millis() as u64)),
                        Ok(Err(_)) => Err(WriteError::Unknown("the write path stopped".into())),
                        Ok(Ok(outcome)) => outcome,
                    },
                };
                outcomes.push(outcome);
            }
            Ok(vec![json(&outcomes)])
        }
        READ_INDEX => {
            // Without a quorum the leadership check could wait for long.
            let index =
                tokio::time::timeout(ctx.write_timeout, read_index(&ctx.raft, &ctx.liveness))
                    .await
                    .map_err(|_| "No quorum: the leadership check timed out".to_string())??;
            Ok(vec![json(&index)])
        }
        MEMBER => {
            let change: MemberChange = decode(request)?;
            let result = membership::apply(&ctx.raft, Some(&ctx.secret), change).await;
            Ok(vec![json(&result)])
        }
        PUBLISH => {
            for pair in request[1..].chunks_exact(2) {
                let _ = ctx.published.send((pair[0].clone(), pair[1].clone()));
            }
            Ok(Vec::new())
        }
        LOCAL_QUERY => {
            let body = request.get(1).cloned().unwrap_or_default();
            let hook = ctx.local_query.clone();
            // The answer may scan node-local data: off the runtime thread.
            tokio::task::spawn_blocking(move || match hook.get() {
                Some(answer) => answer(&body).map(|a| vec![a]),
                None => Err("this node is not ready for local queries".to_string()),
            })
            .await
            .map_err(|e| format!("local query failed: {e}"))?
        }
        PING => Ok(Vec::new()),
        other => Err(format!(
            "unknown bus request {:?}",
            String::from_utf8_lossy(other)
        )),
    }
}
