//! What the state machine persists and reports: key records, the changes one
//! applied write made, and audit records.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::flag::{Allocations, FlagDef, SegmentDef};

/// A stored flag as persisted (the compiled form is rebuilt on load).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlagRecord {
    /// Full key.
    pub key: String,
    /// The definition.
    pub definition: FlagDef,
    /// Sticky rollout allocations.
    #[serde(default)]
    pub allocations: Allocations,
    /// Per-key version.
    pub version: u64,
    /// Revision of the write that made this version.
    pub revision: u64,
    /// Unix ms of that write.
    pub updated_at: u64,
    /// Who made it.
    pub updated_by: String,
}

/// A stored flag record read in place: the same fields as [`FlagRecord`],
/// with the definition and allocations left as the stored JSON text, so a
/// restart parses each definition once, straight into the view, and never
/// holds a [`FlagDef`] tree of every record at once.
#[derive(Debug, Deserialize)]
pub struct FlagRecordText<'a> {
    /// Full key.
    #[serde(borrow)]
    pub key: std::borrow::Cow<'a, str>,
    /// The definition, as stored.
    #[serde(borrow)]
    pub definition: &'a serde_json::value::RawValue,
    /// Sticky rollout allocations, as stored (absent in some old records).
    #[serde(default, borrow)]
    pub allocations: Option<&'a serde_json::value::RawValue>,
    /// Per-key version.
    pub version: u64,
    /// Revision of the write that made this version.
    pub revision: u64,
    /// Unix ms of that write.
    pub updated_at: u64,
    /// Who made it.
    #[serde(borrow)]
    pub updated_by: std::borrow::Cow<'a, str>,
}

/// A stored segment as persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentRecord {
    /// Full key.
    pub key: String,
    /// The definition.
    pub definition: SegmentDef,
    /// Per-key version.
    pub version: u64,
    /// Revision of the write that made this version.
    pub revision: u64,
    /// Unix ms of that write.
    pub updated_at: u64,
    /// Who made it.
    pub updated_by: String,
}

/// Flag, segment, or ACL user (whose audit records are kept, never
/// published or streamed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A flag.
    Flag,
    /// A segment.
    Segment,
    /// An ACL user (audit only).
    User,
    /// An experiment (audited and streamed; `EXPERIMENT.HISTORY`).
    Experiment,
}

impl Kind {
    /// `flag` or `segment`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Flag => "flag",
            Kind::Segment => "segment",
            Kind::User => "user",
            Kind::Experiment => "experiment",
        }
    }
}

/// What kind of change an audit record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    /// Created or replaced.
    Set,
    /// Deleted.
    Delete,
    /// Turned on or off.
    Toggle,
    /// Restored from an earlier version.
    Rollback,
    /// An experiment started.
    Start,
    /// An experiment stopped.
    Stop,
}

impl Event {
    /// The event's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Set => "set",
            Event::Delete => "delete",
            Event::Toggle => "toggle",
            Event::Rollback => "rollback",
            Event::Start => "start",
            Event::Stop => "stop",
        }
    }
}

/// One change to one key, in the audit log and the change feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Flag or segment.
    pub kind: Kind,
    /// Full key.
    pub key: String,
    /// Revision of the write.
    pub revision: u64,
    /// Position of the operation within its write (an EXEC may change a key twice).
    pub seq: u32,
    /// The key's version after the change (the deleted version for a delete).
    pub version: u64,
    /// What happened.
    pub event: Event,
    /// Who did it.
    pub actor: String,
    /// Unix ms.
    pub ts: u64,
    /// Why, if given.
    pub reason: Option<String>,
    /// Definition before (absent for a create).
    pub before: Option<Value>,
    /// Definition after (absent for a delete).
    pub after: Option<Value>,
    /// The key's FLAG.GET / SEGMENT.GET document after the change, which
    /// change events carry (not kept in the audit log).
    #[serde(skip)]
    pub document: Option<bytes::Bytes>,
}

impl AuditRecord {
    /// The change event published on `flag:<key>` / `segment:<key>`:
    /// `{"event","kind","key","version","revision","actor","ts","definition"}`,
    /// where `definition` is the key's GET document (allocations included, so
    /// a local copy evaluates rollouts exactly as the server) or null.
    pub fn event_json(&self) -> String {
        let definition = match &self.document {
            Some(doc) => String::from_utf8_lossy(doc).into_owned(),
            None => self
                .after
                .as_ref()
                .map_or("null".to_string(), Value::to_string),
        };
        Self::event_with_definition(&self.event_head(), &definition)
    }

    /// The event's fields before `definition`, as a JSON object.
    pub fn event_head(&self) -> String {
        serde_json::json!({
            "event": self.event.as_str(),
            "kind": self.kind.as_str(),
            "key": self.key,
            "version": self.version,
            "revision": self.revision,
            "actor": self.actor,
            "ts": super::render::rfc3339(self.ts),
        })
        .to_string()
    }

    /// The event text: `head` (from [`AuditRecord::event_head`]) with
    /// `definition` (JSON text) added as its last field.
    pub fn event_with_definition(head: &str, definition: &str) -> String {
        let open = head.strip_suffix('}').unwrap_or(head);
        format!("{open},\"definition\":{definition}}}")
    }

    /// The channel the event is published on.
    pub fn channel(&self) -> String {
        format!("{}:{}", self.kind.as_str(), self.key)
    }
}

/// One key's new state after an applied write.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A flag was set.
    Flag(FlagRecord),
    /// A flag was deleted at this version.
    FlagDeleted {
        /// Key.
        key: String,
        /// Its last version.
        version: u64,
    },
    /// A segment was set.
    Segment(SegmentRecord),
    /// A segment was deleted at this version.
    SegmentDeleted {
        /// Key.
        key: String,
        /// Its last version.
        version: u64,
    },
    /// An ACL user was set (its `ACL LIST` line) or deleted (`None`).
    User {
        /// User name.
        name: String,
        /// The user's rules in aclfile form (password hashes only).
        acl: Option<String>,
    },
    /// An experiment was set (its stored document) or deleted (`None`).
    Experiment {
        /// Experiment key.
        key: String,
        /// The stored document.
        document: Option<String>,
    },
}

/// Everything one applied log entry persists, written as one atomic batch.
#[derive(Debug, Clone, Default)]
pub struct AppliedBatch {
    /// Opaque replication metadata (the applied log id and membership).
    pub meta: Vec<u8>,
    /// The revision of this write, when it changed anything.
    pub revision: Option<u64>,
    /// Key changes.
    pub changes: Vec<Change>,
    /// Audit records (shared with the change feed, which publishes them).
    pub audit: std::sync::Arc<Vec<AuditRecord>>,
}

/// Everything stored, as loaded at start or carried by a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateImage {
    /// Opaque replication metadata.
    #[serde(default)]
    pub meta: Option<Vec<u8>>,
    /// Revision of the last write that changed anything.
    #[serde(default)]
    pub revision: u64,
    /// Flags.
    pub flags: Vec<FlagRecord>,
    /// Segments.
    pub segments: Vec<SegmentRecord>,
    /// Last versions of deleted keys: (kind, key, version).
    pub tombstones: Vec<(Kind, String, u64)>,
    /// Audit records, oldest first.
    pub audit: Vec<AuditRecord>,
    /// ACL users: (name, `ACL LIST` line), by name.
    #[serde(default)]
    pub users: Vec<(String, String)>,
    /// Experiments: (key, stored document), by key.
    #[serde(default)]
    pub experiments: Vec<(String, String)>,
}
