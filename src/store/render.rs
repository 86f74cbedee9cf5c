//! The JSON that `FLAG.GET` and `SEGMENT.GET` reply: the definition with the
//! read-only fields added at top level. Rendered once per version, so GET
//! returns the same bytes until the key changes.

use bytes::Bytes;
use serde::Serialize;

use crate::flag::{Allocations, FlagDef, SegmentDef};

/// Unix ms as RFC 3339 UTC text.
pub fn rfc3339(ts_ms: u64) -> String {
    let nanos = i128::from(ts_ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// The definition's JSON with the read-only fields appended at top level.
/// Splices text rather than building a `Value` tree: this runs on every write.
fn with_meta(
    def: &impl Serialize,
    version: u64,
    revision: u64,
    ts_ms: u64,
    actor: &str,
    extra: Option<(&str, String)>,
) -> Bytes {
    let mut out = serde_json::to_string(def).unwrap_or_else(|_| "{}".into());
    if out.ends_with('}') {
        out.pop();
    }
    if out.len() > 1 {
        out.push(',');
    }
    out.push_str(&format!(
        "\"version\":{version},\"revision\":{revision},\"updated_at\":\"{}\",\"updated_by\":{}",
        rfc3339(ts_ms),
        serde_json::Value::from(actor)
    ));
    if let Some((name, json)) = extra {
        out.push_str(&format!(",\"{name}\":{json}"));
    }
    out.push('}');
    Bytes::from(out)
}

/// `FLAG.GET`'s reply.
pub fn render_flag(
    def: &FlagDef,
    allocations: &Allocations,
    version: u64,
    revision: u64,
    ts_ms: u64,
    actor: &str,
) -> Bytes {
    let alloc = serde_json::to_string(allocations).unwrap_or_else(|_| "{}".into());
    with_meta(
        def,
        version,
        revision,
        ts_ms,
        actor,
        Some(("allocations", alloc)),
    )
}

/// `SEGMENT.GET`'s reply.
pub fn render_segment(
    def: &SegmentDef,
    version: u64,
    revision: u64,
    ts_ms: u64,
    actor: &str,
) -> Bytes {
    with_meta(def, version, revision, ts_ms, actor, None)
}
