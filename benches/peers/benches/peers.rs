//! flagstaff's evaluator vs Unleash's yggdrasil 0.21.7 on equivalent
//! definitions. Both engines get pre-built contexts and look the flag up by
//! name, as a server would. Run from the repository root with
//! `cargo bench --manifest-path benches/peers/Cargo.toml`.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use flagstaff::flag::compile::allocations_for;
use flagstaff::flag::context::{AttrValue, Num};
use flagstaff::flag::{
    compile_flag, compile_segment, evaluate, parse_flag, parse_segment, CompiledFlag, CompiledSegment, Context,
    FlagSource,
};
use serde_json::{json, Value};
use unleash_types::client_features::{ClientFeatures, Context as UnleashContext};
use unleash_yggdrasil::{EngineState, UpdateMessage};

#[derive(Default)]
struct Flags(HashMap<String, CompiledFlag>, HashMap<String, Arc<CompiledSegment>>);

impl FlagSource for Flags {
    fn flag(&self, key: &str) -> Option<&CompiledFlag> {
        self.0.get(key)
    }
    fn segment(&self, key: &str) -> Option<&CompiledSegment> {
        self.1.get(key).map(|s| &**s)
    }
}

fn ours() -> Flags {
    let mut segments: HashMap<String, Arc<CompiledSegment>> = HashMap::new();
    let users: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
    let seg = parse_segment("beta", json!({"included": users}).to_string().as_bytes()).unwrap();
    segments.insert("beta".into(), Arc::new(compile_segment("beta", &seg).unwrap()));
    let base = |fallthrough: Value, rules: Value| {
        json!({"on": true, "variations": [{"name": "off", "value": false}, {"name": "on", "value": true}],
               "off_variation": "off", "rules": rules, "fallthrough": fallthrough})
    };
    let accounts: Vec<String> = (0..1000).map(|i| format!("acct-{i}")).collect();
    let mut rules = Vec::new();
    for i in 0..9 {
        rules.push(json!({"id": format!("r{i}"), "clauses": [
            {"attribute": "email", "op": "contains", "values": ["@"]},
            {"attribute": "version", "op": "semver_gt", "values": ["1.0.0"]},
            {"attribute": "seats", "op": "gt", "values": [1000 + i]}],
            "serve": {"variation": "on"}}));
    }
    rules.push(json!({"id": "last", "clauses": [
        {"attribute": "account", "op": "in", "values": accounts},
        {"attribute": "email", "op": "ends_with", "values": ["@example.com"]},
        {"op": "in_segment", "values": ["beta"]}], "serve": {"variation": "on"}}));
    let defs = [
        ("plain", base(json!({"variation": "on"}), json!([]))),
        ("rollout", base(json!({"rollout": [{"variation": "on", "weight": 5000}, {"variation": "off", "weight": 5000}]}), json!([]))),
        ("ten", base(json!({"variation": "off"}), json!(rules))),
    ];
    let mut flags = Flags::default();
    for (key, def) in defs {
        let def = parse_flag(key, def.to_string().as_bytes()).unwrap();
        let alloc = allocations_for(key, &def, &Default::default());
        flags.0.insert(key.into(), compile_flag(key, &def, &alloc, &|s| segments.contains_key(s)).unwrap());
    }
    flags.1 = segments;
    flags
}

fn theirs() -> EngineState {
    let accounts = (0..1000).map(|i| format!("acct-{i}")).collect::<Vec<_>>();
    let users = (0..10_000).map(|i| format!("user-{i}")).collect::<Vec<_>>();
    let mut strategies = Vec::new();
    for i in 0..9 {
        strategies.push(json!({"name": "default", "parameters": {}, "constraints": [
            {"contextName": "email", "operator": "STR_CONTAINS", "values": ["@"]},
            {"contextName": "version", "operator": "SEMVER_GT", "value": "1.0.0"},
            {"contextName": "seats", "operator": "NUM_GT", "value": format!("{}", 1000 + i)}]}));
    }
    strategies.push(json!({"name": "default", "parameters": {}, "constraints": [
        {"contextName": "account", "operator": "IN", "values": accounts},
        {"contextName": "email", "operator": "STR_ENDS_WITH", "values": ["@example.com"]},
        {"contextName": "userId", "operator": "IN", "values": users}]}));
    let features = json!({"version": 2, "features": [
        {"name": "plain", "enabled": true, "strategies": [{"name": "default", "parameters": {}}]},
        {"name": "rollout", "enabled": true, "strategies": [{"name": "flexibleRollout",
            "parameters": {"rollout": "50", "stickiness": "userId", "groupId": "rollout"}}]},
        {"name": "ten", "enabled": true, "strategies": strategies}]});
    let features: ClientFeatures = serde_json::from_value(features).unwrap();
    let engine = EngineState::default();
    engine.take_state(UpdateMessage::FullResponse(features));
    engine
}

fn benches(c: &mut Criterion) {
    let flags = ours();
    let engine = theirs();
    let our_ctx = Context::empty()
        .with("key", AttrValue::Str("user-4242".into()))
        .with("email", AttrValue::Str("jo.doe@example.com".into()))
        .with("version", AttrValue::Str("2.3.1".into()))
        .with("seats", AttrValue::Num(Num::U(40)))
        .with("account", AttrValue::Str("acct-777".into()));
    let props: HashMap<String, String> = [
        ("email", "jo.doe@example.com"),
        ("version", "2.3.1"),
        ("seats", "40"),
        ("account", "acct-777"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let their_ctx = UnleashContext { user_id: Some("user-4242".into()), properties: Some(props), ..Default::default() };
    assert!(engine.is_enabled("ten", &their_ctx, &None), "yggdrasil: the last strategy must match");
    assert_eq!(evaluate(&flags.0["ten"], &our_ctx, &flags, 0.0).variation, 1, "flagstaff: the last rule must match");

    for name in ["plain", "rollout", "ten"] {
        let mut group = c.benchmark_group(name);
        group.bench_function("flagstaff", |b| {
            b.iter(|| {
                let f = flags.flag(black_box(name)).unwrap();
                evaluate(f, black_box(&our_ctx), &flags, 0.0).variation
            })
        });
        group.bench_function("yggdrasil", |b| b.iter(|| engine.is_enabled(black_box(name), black_box(&their_ctx), &None)));
        group.finish();
    }
}

criterion_group!(peers, benches);
criterion_main!(peers);
