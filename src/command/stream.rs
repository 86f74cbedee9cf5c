//! The change feed as a read-only Redis stream, `flagstaff:changes`:
//! XREAD, XRANGE, XREVRANGE, XLEN. Entry ids are `<revision>-<seq>`: every
//! change of one revision gets the next seq. A dump at revision R covers
//! everything up to `R-4294967295`, which FLAG.DUMP reports as `stream_id`.
//!
//! The same commands read `flagstaff:events`, this node's analytics events
//! (ids `<unix ms>-<seq>`, see `analytics::events`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use super::paged::{Output, PageSource, Paged, Part, PAGE_BYTES, PAGE_ITEMS};
use super::{parse, Action, CommandError, Ctx, ServerState, Session};
use crate::protocol::{Protocol, Reply};
use crate::store::storage::{StateStorage, StreamId};

/// The change stream's key.
pub const STREAM_KEY: &str = "flagstaff:changes";
/// The analytics events stream's key.
pub const EVENTS_KEY: &str = "flagstaff:events";

/// Which of the two streams a key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Changes,
    Events,
}

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

fn check_key(key: &[u8]) -> Result<Stream, CommandError> {
    if key == STREAM_KEY.as_bytes() {
        Ok(Stream::Changes)
    } else if key == EVENTS_KEY.as_bytes() {
        Ok(Stream::Events)
    } else {
        Err(CommandError::err(format!(
            "no such stream '{}': flagstaff's streams are {STREAM_KEY} and {EVENTS_KEY}",
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

/// Parses a range bound, honouring the exclusive `(` prefix (which, as in
/// Redis, takes a strict id: not `-` or `+`).
fn parse_bound(arg: &[u8], end: bool) -> Result<StreamId, CommandError> {
    let inner = match arg.strip_prefix(b"(") {
        Some(inner) if !inner.is_empty() => inner,
        _ => return parse_id(arg, end),
    };
    if inner == b"-" || inner == b"+" {
        return Err(bad_id());
    }
    let id = parse_id(inner, end)?;
    let moved = if end { before(id) } else { after(id) };
    moved.ok_or_else(|| {
        CommandError::err(if end {
            "invalid end ID for the interval"
        } else {
            "invalid start ID for the interval"
        })
    })
}

/// The id right after `id`, if any.
fn after(id: StreamId) -> Option<StreamId> {
    match id {
        (u64::MAX, u32::MAX) => None,
        (r, u32::MAX) => Some((r + 1, 0)),
        (r, s) => Some((r, s + 1)),
    }
}

/// The id right before `id`, if any.
fn before(id: StreamId) -> Option<StreamId> {
    match id {
        (0, 0) => None,
        (r, 0) => Some((r - 1, u32::MAX)),
        (r, s) => Some((r, s - 1)),
    }
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
    if check_key(&args[1])? == Stream::Events {
        let n = ctx.state.events.len(super::insight::now());
        return Ok(Reply::Integer(n as i64).into());
    }
    let node = node(ctx.state)?;
    let revision = node.readable_revision(ctx.state.store.view().revision);
    let n = node.stream_len(revision).map_err(CommandError::err)?;
    Ok(Reply::Integer(n as i64).into())
}

/// Change-stream entries of a range, read a page at a time: led by entries
/// already read (a resync entry, the first page), at most `left` more.
struct StreamPages {
    storage: Arc<dyn StateStorage>,
    /// A restricted user sees only entries about keys it may read (COUNT
    /// counts what it sees).
    reader: Reader,
    ready: Vec<Reply>,
    /// The part of the range not read yet (`None` once it is exhausted).
    range: Option<(StreamId, StreamId)>,
    rev: bool,
    left: usize,
}

impl StreamPages {
    /// Reads the first page, so a small result needs nothing more.
    fn start(
        storage: Arc<dyn StateStorage>,
        reader: Reader,
        lead: Option<Reply>,
        range: (StreamId, StreamId),
        rev: bool,
        count: usize,
    ) -> Result<StreamPages, CommandError> {
        let ready: Vec<Reply> = lead.into_iter().collect();
        let mut pages = StreamPages {
            storage,
            reader,
            left: count.saturating_sub(ready.len()),
            ready,
            range: Some(range),
            rev,
        };
        let first = pages.read().map_err(CommandError::err)?;
        pages.ready.extend(first);
        Ok(pages)
    }

    /// Whether every item is in `ready`.
    fn complete(&self) -> bool {
        self.left == 0 || self.range.is_none()
    }

    /// The next page: at least one visible entry unless none are left.
    fn read(&mut self) -> Result<Vec<Reply>, String> {
        let mut out = Vec::new();
        while out.is_empty() && self.left > 0 {
            let Some((from, to)) = self.range else {
                break;
            };
            let want = self.left.min(PAGE_ITEMS);
            let (page, more) = self
                .storage
                .stream_page(from, to, self.rev, want, PAGE_BYTES)
                .map_err(|e| e.to_string())?;
            self.range = next_range(from, to, self.rev, more, page.last().map(|(id, _)| *id));
            out.extend(
                page.iter()
                    .filter(|(_, json)| visible(&self.reader, json))
                    .take(self.left)
                    .map(|(id, json)| entry_reply(*id, json)),
            );
            self.left -= out.len();
        }
        Ok(out)
    }
}

impl PageSource for StreamPages {
    fn total(&mut self) -> Result<usize, String> {
        let Some((from, to)) = self.range.filter(|_| self.left > 0) else {
            return Ok(self.ready.len());
        };
        let rest = match &self.reader {
            None => self
                .storage
                .stream_count(from, to)
                .map_err(|e| e.to_string())?,
            // Only the entries this user sees count: walk the rest of the
            // range a page at a time, holding none of it.
            Some(_) => {
                let (mut range, mut seen) = (Some((from, to)), 0usize);
                while let Some((from, to)) = range.filter(|_| seen < self.left) {
                    let (page, more) = self
                        .storage
                        .stream_page(from, to, self.rev, PAGE_ITEMS, PAGE_BYTES)
                        .map_err(|e| e.to_string())?;
                    seen += page
                        .iter()
                        .filter(|(_, json)| visible(&self.reader, json))
                        .count();
                    range = next_range(from, to, self.rev, more, page.last().map(|(id, _)| *id));
                }
                seen
            }
        };
        Ok(self.ready.len() + rest.min(self.left))
    }

    fn next_page(&mut self) -> Result<Vec<Reply>, String> {
        if !self.ready.is_empty() {
            return Ok(std::mem::take(&mut self.ready));
        }
        self.read()
    }
}

/// What is left of `from..=to` after a page that ended at `last`.
fn next_range(
    from: StreamId,
    to: StreamId,
    rev: bool,
    more: bool,
    last: Option<StreamId>,
) -> Option<(StreamId, StreamId)> {
    match last {
        _ if !more => None,
        None => None,
        Some(last) if rev => before(last).map(|to| (from, to)),
        Some(last) => after(last).map(|from| (from, to)),
    }
}

/// A restricted reader of the change stream (`None`: sees every entry).
type Reader = Option<Arc<crate::auth::User>>;

/// Whether a change entry is about a key `reader` may read (entries without
/// a key, and every entry for an unrestricted user, are visible).
fn visible(reader: &Reader, event_json: &str) -> bool {
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

/// Parses `[COUNT n]` options as Redis's XRANGE: the last one counts; a
/// count of 0 or less means an empty answer (`None`).
fn range_count(args: &[Bytes]) -> Result<Option<usize>, CommandError> {
    let mut count = usize::MAX;
    let mut i = 0;
    while i < args.len() {
        match args.get(i + 1) {
            Some(n) if parse::is(&args[i], "COUNT") => {
                count = usize::try_from(parse::int(n)?).unwrap_or(0);
            }
            _ => return Err(CommandError::Syntax),
        }
        i += 2;
    }
    Ok((count > 0).then_some(count))
}

fn range(ctx: &mut Ctx<'_>, args: &[Bytes], rev: bool) -> Result<Action, CommandError> {
    let stream = check_key(&args[1])?;
    let (a, b) = (&args[2], &args[3]);
    let (from, to) = if rev {
        (parse_bound(b, false)?, parse_bound(a, true)?)
    } else {
        (parse_bound(a, false)?, parse_bound(b, true)?)
    };
    let Some(count) = range_count(&args[4..])? else {
        // As Redis 7: COUNT 0 (or less) answers a null array.
        return Ok(Reply::NilArray.into());
    };
    if stream == Stream::Events {
        let reader = super::flag::restricted_reader(ctx);
        let pages = EventPages::start(ctx.state, reader, (from, to), rev, count);
        if pages.complete() {
            return Ok(Reply::Array(pages.ready).into());
        }
        return Ok(Action::Paged(Paged::array(pages)));
    }
    let node = node(ctx.state)?;
    let revision = node.readable_revision(ctx.state.store.view().revision);
    let storage = node.storage_at(revision).map_err(CommandError::err)?;
    let trimmed = node.stream_trimmed().map_err(CommandError::err)?;
    let lead = (!rev && trimmed > 0 && from.0 <= trimmed).then(|| resync_reply(trimmed, revision));
    // Writes applied later are not part of this answer.
    let to = to.min((revision, u32::MAX));
    let reader = super::flag::restricted_reader(ctx);
    let pages = StreamPages::start(storage, reader, lead, (from, to), rev, count)?;
    if pages.complete() {
        return Ok(Reply::Array(pages.ready).into());
    }
    Ok(Action::Paged(Paged::array(pages)))
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
    stream: Stream,
}

fn parse_xread(ctx: &Ctx<'_>, args: &[Bytes]) -> Result<ReadRequest, CommandError> {
    // As Redis 7: no COUNT, or COUNT 0 or less, means no limit.
    let mut count = usize::MAX;
    let mut block = None;
    let mut i = 1;
    while i < args.len() && !parse::is(&args[i], "STREAMS") {
        let value = args.get(i + 1).ok_or(CommandError::Syntax)?;
        if parse::is(&args[i], "COUNT") {
            count = match parse::int(value)? {
                n if n > 0 => usize::try_from(n).unwrap_or(usize::MAX),
                _ => usize::MAX,
            };
        } else if parse::is(&args[i], "BLOCK") {
            let ms = parse::int(value)
                .map_err(|_| CommandError::err("timeout is not an integer or out of range"))?;
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
            "Unbalanced 'xread' list of streams: for each stream key an ID, '+', or '$' must be specified.",
        ));
    }
    let (keys, ids) = streams.split_at(streams.len() / 2);
    let mut stream = None;
    for k in keys {
        let s = check_key(k)?;
        if stream.is_some_and(|first| first != s) {
            return Err(CommandError::err(format!(
                "XREAD reads one of {STREAM_KEY} and {EVENTS_KEY} at a time"
            )));
        }
        stream = Some(s);
    }
    let stream = stream.unwrap_or(Stream::Changes);
    let id = &ids[0];
    let after = match (&id[..], stream) {
        (b"$", Stream::Changes) => (ctx.state.store.view().revision, u32::MAX),
        (b"$", Stream::Events) => ctx.state.events.top_id(),
        // As Redis 7.4: `+` reads the last entry.
        (b"+", Stream::Changes) => last_entry(ctx.state)?.and_then(before).unwrap_or((0, 0)),
        (b"+", Stream::Events) => ctx
            .state
            .events
            .last_id()
            .and_then(before)
            .unwrap_or((0, 0)),
        _ => parse_id(id, false)?,
    };
    Ok(ReadRequest {
        count,
        block,
        after,
        stream,
    })
}

/// The id of the newest entry in the stream, if any.
fn last_entry(state: &ServerState) -> Result<Option<StreamId>, CommandError> {
    let node = node(state)?;
    let revision = node.readable_revision(state.store.view().revision);
    let storage = node.storage_at(revision).map_err(CommandError::err)?;
    let (newest, _) = storage
        .stream_page((0, 0), (revision, u32::MAX), true, 1, 0)
        .map_err(|e| CommandError::err(e.to_string()))?;
    Ok(newest.first().map(|(id, _)| *id))
}

/// Entries after `after` (none: `Ok(None)`), led by a resync entry when
/// `after` was compacted.
fn read_after(
    state: &ServerState,
    proto: Protocol,
    req: &ReadRequest,
    reader: &Reader,
) -> Result<Option<Output>, CommandError> {
    let (after_id, count) = (req.after, req.count);
    if req.stream == Stream::Events {
        let Some(from) = after(after_id) else {
            return Ok(None);
        };
        let range = (from, (u64::MAX, u32::MAX));
        let pages = EventPages::start(state, reader.clone(), range, false, count);
        if pages.ready.is_empty() {
            return Ok(None);
        }
        if pages.complete() {
            return Ok(Some(xread_reply(proto, EVENTS_KEY, pages.ready).into()));
        }
        return Ok(Some(Output::Paged(xread_paged(proto, EVENTS_KEY, pages))));
    }
    let node = node(state)?;
    let revision = node.readable_revision(state.store.view().revision);
    let trimmed = node.stream_trimmed().map_err(CommandError::err)?;
    if trimmed > 0 && after_id.0 < trimmed {
        return Ok(Some(
            xread_reply(proto, STREAM_KEY, vec![resync_reply(trimmed, revision)]).into(),
        ));
    }
    let Some(from) = after(after_id) else {
        return Ok(None);
    };
    let storage = node.storage_at(revision).map_err(CommandError::err)?;
    let range = (from, (revision, u32::MAX));
    let pages = StreamPages::start(storage, reader.clone(), None, range, false, count)?;
    if pages.ready.is_empty() {
        return Ok(None);
    }
    if pages.complete() {
        return Ok(Some(xread_reply(proto, STREAM_KEY, pages.ready).into()));
    }
    Ok(Some(Output::Paged(xread_paged(proto, STREAM_KEY, pages))))
}

/// The entries of one stream, framed as xread_reply frames them.
fn xread_paged(proto: Protocol, stream: &'static str, pages: impl PageSource) -> Paged {
    let key = Part::Whole(Reply::bulk_static(stream));
    let parts = match proto {
        Protocol::Resp3 => vec![Part::MapHeader(1), key],
        Protocol::Resp2 => vec![Part::ArrayHeader(1), Part::ArrayHeader(2), key],
    };
    let mut paged = Paged {
        parts: parts.into(),
    };
    paged.extend(Paged::array(pages));
    paged
}

fn xread_reply(proto: Protocol, stream: &'static str, entries: Vec<Reply>) -> Reply {
    if entries.is_empty() {
        return Reply::NilArray;
    }
    let key = Reply::bulk_static(stream);
    match proto {
        Protocol::Resp3 => Reply::Map(vec![(key, Reply::Array(entries))]),
        Protocol::Resp2 => Reply::Array(vec![Reply::Array(vec![key, Reply::Array(entries)])]),
    }
}

/// `XREAD [COUNT n] [BLOCK ms] STREAMS flagstaff:changes id` without
/// blocking (inside MULTI, as Redis).
pub fn xread(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let req = parse_xread(ctx, args)?;
    Ok(
        match read_after(
            ctx.state,
            ctx.session.proto,
            &req,
            &super::flag::restricted_reader(ctx),
        )? {
            Some(Output::Paged(p)) => Action::Paged(p),
            Some(Output::Reply(r)) => Action::Reply(r),
            None => Action::Reply(Reply::NilArray),
        },
    )
}

/// `XREAD` with `BLOCK`: waits for the next change, the timeout, shutdown,
/// the connection being killed, or the client hanging up (`hangup`).
pub async fn xread_blocking(
    session: &mut Session,
    state: &ServerState,
    args: &[Bytes],
    hangup: impl std::future::Future<Output = ()>,
) -> Output {
    if let Some(node) = state.raft.get() {
        node.storage_caught_up(state.store.view().revision).await;
    }
    let ctx = Ctx { session, state };
    let req = match parse_xread(&ctx, args) {
        Ok(r) => r,
        Err(e) => return Reply::from(e).into(),
    };
    let proto = ctx.session.proto;
    let reader = super::flag::restricted_reader(&ctx);
    let kill = ctx.session.client.kill.clone();
    let mut changes = state.changes.subscribe();
    let mut events = state.events.subscribe();
    let deadline = req.block.map(|d| {
        tokio::time::Instant::now()
            .checked_add(d)
            .unwrap_or_else(far_future)
    });
    tokio::pin!(hangup);
    loop {
        if let Some(node) = state.raft.get() {
            node.storage_caught_up(state.store.view().revision).await;
        }
        match read_after(state, proto, &req, &reader) {
            Ok(Some(output)) => return output,
            Ok(None) => {}
            Err(e) => return Reply::from(e).into(),
        }
        let nil = Output::Reply(Reply::NilArray);
        let Some(deadline) = deadline else {
            return nil;
        };
        let appended = async {
            match req.stream {
                Stream::Changes => changes.changed().await,
                Stream::Events => events.changed().await,
            }
        };
        tokio::select! {
            _ = appended => {}
            _ = tokio::time::sleep_until(deadline) => return nil,
            _ = state.shutdown.cancelled() => return nil,
            _ = kill.cancelled() => return nil,
            // Nobody to answer: the connection closes right after.
            _ = &mut hangup => return nil,
        }
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

/// Events-stream entries of a range, read from memory a page at a time.
struct EventPages {
    log: Arc<crate::analytics::events::EventLog>,
    reader: Reader,
    ready: Vec<Reply>,
    range: Option<(StreamId, StreamId)>,
    rev: bool,
    left: usize,
    now: u64,
}

impl EventPages {
    fn start(
        state: &ServerState,
        reader: Reader,
        range: (StreamId, StreamId),
        rev: bool,
        count: usize,
    ) -> EventPages {
        let mut pages = EventPages {
            log: state.events.clone(),
            reader,
            ready: Vec::new(),
            range: Some(range),
            rev,
            left: count,
            now: super::insight::now(),
        };
        pages.ready = pages.read();
        pages
    }

    fn complete(&self) -> bool {
        self.left == 0 || self.range.is_none()
    }

    /// The next page: at least one visible entry unless none are left.
    fn read(&mut self) -> Vec<Reply> {
        let mut out = Vec::new();
        while out.is_empty() && self.left > 0 {
            let Some((from, to)) = self.range else {
                break;
            };
            let want = self.left.min(PAGE_ITEMS);
            let page = self.log.range(from, to, self.rev, want, self.now);
            let more = page.len() == want;
            self.range = next_range(from, to, self.rev, more, page.last().map(|(id, _)| *id));
            out.extend(
                page.iter()
                    .filter(|(_, e)| event_visible(&self.reader, e))
                    .take(self.left)
                    .map(|(id, e)| event_reply(*id, e)),
            );
            self.left -= out.len();
        }
        out
    }
}

impl PageSource for EventPages {
    fn total(&mut self) -> Result<usize, String> {
        let Some((from, to)) = self.range.filter(|_| self.left > 0) else {
            return Ok(self.ready.len());
        };
        let rest = match &self.reader {
            None => self.log.count(from, to),
            Some(_) => self
                .log
                .range(from, to, self.rev, self.left, self.now)
                .iter()
                .filter(|(_, e)| event_visible(&self.reader, e))
                .count(),
        };
        Ok(self.ready.len() + rest.min(self.left))
    }

    fn next_page(&mut self) -> Result<Vec<Reply>, String> {
        if !self.ready.is_empty() {
            return Ok(std::mem::take(&mut self.ready));
        }
        Ok(self.read())
    }
}

/// Whether a restricted reader may see an event: one about a flag or an
/// experiment needs read access to it; a tracked event names neither.
fn event_visible(reader: &Reader, e: &crate::analytics::events::Event) -> bool {
    let Some(user) = reader else {
        return true;
    };
    [&e.flag, &e.experiment]
        .into_iter()
        .flatten()
        .all(|k| user.can_read(k.as_bytes()))
}

fn event_reply(id: StreamId, e: &crate::analytics::events::Event) -> Reply {
    let mut fields = Vec::with_capacity(20);
    for (name, value) in e.fields() {
        fields.push(Reply::bulk_static(name));
        fields.push(Reply::bulk(value));
    }
    Reply::Array(vec![Reply::bulk(id_text(id)), Reply::Array(fields)])
}
