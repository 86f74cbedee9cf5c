//! Entry points of the coverage-guided fuzz targets in `fuzz/` (see
//! `docs/fuzzing.md`). Each takes arbitrary bytes, drives one parser the way
//! the server does, and panics only when a property the server relies on
//! fails. They live in the library, not in `fuzz/`, so that
//! `tests/fuzz_regressions.rs` replays saved inputs through exactly the same
//! code under `cargo test`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::flag::allocation::Allocations;
use crate::flag::bucket::BUCKETS;
use crate::flag::compile::{allocations_for, CompiledSegment};
use crate::flag::context::AttrValue;
use crate::flag::eval::in_segment;
use crate::flag::validate::{check_references, Catalog, FlagRefs};
use crate::flag::{
    compile_flag, compile_segment, evaluate, parse_flag, parse_segment, CompiledFlag, Context,
    FlagDef, FlagSource,
};
use crate::protocol::{DecoderLimits, RequestDecoder};
use crate::raft::wal::{self, FsyncPolicy, Replayed};

/// What decoding a whole stream gave: the requests, then whether it ended in
/// a protocol error.
type Decoded = (Vec<Vec<Bytes>>, bool);

/// Fuzzes the request decoder. Byte 0 picks the mode (bit 0: authenticated,
/// bit 1: tiny limits), byte 1 seeds the read sizes, the rest is the stream.
///
/// Properties: no panic; every request returned consumed bytes; the stream
/// fed in arbitrary pieces decodes to the same requests as fed at once (only
/// the point of a limit error may differ, so one list is a prefix of the other).
pub fn request_decoder(data: &[u8]) {
    let [mode, seed, stream @ ..] = data else {
        return;
    };
    let authenticated = mode & 1 == 1;
    let limits = if mode & 2 == 2 {
        DecoderLimits {
            max_bulk_len: 64,
            max_multibulk_len: 8,
            query_buffer_limit: 256,
        }
    } else {
        DecoderLimits::default()
    };
    let whole = decode_in_pieces(stream, &limits, authenticated, &mut |_| usize::MAX);
    let mut rng = u32::from(*seed) | 1;
    let pieces = decode_in_pieces(stream, &limits, authenticated, &mut |left| {
        // xorshift: deterministic piece sizes of 1..=16 bytes.
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        (rng as usize % 16 + 1).min(left)
    });
    let (short, long) = if whole.0.len() <= pieces.0.len() {
        (&whole, &pieces)
    } else {
        (&pieces, &whole)
    };
    assert_eq!(
        short.0[..],
        long.0[..short.0.len()],
        "the same stream decoded differently when split into pieces"
    );
    if !whole.1 && !pieces.1 {
        assert_eq!(whole.0.len(), pieces.0.len(), "a request was lost");
    }
}

/// Feeds `stream` to a fresh decoder in pieces of `next_piece(bytes left)`.
fn decode_in_pieces(
    stream: &[u8],
    limits: &DecoderLimits,
    authenticated: bool,
    next_piece: &mut dyn FnMut(usize) -> usize,
) -> Decoded {
    let mut dec = RequestDecoder::new();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut fed = 0;
    // Bytes taken out of `buf` since the last request was returned.
    let mut taken = 0;
    while fed < stream.len() {
        let n = next_piece(stream.len() - fed).clamp(1, stream.len() - fed);
        buf.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
        loop {
            let before = buf.len();
            let result = dec.decode(&mut buf, limits, authenticated);
            taken += before - buf.len();
            let _ = dec.wanted(buf.len());
            match result {
                Ok(Some(args)) => {
                    assert!(!args.is_empty(), "a request with no arguments");
                    assert!(taken >= 2, "a request returned without consuming input");
                    taken = 0;
                    out.push(args.clone());
                    dec.recycle(args);
                }
                Ok(None) => break,
                Err(e) => {
                    assert!(e.to_string().starts_with("ERR Protocol error: "));
                    return (out, true);
                }
            }
        }
    }
    (out, false)
}

/// Fuzzes the context parser.
///
/// Properties: no panic; a context parses exactly when the bytes are one
/// JSON object (as serde_json reads it), and every attribute reads back as
/// that object's last value of its name, null counting as missing.
pub fn context(data: &[u8]) {
    let parsed = Context::parse(data);
    assert_eq!(
        Context::parse_keeping(data, |_| false).map(drop),
        parsed.as_ref().map(drop).map_err(Clone::clone),
        "keeping no attribute refuses the same bytes with the same words"
    );
    let reference = serde_json::from_slice::<serde_json::Value>(data);
    let object = match &reference {
        Ok(serde_json::Value::Object(map)) => Some(map),
        _ => None,
    };
    assert_eq!(
        parsed.is_ok(),
        object.is_some(),
        "Context::parse and serde_json disagree on whether this is a JSON object: {parsed:?} vs {reference:?}"
    );
    let (Ok(ctx), Some(object)) = (parsed, object) else {
        return;
    };
    for (name, value) in object {
        let got = ctx.get(name);
        assert!(
            same_value(got, value),
            "attribute {name:?} reads as {got:?}, the JSON says {value}"
        );
    }
    let _ = ctx.key();
    // Keeping only some attributes changes nothing about what is refused or
    // what the kept ones read as.
    let keep = |name: &str| name.len().is_multiple_of(2);
    let some = Context::parse_keeping(data, keep).expect("the same bytes parsed in full");
    for (name, _) in object.iter().filter(|(n, _)| keep(n) || *n == "key") {
        assert_eq!(some.get(name), ctx.get(name), "attribute {name:?} kept");
    }
}

fn same_value(got: Option<&AttrValue<'_>>, want: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (got, want) {
        (None, Value::Null) => true,
        (Some(got), want) => same_element(got, want),
        _ => false,
    }
}

fn same_element(got: &AttrValue<'_>, want: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (got, want) {
        (AttrValue::Null, Value::Null) => true,
        (AttrValue::Bool(a), Value::Bool(b)) => a == b,
        (AttrValue::Str(a), Value::String(b)) => a == b,
        (AttrValue::Num(a), Value::Number(b)) => Some(a.as_f64()) == b.as_f64(),
        (AttrValue::Object, Value::Object(_)) => true,
        (AttrValue::List(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_element(x, y))
        }
        _ => false,
    }
}

/// The key fuzzed flags and segments are stored under.
const FUZZ_KEY: &str = "fuzz";

/// A segment every `in_segment` reference resolves to when the input brings none.
const DEFAULT_SEGMENT: &str = r#"{"included":["user-1"],"excluded":["user-2"],
 "rules":[{"clauses":[{"attribute":"plan","op":"in","values":["pro","team"]}]}]}"#;

/// The flag every prerequisite resolves to.
const PREREQUISITE_FLAG: &str = r#"{"on":true,
 "variations":[{"name":"off","value":false},{"name":"on","value":true}],
 "off_variation":"off",
 "rules":[{"id":"r","clauses":[{"attribute":"beta","op":"in","values":[true]}],"serve":{"variation":"on"}}],
 "fallthrough":{"rollout":[{"variation":"on","weight":5000},{"variation":"off","weight":5000}]}}"#;

/// Contexts every fuzzed definition is evaluated with, besides the input's own.
const CONTEXTS: &[&str] = &[
    "{}",
    r#"{"key":"user-1"}"#,
    r#"{"key":"user-2","plan":"pro","beta":true,"age":42,"version":"1.2.3",
        "created":"2024-01-01T00:00:00Z","groups":["a","b"],"nested":{"x":1},"gone":null}"#,
    r#"{"key":7,"plan":["free","team"],"age":-3.5,"version":"x","created":1700000000000}"#,
];

/// Fuzzes definitions: the input is a flag or segment definition, then,
/// each after a NUL and each optional, a context, a segment definition that
/// `in_segment` clauses resolve to, and the flag's previous allocations (as
/// `FLAG.IMPORT` takes them).
///
/// Properties: no panic; a definition that validates also compiles (with its
/// references resolved), and evaluates for any context to one of its own
/// variations ("a flag that validated never fails at evaluation time"); each
/// rollout's allocation splits the buckets exactly by its weights, whatever
/// the previous allocation was, and setting the same flag again moves no one.
pub fn flag_definition(data: &[u8]) {
    let mut parts = data.splitn(4, |&b| b == 0);
    let definition = parts.next().unwrap_or_default();
    let own_context = parts.next();
    let segment_json = parts.next();
    let previous: Allocations = parts
        .next()
        .and_then(|json| serde_json::from_slice(json).ok())
        .unwrap_or_default();

    let segment = segment_json
        .and_then(|json| compiled_segment(json, "segment given with the input"))
        .unwrap_or_else(|| {
            compiled_segment(DEFAULT_SEGMENT.as_bytes(), "default segment")
                .unwrap_or_else(|| unreachable!("the default segment is valid"))
        });
    let contexts: Vec<Context<'_>> = CONTEXTS
        .iter()
        .map(|c| Context::parse(c.as_bytes()))
        .chain(own_context.map(Context::parse))
        .filter_map(Result::ok)
        .collect();

    let world = World::new(segment);
    if let Some(seg) = compiled_segment(definition, "segment") {
        for ctx in &contexts {
            let _ = in_segment(&seg, ctx, &world, 1.7e12);
        }
    }

    let Ok(def) = parse_flag(FUZZ_KEY, definition) else {
        return;
    };
    // References resolve to the one prerequisite flag and segment; a refusal
    // here is a normal answer, but it must not panic.
    let _ = check_references(FUZZ_KEY, &def, &world);
    let allocations = allocations_for(FUZZ_KEY, &def, &previous);
    check_allocations(&def, &allocations);
    let compiled = compile_flag(FUZZ_KEY, &def, &allocations, &|_| true)
        .unwrap_or_else(|e| panic!("a flag that validated does not compile: {e}"));
    // Recompiling from its own allocations (the next FLAG.SET of the same
    // definition) keeps every user where they were.
    let again = allocations_for(FUZZ_KEY, &def, &allocations);
    assert_eq!(again, allocations, "the same rollout moved users");
    for ctx in &contexts {
        for now in [0.0, 1.7e12] {
            let e = evaluate(&compiled, ctx, &world, now);
            assert!(
                e.variation < compiled.variations.len(),
                "evaluation served variation {} of {}",
                e.variation,
                compiled.variations.len()
            );
        }
    }
}

/// Checks that each rollout's allocation gives every variation exactly its
/// weight in buckets, and all of them together each bucket exactly once.
fn check_allocations(def: &FlagDef, allocations: &Allocations) {
    for (id, serve) in def.rollouts() {
        let rollout = serve.rollout.as_deref().unwrap_or_default();
        let a = allocations
            .get(id)
            .unwrap_or_else(|| panic!("rollout {id:?} has no allocation"));
        let mut all = Vec::new();
        for (name, ranges) in &a.ranges {
            let weight = rollout
                .iter()
                .find(|w| &w.variation == name)
                .unwrap_or_else(|| panic!("rollout {id:?} allocates {name:?}, not in it"))
                .weight;
            let mut size = 0;
            for r in ranges {
                assert!(
                    r[0] < r[1] && r[1] <= BUCKETS,
                    "rollout {id:?}: {name:?} has range {r:?}"
                );
                size += u32::from(r[1] - r[0]);
            }
            assert_eq!(size, weight, "rollout {id:?}: {name:?} owns {size} buckets");
            all.extend(ranges.iter().copied());
        }
        all.sort_unstable();
        let mut next = 0;
        for r in &all {
            assert_eq!(
                r[0], next,
                "rollout {id:?}: ranges {all:?} overlap or leave a gap"
            );
            next = r[1];
        }
        assert_eq!(
            next, BUCKETS,
            "rollout {id:?}: ranges {all:?} do not cover every bucket"
        );
    }
}

/// Parses and compiles a segment; a segment that validates must compile.
fn compiled_segment(json: &[u8], what: &str) -> Option<Arc<CompiledSegment>> {
    let def = parse_segment(FUZZ_KEY, json).ok()?;
    let compiled = compile_segment(FUZZ_KEY, &def)
        .unwrap_or_else(|e| panic!("a {what} that validated does not compile: {e}"));
    Some(Arc::new(compiled))
}

/// The store a fuzzed flag sees: one prerequisite flag under every key, one
/// segment under every key.
struct World {
    prerequisite_def: FlagDef,
    prerequisite: CompiledFlag,
    segment: Arc<CompiledSegment>,
}

impl World {
    fn new(segment: Arc<CompiledSegment>) -> Self {
        let def = parse_flag("prerequisite", PREREQUISITE_FLAG.as_bytes())
            .unwrap_or_else(|e| unreachable!("the prerequisite flag is valid: {e}"));
        let alloc = allocations_for("prerequisite", &def, &Allocations::new());
        let prerequisite = compile_flag("prerequisite", &def, &alloc, &|_| false)
            .unwrap_or_else(|e| unreachable!("the prerequisite flag compiles: {e}"));
        World {
            prerequisite_def: def,
            prerequisite,
            segment,
        }
    }
}

impl FlagSource for World {
    fn flag(&self, key: &str) -> Option<&CompiledFlag> {
        (key != FUZZ_KEY).then_some(&self.prerequisite)
    }
    fn segment(&self, _: &str) -> Option<&CompiledSegment> {
        Some(&self.segment)
    }
}

impl Catalog for World {
    fn flag(&self, key: &str) -> Option<&dyn FlagRefs> {
        (key != FUZZ_KEY).then_some(&self.prerequisite_def as &dyn FlagRefs)
    }
    fn has_segment(&self, _: &str) -> bool {
        true
    }
    fn dependents(&self, _: &str) -> Vec<&str> {
        Vec::new()
    }
}

/// Fuzzes write-ahead-log replay. Byte 0 says how many segment files (1–3,
/// low bits) the rest is cut into, and (bit 7) whether to give each framed
/// record in them its correct checksum, so the fuzzer also reaches what
/// replay does with records that pass it; the next two bytes per sealed
/// segment are its length. The files are written to a fresh directory and
/// the log is opened on it.
///
/// Properties: no panic; the log opens or reports corruption (which the
/// last segment may have too: a damaged record with whole ones after it, or
/// a damaged length); every replayed entry body is bytes of the input; once
/// opened (torn tail cut) it reopens to the same entries with nothing torn;
/// and an entry appended after that survives the next reopen.
pub fn wal_replay(data: &[u8]) {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let count = usize::from((mode & 0x7f) % 3) + 1;
    let fix_checksums = mode & 0x80 != 0;
    let mut files = Vec::with_capacity(count);
    for _ in 1..count {
        let len = match rest {
            [a, b, tail @ ..] => {
                rest = tail;
                usize::from(u16::from_le_bytes([*a, *b]))
            }
            _ => std::mem::take(&mut rest).len(),
        };
        let (file, tail) = rest.split_at(len.min(rest.len()));
        files.push(file);
        rest = tail;
    }
    files.push(rest);

    let dir = ScratchDir::new();
    for (i, bytes) in files.iter().enumerate() {
        let path = dir.0.join(format!("{:020}.wal", i + 1));
        let mut bytes = bytes.to_vec();
        if fix_checksums {
            frame_checksums(&mut bytes);
        }
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("cannot write {path:?}: {e}"));
    }
    let open = |dir: &Path| wal::open(dir, FsyncPolicy::EverySec, 1 << 20);
    let first = match open(&dir.0) {
        Ok((log, replayed)) => {
            drop(log);
            replayed
        }
        Err(wal::WalError::Corrupt { .. }) => return,
        Err(e) => panic!("the log did not open: {e}"),
    };
    for (index, body) in &first.entries {
        assert!(
            memchr::memmem::find(data, body).is_some(),
            "entry {index} was not in the input"
        );
    }
    let (log, second) = open(&dir.0).unwrap_or_else(|e| panic!("reopen failed: {e}"));
    assert_eq!(second.torn_bytes, 0, "a cut tail was cut again");
    assert_same(&first, &second);
    let Some(next) = first
        .entries
        .last_key_value()
        .map_or(Some(1), |(i, _)| i.checked_add(1))
    else {
        return;
    };
    let mut record = Vec::new();
    wal::entry_record(next, b"appended after replay", &mut record)
        .unwrap_or_else(|e| panic!("a small record always frames: {e}"));
    log.write_sync(record, Some(next))
        .unwrap_or_else(|e| panic!("append failed: {e}"));
    drop(log);
    let (_log, third) = open(&dir.0).unwrap_or_else(|e| panic!("reopen failed: {e}"));
    assert_eq!(
        third.entries.get(&next).map(Vec::as_slice),
        Some(&b"appended after replay"[..]),
        "an entry appended after replay was lost"
    );
    let mut without = third.entries.clone();
    without.remove(&next);
    assert_eq!(without, first.entries, "appending changed earlier entries");
}

/// Overwrites the checksum of each whole record (`len | crc | len bytes`)
/// from the start of a segment with the right one.
fn frame_checksums(segment: &mut [u8]) {
    // Either format: after the magic, a length with its own checksum.
    let checked = segment.starts_with(&wal::MAGIC);
    let (mut off, pre) = if checked {
        (wal::MAGIC.len(), 12)
    } else {
        (0, 8)
    };
    while let Some(header) = segment.get(off..off + pre) {
        let len_bytes = [header[0], header[1], header[2], header[3]];
        let len = u32::from_le_bytes(len_bytes) as usize;
        if checked {
            let len_crc = crc32fast::hash(&len_bytes).to_le_bytes();
            segment[off + 4..off + 8].copy_from_slice(&len_crc);
        }
        let Some(record) = segment.get(off + pre..).and_then(|r| r.get(..len)) else {
            return;
        };
        let crc = crc32fast::hash(record).to_le_bytes();
        segment[off + pre - 4..off + pre].copy_from_slice(&crc);
        off += pre + len;
    }
}

fn assert_same(a: &Replayed, b: &Replayed) {
    assert_eq!(a.entries, b.entries, "reopening changed the entries");
    assert_eq!(a.purged, b.purged, "reopening changed the purge point");
}

/// A directory of its own for one run, removed afterwards. On tmpfs when
/// there is one, so the log's fsyncs cost nothing.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!(
            "flagstaff-fuzz-wal-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {dir:?}: {e}"));
        ScratchDir(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
