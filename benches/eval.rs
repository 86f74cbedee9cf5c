//! Evaluation micro-benchmarks on the pure `flag` library (no server).
//! Cases as in issue 3: a boolean flag, a 50/50 rollout, a 10-rule flag whose
//! last rule matches, and EVALALL over 1,000 flags; and the bare SHA-256
//! compression the rollout case cannot go below.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use flagstaff::flag::compile::allocations_for;
use flagstaff::flag::{
    compile_flag, compile_segment, evaluate, parse_flag, parse_segment, CompiledFlag,
    CompiledSegment, Context, FlagSource,
};
use serde_json::{json, Value};

/// Flags and segments, as the server's state holds them.
#[derive(Default, Clone)]
struct Flags(
    HashMap<String, CompiledFlag>,
    HashMap<String, Arc<CompiledSegment>>,
);

impl FlagSource for Flags {
    fn flag(&self, key: &str) -> Option<&CompiledFlag> {
        self.0.get(key)
    }
    fn segment(&self, key: &str) -> Option<&CompiledSegment> {
        self.1.get(key).map(|s| &**s)
    }
}

fn compile(
    key: &str,
    def: Value,
    segments: &HashMap<String, Arc<CompiledSegment>>,
) -> CompiledFlag {
    let def = parse_flag(key, def.to_string().as_bytes()).unwrap();
    let alloc = allocations_for(key, &def, &Default::default());
    compile_flag(key, &def, &alloc, &|s| segments.contains_key(s)).unwrap()
}

fn bool_def() -> Value {
    json!({"on": true, "variations": [{"name": "off", "value": false}, {"name": "on", "value": true}],
           "off_variation": "off", "fallthrough": {"variation": "on"}})
}

fn rollout_def() -> Value {
    let mut d = bool_def();
    d["fallthrough"] = json!({"rollout": [{"variation": "on", "weight": 5000}, {"variation": "off", "weight": 5000}]});
    d
}

fn ten_rule_def() -> Value {
    let many: Vec<String> = (0..1000).map(|i| format!("acct-{i}")).collect();
    let mut rules = Vec::new();
    // Nine rules that do not match the context (each fails on its last clause).
    for i in 0..9 {
        rules.push(json!({"id": format!("r{i}"), "clauses": [
            {"attribute": "email", "op": "matches", "values": ["^[a-z.]+@example\\.com$"]},
            {"attribute": "version", "op": "semver_gt", "values": ["1.0.0"]},
            {"attribute": "seats", "op": "gt", "values": [1000 + i]}
        ], "serve": {"variation": "on"}}));
    }
    rules.push(json!({"id": "last", "clauses": [
        {"attribute": "account", "op": "in", "values": many},
        {"attribute": "email", "op": "ends_with", "values": ["@example.com"]},
        {"op": "in_segment", "values": ["prod:beta"]}
    ], "serve": {"variation": "on"}}));
    let mut d = bool_def();
    d["rules"] = json!(rules);
    d["fallthrough"] = json!({"variation": "off"});
    d
}

fn benches(c: &mut Criterion) {
    let mut segments = HashMap::new();
    let included: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
    let seg = parse_segment(
        "prod:beta",
        json!({"included": included}).to_string().as_bytes(),
    )
    .unwrap();
    segments.insert(
        "prod:beta".to_string(),
        Arc::new(compile_segment("prod:beta", &seg).unwrap()),
    );
    let none = Flags(HashMap::new(), segments.clone());
    let key_only = br#"{"key":"user-4242"}"#.to_vec();
    let key_ctx = Context::parse(&key_only).unwrap();
    let rich = br#"{"key":"user-4242","email":"jo.doe@example.com","version":"2.3.1","seats":40,"account":"acct-777","country":"DE"}"#.to_vec();
    let rich_ctx = Context::parse(&rich).unwrap();

    let plain = compile("prod:plain", bool_def(), &segments);
    c.bench_function("eval/boolean", |b| {
        b.iter(|| evaluate(black_box(&plain), black_box(&key_ctx), &none, 0.0))
    });

    // The floor of the rollout case: SHA-256 of one 64-byte block (what
    // `salt:flag_key:user-4242` hashes in), as the contract mandates.
    let block = [0x61u8; 64];
    c.bench_function("sha256/one_block_compression", |b| {
        b.iter(|| {
            let mut state = [0u32; 8];
            sha2::block_api::compress256(black_box(&mut state), &[black_box(block)]);
            state[0]
        })
    });

    let rollout = compile("prod:rollout", rollout_def(), &segments);
    c.bench_function("eval/rollout_50_50", |b| {
        b.iter(|| evaluate(black_box(&rollout), black_box(&key_ctx), &none, 0.0))
    });

    let ten = compile("prod:ten-rules", ten_rule_def(), &segments);
    assert_eq!(
        evaluate(&ten, &rich_ctx, &none, 0.0).variation,
        1,
        "the last rule must match"
    );
    c.bench_function("eval/ten_rules_last_matches", |b| {
        b.iter(|| evaluate(black_box(&ten), black_box(&rich_ctx), &none, 0.0))
    });
    c.bench_function("eval/parse_context_and_ten_rules", |b| {
        b.iter(|| {
            let ctx = Context::parse(black_box(&rich)).unwrap();
            evaluate(&ten, &ctx, &none, 0.0).variation
        })
    });

    let mut all = Flags(HashMap::new(), segments.clone());
    for i in 0..1000 {
        let key = format!("prod:flag-{i:04}");
        let def = match i % 3 {
            0 => bool_def(),
            1 => rollout_def(),
            _ => {
                let mut d = bool_def();
                d["rules"] = json!([{"id": "de", "clauses": [{"attribute": "country", "op": "in", "values": ["DE", "FR"]}], "serve": {"variation": "on"}}]);
                d
            }
        };
        all.0.insert(key.clone(), compile(&key, def, &segments));
    }
    c.bench_function("evalall/1000_flags", |b| {
        b.iter(|| {
            let ctx = Context::parse(black_box(&rich)).unwrap();
            let mut served = 0usize;
            for f in all.0.values() {
                served += evaluate(f, &ctx, &all, 0.0).variation;
            }
            served
        })
    });
}

criterion_group!(eval, benches);
criterion_main!(eval);
