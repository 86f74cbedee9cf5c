//! MULTI, EXEC, DISCARD, WATCH, UNWATCH with Redis's semantics. The writes of
//! one EXEC go to the store as one request, so they commit all or nothing.

use bytes::Bytes;

use super::session::MultiState;
use super::{lookup, Action, CommandError, CommandSpec, Ctx, Session};
use crate::command::ServerState;
use crate::protocol::Reply;
use crate::store::{WriteError, WriteRequest};

/// Redis's answer to a MONITOR queued in a transaction.
const MONITOR_IN_EXEC: &str = "ERR MONITOR isn't allowed for DENY BLOCKING client";

/// Whether a command runs at once inside `MULTI` instead of being queued.
pub fn runs_inside_multi(spec: &CommandSpec) -> bool {
    matches!(
        spec.name,
        "exec" | "discard" | "multi" | "watch" | "quit" | "reset"
    )
}

/// `MULTI`.
pub fn multi(ctx: &mut Ctx<'_>, _: &[Bytes]) -> Result<Action, CommandError> {
    if ctx.session.multi.is_some() {
        return Err(CommandError::err("MULTI calls can not be nested"));
    }
    ctx.session.multi = Some(MultiState::default());
    Ok(Reply::Ok.into())
}

/// `DISCARD`.
pub fn discard(ctx: &mut Ctx<'_>, _: &[Bytes]) -> Result<Action, CommandError> {
    if ctx.session.multi.take().is_none() {
        return Err(CommandError::err("DISCARD without MULTI"));
    }
    ctx.session.watched.clear();
    Ok(Reply::Ok.into())
}

/// `WATCH key [key ...]`: EXEC fails if a flag or segment with one of these
/// keys changes before it.
pub fn watch(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    if ctx.session.multi.is_some() {
        return Err(CommandError::err("WATCH inside MULTI is not allowed"));
    }
    for key in &args[1..] {
        let key = String::from_utf8_lossy(key).into_owned();
        let rev = ctx.state.store.key_revision(&key);
        if !ctx.session.watched.iter().any(|(k, _)| *k == key) {
            ctx.session.watched.push((key, rev));
        }
    }
    Ok(Reply::Ok.into())
}

/// `UNWATCH`.
pub fn unwatch(ctx: &mut Ctx<'_>, _: &[Bytes]) -> Result<Action, CommandError> {
    ctx.session.watched.clear();
    Ok(Reply::Ok.into())
}

/// Placeholder handler for `EXEC`; the dispatcher runs [`exec`] instead
/// because it awaits the store.
pub fn exec_handler(_: &mut Ctx<'_>, _: &[Bytes]) -> Result<Action, CommandError> {
    Err(CommandError::err("EXEC without MULTI"))
}

/// `EXEC`: runs the queued commands. Reads queued before the first write see
/// the state before the transaction; reads queued after it see its writes.
pub async fn exec(session: &mut Session, state: &ServerState) -> Reply {
    let Some(multi) = session.multi.take() else {
        return CommandError::err("EXEC without MULTI").into();
    };
    let watched = std::mem::take(&mut session.watched);
    if multi.aborted {
        return Reply::error("EXECABORT Transaction discarded because of previous errors.");
    }
    if watched
        .iter()
        .any(|(k, rev)| state.store.key_revision(k) != *rev)
    {
        return Reply::NilArray;
    }
    let n = multi.queued.len();
    let mut replies: Vec<Option<Reply>> = vec![None; n];
    let mut renders = Vec::new();
    let mut request: Option<WriteRequest> = None;
    let mut deferred = Vec::new();
    for (i, args) in multi.queued.iter().enumerate() {
        let Some(spec) = lookup(&args[0]) else {
            replies[i] = Some(CommandError::unknown_command(args).into());
            continue;
        };
        if request.is_some() && !spec.is_write() {
            deferred.push(i);
            continue;
        }
        if let Some(shown) = super::resolve(args) {
            super::show_to_monitors(session, state, shown, args);
        }
        match (spec.handler)(&mut Ctx { session, state }, args) {
            Ok(Action::Reply(r) | Action::Close(r)) => replies[i] = Some(r),
            // As Redis: a connection inside a transaction expects one reply
            // per command, so it cannot start streaming.
            Ok(Action::Monitor) => replies[i] = Some(Reply::error(MONITOR_IN_EXEC)),
            Ok(Action::Write(w)) => {
                renders.push((i, w.render, w.request.ops.len()));
                match request.as_mut() {
                    Some(req) => req.ops.extend(w.request.ops),
                    None => request = Some(w.request),
                }
            }
            Ok(Action::Shutdown) => {
                state.shutdown.cancel();
                replies[i] = Some(Reply::Ok);
            }
            Ok(Action::Cluster(op)) => replies[i] = Some(super::raft::run(state, op).await),
            Ok(Action::Blocking(job)) => replies[i] = Some(super::run_blocking(state, job).await),
            Err(e) => replies[i] = Some(e.into()),
        }
    }
    if let Some(mut req) = request {
        req.watch = watched;
        match state.write(req).await {
            Ok(results) => {
                let mut results = results.into_iter();
                for (i, render, count) in renders {
                    // Each queued command contributed `count` operations; its
                    // reply renders the last.
                    let mut last = None;
                    for _ in 0..count {
                        last = results.next();
                    }
                    replies[i] = Some(match last {
                        Some(r) => render(r),
                        None => Reply::error("ERR internal error: missing outcome"),
                    });
                }
            }
            Err(WriteError::WatchFailed) => return Reply::NilArray,
            Err(e) => {
                let reply: Reply = e.into();
                for (i, _, _) in renders {
                    replies[i] = Some(reply.clone());
                }
            }
        }
        for i in deferred {
            let args = &multi.queued[i];
            if let Some(shown) = super::resolve(args) {
                super::show_to_monitors(session, state, shown, args);
            }
            let reply = match lookup(&args[0]) {
                Some(spec) => match (spec.handler)(&mut Ctx { session, state }, args) {
                    Ok(Action::Reply(r) | Action::Close(r)) => r,
                    Ok(Action::Monitor) => Reply::error(MONITOR_IN_EXEC),
                    Ok(_) => Reply::error("ERR internal error: unexpected action"),
                    Err(e) => e.into(),
                },
                None => CommandError::unknown_command(args).into(),
            };
            replies[i] = Some(reply);
        }
    }
    Reply::Array(
        replies
            .into_iter()
            .map(|r| r.unwrap_or(Reply::Nil))
            .collect(),
    )
}
