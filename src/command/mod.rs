//! Commands: one module per family, one table that maps names to handlers and
//! feeds `COMMAND`, and one dispatcher that applies auth, loading, arity and
//! `MULTI` rules before calling a handler.

pub mod acl;
pub mod clients;
pub mod connection;
mod error;
pub mod experiment;
pub mod flag;
pub mod insight;
pub mod monitor;
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
pub use spec::{CommandSpec, Runs};
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
    /// Answer with a reply too large to build whole, written page by page.
    Paged(Paged),
    /// Run the queued transaction (`EXEC`).
    Exec,
    /// Wait for change-stream entries (`XREAD ... BLOCK`).
    Block,
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

/// A command of the table and its counter slot; its subcommands' slots
/// follow it, in table order.
struct Indexed {
    spec: &'static CommandSpec,
    slot: usize,
}

static TABLE_INDEX: LazyLock<HashMap<&'static str, Indexed>> = LazyLock::new(|| {
    let mut slot = 0;
    let mut index = HashMap::new();
    for spec in table::COMMANDS {
        index.insert(spec.name, Indexed { spec, slot });
        slot += 1 + spec.subcommands.len();
    }
    index
});

/// The name of the command counted in each slot of `Stats::commands`
/// (`container|sub` for subcommands), in slot order.
pub static SLOT_NAMES: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    table::COMMANDS
        .iter()
        .flat_map(|c| std::iter::once(c.name).chain(c.subcommands.iter().map(|s| s.name)))
        .collect()
});

fn lookup_indexed(name: &[u8]) -> Option<&'static Indexed> {
    let mut buf = [0u8; 32];
    let lower = buf.get_mut(..name.len())?;
    for (d, s) in lower.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    let lower = std::str::from_utf8(lower).ok()?;
    TABLE_INDEX.get(lower)
}

/// Finds a command by name, case-insensitively, without allocating.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    lookup_indexed(name).map(|i| i.spec)
}

/// The counter slot of the command (or container subcommand) a request
/// names, if it names one.
pub(crate) fn slot_of(args: &[Bytes]) -> Option<usize> {
    resolve_slot(args).ok().map(|(_, slot)| slot)
}

/// The command a request names and its counter slot: the existence and
/// subcommand checks of the dispatcher.
fn resolve_slot(args: &[Bytes]) -> Result<(&'static CommandSpec, usize), CommandError> {
    let Some(found) = args.first().and_then(|n| lookup_indexed(n)) else {
        return Err(CommandError::unknown_command(args));
    };
    let spec = found.spec;
    if spec.subcommands.is_empty() || args.len() < 2 {
        return Ok((spec, found.slot));
    }
    let short = |s: &CommandSpec| s.name.rsplit('|').next().unwrap_or(s.name);
    match spec
        .subcommands
        .iter()
        .position(|s| short(s).as_bytes().eq_ignore_ascii_case(&args[1]))
    {
        Some(i) => Ok((&spec.subcommands[i], found.slot + 1 + i)),
        None => Err(CommandError::UnknownSubcommand {
            container: spec.name.to_ascii_uppercase(),
            sub: String::from_utf8_lossy(&args[1]).into_owned(),
        }),
    }
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
    // `CLIENT REPLY SKIP` silences the command after it.
    let skipped = session.reply_mode == session::ReplyMode::Skip;
    if skipped {
        session.reply_mode = session::ReplyMode::On;
    }
    let (output, flow) = run(session, state, args, hangup).await;
    let silent = match session.reply_mode {
        _ if skipped => true,
        session::ReplyMode::Off => true,
        session::ReplyMode::SkipNext => {
            session.reply_mode = session::ReplyMode::Skip;
            true
        }
        session::ReplyMode::On | session::ReplyMode::Skip => false,
    };
    match output {
        Some(Output::Reply(reply)) => {
            if let Reply::Error(text) = &reply {
                crate::metrics::add(&state.stats.error_replies, 1);
                state.stats.errors.count(text);
            }
            // Encoded after running, so `HELLO 3` answers in the protocol it chose.
            if !silent {
                reply.encode(session.proto, out);
            }
        }
        Some(Output::Paged(paged)) if !silent => return (flow, Some(paged)),
        Some(Output::Paged(_)) | None => {}
    }
    (flow, None)
}

async fn run(
    session: &mut Session,
    state: &ServerState,
    args: &[Bytes],
    hangup: impl std::future::Future<Output = ()>,
) -> (Option<Output>, Flow) {
    let checked = resolve_slot(args).and_then(|(spec, slot)| {
        check(session, state, spec, args).inspect_err(|_| state.stats.count_rejected(slot))?;
        Ok((spec, slot))
    });
    let (spec, slot) = match checked {
        Ok(found) => found,
        Err(e) => {
            if let Some(multi) = session.multi.as_mut() {
                multi.aborted = true;
            }
            return (Some(Reply::from(e).into()), Flow::Continue);
        }
    };
    session.last_cmd = spec.name;
    if let Some(multi) = session.multi.as_mut() {
        if !spec.runs.has(Runs::INSIDE_MULTI) {
            let reply = match multi.queue(args, state.settings.client_query_buffer_limit) {
                Ok(()) => Reply::Simple("QUEUED".into()),
                Err(e) => e.into(),
            };
            return (Some(reply.into()), Flow::Continue);
        }
    }
    let blocks = spec.runs.has(Runs::BLOCKS) && args.iter().any(|a| parse::is(a, "BLOCK"));
    // A run of the same fast command is timed and counted as one (flushed
    // at the end of the read batch); any other command is counted alone,
    // after what ran before it.
    let batched = !blocks && spec.has_flag("fast");
    let started = if batched {
        session.tally.begin(&state.stats, slot);
        None
    } else {
        session.tally.flush(&state.stats);
        Some(std::time::Instant::now())
    };
    let (output, flow) = run_checked(session, state, spec, args, blocks, hangup).await;
    let failed = matches!(&output, Some(Output::Reply(r)) if r.is_error());
    match started {
        None => session.tally.end(failed),
        // A blocked command's wait is not its cost (Redis excludes it too).
        Some(t) => state
            .stats
            .count_call(slot, (!blocks).then(|| t.elapsed()), failed),
    }
    (output, flow)
}

/// Runs a command that passed the checks and is not queued.
async fn run_checked(
    session: &mut Session,
    state: &ServerState,
    spec: &'static CommandSpec,
    args: &[Bytes],
    blocks: bool,
    hangup: impl std::future::Future<Output = ()>,
) -> (Option<Output>, Flow) {
    if spec.runs.has(Runs::READS_STORAGE) {
        storage_caught_up(state).await;
    }
    let action = if blocks {
        Ok(Action::Block)
    } else {
        (spec.handler)(&mut Ctx { session, state }, args)
    };
    // A command is shown once it has been accepted to run (refused ones are
    // not); EXEC after the queued commands it ran, as Redis shows it.
    if !matches!(action, Ok(Action::Exec)) {
        show_to_monitors(session, state, spec, args);
    }
    // A login attempt from an address in backoff is answered late.
    if let Some(delay) = session.reply_delay.take() {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = session.client.kill.cancelled() => return (None, Flow::Close),
            _ = state.shutdown.cancelled() => return (None, Flow::Close),
        }
    }
    let reply = match action {
        Ok(Action::Reply(r)) => r,
        Ok(Action::Write(w)) => {
            let reply = commit_one(state, w).await;
            // A write may have changed ACL users: enforce them at once.
            acl::sync_users(state);
            reply
        }
        Ok(Action::Close(r)) => return (Some(r.into()), Flow::Close),
        Ok(Action::Cluster(op)) => raft::run(state, op).await,
        Ok(Action::Paged(p)) => return (Some(Output::Paged(p)), Flow::Continue),
        Ok(Action::Exec) => {
            let output = transaction::exec(session, state).await;
            if let Output::Reply(Reply::Array(items)) = &output {
                for item in items {
                    if let Reply::Error(text) = item {
                        crate::metrics::add(&state.stats.error_replies, 1);
                        state.stats.errors.count(text);
                    }
                }
            }
            show_to_monitors(session, state, spec, args);
            return (Some(output), Flow::Continue);
        }
        Ok(Action::Block) => {
            session.publish();
            session.client.set_blocked(true);
            let output = stream::xread_blocking(session, state, args, hangup).await;
            session.client.set_blocked(false);
            return (Some(output), Flow::Continue);
        }
        Ok(Action::Blocking(job)) => run_blocking(state, job).await,
        Ok(Action::Monitor) => {
            if session.monitor.is_none() {
                session.monitor = Some(state.monitors.add(session.client.clone()));
                session.publish();
            }
            Reply::Ok
        }
        Ok(Action::Shutdown) => {
            tracing::info!("SHUTDOWN requested by client {}", session.client.id);
            state.shutdown.cancel();
            return (None, Flow::Close);
        }
        Err(e) => e.into(),
    };
    (Some(reply.into()), Flow::Continue)
}

/// Most items a reply to [`run_as_value`] may hold.
pub const MAX_VALUE_ITEMS: usize = 100_000;

/// Runs one request for a caller that is not a RESP connection (the HTTP
/// admin API) and returns its reply as a value: the same table, checks (auth,
/// ACL, loading) and handlers as a connection's command, so the two encodings
/// never diverge. A paged reply is read whole, off the runtime thread.
pub async fn run_as_value(session: &mut Session, state: &ServerState, args: &[Bytes]) -> Reply {
    crate::metrics::add(&state.stats.commands_processed, 1);
    let (output, _) = run(session, state, args, std::future::pending()).await;
    session.tally.flush(&state.stats);
    let reply = match output {
        Some(Output::Reply(r)) => r,
        Some(Output::Paged(p)) => {
            match tokio::task::spawn_blocking(move || p.collect(MAX_VALUE_ITEMS)).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => Reply::error(format!("ERR {e}")),
                Err(_) => Reply::error("ERR internal error: reading the reply failed"),
            }
        }
        None => Reply::error("ERR the request was cancelled"),
    };
    if reply.is_error() {
        crate::metrics::add(&state.stats.error_replies, 1);
    }
    reply
}

/// Waits, without blocking the runtime, until state storage holds every
/// write applied here so far (readers of storage never wait themselves).
async fn storage_caught_up(state: &ServerState) {
    if let Some(node) = state.raft.get() {
        node.storage_caught_up(state.store.view().revision).await;
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

/// Commits a single-operation write and renders its reply.
async fn commit_one(state: &ServerState, w: PendingWrite) -> Reply {
    match state.write(w.request).await {
        Ok(mut results) if results.len() == 1 => (w.render)(results.remove(0)),
        Ok(_) => Reply::error("ERR internal error: write returned no outcome"),
        Err(e) => e.into(),
    }
}

/// The checks every command passes before it runs or is queued, in Redis's
/// order (after [`resolve_slot`]'s existence check, which resolves a
/// container's subcommand so its own arity and flags apply): arity,
/// authentication, `no-multi`, the RESP2 subscribed context, then loading;
/// ACL after `no-multi`.
fn check(
    session: &mut Session,
    state: &ServerState,
    spec: &'static CommandSpec,
    args: &[Bytes],
) -> Result<(), CommandError> {
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
        && !spec.runs.has(Runs::WHILE_SUBSCRIBED)
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
    Ok(())
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
