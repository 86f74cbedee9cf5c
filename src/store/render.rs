//! The JSON that `FLAG.GET` and `SEGMENT.GET` reply: the definition with the
//! read-only fields added at top level. Rendered once per version, so GET
//! returns the same bytes until the key changes.

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};

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

fn with_meta(
    def: &impl Serialize,
    version: u64,
    revision: u64,
    ts_ms: u64,
    actor: &str,
) -> Map<String, Value> {
    let mut map = match serde_json::to_value(def) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    map.insert("version".into(), version.into());
    map.insert("revision".into(), revision.into());
    map.insert("updated_at".into(), rfc3339(ts_ms).into());
    map.insert("updated_by".into(), actor.into());
    map
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
    let mut map = with_meta(def, version, revision, ts_ms, actor);
    map.insert(
        "allocations".into(),
        serde_json::to_value(allocations).unwrap_or(Value::Object(Map::new())),
    );
    Bytes::from(Value::Object(map).to_string())
}

/// `SEGMENT.GET`'s reply.
pub fn render_segment(
    def: &SegmentDef,
    version: u64,
    revision: u64,
    ts_ms: u64,
    actor: &str,
) -> Bytes {
    Bytes::from(Value::Object(with_meta(def, version, revision, ts_ms, actor)).to_string())
}
