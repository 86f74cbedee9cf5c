//! FLAG.* commands: write definitions through the store, evaluate from its
//! current view.

use bytes::Bytes;

use super::{parse, Action, CommandError, Ctx, PendingWrite};
use crate::flag::key::key_problem;
use crate::flag::{evaluate, parse_flag, Context, Reason};
use crate::protocol::Reply;
use crate::store::{Kind, OpOutcome, OpResult, WriteOp, WriteRequest};

/// Server time in Unix ms, the `$now` attribute.
pub fn now_ms() -> f64 {
    crate::clock::since_epoch().as_millis() as f64
}

/// A key argument for a write: UTF-8 with the key syntax.
pub fn write_key(arg: &[u8]) -> Result<String, CommandError> {
    if let Some(why) = key_problem(arg) {
        return Err(CommandError::err(format!(
            "invalid key '{}': {why}",
            String::from_utf8_lossy(arg)
        )));
    }
    Ok(String::from_utf8_lossy(arg).into_owned())
}

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
        Some(e) => Reply::Bulk(e.rendered.clone()),
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
    // A malformed context is a client bug whether or not the flag exists.
    let context = context_arg(args.get(2))?;
    let view = ctx.state.store.view();
    let Some(entry) = read_key(&args[1]).and_then(|k| view.flags.get(k)) else {
        return Ok(Reply::Nil.into());
    };
    let now = if entry.compiled.uses_now {
        now_ms()
    } else {
        0.0
    };
    let e = evaluate(&entry.compiled, &context, &**view, now);
    crate::metrics::add(&ctx.state.stats.evaluations, 1);
    Ok(Reply::Bulk(entry.compiled.variations[e.variation].json.clone()).into())
}

/// `FLAG.DETAIL key [context-json]`: value, variation, reason, rule_id,
/// rule_index, prerequisite, error, version, revision, stale.
pub fn detail(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    if args.len() > 3 {
        return Err(CommandError::WrongArity("flag.detail".into()));
    }
    let view = ctx.state.store.view();
    let stale = ctx.state.is_stale();
    let field = |name: &'static str, value: Reply| (Reply::bulk_static(name), value);
    let int_or_nil = |n: Option<u64>| n.map_or(Reply::Nil, |n| Reply::Integer(n as i64));
    let error_map = |error: &'static str, version: Option<u64>| {
        Reply::Map(vec![
            field("value", Reply::Nil),
            field("variation", Reply::Nil),
            field("reason", Reply::bulk_static("ERROR")),
            field("rule_id", Reply::Nil),
            field("rule_index", Reply::Nil),
            field("prerequisite", Reply::Nil),
            field("error", Reply::bulk_static(error)),
            field("version", int_or_nil(version)),
            field("revision", Reply::Integer(view.revision as i64)),
            field("stale", Reply::Bool(stale)),
        ])
    };
    let entry = read_key(&args[1]).and_then(|k| view.flags.get(k));
    // A malformed context is reported before a missing flag: it is the
    // caller's bug either way, and the more specific one to fix.
    let Ok(context) = context_arg(args.get(2)) else {
        return Ok(error_map("MALFORMED_CONTEXT", entry.map(|e| e.version)).into());
    };
    let Some(entry) = entry else {
        return Ok(error_map("FLAG_NOT_FOUND", None).into());
    };
    let e = evaluate(&entry.compiled, &context, &**view, now_ms());
    crate::metrics::add(&ctx.state.stats.evaluations, 1);
    let variation = &entry.compiled.variations[e.variation];
    let (rule_id, rule_index, prerequisite) = match &e.reason {
        Reason::RuleMatch { index, id } => (
            id.as_ref().map_or(Reply::Nil, |id| Reply::bulk(&**id)),
            Reply::Integer(*index as i64),
            Reply::Nil,
        ),
        Reason::PrerequisiteFailed(p) => (Reply::Nil, Reply::Nil, Reply::bulk(&**p)),
        _ => (Reply::Nil, Reply::Nil, Reply::Nil),
    };
    Ok(Reply::Map(vec![
        field("value", Reply::Bulk(variation.json.clone())),
        field("variation", Reply::bulk(&*variation.name)),
        field("reason", Reply::bulk_static(e.reason.name())),
        field("rule_id", rule_id),
        field("rule_index", rule_index),
        field("prerequisite", prerequisite),
        field("error", Reply::Nil),
        field("version", Reply::Integer(entry.version as i64)),
        field("revision", Reply::Integer(view.revision as i64)),
        field("stale", Reply::Bool(stale)),
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
            (
                Reply::bulk(&**k),
                Reply::Bulk(entry.compiled.variations[e.variation].json.clone()),
            )
        })
        .collect();
    Ok(Reply::Map(pairs).into())
}

/// A flag's audit records, newest first, including every write this node applied.
fn history_of(
    ctx: &Ctx<'_>,
    key: &str,
    count: usize,
) -> Result<Vec<crate::store::AuditRecord>, CommandError> {
    let Some(node) = ctx.state.raft.get() else {
        return Err(CommandError::Loading);
    };
    let revision = ctx.state.store.view().revision;
    node.history(Kind::Flag, key, count, revision)
        .map_err(CommandError::err)
}

/// `FLAG.HISTORY key [COUNT n]`: audit entries, newest first. Each is a map
/// of revision, version, event, actor, ts, reason, before, after (the
/// definitions as JSON text).
pub fn history(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let key = read_key(&args[1]).unwrap_or_default();
    let [count] = parse::options(&args[2..], ["COUNT"])?;
    let count = match count {
        Some(c) => match parse::int(c)? {
            n if n >= 1 => n as usize,
            _ => return Err(CommandError::err("COUNT must be positive")),
        },
        None => usize::MAX,
    };
    let records = history_of(ctx, key, count)?;
    let field = |name: &'static str, value: Reply| (Reply::bulk_static(name), value);
    let json = |v: &Option<serde_json::Value>| {
        v.as_ref()
            .map_or(Reply::Nil, |v| Reply::bulk(v.to_string()))
    };
    let entries = records
        .iter()
        .map(|r| {
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
        })
        .collect();
    Ok(Reply::Array(entries).into())
}

/// `FLAG.ROLLBACK key version [REASON text]`: restores that version's
/// definition as a new version; replies with the new version.
pub fn rollback(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let key = write_key(&args[1])?;
    let version = parse::uint(&args[2])?;
    let [reason_arg] = parse::options(&args[3..], ["REASON"])?;
    let records = history_of(ctx, &key, usize::MAX)?;
    // A deletion records the version it removed without a definition: look
    // past it to the record that set that version.
    let Some(definition) = records
        .iter()
        .filter(|r| r.version == version)
        .find_map(|r| r.after.as_ref())
    else {
        return Err(CommandError::err(format!(
            "flag {key} has no version {version} in its history"
        )));
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
    let pattern = match_option(&args[1..])?;
    let reader = restricted_reader(ctx);
    let view = ctx.state.store.view();
    if reader.is_some() {
        return Ok(Reply::bulk(view.dump_where(|k| {
            pattern.is_none_or(|p| crate::glob::matches(p, k.as_bytes(), false))
                && readable(&reader, k)
        }))
        .into());
    }
    Ok(Reply::bulk(view.dump(pattern.map(|p| &p[..]))).into())
}

/// `FLAG.IMPORT dump-json [REASON text]`: applies a `FLAG.DUMP` document,
/// all of it or none of it; replies with the number of keys written.
pub fn import(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let [reason_arg] = parse::options(&args[2..], ["REASON"])?;
    let document = String::from_utf8_lossy(&args[1]).into_owned();
    crate::store::parse_dump(&document).map_err(|e| CommandError::Coded(e.to_string().into()))?;
    let op = WriteOp::Import {
        document,
        reason: reason(reason_arg),
    };
    Ok(write(ctx, op, render_version))
}
