//! Commands: one module per family, one table that maps names to handlers and
//! feeds `COMMAND`, and one dispatcher that applies auth, loading, arity and
//! `MULTI` rules before calling a handler.

pub mod acl;
pub mod clients;
pub mod connection;
mod error;
pub mod flag;
pub mod monitor;
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
    /// Turn this connection into a monitor (`MONITOR`).
    Monitor,
    /// Run file I/O off the runtime thread, then answer with the reply or
    /// commit the write it returns (`ACL LOAD`, `ACL SAVE`).
    Blocking(BlockingJob),
}

/// Work for [`Action::Blocking`].
pub type BlockingJob = Box<dyn FnOnce() -> Result<Action, CommandError> + Send>;

/// Runs a blocking job on the blocking pool; a write it returns is
/// committed (and ACL users re-synced).
pub(crate) async fn run_blocking(state: &ServerState, job: BlockingJob) -> Reply {
    match tokio::task::spawn_blocking(job).await {
        Ok(Ok(Action::Reply(r))) => r,
        Ok(Ok(Action::Write(w))) => {
            let reply = commit_one(state, w).await;
            acl::sync_users(state);
            reply
        }
        Ok(Ok(_)) => Reply::error("ERR internal error: unexpected action"),
        Ok(Err(e)) => e.into(),
        Err(_) => Reply::error("ERR internal error: the blocking job failed"),
    }
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

/// The command (or container subcommand) a request names, if any.
pub(crate) fn resolve(args: &[Bytes]) -> Option<&'static CommandSpec> {
    let spec = lookup(args.first()?)?;
    match args.get(1) {
        Some(sub) if !spec.subcommands.is_empty() => lookup_sub(spec, sub),
        _ => Some(spec),
    }
}

/// Runs one request and appends its reply (if any) to `out`.
pub async fn execute(
    session: &mut Session,
    state: &ServerState,
    args: &[Bytes],
    out: &mut BytesMut,
) -> Flow {
    crate::metrics::add(&state.stats.commands_processed, 1);
    // `CLIENT REPLY SKIP` silences the command after it.
    let skipped = session.reply_mode == session::ReplyMode::Skip;
    if skipped {
        session.reply_mode = session::ReplyMode::On;
    }
    let (reply, flow) = run(session, state, args).await;
    if let Some(reply) = reply {
        if reply.is_error() {
            crate::metrics::add(&state.stats.error_replies, 1);
        }
        match session.reply_mode {
            _ if skipped => {}
            session::ReplyMode::Off => {}
            session::ReplyMode::SkipNext => session.reply_mode = session::ReplyMode::Skip,
            // Encoded after running, so `HELLO 3` answers in the protocol it chose.
            session::ReplyMode::On | session::ReplyMode::Skip => reply.encode(session.proto, out),
        }
    }
    flow
}

async fn run(session: &mut Session, state: &ServerState, args: &[Bytes]) -> (Option<Reply>, Flow) {
    let spec = match check(session, state, args) {
        Ok(spec) => spec,
        Err(e) => {
            if let Some(multi) = session.multi.as_mut() {
                multi.aborted = true;
            }
            return (Some(e.into()), Flow::Continue);
        }
    };
    session.last_cmd = spec.name;
    if let Some(multi) = session.multi.as_mut() {
        if !transaction::runs_inside_multi(spec) {
            let reply = match multi.queue(args, state.settings.client_query_buffer_limit) {
                Ok(()) => Reply::Simple("QUEUED".into()),
                Err(e) => e.into(),
            };
            return (Some(reply), Flow::Continue);
        }
    }
    if spec.name == "exec" {
        let reply = transaction::exec(session, state).await;
        if let Reply::Array(items) = &reply {
            let errors = items.iter().filter(|r| r.is_error()).count();
            crate::metrics::add(&state.stats.error_replies, errors as u64);
        }
        // As Redis: the queued commands were shown as they ran, EXEC after them.
        show_to_monitors(session, state, spec, args);
        return (Some(reply), Flow::Continue);
    }
    // A command is shown once it has been accepted to run (refused ones are not).
    show_to_monitors(session, state, spec, args);
    if spec.name == "xread" && args.iter().any(|a| parse::is(a, "BLOCK")) {
        session.publish();
        session.client.set_blocked(true);
        let reply = stream::xread_blocking(session, state, args).await;
        session.client.set_blocked(false);
        return (Some(reply), Flow::Continue);
    }
    if reads_storage(spec) {
        if let Some(node) = state.raft.get() {
            node.storage_caught_up(state.store.view().revision).await;
        }
    }
    let action = (spec.handler)(&mut Ctx { session, state }, args);
    // A login attempt from an address in backoff is answered late.
    if let Some(delay) = session.reply_delay.take() {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = session.client.kill.cancelled() => return (None, Flow::Close),
            _ = state.shutdown.cancelled() => return (None, Flow::Close),
        }
    }
    match action {
        Ok(Action::Reply(r)) => (Some(r), Flow::Continue),
        Ok(Action::Write(w)) => {
            let reply = commit_one(state, w).await;
            // A write may have changed ACL users: enforce them at once.
            acl::sync_users(state);
            (Some(reply), Flow::Continue)
        }
        Ok(Action::Close(r)) => (Some(r), Flow::Close),
        Ok(Action::Cluster(op)) => (Some(raft::run(state, op).await), Flow::Continue),
        Ok(Action::Blocking(job)) => (Some(run_blocking(state, job).await), Flow::Continue),
        Ok(Action::Monitor) => {
            if session.monitor.is_none() {
                session.monitor = Some(state.monitors.add(session.client.clone()));
                session.publish();
            }
            (Some(Reply::Ok), Flow::Continue)
        }
        Ok(Action::Shutdown) => {
            tracing::info!("SHUTDOWN requested by client {}", session.client.id);
            state.shutdown.cancel();
            (None, Flow::Close)
        }
        Err(e) => (Some(e.into()), Flow::Continue),
    }
}

/// Shows a command that runs to the monitors, unless it is an admin command
/// (Redis never shows those).
pub(crate) fn show_to_monitors(
    session: &Session,
    state: &ServerState,
    spec: &CommandSpec,
    args: &[Bytes],
) {
    if state.monitors.any() && !spec.has_flag("admin") {
        monitor::feed(session, state, spec, args);
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

/// The checks every command passes before it runs or is queued, in Redis's
/// order: existence, arity, authentication, `no-multi`, the RESP2 subscribed
/// context, then loading; ACL after `no-multi`. A container's subcommand is resolved here, so its
/// own arity and flags apply.
fn check(
    session: &mut Session,
    state: &ServerState,
    args: &[Bytes],
) -> Result<&'static CommandSpec, CommandError> {
    let Some(mut spec) = lookup(&args[0]) else {
        return Err(CommandError::unknown_command(args));
    };
    if !spec.subcommands.is_empty() && args.len() >= 2 {
        let Some(sub) = lookup_sub(spec, &args[1]) else {
            return Err(CommandError::UnknownSubcommand {
                container: spec.name.to_ascii_uppercase(),
                sub: String::from_utf8_lossy(&args[1]).into_owned(),
            });
        };
        spec = sub;
    }
    if !spec.arity_ok(args.len()) {
        return Err(CommandError::WrongArity(spec.name.to_string()));
    }
    if !session.authenticated && !spec.has_flag("no-auth") {
        return Err(CommandError::NoAuth);
    }
    if session.multi.is_some() && spec.has_flag("no-multi") {
        return Err(CommandError::err(
            "Command not allowed inside a transaction",
        ));
    }
    // `AUTH`, `HELLO`, `QUIT` and `RESET` bypass ACL, as in Redis.
    if !spec.has_flag("no-auth") {
        acl::check(session, state, spec, args)?;
    }
    if session.proto == crate::protocol::Protocol::Resp2
        && session.subscriptions() > 0
        && !pubsub::allowed_while_subscribed(spec.name)
    {
        return Err(pubsub::subscribed_refusal(spec.name));
    }
    // Commands flagged `loading` (the raft commands, and those that only set
    // up the connection) work while the node loads; the raft commands answer
    // -LOADING themselves until raft is up.
    if state.is_loading() && !spec.has_flag("loading") {
        return Err(CommandError::Loading);
    }
    if session.monitor.is_some() && (spec.is_write() || spec.has_flag("readonly")) {
        return Err(CommandError::err(
            "Replica can't interact with the keyspace",
        ));
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
