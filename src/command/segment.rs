//! SEGMENT.* commands.

use bytes::Bytes;

use super::flag::{
    match_option, read_key, reason, render_deleted, render_version, sorted_keys, write, write_key,
};
use super::{parse, Action, CommandError, Ctx};
use crate::flag::parse_segment;
use crate::protocol::Reply;
use crate::store::WriteOp;

/// `SEGMENT.SET key json [REASON text]`: the segment's new version.
pub fn set(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let key = write_key(&args[1])?;
    let [reason_arg] = parse::options(&args[3..], ["REASON"])?;
    parse_segment(&key, &args[2]).map_err(|e| CommandError::Invalid(e.to_string()))?;
    let op = WriteOp::SetSegment {
        key,
        definition: String::from_utf8_lossy(&args[2]).into_owned(),
        reason: reason(reason_arg),
    };
    Ok(write(ctx, op, render_version))
}

/// `SEGMENT.GET key`: the definition with its read-only fields, or nil.
pub fn get(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let view = ctx.state.store.view();
    Ok(
        match read_key(&args[1]).and_then(|k| view.segments.get(k)) {
            Some(e) => Reply::Bulk(e.rendered.clone()),
            None => Reply::Nil,
        }
        .into(),
    )
}

/// `SEGMENT.DEL key [REASON text]`: 1 or 0; refused while a flag references it.
pub fn del(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let key = write_key(&args[1])?;
    let [reason_arg] = parse::options(&args[2..], ["REASON"])?;
    Ok(write(
        ctx,
        WriteOp::DeleteSegment {
            key,
            reason: reason(reason_arg),
        },
        render_deleted,
    ))
}

/// `SEGMENT.LIST [MATCH pattern]`: segment keys, sorted.
pub fn list(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let pattern = match_option(&args[1..])?;
    let reader = super::flag::restricted_reader(ctx);
    Ok(sorted_keys(ctx.state.store.view().segments.keys(), pattern, &reader).into())
}
