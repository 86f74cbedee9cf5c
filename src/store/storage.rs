//! The narrow storage interface the state machine persists through, and its
//! sled implementation. Everything lives in one sled tree under key prefixes
//! so each applied entry is one atomic `apply_batch`:
//!
//! | prefix | value |
//! |---|---|
//! | `m:applied` | replication metadata (opaque) |
//! | `m:revision` | revision of the last write that changed something |
//! | `f:<key>` / `s:<key>` | flag / segment record (JSON) |
//! | `t:f:<key>` / `t:s:<key>` | last version of a deleted key |
//! | `a:f:<key>\0<revision be8><seq be4>` | audit record (JSON); `a:s:` for segments, `a:u:` users, `a:e:` experiments |
//! | `x:<revision be8><seq be4>` | change-stream entry (the event JSON) |
//! | `m:stream_trimmed` | highest revision whose stream entries were compacted |
//!
//! Each definition is stored once (data format 4, docs/decisions.md): a
//! value starting with [`REF`] refers to another instead of copying it.
//! - An audit record `REF` + its JSON with `"after":null` means: `after` is
//!   the definition of the key's current `f:`/`s:` record (same version).
//!   When that record is replaced or deleted, the audit record is rewritten
//!   with the definition spliced in, in the same batch.
//! - A stream entry `REF` + kind byte + key length (be4) + key + suffix
//!   means: the event built from the audit record of the same id, whose
//!   definition is that record's `after` text with `suffix` in place of its
//!   closing brace. When retention drops that audit record, the entry is
//!   rewritten whole, in the same batch.
//!
//! Values that start with `{` are whole JSON (everything before format 4,
//! and whatever does not reproduce byte for byte from a reference).
//!
//! sled's own flush is not an fsync, so it is never what makes a write
//! durable: the write-ahead log is, and recovery replays it on top of sled.

use std::path::Path;

use super::records::{
    AppliedBatch, AuditRecord, Change, FlagRecord, Kind, SegmentRecord, StateImage,
};

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The engine failed.
    #[error("state storage: {0}")]
    Engine(String),
    /// A stored value could not be decoded.
    #[error("state storage: corrupt value at {key}: {why}")]
    Corrupt {
        /// The key.
        key: String,
        /// Why.
        why: String,
    },
}

/// What the state machine needs from a storage engine.
pub trait StateStorage: Send + Sync + 'static {
    /// Everything stored, audit excluded (it is read on demand).
    fn load(&self) -> Result<StateImage, StorageError>;
    /// Persists applied entries atomically (each entry whole, never in part).
    fn commit(&self, batches: &[AppliedBatch], audit_retention: usize) -> Result<(), StorageError>;
    /// A key's audit records, newest first.
    fn history(
        &self,
        kind: Kind,
        key: &str,
        count: usize,
    ) -> Result<Vec<AuditRecord>, StorageError>;
    /// One page of a key's audit records at or below `upto` (revision, seq),
    /// newest first: at most `max_items`, and no more once `max_bytes` of
    /// records are read (always at least one, if any). The flag says whether
    /// the page stopped at a limit (more may follow) rather than at the end.
    fn history_page(
        &self,
        kind: Kind,
        key: &str,
        upto: StreamId,
        max_items: usize,
        max_bytes: usize,
    ) -> Result<(Vec<AuditRecord>, bool), StorageError>;
    /// How many audit records a key has at or below `upto`.
    fn history_count(&self, kind: Kind, key: &str, upto: StreamId) -> Result<usize, StorageError>;
    /// Every audit record, oldest first per key (for snapshots).
    fn all_audit(&self) -> Result<Vec<AuditRecord>, StorageError>;
    /// Replaces everything with `image` (installing a snapshot).
    fn replace(&self, image: &StateImage) -> Result<(), StorageError>;
    /// Writes buffered data out (best effort; not a durability point).
    fn flush(&self) -> Result<(), StorageError>;
    /// Bytes used on disk.
    fn disk_bytes(&self) -> u64;
    /// Change-stream entries after `after` (exclusive), oldest first, at most `count`.
    fn stream_after(
        &self,
        after: StreamId,
        count: usize,
    ) -> Result<Vec<(StreamId, String)>, StorageError>;
    /// Change-stream entries in `[from, to]`, oldest first (or newest first when `rev`).
    fn stream_range(
        &self,
        from: StreamId,
        to: StreamId,
        count: usize,
        rev: bool,
    ) -> Result<Vec<(StreamId, String)>, StorageError>;
    /// One page of change-stream entries in `[from, to]`, oldest first (newest
    /// first when `rev`): at most `max_items`, and no more once `max_bytes`
    /// of entries are read (always at least one, if any). The flag says
    /// whether the page stopped at a limit (more may follow).
    fn stream_page(
        &self,
        from: StreamId,
        to: StreamId,
        rev: bool,
        max_items: usize,
        max_bytes: usize,
    ) -> Result<(Vec<(StreamId, String)>, bool), StorageError>;
    /// How many change-stream entries are in `[from, to]`.
    fn stream_count(&self, from: StreamId, to: StreamId) -> Result<usize, StorageError>;
    /// Entries retained in the change stream.
    fn stream_len(&self) -> Result<usize, StorageError>;
    /// Drops stream entries at or below revision `upto`; they count as compacted.
    fn stream_trim(&self, upto: u64) -> Result<(), StorageError>;
    /// Highest revision whose stream entries were compacted away (0: none).
    fn stream_trimmed(&self) -> Result<u64, StorageError>;
}

/// A change-stream entry id: (revision, position among that revision's events).
pub type StreamId = (u64, u32);

fn stream_key(id: StreamId) -> Vec<u8> {
    let mut k = b"x:".to_vec();
    k.extend_from_slice(&id.0.to_be_bytes());
    k.extend_from_slice(&id.1.to_be_bytes());
    k
}

fn stream_id_of(key: &[u8]) -> Option<StreamId> {
    let rev = u64::from_be_bytes(key.get(2..10)?.try_into().ok()?);
    let seq = u32::from_be_bytes(key.get(10..14)?.try_into().ok()?);
    Some((rev, seq))
}

/// The first byte of a value stored as a reference (see the module doc);
/// JSON values start with `{`.
pub const REF: u8 = 1;

/// Tries a read that may race a commit rewriting what it refers to.
const REF_TRIES: usize = 8;

/// The tail of an audit record whose `after` is a reference.
const AFTER_NULL: &[u8] = b",\"after\":null}";

/// The version of a stored audit record (its other fields are skipped).
#[derive(serde::Deserialize)]
struct RecordVersion {
    version: u64,
}

/// The two fields of a key record that a reference needs.
#[derive(serde::Deserialize)]
struct RecordHead<'a> {
    version: u64,
    #[serde(borrow)]
    definition: &'a serde_json::value::RawValue,
}

/// The `after` text of an audit record stored whole.
#[derive(serde::Deserialize)]
struct AfterText<'a> {
    #[serde(borrow)]
    after: Option<&'a serde_json::value::RawValue>,
}

fn kind_byte(kind: Kind) -> u8 {
    kind_prefix(kind).as_bytes()[0]
}

fn kind_of_byte(b: u8) -> Option<Kind> {
    match b {
        b'f' => Some(Kind::Flag),
        b's' => Some(Kind::Segment),
        b'u' => Some(Kind::User),
        b'e' => Some(Kind::Experiment),
        _ => None,
    }
}

/// A stream entry referring to the audit record of its id.
fn stream_ref(kind: Kind, key: &str, suffix: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(6 + key.len() + suffix.len());
    v.push(REF);
    v.push(kind_byte(kind));
    v.extend_from_slice(&(key.len() as u32).to_be_bytes());
    v.extend_from_slice(key.as_bytes());
    v.extend_from_slice(suffix);
    v
}

/// Splits a stream reference into (kind, key, suffix).
fn parse_stream_ref(v: &[u8]) -> Option<(Kind, &str, &[u8])> {
    let kind = kind_of_byte(*v.get(1)?)?;
    let len = u32::from_be_bytes(v.get(2..6)?.try_into().ok()?) as usize;
    let key = std::str::from_utf8(v.get(6..6 + len)?).ok()?;
    Some((kind, key, v.get(6 + len..)?))
}

fn corrupt(key: &[u8], why: impl Into<String>) -> StorageError {
    StorageError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        why: why.into(),
    }
}

/// What one commit leaves for a key with a record (`f:`/`s:`): its version
/// and definition, or `None` when deleted.
type Final<'a> = Option<(u64, Definition<'a>)>;

/// A definition as committed, serialized only when a reference needs it.
#[derive(Clone, Copy)]
enum Definition<'a> {
    Flag(&'a crate::flag::FlagDef),
    Segment(&'a crate::flag::SegmentDef),
}

impl Definition<'_> {
    fn text(self) -> Option<String> {
        match self {
            Definition::Flag(d) => serde_json::to_string(d).ok(),
            Definition::Segment(d) => serde_json::to_string(d).ok(),
        }
    }
}

/// The sled engine.
pub struct SledStorage {
    db: sled::Db,
    tree: sled::Tree,
    /// Audit records per key prefix, counted once per key, so retention
    /// needs no scan on every write.
    audit_counts: std::sync::Mutex<std::collections::HashMap<Vec<u8>, usize>>,
}

impl std::fmt::Debug for SledStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SledStorage")
    }
}

fn engine(e: impl std::fmt::Display) -> StorageError {
    StorageError::Engine(e.to_string())
}

fn kind_prefix(kind: Kind) -> &'static str {
    match kind {
        Kind::Flag => "f",
        Kind::Segment => "s",
        Kind::User => "u",
        Kind::Experiment => "e",
    }
}

fn audit_prefix(kind: Kind, key: &str) -> Vec<u8> {
    let mut p = format!("a:{}:{key}", kind_prefix(kind)).into_bytes();
    p.push(0);
    p
}

fn audit_key(r: &AuditRecord) -> Vec<u8> {
    let mut k = audit_prefix(r.kind, &r.key);
    k.extend_from_slice(&r.revision.to_be_bytes());
    k.extend_from_slice(&r.seq.to_be_bytes());
    k
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T, StorageError> {
    serde_json::from_slice(value).map_err(|e| StorageError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        why: e.to_string(),
    })
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    serde_json::to_vec(value).map_err(engine)
}

impl SledStorage {
    /// Opens (creating) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        let db = sled::Config::new()
            .path(dir)
            // Reads are served by the in-memory view, but a smaller cache
            // (16 MiB) made a 20,000-flag import's flush slower under load
            // (docs/benchmarks.md, "Issue 13 figures"): kept until measured.
            .cache_capacity(64 * 1024 * 1024)
            .flush_every_ms(Some(1000))
            .open()
            .map_err(engine)?;
        let tree = db.open_tree("state").map_err(engine)?;
        Ok(SledStorage {
            db,
            tree,
            audit_counts: Default::default(),
        })
    }

    fn put_record(&self, batch: &mut sled::Batch, kind: Kind, key: &str, value: Vec<u8>) {
        batch.insert(format!("{}:{key}", kind_prefix(kind)).into_bytes(), value);
        batch.remove(format!("t:{}:{key}", kind_prefix(kind)).into_bytes());
    }

    /// Decodes one `x:` item of a sled scan.
    fn stream_entry(
        &self,
        item: sled::Result<(sled::IVec, sled::IVec)>,
    ) -> Result<(StreamId, String), StorageError> {
        let (k, v) = item.map_err(engine)?;
        let id = stream_id_of(&k).ok_or_else(|| corrupt(&k, "bad stream key"))?;
        Ok((id, self.stream_text(&k, v)?))
    }

    /// A stream entry's event text, rebuilt from its audit record when it
    /// is a reference.
    fn stream_text(&self, k: &[u8], mut v: sled::IVec) -> Result<String, StorageError> {
        for _ in 0..REF_TRIES {
            if v.first() != Some(&REF) {
                return Ok(String::from_utf8_lossy(&v).into_owned());
            }
            let (kind, key, suffix) =
                parse_stream_ref(&v).ok_or_else(|| corrupt(k, "bad stream reference"))?;
            let id = stream_id_of(k).ok_or_else(|| corrupt(k, "bad stream key"))?;
            let mut akey = audit_prefix(kind, key);
            akey.extend_from_slice(&id.0.to_be_bytes());
            akey.extend_from_slice(&id.1.to_be_bytes());
            if let Some((record, Some(after))) = self.audit_with_after_text(&akey)? {
                let open = after
                    .strip_suffix('}')
                    .ok_or_else(|| corrupt(&akey, "after is not an object"))?;
                let definition = format!("{open}{}", String::from_utf8_lossy(suffix));
                return Ok(AuditRecord::event_with_definition(
                    &record.event_head(),
                    &definition,
                ));
            }
            // The audit record went (retention) after this entry was read:
            // the same commit rewrote the entry whole.
            match self.tree.get(k).map_err(engine)? {
                Some(now) => v = now,
                None => return Err(corrupt(k, "stream entry compacted while read")),
            }
        }
        Err(corrupt(k, "stream reference kept changing while read"))
    }

    /// The definition text and version of a key's current record.
    fn current_definition(
        &self,
        kind: Kind,
        key: &str,
    ) -> Result<Option<(u64, String)>, StorageError> {
        let k = format!("{}:{key}", kind_prefix(kind)).into_bytes();
        let Some(v) = self.tree.get(&k).map_err(engine)? else {
            return Ok(None);
        };
        let head: RecordHead<'_> =
            serde_json::from_slice(&v).map_err(|e| corrupt(&k, e.to_string()))?;
        Ok(Some((head.version, head.definition.get().to_string())))
    }

    /// An audit record by its key, with the exact text of its `after`
    /// (`None` when the record is not there).
    #[allow(clippy::type_complexity)]
    fn audit_with_after_text(
        &self,
        k: &[u8],
    ) -> Result<Option<(AuditRecord, Option<String>)>, StorageError> {
        for _ in 0..REF_TRIES {
            let Some(v) = self.tree.get(k).map_err(engine)? else {
                return Ok(None);
            };
            if v.first() != Some(&REF) {
                let record: AuditRecord = decode(k, &v)?;
                let after: AfterText<'_> =
                    serde_json::from_slice(&v).map_err(|e| corrupt(k, e.to_string()))?;
                return Ok(Some((record, after.after.map(|a| a.get().to_string()))));
            }
            let record: AuditRecord = decode(k, &v[1..])?;
            match self.current_definition(record.kind, &record.key)? {
                Some((version, text)) if version == record.version => {
                    return Ok(Some((record, Some(text))))
                }
                // The key changed after the record was read: that commit
                // rewrote the record whole; read it again.
                _ => continue,
            }
        }
        Err(corrupt(k, "audit reference kept changing while read"))
    }

    /// Decodes an audit record read from storage, resolving a reference.
    fn audit_record(&self, k: &[u8], v: &[u8]) -> Result<AuditRecord, StorageError> {
        if v.first() != Some(&REF) {
            return decode(k, v);
        }
        match self.audit_with_after_text(k)? {
            Some((mut record, after)) => {
                record.after = match after {
                    Some(text) => Some(decode(k, text.as_bytes())?),
                    None => None,
                };
                Ok(record)
            }
            None => Err(corrupt(k, "audit record compacted while read")),
        }
    }

    /// The stored audit record `k` of key `key` (a reference) with its
    /// definition spliced in, before the key's current record is replaced.
    fn materialize_audit(
        &self,
        kind: Kind,
        key: &str,
        k: &[u8],
        v: &[u8],
    ) -> Result<Option<Vec<u8>>, StorageError> {
        // Only the version is needed: no tree of the `before` definition.
        let record: RecordVersion = decode(k, &v[1..])?;
        let Some(body) = v[1..].strip_suffix(AFTER_NULL) else {
            return Err(corrupt(k, "bad audit reference"));
        };
        match self.current_definition(kind, key)? {
            Some((version, text)) if version == record.version => {
                let mut whole = body.to_vec();
                whole.extend_from_slice(b",\"after\":");
                whole.extend_from_slice(text.as_bytes());
                whole.push(b'}');
                Ok(Some(whole))
            }
            _ => Ok(None),
        }
    }

    fn delete_record(&self, batch: &mut sled::Batch, kind: Kind, key: &str, version: u64) {
        batch.remove(format!("{}:{key}", kind_prefix(kind)).into_bytes());
        batch.insert(
            format!("t:{}:{key}", kind_prefix(kind)).into_bytes(),
            version.to_be_bytes().to_vec(),
        );
    }
}

impl SledStorage {
    /// Everything [`StateStorage::load`] returns but the flags, which
    /// [`Self::flag_records`] yields as stored: a restart builds the view
    /// from those bytes a chunk at a time instead of from a tree of every
    /// record (docs/decisions.md, "Restart builds the view from the stored bytes").
    pub fn load_without_flags(&self) -> Result<StateImage, StorageError> {
        let revision = match self.tree.get(b"m:revision").map_err(engine)? {
            Some(v) => {
                u64::from_be_bytes(v.as_ref().try_into().map_err(|_| StorageError::Corrupt {
                    key: "m:revision".into(),
                    why: "not 8 bytes".into(),
                })?)
            }
            None => 0,
        };
        let mut image = StateImage {
            meta: self
                .tree
                .get(b"m:applied")
                .map_err(engine)?
                .map(|v| v.to_vec()),
            revision,
            ..StateImage::default()
        };
        for item in self.tree.scan_prefix(b"s:") {
            let (k, v) = item.map_err(engine)?;
            image.segments.push(decode::<SegmentRecord>(&k, &v)?);
        }
        for item in self.tree.scan_prefix(b"u:") {
            let (k, v) = item.map_err(engine)?;
            image.users.push((
                String::from_utf8_lossy(&k[2..]).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            ));
        }
        for item in self.tree.scan_prefix(b"e:") {
            let (k, v) = item.map_err(engine)?;
            image.experiments.push((
                String::from_utf8_lossy(&k[2..]).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            ));
        }
        for item in self.tree.scan_prefix(b"t:") {
            let (k, v) = item.map_err(engine)?;
            let text = String::from_utf8_lossy(&k[2..]).into_owned();
            let (kind, key) = match text.split_once(':') {
                Some(("f", key)) => (Kind::Flag, key.to_string()),
                Some(("s", key)) => (Kind::Segment, key.to_string()),
                _ => {
                    return Err(StorageError::Corrupt {
                        key: text,
                        why: "bad tombstone key".into(),
                    })
                }
            };
            let version =
                u64::from_be_bytes(v.as_ref().try_into().map_err(|_| StorageError::Corrupt {
                    key: text.clone(),
                    why: "bad tombstone value".into(),
                })?);
            image.tombstones.push((kind, key, version));
        }
        Ok(image)
    }

    /// The stored flag records in key order, as (sled key, JSON value); decode
    /// one with [`super::records::FlagRecordText`].
    pub fn flag_records(
        &self,
    ) -> impl Iterator<Item = Result<(sled::IVec, sled::IVec), StorageError>> + '_ {
        self.tree
            .scan_prefix(b"f:")
            .map(|item| item.map_err(engine))
    }
}

impl StateStorage for SledStorage {
    fn load(&self) -> Result<StateImage, StorageError> {
        let mut image = self.load_without_flags()?;
        for item in self.flag_records() {
            let (k, v) = item?;
            image.flags.push(decode::<FlagRecord>(&k, &v)?);
        }
        Ok(image)
    }

    fn commit(&self, batches: &[AppliedBatch], audit_retention: usize) -> Result<(), StorageError> {
        use std::collections::{BTreeMap, HashMap, HashSet};
        let mut b = sled::Batch::default();
        let mut counts = self.audit_counts.lock().unwrap_or_else(|p| p.into_inner());
        // What this commit leaves for each key with a record, whether the
        // key may have had one before, and each key's last audit record.
        let mut finals: HashMap<(Kind, &str), (Final<'_>, bool)> = HashMap::new();
        let mut last_audit: HashMap<(Kind, &str), (usize, usize)> = HashMap::new();
        // Audit records added by this commit per key, oldest first.
        let mut added: BTreeMap<Vec<u8>, Vec<(usize, usize)>> = BTreeMap::new();
        for (bi, batch) in batches.iter().enumerate() {
            for change in &batch.changes {
                let (id, now, existed) = match change {
                    Change::Flag(r) => (
                        (Kind::Flag, r.key.as_str()),
                        Some((r.version, Definition::Flag(&r.definition))),
                        r.version > 1,
                    ),
                    Change::Segment(r) => (
                        (Kind::Segment, r.key.as_str()),
                        Some((r.version, Definition::Segment(&r.definition))),
                        r.version > 1,
                    ),
                    Change::FlagDeleted { key, .. } => ((Kind::Flag, key.as_str()), None, true),
                    Change::SegmentDeleted { key, .. } => {
                        ((Kind::Segment, key.as_str()), None, true)
                    }
                    Change::User { .. } | Change::Experiment { .. } => continue,
                };
                let entry = finals.entry(id).or_insert((None, false));
                *entry = (now, entry.1 || existed);
            }
            for (ai, r) in batch.audit.iter().enumerate() {
                last_audit.insert((r.kind, r.key.as_str()), (bi, ai));
                added
                    .entry(audit_prefix(r.kind, &r.key))
                    .or_default()
                    .push((bi, ai));
            }
        }
        // Retention: keep the newest `audit_retention` records per key; the
        // oldest stored ones go first, then the oldest of this commit.
        let mut dropped_stored = Vec::new();
        let mut dropped_new = HashSet::new();
        for (prefix, new) in &added {
            let stored = match counts.get(prefix) {
                Some(n) => *n,
                None => self.tree.scan_prefix(prefix).keys().count(),
            };
            let total = stored + new.len();
            let excess = total.saturating_sub(audit_retention);
            let from_stored = excess.min(stored);
            for k in self.tree.scan_prefix(prefix).keys().take(from_stored) {
                dropped_stored.push(k.map_err(engine)?);
            }
            dropped_new.extend(new.iter().take(excess - from_stored).copied());
            counts.insert(prefix.clone(), total - excess);
        }
        // A key's record is replaced: its newest audit record, if it refers
        // to that record, gets the definition spliced in.
        for ((kind, key), (_, existed)) in &finals {
            if !existed {
                continue;
            }
            if let Some(item) = self.tree.scan_prefix(audit_prefix(*kind, key)).next_back() {
                let (k, v) = item.map_err(engine)?;
                if v.first() == Some(&REF) {
                    match self.materialize_audit(*kind, key, &k, &v)? {
                        Some(whole) => b.insert(k, whole),
                        None => tracing::error!(
                            key = %String::from_utf8_lossy(&k),
                            "audit record refers to a version its key no longer has"
                        ),
                    }
                }
            }
        }
        // Stream entries whose audit record retention drops are written whole.
        for k in &dropped_stored {
            let Some(tail) = k.len().checked_sub(12).map(|at| &k[at..]) else {
                continue;
            };
            let rev = u64::from_be_bytes(tail[..8].try_into().unwrap_or([0; 8]));
            let seq = u32::from_be_bytes(tail[8..].try_into().unwrap_or([0; 4]));
            let sk = stream_key((rev, seq));
            if let Some(v) = self.tree.get(&sk).map_err(engine)? {
                if v.first() == Some(&REF) {
                    let whole = self.stream_text(&sk, v)?;
                    b.insert(sk, whole.into_bytes());
                }
            }
        }
        for (bi, batch) in batches.iter().enumerate() {
            b.insert(&b"m:applied"[..], batch.meta.clone());
            if let Some(rev) = batch.revision {
                b.insert(&b"m:revision"[..], rev.to_be_bytes().to_vec());
            }
            for change in &batch.changes {
                match change {
                    Change::Flag(r) => self.put_record(&mut b, Kind::Flag, &r.key, encode(r)?),
                    Change::Segment(r) => {
                        self.put_record(&mut b, Kind::Segment, &r.key, encode(r)?)
                    }
                    Change::FlagDeleted { key, version } => {
                        self.delete_record(&mut b, Kind::Flag, key, *version)
                    }
                    Change::SegmentDeleted { key, version } => {
                        self.delete_record(&mut b, Kind::Segment, key, *version)
                    }
                    Change::User { name, acl } => {
                        let k = format!("u:{name}").into_bytes();
                        match acl {
                            Some(line) => b.insert(k, line.as_bytes().to_vec()),
                            None => b.remove(k),
                        }
                    }
                    Change::Experiment { key, document } => {
                        let k = format!("e:{key}").into_bytes();
                        match document {
                            Some(doc) => b.insert(k, doc.as_bytes().to_vec()),
                            None => b.remove(k),
                        }
                    }
                }
            }
            for (ai, r) in batch.audit.iter().enumerate() {
                let encoded = encode(r)?;
                // The key's last record of this commit, kept, whose `after`
                // is the definition its record is left with: a reference.
                let definition = match finals.get(&(r.kind, r.key.as_str())) {
                    Some((Some((version, def)), _))
                        if *version == r.version
                            && r.after.is_some()
                            && last_audit.get(&(r.kind, r.key.as_str())) == Some(&(bi, ai))
                            && !dropped_new.contains(&(bi, ai)) =>
                    {
                        def.text().filter(|t| {
                            t.ends_with('}')
                                && encoded.ends_with(format!(",\"after\":{t}}}").as_bytes())
                        })
                    }
                    _ => None,
                };
                // User changes are audited, not streamed: the change stream is
                // readable by evaluators.
                if r.kind != Kind::User {
                    let open = definition.as_ref().map(|t| &t.as_bytes()[..t.len() - 1]);
                    let value = match (open, &r.document) {
                        (Some(open), Some(doc)) if doc.starts_with(open) => {
                            stream_ref(r.kind, &r.key, &doc[open.len()..])
                        }
                        _ => r.event_json().into_bytes(),
                    };
                    b.insert(stream_key((r.revision, r.seq)), value);
                }
                let value = match &definition {
                    Some(t) => {
                        let body = &encoded[..encoded.len() - t.len() - ",\"after\":}".len()];
                        let mut v = Vec::with_capacity(1 + body.len() + AFTER_NULL.len());
                        v.push(REF);
                        v.extend_from_slice(body);
                        v.extend_from_slice(AFTER_NULL);
                        v
                    }
                    None => encoded,
                };
                b.insert(audit_key(r), value);
            }
        }
        for k in dropped_stored {
            b.remove(k);
        }
        for (bi, ai) in dropped_new {
            b.remove(audit_key(&batches[bi].audit[ai]));
        }
        self.tree.apply_batch(b).map_err(engine)
    }

    fn history(
        &self,
        kind: Kind,
        key: &str,
        count: usize,
    ) -> Result<Vec<AuditRecord>, StorageError> {
        self.tree
            .scan_prefix(audit_prefix(kind, key))
            .rev()
            .take(count)
            .map(|item| {
                let (k, v) = item.map_err(engine)?;
                self.audit_record(&k, &v)
            })
            .collect()
    }

    fn history_page(
        &self,
        kind: Kind,
        key: &str,
        upto: StreamId,
        max_items: usize,
        max_bytes: usize,
    ) -> Result<(Vec<AuditRecord>, bool), StorageError> {
        let prefix = audit_prefix(kind, key);
        let mut end = prefix.clone();
        end.extend_from_slice(&upto.0.to_be_bytes());
        end.extend_from_slice(&upto.1.to_be_bytes());
        let mut bytes = 0;
        let mut out = Vec::new();
        for item in self.tree.range(prefix..=end).rev() {
            if out.len() >= max_items || (bytes >= max_bytes && !out.is_empty()) {
                return Ok((out, true));
            }
            let (k, v) = item.map_err(engine)?;
            bytes += v.len();
            out.push(self.audit_record(&k, &v)?);
        }
        Ok((out, false))
    }

    fn history_count(&self, kind: Kind, key: &str, upto: StreamId) -> Result<usize, StorageError> {
        let prefix = audit_prefix(kind, key);
        let mut end = prefix.clone();
        end.extend_from_slice(&upto.0.to_be_bytes());
        end.extend_from_slice(&upto.1.to_be_bytes());
        let mut n = 0;
        for k in self.tree.range(prefix..=end).keys() {
            k.map_err(engine)?;
            n += 1;
        }
        Ok(n)
    }

    fn all_audit(&self) -> Result<Vec<AuditRecord>, StorageError> {
        self.tree
            .scan_prefix(b"a:")
            .map(|item| {
                let (k, v) = item.map_err(engine)?;
                self.audit_record(&k, &v)
            })
            .collect()
    }

    fn replace(&self, image: &StateImage) -> Result<(), StorageError> {
        let mut b = sled::Batch::default();
        for k in self.tree.iter().keys() {
            b.remove(k.map_err(engine)?);
        }
        if let Some(meta) = &image.meta {
            b.insert(&b"m:applied"[..], meta.clone());
        }
        b.insert(&b"m:revision"[..], image.revision.to_be_bytes().to_vec());
        // Events before an installed image are not known here.
        b.insert(
            &b"m:stream_trimmed"[..],
            image.revision.to_be_bytes().to_vec(),
        );
        for r in &image.flags {
            b.insert(format!("f:{}", r.key).into_bytes(), encode(r)?);
        }
        for (name, line) in &image.users {
            b.insert(format!("u:{name}").into_bytes(), line.as_bytes().to_vec());
        }
        for (key, doc) in &image.experiments {
            b.insert(format!("e:{key}").into_bytes(), doc.as_bytes().to_vec());
        }
        for r in &image.segments {
            b.insert(format!("s:{}", r.key).into_bytes(), encode(r)?);
        }
        for (kind, key, version) in &image.tombstones {
            b.insert(
                format!("t:{}:{key}", kind_prefix(*kind)).into_bytes(),
                version.to_be_bytes().to_vec(),
            );
        }
        for r in &image.audit {
            b.insert(audit_key(r), encode(r)?);
        }
        self.audit_counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.tree.apply_batch(b).map_err(engine)
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.db.flush().map(|_| ()).map_err(engine)
    }

    fn disk_bytes(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    fn stream_after(
        &self,
        after: StreamId,
        count: usize,
    ) -> Result<Vec<(StreamId, String)>, StorageError> {
        let next = match after {
            (u64::MAX, u32::MAX) => return Ok(Vec::new()),
            (r, u32::MAX) => (r + 1, 0),
            (r, s) => (r, s + 1),
        };
        self.stream_range(next, (u64::MAX, u32::MAX), count, false)
    }

    fn stream_range(
        &self,
        from: StreamId,
        to: StreamId,
        count: usize,
        rev: bool,
    ) -> Result<Vec<(StreamId, String)>, StorageError> {
        if from > to {
            return Ok(Vec::new());
        }
        let range = self.tree.range(stream_key(from)..=stream_key(to));
        if rev {
            range
                .rev()
                .take(count)
                .map(|i| self.stream_entry(i))
                .collect()
        } else {
            range.take(count).map(|i| self.stream_entry(i)).collect()
        }
    }

    fn stream_page(
        &self,
        from: StreamId,
        to: StreamId,
        rev: bool,
        max_items: usize,
        max_bytes: usize,
    ) -> Result<(Vec<(StreamId, String)>, bool), StorageError> {
        if from > to {
            return Ok((Vec::new(), false));
        }
        let range = self.tree.range(stream_key(from)..=stream_key(to));
        let items: Box<dyn Iterator<Item = _>> = if rev {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        let mut bytes = 0;
        let mut out = Vec::new();
        for item in items {
            if out.len() >= max_items || (bytes >= max_bytes && !out.is_empty()) {
                return Ok((out, true));
            }
            let entry = self.stream_entry(item)?;
            bytes += entry.1.len();
            out.push(entry);
        }
        Ok((out, false))
    }

    fn stream_count(&self, from: StreamId, to: StreamId) -> Result<usize, StorageError> {
        if from > to {
            return Ok(0);
        }
        let mut n = 0;
        for k in self.tree.range(stream_key(from)..=stream_key(to)).keys() {
            k.map_err(engine)?;
            n += 1;
        }
        Ok(n)
    }

    fn stream_len(&self) -> Result<usize, StorageError> {
        Ok(self.tree.scan_prefix(b"x:").keys().count())
    }

    fn stream_trim(&self, upto: u64) -> Result<(), StorageError> {
        if upto <= self.stream_trimmed()? {
            return Ok(());
        }
        let mut b = sled::Batch::default();
        for k in self
            .tree
            .range(stream_key((0, 0))..stream_key((upto + 1, 0)))
            .keys()
        {
            b.remove(k.map_err(engine)?);
        }
        b.insert(&b"m:stream_trimmed"[..], upto.to_be_bytes().to_vec());
        self.tree.apply_batch(b).map_err(engine)
    }

    fn stream_trimmed(&self) -> Result<u64, StorageError> {
        match self.tree.get(b"m:stream_trimmed").map_err(engine)? {
            Some(v) => Ok(u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8]))),
            None => Ok(0),
        }
    }
}
