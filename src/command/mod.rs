//! Commands: one module per family, one table that maps names to handlers and
//! feeds `COMMAND`, and one dispatcher that applies auth, loading, arity and
//! `MULTI` rules before calling a handler.

pub mod clients;
pub mod connection;
mod error;
pub mod flag;
pub mod paged;
mod parse;
pub mod pubsub;
pub mod raft;
pub mod segment;
pub mod server;
pub mod session;
pub mod spec;
mod state;
pub mod stream;
pub mod table;
pub mod transaction;

use std::collections::HashMap;
use std::sync::LazyLock;

use bytes::{Bytes, BytesMut};

pub use error::CommandError;
pub use paged::{Output, Paged};
pub use session::Session;
pub use spec::CommandSpec;
pub use state::ServerState;

use crate::protocol::Reply;
use crate::store::{OpResult, WriteRequest};

/// What a connection does after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep serving.
    Continue,
    /// Close this connection after flushing replies.
    Close,
}

/// Everything a handler may look at or change.
pub struct Ctx<'a> {
    /// The calling connection's session.
    pub session: &'a mut Session,
    /// Server-wide state.
    pub state: &'a ServerState,
}

/// What a handler asks the dispatcher to do.
pub enum Action {
    /// Answer with this reply.
    Reply(Reply),
    /// Commit this write, then answer with `render` of its outcome.
    Write(PendingWrite),
    /// Answer, then close the connection (`QUIT`).
    Close(Reply),
    /// Start a graceful shutdown; the connection closes without a reply.
    Shutdown,
    /// Run a cluster operation (`RAFT.*`), then answer with its outcome.
    Cluster(raft::ClusterOp),
    /// Answer with a reply too large to build whole, written page by page.
    Paged(Paged),
}

impl From<Reply> for Action {
    fn from(r: Reply) -> Self {
        Action::Reply(r)
    }
}

/// A write and how to render each of its operations' outcomes.
pub struct PendingWrite {
    /// The request for the store.
    pub request: WriteRequest,
    /// Turns the outcome of the request's single operation into the reply.
    pub render: fn(OpResult) -> Reply,
}

static TABLE_INDEX: LazyLock<HashMap<&'static str, &'static CommandSpec>> =
    LazyLock::new(|| table::COMMANDS.iter().map(|c| (c.name, c)).collect());

/// Finds a command by name, case-insensitively, without allocating.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    let mut buf = [0u8; 32];
    let lower = buf.get_mut(..name.len())?;
    for (d, s) in lower.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    let lower = std::str::from_utf8(lower).ok()?;
    TABLE_INDEX.get(lower).copied()
}

/// Finds a subcommand of `parent` by name, case-insensitively.
pub fn lookup_sub(parent: &'static CommandSpec, sub: &[u8]) -> Option<&'static CommandSpec> {
    parent.subcommands.iter().find(|s| {
        let short = s.name.rsplit('|').next().unwrap_or(s.name);
        short.as_bytes().eq_ignore_ascii_case(sub)
    })
}

/// Runs one request and appends its reply (if any) to `out`; a reply too
/// large to build whole is returned instead, for the caller to write page
/// by page. `hangup` completes if the client goes away; a blocking command
/// stops waiting then.
pub async fn execute(
    session: &mut Session,
    state: &ServerState,
    args: &[Bytes],
    out: &mut BytesMut,
    hangup: impl std::future::Future<Output = ()>,
) -> (Flow, Option<Paged>) {
    crate::metrics::add(&state.stats.commands_processed, 1);
    let (output, flow) = run(session, state, args, hangup).await;
    match output {
        // Encoded after running, so `HELLO 3` answers in the protocol it chose.
        Some(Output::Reply(reply)) => reply.encode(session.proto, out),
        Some(Output::Paged(paged)) => return (flow, Some(paged)),
        None => {}
    }
    (flow, None)
}

async fn run(
    session: &mut Session,
    state: &ServerState,
    args: &[Bytes],
    hangup: impl std::future::Future<Output = ()>,
) -> (Option<Output>, Flow) {
    let spec = match check(session, state, args) {
        Ok(spec) => spec,
        Err(e) => {
            if let Some(multi) = session.multi.as_mut() {
                multi.aborted = true;
            }
            return (Some(Reply::from(e).into()), Flow::Continue);
        }
    };
    if let Some(multi) = session.multi.as_mut() {
        if !transaction::runs_inside_multi(spec) {
            multi.queued.push(args.to_vec());
            return (Some(Reply::Simple("QUEUED".into()).into()), Flow::Continue);
        }
    }
    if spec.name == "exec" {
        return (
            Some(transaction::exec(session, state).await),
            Flow::Continue,
        );
    }
    if spec.name == "xread" && args.iter().any(|a| parse::is(a, "BLOCK")) {
        let output = stream::xread_blocking(session, state, args, hangup).await;
        return (Some(output), Flow::Continue);
    }
    if reads_storage(spec) {
        storage_caught_up(state).await;
    }
    let action = (spec.handler)(&mut Ctx { session, state }, args);
    let reply = match action {
        Ok(Action::Reply(r)) => r,
        Ok(Action::Write(w)) => commit_one(state, w).await,
        Ok(Action::Close(r)) => return (Some(r.into()), Flow::Close),
        Ok(Action::Cluster(op)) => raft::run(state, op).await,
        Ok(Action::Paged(p)) => return (Some(Output::Paged(p)), Flow::Continue),
        Ok(Action::Shutdown) => {
            tracing::info!("SHUTDOWN requested by client {}", session.client.id);
            state.shutdown.cancel();
            return (None, Flow::Close);
        }
        Err(e) => e.into(),
    };
    (Some(reply.into()), Flow::Continue)
}

/// Waits, without blocking the runtime, until state storage holds every
/// write applied here so far (readers of storage never wait themselves).
async fn storage_caught_up(state: &ServerState) {
    if let Some(node) = state.raft.get() {
        node.storage_caught_up(state.store.view().revision).await;
    }
}

/// Commands that read state storage (history, the change stream), which
/// must first see every write applied here.
fn reads_storage(spec: &CommandSpec) -> bool {
    matches!(
        spec.name,
        "flag.history" | "flag.rollback" | "xlen" | "xrange" | "xrevrange" | "xread"
    )
}

/// Commits a single-operation write and renders its reply.
async fn commit_one(state: &ServerState, w: PendingWrite) -> Reply {
    match state.write(w.request).await {
        Ok(mut results) if results.len() == 1 => (w.render)(results.remove(0)),
        Ok(_) => Reply::error("ERR internal error: write returned no outcome"),
        Err(e) => e.into(),
    }
}

/// The checks every command passes before it runs or is queued.
fn check(
    session: &Session,
    state: &ServerState,
    args: &[Bytes],
) -> Result<&'static CommandSpec, CommandError> {
    let Some(spec) = lookup(&args[0]) else {
        return Err(CommandError::unknown_command(args));
    };
    // A joining node loads until it has caught up; its raft commands work meanwhile.
    if state.is_loading() && !(spec.group == "cluster" && state.raft.get().is_some()) {
        return Err(CommandError::Loading);
    }
    if !session.authenticated && !spec.has_flag("no-auth") {
        return Err(CommandError::NoAuth);
    }
    if !spec.arity_ok(args.len()) {
        return Err(CommandError::WrongArity(spec.name.to_string()));
    }
    if session.proto == crate::protocol::Protocol::Resp2
        && session.subscriptions() > 0
        && !pubsub::allowed_while_subscribed(spec.name)
    {
        return Err(pubsub::subscribed_refusal(spec.name));
    }
    Ok(spec)
}

/// Runs a container command's subcommand (`CLIENT ID`), with its own arity check.
pub fn dispatch_sub(
    ctx: &mut Ctx<'_>,
    parent: &'static CommandSpec,
    args: &[Bytes],
) -> Result<Action, CommandError> {
    let container = parent.name.to_ascii_uppercase();
    let Some(sub) = lookup_sub(parent, &args[1]) else {
        return Err(CommandError::UnknownSubcommand {
            container,
            sub: String::from_utf8_lossy(&args[1]).into_owned(),
        });
    };
    if !sub.arity_ok(args.len()) {
        return Err(CommandError::WrongArity(sub.name.to_string()));
    }
    (sub.handler)(ctx, args)
}
