//! Changing who is in the cluster: adding a node (checked first: it must be
//! reachable and share the secret), promoting a learner, removing a node,
//! and the joining node's side of `--join`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::{ChangeMembers, Raft};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::frame::BusStream;
use super::peer::{dial, CallError, DialError, PeerClient, Secret};
use super::types::{Member, NodeId, TypeConfig};

/// Bus verb of a membership change forwarded to the leader.
pub const MEMBER: &[u8] = b"MEMBER";
/// Bus verb that checks a connection (the handshake is the check).
pub const PING: &[u8] = b"PING";

/// How long a new node may take to catch up before `ADD` gives up waiting.
const CATCH_UP: Duration = Duration::from_secs(120);

/// A membership change, as `RAFT.NODE` asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberChange {
    /// Add a node (or update its addresses); it catches up as a learner, then
    /// becomes a voter unless `learner`.
    Add {
        /// Its id.
        id: NodeId,
        /// Its addresses.
        member: Member,
        /// Whether it stays a non-voting learner.
        learner: bool,
    },
    /// Make a learner a voter.
    Promote {
        /// Its id.
        id: NodeId,
    },
    /// Remove a voter or learner.
    Remove {
        /// Its id.
        id: NodeId,
    },
}

/// Why a membership change did not happen.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
pub enum MemberError {
    /// No leader to run it: retry.
    #[error("CLUSTERDOWN {0}")]
    ClusterDown(String),
    /// Another change is being made: retry.
    #[error("TRYAGAIN {0}")]
    TryAgain(String),
    /// The change itself is not possible.
    #[error("ERR {0}")]
    Refused(String),
}

/// One membership change at a time on this node: concurrent joins queue
/// instead of failing on openraft's change in progress.
static CHANGING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// On the leader: records `me` as this node's addresses if the membership
/// holds others (a restart with a new address, or the first node given a bus).
pub async fn refresh_own(raft: &Raft<TypeConfig>, me: &Member) {
    let (id, current) = {
        let metrics = raft.metrics();
        let m = metrics.borrow();
        if m.state != openraft::ServerState::Leader {
            return;
        }
        (
            m.id,
            m.membership_config.membership().get_node(&m.id).cloned(),
        )
    };
    if current.is_none_or(|c| c == *me) {
        return;
    }
    let _one_at_a_time = CHANGING.lock().await;
    let nodes = BTreeMap::from([(id, me.clone())]);
    match raft
        .change_membership(ChangeMembers::SetNodes(nodes), true)
        .await
    {
        Ok(_) => tracing::info!(?me, "updated this node's addresses in the membership"),
        Err(e) => tracing::warn!(error = %e, "cannot update this node's addresses"),
    }
}

/// Runs `change` on the leader `raft`.
pub async fn apply(
    raft: &Raft<TypeConfig>,
    secret: Option<&Secret>,
    change: MemberChange,
) -> Result<String, MemberError> {
    let _one_at_a_time = CHANGING.lock().await;
    let metrics = raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership().clone();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let is_voter = |id: &NodeId| voters.contains(id);
    let known = |id: &NodeId| membership.get_node(id).cloned();
    let refused = |why: String| MemberError::Refused(why);
    use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
    let raft_error = |e: RaftError<NodeId, ClientWriteError<NodeId, Member>>| match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
            MemberError::ClusterDown("No raft leader".into())
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::InProgress(p),
        )) => MemberError::TryAgain(p.to_string()),
        other => refused(other.to_string()),
    };
    match change {
        MemberChange::Add {
            id,
            member,
            learner,
        } => {
            let Some(secret) = secret else {
                return Err(refused(
                    "this node has no cluster bus, so it cannot take members; restart it with --cluster-port and --cluster-secret".into(),
                ));
            };
            if member.cluster_addr.is_empty() {
                return Err(refused(format!("node {id} has no cluster address")));
            }
            let mut probe = PeerClient::new(&member.cluster_addr, secret.clone());
            match probe.call(&[PING], Duration::from_secs(5)).await {
                Ok(_) => {}
                Err(CallError::Refused(why)) => {
                    return Err(refused(format!("cannot add node {id}: {why}")))
                }
                Err(e) => {
                    return Err(refused(format!(
                        "cannot add node {id}: its cluster bus is unreachable ({e})"
                    )))
                }
            }
            match known(&id) {
                Some(existing) if existing == member => {}
                Some(existing) => {
                    // A moved node may take its id to a new address; a second
                    // node may not take the id of one that still answers.
                    let mut current = PeerClient::new(&existing.cluster_addr, secret.clone());
                    if current.call(&[PING], Duration::from_secs(1)).await.is_ok() {
                        return Err(refused(format!(
                            "node id {id} belongs to the member at {}, which still answers; give this node another --node-id, or RAFT.NODE REMOVE {id} first",
                            existing.cluster_addr
                        )));
                    }
                    let nodes = BTreeMap::from([(id, member.clone())]);
                    raft.change_membership(ChangeMembers::SetNodes(nodes), true)
                        .await
                        .map_err(raft_error)?;
                }
                None => {
                    let added =
                        tokio::time::timeout(CATCH_UP, raft.add_learner(id, member.clone(), true))
                            .await;
                    match added {
                        Ok(r) => {
                            r.map_err(raft_error)?;
                        }
                        Err(_) => {
                            return Err(refused(format!(
                                "node {id} was added as a learner but did not catch up within {} s; promote it with RAFT.NODE PROMOTE {id} once it has",
                                CATCH_UP.as_secs()
                            )))
                        }
                    }
                }
            }
            if learner || is_voter(&id) {
                return Ok(format!("node {id} is a member"));
            }
            raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
                .await
                .map_err(raft_error)?;
            Ok(format!("node {id} is a voter"))
        }
        MemberChange::Promote { id } => {
            if is_voter(&id) {
                return Ok(format!("node {id} is already a voter"));
            }
            if known(&id).is_none() {
                return Err(refused(format!("node {id} is not a member")));
            }
            raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
                .await
                .map_err(raft_error)?;
            Ok(format!("node {id} is a voter"))
        }
        MemberChange::Remove { id } => {
            if known(&id).is_none() {
                return Err(refused(format!("node {id} is not a member")));
            }
            if is_voter(&id) {
                if voters.len() == 1 {
                    return Err(refused(format!(
                        "node {id} is the only voter; a cluster needs at least one"
                    )));
                }
                raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                    .await
                    .map_err(raft_error)?;
            } else {
                raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                    .await
                    .map_err(raft_error)?;
            }
            Ok(format!("node {id} was removed"))
        }
    }
}

/// Why a join request failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// Worth retrying: the member is unreachable or the cluster has no leader.
    #[error("{0}")]
    Retry(String),
    /// Retrying will not help (wrong secret, id taken, refused).
    #[error("{0}")]
    Fatal(String),
}

/// Sends one command to a member's client port and reads a one-line reply.
async fn command_line(
    stream: &mut BufReader<BusStream>,
    args: &[&str],
) -> Result<Result<String, String>, std::io::Error> {
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.get_mut().write_all(out.as_bytes()).await?;
    stream.get_mut().flush().await?;
    let mut line = String::new();
    if stream.read_line(&mut line).await? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    let line = line.trim_end();
    Ok(match line.split_at_checked(1) {
        Some(("-", err)) => Err(err.to_string()),
        Some((_, ok)) => Ok(ok.to_string()),
        None => Err("empty reply".to_string()),
    })
}

/// Asks the member at `addr` (a client address) to add this node; over TLS
/// when `secret` carries bus TLS (`--tls-cluster`), as the member's port then is.
pub async fn request_join(
    addr: &str,
    secret: Option<&Secret>,
    id: NodeId,
    me: &Member,
    learner: bool,
    user: Option<&str>,
    password: Option<&str>,
) -> Result<String, JoinError> {
    let retry = |e: std::io::Error| match e.kind() {
        // A TLS alert (the member refused this node's certificate) will not
        // go away by retrying.
        std::io::ErrorKind::InvalidData => JoinError::Fatal(format!("{addr}: TLS: {e}")),
        _ => JoinError::Retry(format!("{addr}: {e}")),
    };
    let stream = dial(addr, secret, Duration::from_secs(5))
        .await
        .map_err(|e| match e {
            DialError::Unreachable(why) => JoinError::Retry(format!("{addr}: {why}")),
            DialError::Tls(why) => JoinError::Fatal(format!("{addr}: {why}")),
        })?;
    let mut stream = BufReader::new(stream);
    if let Some(pw) = password {
        let auth = match user {
            Some(user) => vec!["AUTH", user, pw],
            None => vec!["AUTH", pw],
        };
        if let Err(e) = command_line(&mut stream, &auth).await.map_err(retry)? {
            return Err(JoinError::Fatal(format!("{addr} refused AUTH: {e}")));
        }
    }
    let id = id.to_string();
    let mut args = vec!["RAFT.NODE", "ADD", &id, &me.cluster_addr, &me.client_addr];
    if learner {
        args.push("LEARNER");
    }
    match command_line(&mut stream, &args).await.map_err(retry)? {
        Ok(answer) => Ok(answer),
        Err(e)
            if e.starts_with("CLUSTERDOWN")
                || e.starts_with("LOADING")
                || e.starts_with("TRYAGAIN") =>
        {
            Err(JoinError::Retry(format!("{addr}: {e}")))
        }
        Err(e) => Err(JoinError::Fatal(format!(
            "{addr} refused to add this node: {e}"
        ))),
    }
}
