//! Apply-time CPU of writes whose cost could grow with the store (issue 10,
//! item 7), on the pure state machine (no server, no disk): a SEGMENT.SET
//! that 10,000 flags use, and a FLAG.IMPORT of 10,000 flags in chains of 16
//! named so that every flag sorts before its prerequisite.
//! `cargo bench --bench apply`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use flagstaff::store::{apply, StateView, WriteOp, WriteRequest};
use serde_json::{json, Map, Value};

fn request(op: WriteOp) -> WriteRequest {
    WriteRequest {
        actor: "bench".into(),
        ts_ms: 1,
        ops: vec![op],
        watch: Vec::new(),
    }
}

/// A flag with one rule on segment `prod:beta` and the given prerequisite.
fn flag(prerequisite: Option<String>) -> Value {
    json!({
        "on": true,
        "variations": [{"name": "off", "value": false}, {"name": "on", "value": true}],
        "off_variation": "off",
        "prerequisites": prerequisite
            .map(|p| vec![json!({"flag": p, "variation": "on"})])
            .unwrap_or_default(),
        "rules": [{"id": "beta", "clauses": [{"op": "in_segment", "values": ["prod:beta"]}],
                   "serve": {"variation": "off"}}],
        "fallthrough": {"variation": "on"}
    })
}

/// A dump of `prod:beta` and 10,000 flags using it: in 625 chains of 16, or
/// (for a setup that the code before the fix could import too) unrelated.
fn dump(chains: bool) -> String {
    let mut flags = Map::new();
    for chain in 0..625 {
        for level in 0..16 {
            let below =
                (chains && level < 15).then(|| format!("prod:c{:02}-{chain:03}", level + 1));
            flags.insert(format!("prod:c{level:02}-{chain:03}"), flag(below));
        }
    }
    json!({"segments": {"prod:beta": {"included": ["user-1"]}}, "flags": flags}).to_string()
}

fn import(view: &StateView, document: &str) -> StateView {
    let op = WriteOp::Import {
        document: document.to_string(),
        reason: None,
    };
    let applied = apply(view, view.revision + 1, 0, &request(op)).unwrap();
    assert!(applied.results[0].is_ok(), "{:?}", applied.results[0]);
    applied.view.unwrap()
}

fn benches(c: &mut Criterion) {
    let document = dump(true);
    let mut group = c.benchmark_group("apply");
    group.sample_size(10);
    group.bench_function("import_10000_flags_in_chains", |b| {
        b.iter(|| import(&StateView::default(), black_box(&document)))
    });
    let view = import(&StateView::default(), &dump(false));
    assert_eq!(view.segment_dependents("prod:beta").len(), 10_000);
    let set = request(WriteOp::SetSegment {
        key: "prod:beta".into(),
        definition: r#"{"included":["user-2"]}"#.into(),
        reason: None,
    });
    group.bench_function("segment_set_with_10000_dependents", |b| {
        b.iter(|| apply(&view, view.revision + 1, 0, black_box(&set)).unwrap())
    });
    group.finish();
}

criterion_group!(apply_benches, benches);
criterion_main!(apply_benches);
