//! `RAFT.*`: cluster administration in the RedisRaft vocabulary, and
//! `RAFT.BARRIER` for read-your-writes on any node. Handlers parse; the
//! dispatcher awaits the cluster operation they return.

use std::time::Duration;

use bytes::Bytes;

use super::parse::{is, uint};
use super::{dispatch_sub, table, Action, CommandError, Ctx, ServerState};
use crate::protocol::Reply;
use crate::raft::{Member, MemberChange};

/// A cluster operation that takes time (awaited by the dispatcher).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterOp {
    /// Wait until this node has applied `revision` (default: a read index).
    Barrier {
        /// The revision, or `None` for a linearizable read index.
        revision: Option<u64>,
        /// How long to wait.
        timeout: Duration,
    },
    /// Change the membership (on the leader).
    Members(MemberChange),
    /// Make this uninitialized node a one-member cluster.
    Init,
    /// Join the cluster of the member at this client address.
    Join(String),
    /// Ask every other member a node-local query and render every answer
    /// with this node's own.
    Gather(Gather),
}

/// One node's id and its answer to a node-local query, or why it has none.
pub type NodeAnswer = (u64, Result<Bytes, String>);

/// A node-local query for every member: `FLAG.STATS`, experiment units.
#[derive(Debug, Clone)]
pub struct Gather {
    /// The query, as the bus carries it.
    pub body: Bytes,
    /// This node's id and its own answer.
    pub local: (u64, Bytes),
    /// Renders the answers (this node's first), each with its node id.
    pub render: fn(Vec<NodeAnswer>) -> Reply,
}

impl PartialEq for Gather {
    /// Two gathers are equal when they ask and answer the same.
    fn eq(&self, other: &Self) -> bool {
        self.body == other.body && self.local == other.local
    }
}

impl Eq for Gather {}

/// How long a member may take to answer a node-local query.
const GATHER_TIMEOUT: Duration = Duration::from_secs(2);

fn node_id(arg: &[u8]) -> Result<u64, CommandError> {
    match uint(arg) {
        Ok(0) | Err(_) => Err(CommandError::err("node id must be a positive integer")),
        Ok(id) => Ok(id),
    }
}

fn address(arg: &[u8], what: &str) -> Result<String, CommandError> {
    let text =
        std::str::from_utf8(arg).map_err(|_| CommandError::err(format!("{what} is not text")))?;
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(text.to_string())
        }
        _ => Err(CommandError::err(format!(
            "{what} '{text}' is not host:port"
        ))),
    }
}

/// `RAFT.INFO`.
pub fn info(ctx: &mut Ctx<'_>, _: &[Bytes]) -> Result<Action, CommandError> {
    let node = ctx.state.raft.get().ok_or(CommandError::Loading)?;
    Ok(Reply::Verbatim(node.info().into()).into())
}

/// `RAFT.BARRIER [revision] [TIMEOUT ms]`.
pub fn barrier(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let mut rest = &args[1..];
    let mut revision = None;
    if let Some(first) = rest.first() {
        if !is(first, "TIMEOUT") {
            revision = Some(
                uint(first)
                    .map_err(|_| CommandError::err("revision must be a non-negative integer"))?,
            );
            rest = &rest[1..];
        }
    }
    let [timeout] = super::parse::options(rest, ["TIMEOUT"])?;
    let timeout = match timeout {
        Some(ms) => match uint(ms) {
            Ok(ms) if ms > 0 => Duration::from_millis(ms),
            _ => {
                return Err(CommandError::err(
                    "timeout must be a positive number of milliseconds",
                ))
            }
        },
        None => Duration::from_millis(ctx.state.settings.write_timeout_ms),
    };
    Ok(Action::Cluster(ClusterOp::Barrier { revision, timeout }))
}

/// `RAFT.NODE <subcommand>`.
pub fn node(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    dispatch_sub(ctx, &table::RAFT_NODE, args)
}

/// `RAFT.NODE ADD id cluster-addr [client-addr] [LEARNER]`.
pub fn node_add(_: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let id = node_id(&args[2])?;
    let cluster_addr = address(&args[3], "cluster address")?;
    let mut client_addr = String::new();
    let mut learner = false;
    for a in &args[4..] {
        if is(a, "LEARNER") && !learner {
            learner = true;
        } else if client_addr.is_empty() && !learner {
            client_addr = address(a, "client address")?;
        } else {
            return Err(CommandError::Syntax);
        }
    }
    Ok(Action::Cluster(ClusterOp::Members(MemberChange::Add {
        id,
        member: Member {
            cluster_addr,
            client_addr,
        },
        learner,
    })))
}

/// `RAFT.NODE REMOVE id`.
pub fn node_remove(_: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let id = node_id(&args[2])?;
    Ok(Action::Cluster(ClusterOp::Members(MemberChange::Remove {
        id,
    })))
}

/// `RAFT.NODE PROMOTE id`.
pub fn node_promote(_: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let id = node_id(&args[2])?;
    Ok(Action::Cluster(ClusterOp::Members(MemberChange::Promote {
        id,
    })))
}

/// `RAFT.CLUSTER <subcommand>`.
pub fn cluster(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    dispatch_sub(ctx, &table::RAFT_CLUSTER, args)
}

/// `RAFT.CLUSTER INIT`.
pub fn cluster_init(_: &mut Ctx<'_>, _: &[Bytes]) -> Result<Action, CommandError> {
    Ok(Action::Cluster(ClusterOp::Init))
}

/// `RAFT.CLUSTER JOIN host:port`.
pub fn cluster_join(_: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    Ok(Action::Cluster(ClusterOp::Join(address(
        &args[2],
        "member address",
    )?)))
}

/// Runs a cluster operation and renders its reply.
pub async fn run(state: &ServerState, op: ClusterOp) -> Reply {
    let Some(node) = state.raft.get() else {
        return CommandError::Loading.into();
    };
    match op {
        ClusterOp::Barrier { revision, timeout } => match node.barrier(revision, timeout).await {
            Ok(applied) => Reply::Integer(applied as i64),
            Err(e) => e.into(),
        },
        ClusterOp::Members(change) => {
            tracing::info!(?change, "membership change requested");
            match node.change_members(change).await {
                Ok(done) => {
                    tracing::info!(%done, "membership changed");
                    Reply::Ok
                }
                Err(e) => Reply::error(e.to_string()),
            }
        }
        ClusterOp::Init if node.initialized() => {
            Reply::error("ERR this node already belongs to a cluster")
        }
        ClusterOp::Init => match node.initialize().await {
            Ok(()) => Reply::Ok,
            Err(e) => Reply::error(format!("ERR {e}")),
        },
        ClusterOp::Join(_) if node.initialized() => Reply::error(
            "ERR this node already belongs to a cluster; start an empty node with --join to add it to another",
        ),
        ClusterOp::Join(addr) => match node.join(&addr).await {
            Ok(()) => Reply::Ok,
            Err(e) => Reply::error(format!("ERR {e}")),
        },
        ClusterOp::Gather(g) => {
            let mut answers = vec![(g.local.0, Ok(g.local.1))];
            answers.extend(node.ask_members(g.body, GATHER_TIMEOUT).await);
            (g.render)(answers)
        }
    }
}
