//! The change feed as a read-only Redis stream, `flagstaff:changes`:
//! XREAD, XRANGE, XREVRANGE, XLEN. Entry ids are `<revision>-<seq>`: every
//! change of one revision gets the next seq. A dump at revision R covers
//! everything up to `R-4294967295`, which FLAG.DUMP reports as `stream_id`.

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use super::{parse, Action, CommandError, Ctx, ServerState, Session};
use crate::protocol::{Protocol, Reply};
use crate::store::storage::StreamId;

/// The one stream key.
pub const STREAM_KEY: &str = "flagstaff:changes";

/// Fields of an entry, in order.
const FIELDS: [&str; 8] = [
    "event",
    "kind",
    "key",
    "version",
    "revision",
    "actor",
    "ts",
    "definition",
];

/// Most entries one read returns when COUNT is not given.
const DEFAULT_COUNT: usize = 10_000;

fn check_key(key: &[u8]) -> Result<(), CommandError> {
    if key == STREAM_KEY.as_bytes() {
        Ok(())
    } else {
        Err(CommandError::err(format!(
            "no such stream '{}': flagstaff's only stream is {STREAM_KEY}",
            String::from_utf8_lossy(key)
        )))
    }
}

fn bad_id() -> CommandError {
    CommandError::err("Invalid stream ID specified as stream command argument")
}

/// Parses `R`, `R-S`, `-`, `+`; a bare `R` means `R-0` as a start and
/// `R-<max>` as an end, as in Redis.
fn parse_id(arg: &[u8], end: bool) -> Result<StreamId, CommandError> {
    match arg {
        b"-" => return Ok((0, 0)),
        b"+" => return Ok((u64::MAX, u32::MAX)),
        _ => {}
    }
    let text = std::str::from_utf8(arg).map_err(|_| bad_id())?;
    match text.split_once('-') {
        Some((r, s)) => Ok((
            r.parse().map_err(|_| bad_id())?,
            s.parse().map_err(|_| bad_id())?,
        )),
        None => Ok((
            text.parse().map_err(|_| bad_id())?,
            if end { u32::MAX } else { 0 },
        )),
    }
}

/// Parses a range bound, honouring the exclusive `(` prefix.
fn parse_bound(arg: &[u8], end: bool) -> Result<StreamId, CommandError> {
    let Some(inner) = arg.strip_prefix(b"(") else {
        return parse_id(arg, end);
    };
    let id = parse_id(inner, end)?;
    let moved = if end {
        match id {
            (0, 0) => return Err(bad_id()),
            (r, 0) => (r - 1, u32::MAX),
            (r, s) => (r, s - 1),
        }
    } else {
        match id {
            (u64::MAX, u32::MAX) => return Err(bad_id()),
            (r, u32::MAX) => (r + 1, 0),
            (r, s) => (r, s + 1),
        }
    };
    Ok(moved)
}

fn id_text(id: StreamId) -> String {
    format!("{}-{}", id.0, id.1)
}

fn entry_reply(id: StreamId, event_json: &str) -> Reply {
    let event: Value = serde_json::from_str(event_json).unwrap_or(Value::Null);
    let mut fields = Vec::with_capacity(16);
    for name in FIELDS {
        let value = match event.get(name) {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => "null".into(),
        };
        fields.push(Reply::bulk_static(name));
        fields.push(Reply::bulk(value));
    }
    Reply::Array(vec![Reply::bulk(id_text(id)), Reply::Array(fields)])
}

/// The entry that tells a client its position was compacted away.
fn resync_reply(trimmed: u64, revision: u64) -> Reply {
    Reply::Array(vec![
        Reply::bulk(id_text((trimmed, u32::MAX))),
        Reply::Array(vec![
            Reply::bulk_static("event"),
            Reply::bulk_static("resync"),
            Reply::bulk_static("revision"),
            Reply::bulk(revision.to_string()),
            Reply::bulk_static("compacted_through"),
            Reply::bulk(trimmed.to_string()),
            Reply::bulk_static("hint"),
            Reply::bulk_static("changes up to compacted_through are gone: reload with FLAG.DUMP and read on from the stream_id it reports"),
        ]),
    ])
}

fn node(state: &ServerState) -> Result<&crate::raft::RaftNode, CommandError> {
    state.raft.get().ok_or(CommandError::Loading)
}

/// `XLEN flagstaff:changes`: entries retained.
pub fn xlen(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    check_key(&args[1])?;
    let revision = ctx.state.store.view().revision;
    let n = node(ctx.state)?
        .stream_len(revision)
        .map_err(CommandError::err)?;
    Ok(Reply::Integer(n as i64).into())
}

fn range(ctx: &mut Ctx<'_>, args: &[Bytes], rev: bool) -> Result<Action, CommandError> {
    check_key(&args[1])?;
    let (a, b) = (&args[2], &args[3]);
    let (from, to) = if rev {
        (parse_bound(b, false)?, parse_bound(a, true)?)
    } else {
        (parse_bound(a, false)?, parse_bound(b, true)?)
    };
    let count = match &args[4..] {
        [] => usize::MAX,
        [c, n] if parse::is(c, "COUNT") => parse::int(n)?.max(0) as usize,
        _ => return Err(CommandError::Syntax),
    };
    let revision = ctx.state.store.view().revision;
    let node = node(ctx.state)?;
    let trimmed = node.stream_trimmed().map_err(CommandError::err)?;
    let mut out = Vec::new();
    if !rev && trimmed > 0 && from.0 <= trimmed && count > 0 {
        out.push(resync_reply(trimmed, revision));
    }
    let reader = super::flag::restricted_reader(ctx);
    let wanted = count.saturating_sub(out.len());
    // COUNT counts the entries the user sees, so a restricted read filters
    // before it counts.
    let fetch = if reader.is_some() { usize::MAX } else { wanted };
    let entries = node
        .stream_range(from, to, fetch, rev, revision)
        .map_err(CommandError::err)?;
    out.extend(
        entries
            .iter()
            .filter(|(_, json)| visible(&reader, json))
            .take(wanted)
            .map(|(id, json)| entry_reply(*id, json)),
    );
    Ok(Reply::Array(out).into())
}

/// `XRANGE flagstaff:changes start end [COUNT n]`.
pub fn xrange(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    range(ctx, args, false)
}

/// `XREVRANGE flagstaff:changes end start [COUNT n]`.
pub fn xrevrange(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    range(ctx, args, true)
}

/// A parsed XREAD.
struct ReadRequest {
    count: usize,
    block: Option<Duration>,
    after: StreamId,
}

fn parse_xread(ctx: &Ctx<'_>, args: &[Bytes]) -> Result<ReadRequest, CommandError> {
    let mut count = DEFAULT_COUNT;
    let mut block = None;
    let mut i = 1;
    while i < args.len() && !parse::is(&args[i], "STREAMS") {
        let value = args.get(i + 1).ok_or(CommandError::Syntax)?;
        if parse::is(&args[i], "COUNT") {
            count = parse::int(value)?.max(1) as usize;
        } else if parse::is(&args[i], "BLOCK") {
            let ms = parse::int(value)?;
            if ms < 0 {
                return Err(CommandError::err("timeout is negative"));
            }
            block = Some(if ms == 0 {
                Duration::MAX
            } else {
                Duration::from_millis(ms as u64)
            });
        } else {
            return Err(CommandError::Syntax);
        }
        i += 2;
    }
    let streams = args.get(i + 1..).ok_or(CommandError::Syntax)?;
    if streams.is_empty() || streams.len() % 2 != 0 {
        return Err(CommandError::err(
            "Unbalanced 'xread' list of streams: for each stream key an ID or '$' must be specified.",
        ));
    }
    let (keys, ids) = streams.split_at(streams.len() / 2);
    for k in keys {
        check_key(k)?;
    }
    let id = &ids[0];
    let after = if &id[..] == b"$" {
        (ctx.state.store.view().revision, u32::MAX)
    } else {
        parse_id(id, false)?
    };
    Ok(ReadRequest {
        count,
        block,
        after,
    })
}

/// Whether a change entry is about a key `reader` may read (entries without
/// a key, and every entry for an unrestricted user, are visible).
fn visible(reader: &Option<std::sync::Arc<crate::auth::User>>, event_json: &str) -> bool {
    let Some(user) = reader else {
        return true;
    };
    match serde_json::from_str::<Value>(event_json) {
        Ok(event) => match event.get("key").and_then(Value::as_str) {
            Some(key) => user.can_read(key.as_bytes()),
            None => true,
        },
        Err(_) => false,
    }
}

/// Entries after `after` that `reader` may see, led by a resync entry when
/// `after` was compacted.
fn read_after(
    state: &ServerState,
    after: StreamId,
    count: usize,
    reader: &Option<std::sync::Arc<crate::auth::User>>,
) -> Result<Vec<Reply>, CommandError> {
    let revision = state.store.view().revision;
    let node = node(state)?;
    let trimmed = node.stream_trimmed().map_err(CommandError::err)?;
    if trimmed > 0 && after.0 < trimmed {
        return Ok(vec![resync_reply(trimmed, revision)]);
    }
    let entries = node
        .stream_after(
            after,
            if reader.is_some() { usize::MAX } else { count },
            revision,
        )
        .map_err(CommandError::err)?;
    Ok(entries
        .iter()
        .filter(|(_, json)| visible(reader, json))
        .take(count)
        .map(|(id, json)| entry_reply(*id, json))
        .collect())
}

fn xread_reply(proto: Protocol, entries: Vec<Reply>) -> Reply {
    if entries.is_empty() {
        return Reply::NilArray;
    }
    let key = Reply::bulk_static(STREAM_KEY);
    match proto {
        Protocol::Resp3 => Reply::Map(vec![(key, Reply::Array(entries))]),
        Protocol::Resp2 => Reply::Array(vec![Reply::Array(vec![key, Reply::Array(entries)])]),
    }
}

/// `XREAD [COUNT n] [BLOCK ms] STREAMS flagstaff:changes id` without
/// blocking (inside MULTI, as Redis).
pub fn xread(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let req = parse_xread(ctx, args)?;
    let reader = super::flag::restricted_reader(ctx);
    let entries = read_after(ctx.state, req.after, req.count, &reader)?;
    Ok(xread_reply(ctx.session.proto, entries).into())
}

/// `XREAD` with `BLOCK`: waits for the next change, the timeout, shutdown,
/// or the connection being killed.
pub async fn xread_blocking(session: &mut Session, state: &ServerState, args: &[Bytes]) -> Reply {
    let ctx = Ctx { session, state };
    let req = match parse_xread(&ctx, args) {
        Ok(r) => r,
        Err(e) => return e.into(),
    };
    let proto = ctx.session.proto;
    let reader = super::flag::restricted_reader(&ctx);
    let kill = ctx.session.client.kill.clone();
    let mut changes = state.changes.subscribe();
    let deadline = req.block.map(|d| {
        tokio::time::Instant::now()
            .checked_add(d)
            .unwrap_or_else(far_future)
    });
    loop {
        let entries = match read_after(state, req.after, req.count, &reader) {
            Ok(e) => e,
            Err(e) => return e.into(),
        };
        if !entries.is_empty() {
            return xread_reply(proto, entries);
        }
        let Some(deadline) = deadline else {
            return Reply::NilArray;
        };
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep_until(deadline) => return Reply::NilArray,
            _ = state.shutdown.cancelled() => return Reply::NilArray,
            _ = kill.cancelled() => return Reply::NilArray,
        }
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}
