//! MULTI, EXEC, DISCARD, WATCH, UNWATCH with Redis's semantics. The writes of
//! one EXEC go to the store as one request, so they commit all or nothing.

use bytes::Bytes;

use super::paged::{Output, Paged, Part};
use super::session::MultiState;
use super::spec::Runs;
use super::{lookup, Action, CommandError, Ctx, Session};
use crate::command::ServerState;
use crate::protocol::Reply;
use crate::store::{WriteError, WriteRequest};

/// Redis's answer to a MONITOR queued in a transaction.
const MONITOR_IN_EXEC: &str = "ERR MONITOR isn't allowed for DENY BLOCKING client";

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

/// `EXEC`'s handler: the dispatcher runs [`exec`], which awaits the store.
pub fn exec_handler(ctx: &mut Ctx<'_>, _: &[Bytes]) -> Result<Action, CommandError> {
    if ctx.session.multi.is_none() {
        return Err(CommandError::err("EXEC without MULTI"));
    }
    Ok(Action::Exec)
}

/// `EXEC`: runs the queued commands. Reads queued before the first write see
/// the state before the transaction; reads queued after it see its writes.
pub async fn exec(session: &mut Session, state: &ServerState) -> Output {
    Output::from(exec_replies(session, state).await)
}

/// The replies of `EXEC`, one per queued command (or the one reply that
/// stands for all of them).
async fn exec_replies(session: &mut Session, state: &ServerState) -> Replies {
    let Some(multi) = session.multi.take() else {
        return Reply::from(CommandError::err("EXEC without MULTI")).into();
    };
    let watched = std::mem::take(&mut session.watched);
    if multi.aborted {
        return Reply::error("EXECABORT Transaction discarded because of previous errors.").into();
    }
    if watched
        .iter()
        .any(|(k, rev)| state.store.key_revision(k) != *rev)
    {
        return Reply::NilArray.into();
    }
    let reads_storage = |i: &usize| {
        lookup(&multi.queued[*i][0]).is_some_and(|spec| spec.runs.has(Runs::READS_STORAGE))
    };
    if (0..multi.queued.len()).any(|i| reads_storage(&i)) {
        super::storage_caught_up(state).await;
    }
    let n = multi.queued.len();
    let mut replies: Vec<Option<Output>> = (0..n).map(|_| None).collect();
    let mut renders = Vec::new();
    let mut request: Option<WriteRequest> = None;
    let mut deferred = Vec::new();
    for (i, args) in multi.queued.iter().enumerate() {
        let Some(spec) = lookup(&args[0]) else {
            replies[i] = Some(Reply::from(CommandError::unknown_command(args)).into());
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
            Ok(Action::Reply(r) | Action::Close(r)) => replies[i] = Some(r.into()),
            Ok(Action::Paged(p)) => replies[i] = Some(Output::Paged(p)),
            // As Redis: a connection inside a transaction expects one reply
            // per command, so it cannot start streaming.
            Ok(Action::Monitor) => replies[i] = Some(Reply::error(MONITOR_IN_EXEC).into()),
            Ok(Action::Write(w)) => {
                renders.push((i, w.render, w.request.ops.len()));
                match request.as_mut() {
                    Some(req) => req.ops.extend(w.request.ops),
                    None => request = Some(w.request),
                }
            }
            Ok(Action::Shutdown) => {
                state.shutdown.cancel();
                replies[i] = Some(Reply::Ok.into());
            }
            Ok(Action::Cluster(op)) => replies[i] = Some(super::raft::run(state, op).await.into()),
            Ok(Action::Blocking(job)) => {
                replies[i] = Some(super::run_blocking(state, job).await.into())
            }
            // Never queued: EXEC runs at once, and only the dispatcher blocks.
            Ok(Action::Exec | Action::Block) => {
                replies[i] = Some(Reply::error("ERR internal error: unexpected action").into())
            }
            Err(e) => replies[i] = Some(Reply::from(e).into()),
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
                    replies[i] = Some(
                        match last {
                            Some(r) => render(r),
                            None => Reply::error("ERR internal error: missing outcome"),
                        }
                        .into(),
                    );
                }
            }
            Err(WriteError::WatchFailed) => return Reply::NilArray.into(),
            Err(e) => {
                let reply: Reply = e.into();
                for (i, _, _) in renders {
                    replies[i] = Some(reply.clone().into());
                }
            }
        }
        if deferred.iter().any(reads_storage) {
            super::storage_caught_up(state).await;
        }
        for i in deferred {
            let args = &multi.queued[i];
            if let Some(shown) = super::resolve(args) {
                super::show_to_monitors(session, state, shown, args);
            }
            let output = match lookup(&args[0]) {
                Some(spec) => match (spec.handler)(&mut Ctx { session, state }, args) {
                    Ok(Action::Reply(r) | Action::Close(r)) => r.into(),
                    Ok(Action::Paged(p)) => Output::Paged(p),
                    Ok(Action::Monitor) => Reply::error(MONITOR_IN_EXEC).into(),
                    Ok(_) => Reply::error("ERR internal error: unexpected action").into(),
                    Err(e) => Reply::from(e).into(),
                },
                None => Reply::from(CommandError::unknown_command(args)).into(),
            };
            replies[i] = Some(output);
        }
    }
    // Each queued command counts as a call when EXEC runs it, as in Redis
    // (its time is EXEC's).
    for (args, reply) in multi.queued.iter().zip(&replies) {
        if let Some(slot) = super::slot_of(args) {
            let failed = matches!(reply, Some(Output::Reply(r)) if r.is_error());
            state.stats.count_call(slot, None, failed);
        }
    }
    Replies::Each(
        replies
            .into_iter()
            .map(|r| r.unwrap_or(Output::Reply(Reply::Nil)))
            .collect(),
    )
}

/// What `EXEC` answers.
enum Replies {
    /// One reply for the whole transaction (an error, a failed WATCH).
    One(Reply),
    /// One output per queued command.
    Each(Vec<Output>),
}

impl From<Reply> for Replies {
    fn from(r: Reply) -> Self {
        Replies::One(r)
    }
}

impl From<Replies> for Output {
    fn from(replies: Replies) -> Self {
        let outputs = match replies {
            Replies::One(r) => return Output::Reply(r),
            Replies::Each(outputs) => outputs,
        };
        if outputs.iter().all(|o| matches!(o, Output::Reply(_))) {
            let replies = outputs
                .into_iter()
                .filter_map(|o| match o {
                    Output::Reply(r) => Some(r),
                    Output::Paged(_) => None,
                })
                .collect();
            return Output::Reply(Reply::Array(replies));
        }
        // A queued read too large to build whole: the array is written in parts.
        let mut paged = Paged {
            parts: [Part::ArrayHeader(outputs.len())].into(),
        };
        for o in outputs {
            paged.extend(o.into_paged());
        }
        Output::Paged(paged)
    }
}
