//! The JSON that `FLAG.GET` and `SEGMENT.GET` reply: the definition with the
//! read-only fields added at top level. Rendered once per version, so GET
//! returns the same bytes until the key changes.

use bytes::Bytes;
use serde::Serialize;

use crate::flag::SegmentDef;

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
    extra: Option<(&str, &str)>,
) -> Bytes {
    let out = serde_json::to_string(def).unwrap_or_else(|_| "{}".into());
    splice_meta(out, version, revision, ts_ms, actor, extra)
}

/// [`with_meta`] on the definition's JSON text.
fn splice_meta(
    mut out: String,
    version: u64,
    revision: u64,
    ts_ms: u64,
    actor: &str,
    extra: Option<(&str, &str)>,
) -> Bytes {
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

/// `FLAG.GET`'s reply, from the definition and allocations as compact JSON
/// text (as `serde_json` writes them), which the view keeps: the bytes a
/// tree would render, without the tree.
pub fn render_flag_json(
    def_json: &str,
    allocations_json: &str,
    version: u64,
    revision: u64,
    ts_ms: u64,
    actor: &str,
) -> Bytes {
    let mut out = String::with_capacity(def_json.len() + allocations_json.len() + 128);
    out.push_str(def_json);
    splice_meta(
        out,
        version,
        revision,
        ts_ms,
        actor,
        Some(("allocations", allocations_json)),
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
