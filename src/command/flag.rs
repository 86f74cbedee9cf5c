//! FLAG.* commands: write definitions through the store, evaluate from its
//! current view.

use std::sync::Arc;

use bytes::Bytes;

use super::paged::{PageSource, Paged, PAGE_BYTES, PAGE_ITEMS};
use super::{parse, Action, CommandError, Ctx, PendingWrite};
use crate::flag::key::key_problem;
use crate::flag::{evaluate, openfeature_reason, parse_flag, Context, Reason};
use crate::protocol::Reply;
use crate::store::storage::{StateStorage, StreamId};
use crate::store::{AuditRecord, Kind, OpOutcome, OpResult, WriteOp, WriteRequest};

/// Server time in Unix ms, the `$now` attribute.
pub fn now_ms() -> f64 {
    crate::clock::since_epoch().as_millis() as f64
}

/// A key argument for a write: UTF-8 with the key syntax.
pub fn write_key(arg: &[u8]) -> Result<String, CommandError> {
    let why = key_problem(arg).or_else(|| {
        arg.starts_with(USER_HISTORY_PREFIX.as_bytes())
            .then(|| "the prefix acl: is reserved for the history of ACL users".to_string())
    });
    if let Some(why) = why {
        return Err(CommandError::err(format!(
            "invalid key '{}': {why}",
            String::from_utf8_lossy(arg)
        )));
    }
    Ok(String::from_utf8_lossy(arg).into_owned())
}

/// `FLAG.HISTORY acl:<user>` reads the audit history of an ACL user.
pub const USER_HISTORY_PREFIX: &str = "acl:";

/// A key argument for a read; `None` when it cannot name a stored key.
pub fn read_key(arg: &[u8]) -> Option<&str> {
    std::str::from_utf8(arg).ok()
}

/// An optional `REASON text` value.
pub fn reason(arg: Option<&Bytes>) -> Option<String> {
    arg.map(|r| String::from_utf8_lossy(r).into_owned())
}

/// Renders a write outcome that is a version.
pub fn render_version(r: OpResult) -> Reply {
    match r {
        Ok(OpOutcome::Version(v)) => Reply::Integer(v as i64),
        Ok(OpOutcome::Deleted(d)) => Reply::Integer(i64::from(d)),
        Err(e) => e.into(),
    }
}

/// Renders a delete outcome as 1 or 0.
pub fn render_deleted(r: OpResult) -> Reply {
    render_version(r)
}

/// A single-operation write by the session's user.
pub fn write(ctx: &Ctx<'_>, op: WriteOp, render: fn(OpResult) -> Reply) -> Action {
    Action::Write(PendingWrite {
        request: WriteRequest::single(&ctx.session.user, op),
        render,
    })
}

/// `FLAG.SET key json [IFVERSION n] [REASON text]`: the flag's new version.
pub fn set(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let key = write_key(&args[1])?;
    let [if_version, reason_arg] = parse::options(&args[3..], ["IFVERSION", "REASON"])?;
    let if_version = if_version.map(|v| parse::uint(v)).transpose()?;
    // Refuse what is wrong on its own before it reaches the log; the checks
    // that involve other keys run again at apply.
    parse_flag(&key, &args[2]).map_err(|e| CommandError::Invalid(e.to_string()))?;
    let op = WriteOp::SetFlag {
        key,
        definition: String::from_utf8_lossy(&args[2]).into_owned(),
        if_version,
        reason: reason(reason_arg),
    };
    Ok(write(ctx, op, render_version))
}

/// `FLAG.GET key`: the definition with its read-only fields, or nil.
pub fn get(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let view = ctx.state.store.view();
    Ok(match read_key(&args[1]).and_then(|k| view.flags.get(k)) {
        Some(e) => Reply::Bulk(e.rendered()),
        None => Reply::Nil,
    }
    .into())
}

/// `FLAG.DEL key [REASON text]`: 1 if deleted, 0 if absent.
pub fn del(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let key = write_key(&args[1])?;
    let [reason_arg] = parse::options(&args[2..], ["REASON"])?;
    Ok(write(
        ctx,
        WriteOp::DeleteFlag {
            key,
            reason: reason(reason_arg),
        },
        render_deleted,
    ))
}

/// `FLAG.TOGGLE key ON|OFF [REASON text]`: the new version.
pub fn toggle(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let key = write_key(&args[1])?;
    let on = if parse::is(&args[2], "ON") {
        true
    } else if parse::is(&args[2], "OFF") {
        false
    } else {
        return Err(CommandError::err("FLAG.TOGGLE state must be ON or OFF"));
    };
    let [reason_arg] = parse::options(&args[3..], ["REASON"])?;
    Ok(write(
        ctx,
        WriteOp::ToggleFlag {
            key,
            on,
            reason: reason(reason_arg),
        },
        render_version,
    ))
}

/// Parses an optional `MATCH pattern` (the only option of LIST-style commands).
pub fn match_option(args: &[Bytes]) -> Result<Option<&Bytes>, CommandError> {
    let [pattern] = parse::options(args, ["MATCH"])?;
    Ok(pattern)
}

/// The caller's ACL user when it may not read every key: list-style
/// commands then return only the keys it may read (a filtered view).
pub fn restricted_reader(ctx: &Ctx<'_>) -> Option<std::sync::Arc<crate::auth::User>> {
    ctx.session
        .acl
        .as_ref()
        .map(|a| a.1.clone())
        .filter(|u| !u.allows_everything())
}

/// Whether `reader` (from [`restricted_reader`]) may read `key`.
pub fn readable(reader: &Option<std::sync::Arc<crate::auth::User>>, key: &str) -> bool {
    reader.as_ref().is_none_or(|u| u.can_read(key.as_bytes()))
}

/// The keys matching an optional pattern and readable by `reader`, sorted,
/// as an array reply.
pub fn sorted_keys<'a>(
    keys: impl Iterator<Item = &'a std::sync::Arc<str>>,
    pattern: Option<&Bytes>,
    reader: &Option<std::sync::Arc<crate::auth::User>>,
) -> Reply {
    let mut keys: Vec<&str> = keys
        .map(|k| &**k)
        .filter(|k| pattern.is_none_or(|p| crate::glob::matches(p, k.as_bytes(), false)))
        .filter(|k| readable(reader, k))
        .collect();
    keys.sort_unstable();
    Reply::Array(keys.into_iter().map(Reply::bulk).collect())
}

/// `FLAG.LIST [MATCH pattern]`: flag keys, sorted.
pub fn list(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let pattern = match_option(&args[1..])?;
    let reader = restricted_reader(ctx);
    Ok(sorted_keys(ctx.state.store.view().flags.keys(), pattern, &reader).into())
}

/// `FLAG.SCAN cursor [MATCH pattern] [COUNT n]`: `[next-cursor, [keys]]`.
/// Cursors are positions in a stable hash order, so a key present for the
/// whole scan is returned, as Redis's SCAN promises.
pub fn scan(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let cursor = parse::uint(&args[1]).map_err(|_| CommandError::err("invalid cursor"))?;
    let [pattern, count] = parse::options(&args[2..], ["MATCH", "COUNT"])?;
    let count = match count {
        Some(c) => match parse::int(c)? {
            n if n >= 1 => n as usize,
            _ => return Err(CommandError::Syntax),
        },
        None => 10,
    };
    let reader = restricted_reader(ctx);
    let view = ctx.state.store.view();
    let start: (u64, std::sync::Arc<str>) = (cursor, "".into());
    let mut keys = Vec::new();
    let mut next = 0;
    let mut last_hash = None;
    for (visited, (hash, key)) in view.scan_order.range(start..).enumerate() {
        // Keys sharing a hash are returned together so a cursor never splits them.
        if visited >= count && last_hash != Some(*hash) {
            next = *hash;
            break;
        }
        last_hash = Some(*hash);
        if pattern.is_none_or(|p| crate::glob::matches(p, key.as_bytes(), false))
            && readable(&reader, key)
        {
            keys.push(Reply::bulk(&**key));
        }
    }
    Ok(Reply::Array(vec![Reply::bulk(next.to_string()), Reply::Array(keys)]).into())
}

fn context_arg(arg: Option<&Bytes>) -> Result<Context<'_>, CommandError> {
    match arg {
        None => Ok(Context::empty()),
        Some(json) => Context::parse(json).map_err(|e| CommandError::err(e.to_string())),
    }
}

/// `FLAG.EVAL key [context-json]`: the value as JSON text, or nil if the flag
/// is missing (the caller's default applies).
pub fn eval(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    if args.len() > 3 {
        return Err(CommandError::WrongArity("flag.eval".into()));
    }
    let view = ctx.state.store.view();
    let entry = read_key(&args[1]).and_then(|k| view.flags.get(k));
    // Only the attributes the flag may read are kept; the rest of the JSON
    // is checked, as a malformed context is a client bug whether or not the
    // flag exists.
    let context = match (args.get(2), entry) {
        (None, _) => Ok(Context::empty()),
        (Some(json), Some(entry)) => {
            Context::parse_keeping(json, |name| entry.compiled.reads.reads(name, &**view))
        }
        (Some(json), None) => Context::parse_keeping(json, |_| false),
    }
    .map_err(|e| CommandError::err(e.to_string()))?;
    let Some(entry) = entry else {
        return Ok(Reply::Nil.into());
    };
    let now = if entry.compiled.uses_now {
        now_ms()
    } else {
        0.0
    };
    let e = evaluate(&entry.compiled, &context, &**view, now);
    entry.compiled.counters.record(e.variation, &e.reason);
    crate::metrics::add(&ctx.state.stats.evaluations, 1);
    super::experiment::expose(ctx.state, &view, entry, &context, &e);
    crate::metrics::count_reason(&ctx.state.stats, &e.reason);
    Ok(Reply::Bulk(entry.compiled.variations[e.variation].json.clone()).into())
}

/// A flag evaluation served with its explanation.
#[derive(Debug, Clone)]
pub struct Served {
    /// The variation's value as JSON text.
    pub value: Bytes,
    /// The variation's name.
    pub variation: std::sync::Arc<str>,
    /// Why it was served, in flagstaff's terms.
    pub reason: Reason,
    /// Why it was served, in OpenFeature's terms ([`openfeature_reason`]).
    pub openfeature_reason: &'static str,
    /// It came from a rollout split by targeting key, and the context has
    /// none (OFREP's `TARGETING_KEY_MISSING`).
    pub targeting_key_missing: bool,
}

/// Why a flag could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DetailError {
    /// No flag has this key.
    FlagNotFound,
    /// The context is not a valid JSON object.
    MalformedContext(String),
}

impl DetailError {
    /// The error's name as `FLAG.DETAIL` replies it.
    pub fn name(&self) -> &'static str {
        match self {
            DetailError::FlagNotFound => "FLAG_NOT_FOUND",
            DetailError::MalformedContext(_) => "MALFORMED_CONTEXT",
        }
    }
}

/// What `FLAG.DETAIL` computes; the RESP command and the HTTP (OFREP)
/// handler both encode this, so their answers never differ.
#[derive(Debug, Clone)]
pub struct Detail {
    /// The served variation, or why there is none.
    pub result: Result<Served, DetailError>,
    /// The flag's version, when it exists.
    pub version: Option<u64>,
    /// The revision of the view evaluated.
    pub revision: u64,
    /// Whether this node's answers may be out of date.
    pub stale: bool,
    /// Whether the flag reads `$now` (its answer may change with time alone).
    pub uses_now: bool,
}

/// Evaluates the flag `key` for `context` from one view of the store, and
/// counts the evaluation.
pub fn detail_of(
    state: &super::ServerState,
    view: &crate::store::StateView,
    key: Option<&str>,
    context: Result<Context<'_>, String>,
) -> Detail {
    let stale = state.is_stale();
    let mut detail = Detail {
        result: Err(DetailError::FlagNotFound),
        version: None,
        revision: view.revision,
        stale,
        uses_now: false,
    };
    let entry = key.and_then(|k| view.flags.get(k));
    detail.version = entry.map(|e| e.version);
    detail.uses_now = entry.is_some_and(|e| e.compiled.uses_now);
    // A malformed context is reported before a missing flag: it is the
    // caller's bug either way, and the more specific one to fix.
    let context = match context {
        Ok(c) => c,
        Err(why) => {
            detail.result = Err(DetailError::MalformedContext(why));
            return detail;
        }
    };
    let Some(entry) = entry else {
        return detail;
    };
    let now = if entry.compiled.uses_now {
        now_ms()
    } else {
        0.0
    };
    let e = evaluate(&entry.compiled, &context, view, now);
    entry.compiled.counters.record(e.variation, &e.reason);
    crate::metrics::add(&state.stats.evaluations, 1);
    super::experiment::expose(state, view, entry, &context, &e);
    crate::metrics::count_reason(&state.stats, &e.reason);
    let variation = &entry.compiled.variations[e.variation];
    detail.result = Ok(Served {
        value: variation.json.clone(),
        variation: variation.name.clone(),
        openfeature_reason: openfeature_reason(&entry.compiled, &e),
        targeting_key_missing: context.get("key").is_none()
            && crate::flag::split_by_targeting_key(&entry.compiled, &e),
        reason: e.reason,
    });
    detail
}

/// `FLAG.DETAIL key [context-json]`: value, variation, reason, rule_id,
/// rule_index, prerequisite, error, version, revision, stale,
/// openfeature_reason.
pub fn detail(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    if args.len() > 3 {
        return Err(CommandError::WrongArity("flag.detail".into()));
    }
    let view = ctx.state.store.view();
    let context = context_arg(args.get(2)).map_err(|e| e.to_string());
    let d = detail_of(ctx.state, &view, read_key(&args[1]), context);
    let field = |name: &'static str, value: Reply| (Reply::bulk_static(name), value);
    let int_or_nil = |n: Option<u64>| n.map_or(Reply::Nil, |n| Reply::Integer(n as i64));
    let (value, variation, reason, of_reason, error) = match &d.result {
        Ok(s) => (
            Reply::Bulk(s.value.clone()),
            Reply::bulk(&*s.variation),
            Reply::bulk_static(s.reason.name()),
            Reply::bulk_static(s.openfeature_reason),
            Reply::Nil,
        ),
        Err(e) => (
            Reply::Nil,
            Reply::Nil,
            Reply::bulk_static("ERROR"),
            Reply::bulk_static("ERROR"),
            Reply::bulk_static(e.name()),
        ),
    };
    let (rule_id, rule_index, prerequisite) = match d.result.as_ref().map(|s| &s.reason) {
        Ok(Reason::RuleMatch { index, id }) => (
            id.as_ref().map_or(Reply::Nil, |id| Reply::bulk(&**id)),
            Reply::Integer(*index as i64),
            Reply::Nil,
        ),
        Ok(Reason::PrerequisiteFailed(p)) => (Reply::Nil, Reply::Nil, Reply::bulk(&**p)),
        _ => (Reply::Nil, Reply::Nil, Reply::Nil),
    };
    Ok(Reply::Map(vec![
        field("value", value),
        field("variation", variation),
        field("reason", reason),
        field("rule_id", rule_id),
        field("rule_index", rule_index),
        field("prerequisite", prerequisite),
        field("error", error),
        field("version", int_or_nil(d.version)),
        field("revision", Reply::Integer(d.revision as i64)),
        field("stale", Reply::Bool(d.stale)),
        field("openfeature_reason", of_reason),
    ])
    .into())
}

/// `FLAG.MEVAL context-json key [key ...]`: one value per key, nil for missing flags.
pub fn meval(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let context = context_arg(Some(&args[1]))?;
    let view = ctx.state.store.view();
    let now = now_ms();
    let values = args[2..]
        .iter()
        .map(|k| match read_key(k).and_then(|k| view.flags.get(k)) {
            Some(entry) => {
                let e = evaluate(&entry.compiled, &context, &**view, now);
                entry.compiled.counters.record(e.variation, &e.reason);
                super::experiment::expose(ctx.state, &view, entry, &context, &e);
                crate::metrics::count_reason(&ctx.state.stats, &e.reason);
                Reply::Bulk(entry.compiled.variations[e.variation].json.clone())
            }
            None => Reply::Nil,
        })
        .collect();
    crate::metrics::add(&ctx.state.stats.evaluations, (args.len() - 2) as u64);
    Ok(Reply::Array(values).into())
}

/// `FLAG.EVALALL context-json [MATCH pattern]`: map of key → value, sorted by key.
pub fn evalall(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let context = context_arg(Some(&args[1]))?;
    let pattern = match_option(&args[2..])?;
    let reader = restricted_reader(ctx);
    let view = ctx.state.store.view();
    let now = now_ms();
    let mut entries: Vec<_> = view
        .flags
        .iter()
        .filter(|(k, _)| pattern.is_none_or(|p| crate::glob::matches(p, k.as_bytes(), false)))
        .filter(|(k, _)| readable(&reader, k))
        .collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    crate::metrics::add(&ctx.state.stats.evaluations, entries.len() as u64);
    let pairs = entries
        .into_iter()
        .map(|(k, entry)| {
            let e = evaluate(&entry.compiled, &context, &**view, now);
            entry.compiled.counters.record(e.variation, &e.reason);
            super::experiment::expose(ctx.state, &view, entry, &context, &e);
            crate::metrics::count_reason(&ctx.state.stats, &e.reason);
            (
                Reply::bulk(&**k),
                Reply::Bulk(entry.compiled.variations[e.variation].json.clone()),
            )
        })
        .collect();
    Ok(Reply::Map(pairs).into())
}

/// A flag's audit records up to the current revision, newest first, read a
/// page at a time (including every write this node applied).
struct HistoryPages {
    storage: Arc<dyn StateStorage>,
    kind: Kind,
    key: String,
    ready: Vec<Reply>,
    /// The newest record not read yet (`None` once all are read).
    upto: Option<StreamId>,
    left: usize,
}

impl HistoryPages {
    fn new(
        ctx: &Ctx<'_>,
        kind: Kind,
        key: &str,
        count: usize,
    ) -> Result<HistoryPages, CommandError> {
        let Some(node) = ctx.state.raft.get() else {
            return Err(CommandError::Loading);
        };
        let revision = node.readable_revision(ctx.state.store.view().revision);
        let storage = node.storage_at(revision).map_err(CommandError::err)?;
        Ok(HistoryPages {
            storage,
            kind,
            key: key.to_string(),
            ready: Vec::new(),
            // Writes applied later are not part of this answer.
            upto: Some((revision, u32::MAX)),
            left: count,
        })
    }

    /// The next page of records.
    fn records(&mut self) -> Result<Vec<AuditRecord>, String> {
        let Some(upto) = self.upto else {
            return Ok(Vec::new());
        };
        if self.left == 0 {
            return Ok(Vec::new());
        }
        let want = self.left.min(PAGE_ITEMS);
        let (page, more) = self
            .storage
            .history_page(self.kind, &self.key, upto, want, PAGE_BYTES)
            .map_err(|e| e.to_string())?;
        self.left -= page.len();
        self.upto = match page.last() {
            _ if !more => None,
            None => None,
            Some(last) => match (last.revision, last.seq) {
                (0, 0) => None,
                (r, 0) => Some((r - 1, u32::MAX)),
                (r, s) => Some((r, s - 1)),
            },
        };
        Ok(page)
    }

    /// Whether every record is in `ready`.
    fn complete(&self) -> bool {
        self.left == 0 || self.upto.is_none()
    }
}

impl PageSource for HistoryPages {
    fn total(&mut self) -> Result<usize, String> {
        let rest = match self.upto {
            Some(upto) if self.left > 0 => self
                .storage
                .history_count(self.kind, &self.key, upto)
                .map_err(|e| e.to_string())?,
            _ => 0,
        };
        Ok(self.ready.len() + rest.min(self.left))
    }

    fn next_page(&mut self) -> Result<Vec<Reply>, String> {
        if !self.ready.is_empty() {
            return Ok(std::mem::take(&mut self.ready));
        }
        Ok(self.records()?.iter().map(history_entry).collect())
    }
}

/// One FLAG.HISTORY entry.
fn history_entry(r: &AuditRecord) -> Reply {
    let field = |name: &'static str, value: Reply| (Reply::bulk_static(name), value);
    let json = |v: &Option<serde_json::Value>| {
        v.as_ref()
            .map_or(Reply::Nil, |v| Reply::bulk(v.to_string()))
    };
    Reply::Map(vec![
        field("revision", Reply::Integer(r.revision as i64)),
        field("version", Reply::Integer(r.version as i64)),
        field("event", Reply::bulk_static(r.event.as_str())),
        field("actor", Reply::bulk(&r.actor)),
        field("ts", Reply::bulk(crate::store::rfc3339(r.ts))),
        field("reason", r.reason.as_ref().map_or(Reply::Nil, Reply::bulk)),
        field("before", json(&r.before)),
        field("after", json(&r.after)),
    ])
}

/// `FLAG.HISTORY key [COUNT n]`: audit entries, newest first. Each is a map
/// of revision, version, event, actor, ts, reason, before, after (the
/// definitions as JSON text). A long history is written page by page.
/// `FLAG.HISTORY acl:<user>` is an ACL user's (`{"acl": <ACL LIST line>}`
/// before and after), for callers who may run `ACL SETUSER`.
pub fn history(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let key = read_key(&args[1]).unwrap_or_default();
    let count = history_count(&args[2..])?;
    // `acl:<user>`: who changed that user and when (for user administrators).
    let (kind, key) = match key.strip_prefix(USER_HISTORY_PREFIX) {
        Some(name) if administers_users(ctx) => (Kind::User, name),
        Some(_) => {
            return Err(CommandError::Coded(
                format!(
                    "NOPERM User {} has no permissions to read the history of ACL users",
                    ctx.session.user
                )
                .into(),
            ))
        }
        None => (Kind::Flag, key),
    };
    history_of(ctx, kind, key, count)
}

/// Parses FLAG.HISTORY's `[COUNT n]` (positive; default all).
pub(super) fn history_count(args: &[Bytes]) -> Result<usize, CommandError> {
    let [count] = parse::options(args, ["COUNT"])?;
    Ok(match count {
        Some(c) => match parse::int(c)? {
            n if n >= 1 => usize::try_from(n).unwrap_or(usize::MAX),
            _ => return Err(CommandError::err("COUNT must be positive")),
        },
        None => usize::MAX,
    })
}

/// The newest `count` audit records of `key`, as FLAG.HISTORY replies them.
pub(super) fn history_of(
    ctx: &mut Ctx<'_>,
    kind: Kind,
    key: &str,
    count: usize,
) -> Result<Action, CommandError> {
    let mut pages = HistoryPages::new(ctx, kind, key, count)?;
    let first = pages.records().map_err(CommandError::err)?;
    pages.ready = first.iter().map(history_entry).collect();
    if pages.complete() {
        return Ok(Reply::Array(pages.ready).into());
    }
    Ok(Action::Paged(Paged::array(pages)))
}

/// `FLAG.ROLLBACK key version [REASON text]`: restores that version's
/// definition as a new version; replies with the new version.
pub fn rollback(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let key = write_key(&args[1])?;
    let version = parse::uint(&args[2])?;
    let [reason_arg] = parse::options(&args[3..], ["REASON"])?;
    // Page through the history, so a long one is never held whole.
    let mut pages = HistoryPages::new(ctx, Kind::Flag, &key, usize::MAX)?;
    let definition = loop {
        let page = pages.records().map_err(CommandError::err)?;
        // A deletion records the version it removed without a definition:
        // look past it to the record that set that version.
        if let Some(found) = page
            .into_iter()
            .filter(|r| r.version == version)
            .find_map(|r| r.after)
        {
            break found;
        }
        if pages.complete() {
            return Err(CommandError::err(format!(
                "flag {key} has no version {version} in its history"
            )));
        }
    };
    let op = WriteOp::RollbackFlag {
        key,
        version,
        definition: definition.to_string(),
        reason: reason(reason_arg),
    };
    Ok(write(ctx, op, render_version))
}

/// `FLAG.DUMP [MATCH pattern]`: every flag and segment definition and the
/// revision they reflect, as one JSON document taken from one view.
pub fn dump(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let pattern = match_option(&args[1..])?.cloned();
    let reader = restricted_reader(ctx);
    let with_users = administers_users(ctx);
    let view = ctx.state.store.view_full();
    // Rendering every definition is big CPU: off the runtime thread.
    Ok(Action::Blocking(Box::new(move || {
        let keep = |k: &str| {
            pattern
                .as_ref()
                .is_none_or(|p| crate::glob::matches(p, k.as_bytes(), false))
                && readable(&reader, k)
        };
        let document = if with_users {
            view.dump_with_users(keep)
        } else {
            view.dump_where(keep)
        };
        Ok(Reply::bulk(document).into())
    })))
}

/// Whether the caller administers users (may run `ACL SETUSER`, a
/// `@flag-admin` command): only then do dumps carry users and imports set them.
fn administers_users(ctx: &mut Ctx<'_>) -> bool {
    let Some(user) = ctx.session.acl_user(&ctx.state.users) else {
        return false;
    };
    if user.allows_everything() {
        return true;
    }
    let args = [Bytes::from_static(b"ACL"), Bytes::from_static(b"SETUSER")];
    let Some(spec) = super::resolve(&args) else {
        return false;
    };
    let id = super::acl::CATALOG.id(spec.name).unwrap_or(usize::MAX);
    user.check(&spec.acl_request(id, &args)).is_ok()
}

/// `FLAG.IMPORT dump-json [REASON text]`: applies a `FLAG.DUMP` document,
/// all of it or none of it; replies with the number of keys written. Users
/// in the document (an admin's dump) are set in the same raft entry; that
/// takes a caller who may run `ACL SETUSER`.
pub fn import(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let [reason_arg] = parse::options(&args[2..], ["REASON"])?;
    let document = String::from_utf8_lossy(&args[1]).into_owned();
    let dump = crate::store::parse_dump(&document)
        .map_err(|e| CommandError::Coded(e.to_string().into()))?;
    if !dump.users.is_empty() {
        if !administers_users(ctx) {
            return Err(CommandError::Coded(
                format!(
                    "NOPERM User {} has no permissions to import users (it needs ACL SETUSER)",
                    ctx.session.user
                )
                .into(),
            ));
        }
        let text: String = dump.users.iter().map(|(_, l)| format!("{l}\n")).collect();
        let parsed = crate::auth::parse_aclfile(&super::acl::CATALOG, "users", &text)
            .map_err(|e| CommandError::Coded(format!("INVALID users: {e}").into()))?;
        for (name, line) in &dump.users {
            if !parsed.contains_key(name) {
                return Err(CommandError::Coded(
                    format!("INVALID users[{name:?}]: the line names another user: {line}").into(),
                ));
            }
        }
    }
    let op = WriteOp::Import {
        document,
        reason: reason(reason_arg),
    };
    Ok(write(ctx, op, render_version))
}
