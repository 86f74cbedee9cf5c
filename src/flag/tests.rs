//! Unit tests of the domain: operators, reasons, prerequisites, segments,
//! validation paths.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::json;

use super::compile::allocations_for;
use super::validate::{check_references, Catalog, FlagRefs};
use super::*;

#[derive(Default)]
struct World {
    defs: HashMap<String, FlagDef>,
    flags: HashMap<String, CompiledFlag>,
    segments: HashMap<String, Arc<CompiledSegment>>,
}

impl FlagSource for World {
    fn flag(&self, key: &str) -> Option<&CompiledFlag> {
        self.flags.get(key)
    }
    fn segment(&self, key: &str) -> Option<&CompiledSegment> {
        self.segments.get(key).map(|s| &**s)
    }
}

impl Catalog for World {
    fn flag(&self, key: &str) -> Option<&dyn FlagRefs> {
        self.defs.get(key).map(|d| d as &dyn FlagRefs)
    }
    fn has_segment(&self, key: &str) -> bool {
        self.segments.contains_key(key)
    }
    fn dependents(&self, key: &str) -> Vec<&str> {
        let mut users: Vec<&str> = self
            .defs
            .iter()
            .filter(|(_, d)| d.prerequisites.iter().any(|p| p.flag == key))
            .map(|(k, _)| k.as_str())
            .collect();
        users.sort_unstable();
        users
    }
}

impl World {
    fn put_segment(&mut self, key: &str, def: serde_json::Value) {
        let def = parse_segment(key, def.to_string().as_bytes()).unwrap();
        self.segments
            .insert(key.into(), Arc::new(compile_segment(key, &def).unwrap()));
    }

    fn try_flag(&mut self, key: &str, def: serde_json::Value) -> Result<(), Invalid> {
        let def = parse_flag(key, def.to_string().as_bytes())?;
        check_references(key, &def, self)?;
        let alloc = allocations_for(key, &def, &Allocations::new());
        let segs = |s: &str| self.segments.contains_key(s);
        let compiled = compile_flag(key, &def, &alloc, &segs)?;
        self.flags.insert(key.into(), compiled);
        self.defs.insert(key.into(), def);
        Ok(())
    }

    fn set(&mut self, key: &str, def: serde_json::Value) {
        self.try_flag(key, def).unwrap();
    }

    fn eval(&self, key: &str, ctx: serde_json::Value) -> (String, Reason) {
        let text = ctx.to_string();
        let ctx = Context::parse(text.as_bytes()).unwrap();
        let f = &self.flags[key];
        let e = evaluate(f, &ctx, self, 1_000_000.0);
        (f.variations[e.variation].name.to_string(), e.reason)
    }

    fn served(&self, key: &str, ctx: serde_json::Value) -> String {
        self.eval(key, ctx).0
    }
}

fn bool_flag(rules: serde_json::Value) -> serde_json::Value {
    json!({
        "on": true,
        "variations": [{"name": "off", "value": false}, {"name": "on", "value": true}],
        "off_variation": "off",
        "rules": rules,
        "fallthrough": {"variation": "off"}
    })
}

fn one_clause(
    attribute: &str,
    op: &str,
    values: serde_json::Value,
    negate: bool,
) -> serde_json::Value {
    bool_flag(
        json!([{"id": "r", "clauses": [{"attribute": attribute, "op": op, "values": values, "negate": negate}], "serve": {"variation": "on"}}]),
    )
}

fn check(op: &str, values: serde_json::Value, attr: serde_json::Value, expect: bool) {
    let mut w = World::default();
    w.set("f", one_clause("a", op, values.clone(), false));
    let got = w.served("f", json!({"key": "k", "a": attr})) == "on";
    assert_eq!(got, expect, "{op} {values} against {attr}");
    let mut w = World::default();
    w.set("f", one_clause("a", op, values.clone(), true));
    let negated = w.served("f", json!({"key": "k", "a": attr})) == "on";
    assert_eq!(negated, !expect, "negated {op} {values} against {attr}");
}

#[test]
fn every_operator_matches_as_documented() {
    check("eq", json!(["pro"]), json!("pro"), true);
    check("eq", json!(["pro"]), json!("free"), false);
    check("eq", json!([5]), json!(5.0), true);
    check("eq", json!([true]), json!(true), true);
    check("eq", json!(["5"]), json!(5), false);
    let many: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
    check("in", json!(many), json!("user-999"), true);
    check("in", json!(many), json!("user-1000"), false);
    check("contains", json!(["@acme"]), json!("bob@acme.com"), true);
    check("starts_with", json!(["bob"]), json!("bob@acme.com"), true);
    check("ends_with", json!([".com", ".org"]), json!("x.org"), true);
    check("ends_with", json!([".com"]), json!("x.net"), false);
    check(
        "matches",
        json!(["^[a-z]+@acme\\.com$"]),
        json!("bob@acme.com"),
        true,
    );
    check("matches", json!(["^[a-z]+$"]), json!("Bob"), false);
    check("lt", json!([10]), json!(9.5), true);
    check("lte", json!([10]), json!(10), true);
    check("gt", json!([10]), json!(10), false);
    check("gte", json!([10]), json!(10), true);
    check("lt", json!([10]), json!("9"), false);
    check("semver_eq", json!(["1.2.0"]), json!("1.2"), true);
    check("semver_lt", json!(["2.0.0"]), json!("1.9.9"), true);
    check("semver_lt", json!(["2.0.0"]), json!("2.0.0-beta.1"), true);
    check("semver_gt", json!(["2.0.0"]), json!("10.0.0"), true);
    check("semver_gt", json!(["2.0.0"]), json!("not-a-version"), false);
    check(
        "before",
        json!(["2030-01-01T00:00:00Z"]),
        json!("2029-12-31T23:59:59Z"),
        true,
    );
    check("before", json!([1_000]), json!(999), true);
    check(
        "after",
        json!(["2030-01-01T00:00:00Z"]),
        json!(1_893_456_000_001_u64),
        true,
    );
    check(
        "after",
        json!(["2030-01-01T00:00:00Z"]),
        json!("2020-01-01T00:00:00+02:00"),
        false,
    );
}

#[test]
fn now_gives_scheduled_rules() {
    let mut w = World::default();
    // evaluate() above runs at now = 1,000,000 ms.
    w.set(
        "early",
        one_clause("$now", "after", json!([999_999]), false),
    );
    w.set(
        "late",
        one_clause("$now", "after", json!([1_000_001]), false),
    );
    assert_eq!(w.served("early", json!({})), "on");
    assert_eq!(w.served("late", json!({})), "off");
}

#[test]
fn a_missing_attribute_never_matches_negated_or_not() {
    let mut w = World::default();
    w.set("f", one_clause("plan", "eq", json!(["pro"]), true));
    assert_eq!(w.served("f", json!({"key": "k"})), "off");
    assert_eq!(w.served("f", json!({"key": "k", "plan": null})), "off");
    assert_eq!(w.served("f", json!({"key": "k", "plan": "free"})), "on");
}

#[test]
fn exists_tests_presence_and_negated_exists_tests_absence() {
    let mut w = World::default();
    w.set("f", one_clause("beta", "exists", json!([]), false));
    assert_eq!(w.served("f", json!({"beta": false})), "on");
    assert_eq!(w.served("f", json!({"other": 1})), "off");
    w.set("g", one_clause("beta", "exists", json!([]), true));
    assert_eq!(w.served("g", json!({"other": 1})), "on");
}

#[test]
fn a_list_attribute_matches_if_any_element_matches() {
    let mut w = World::default();
    w.set("f", one_clause("groups", "in", json!(["admins"]), false));
    assert_eq!(w.served("f", json!({"groups": ["users", "admins"]})), "on");
    assert_eq!(w.served("f", json!({"groups": ["users"]})), "off");
    w.set("g", one_clause("groups", "in", json!(["admins"]), true));
    assert_eq!(w.served("g", json!({"groups": ["users", "admins"]})), "off");
}

#[test]
fn reasons_follow_the_evaluation_order() {
    let mut w = World::default();
    let mut def = bool_flag(json!([
        {"id": "pro", "clauses": [{"attribute": "plan", "op": "eq", "values": ["pro"]}], "serve": {"variation": "on"}},
        {"clauses": [{"attribute": "plan", "op": "eq", "values": ["team"]}], "serve": {"variation": "on"}}
    ]));
    def["targets"] = json!([{"variation": "off", "keys": ["vip"]}]);
    w.set("f", def.clone());
    assert_eq!(
        w.eval("f", json!({"key": "vip", "plan": "pro"})).1,
        Reason::TargetMatch
    );
    assert_eq!(
        w.eval("f", json!({"key": "a", "plan": "pro"})).1,
        Reason::RuleMatch {
            index: 0,
            id: Some("pro".into())
        }
    );
    assert_eq!(
        w.eval("f", json!({"key": "a", "plan": "team"})).1,
        Reason::RuleMatch { index: 1, id: None }
    );
    assert_eq!(w.eval("f", json!({"key": "a"})).1, Reason::Fallthrough);
    def["on"] = json!(false);
    w.set("f", def);
    assert_eq!(
        w.eval("f", json!({"key": "vip"})),
        ("off".into(), Reason::Off)
    );
}

#[test]
fn prerequisites_gate_nested_flags_and_off_prerequisites_fail() {
    let mut w = World::default();
    let on_flag = |on: bool| {
        let mut d = bool_flag(json!([]));
        d["on"] = json!(on);
        d["fallthrough"] = json!({"variation": "on"});
        d
    };
    w.set("c", on_flag(true));
    let mut b = on_flag(true);
    b["prerequisites"] = json!([{"flag": "c", "variation": "on"}]);
    w.set("b", b);
    let mut a = on_flag(true);
    a["prerequisites"] = json!([{"flag": "b", "variation": "on"}]);
    w.set("a", a);
    assert_eq!(w.eval("a", json!({})), ("on".into(), Reason::Fallthrough));
    w.set("c", on_flag(false));
    assert_eq!(
        w.eval("a", json!({})),
        ("off".into(), Reason::PrerequisiteFailed("b".into()))
    );
    assert_eq!(
        w.eval("b", json!({})),
        ("off".into(), Reason::PrerequisiteFailed("c".into()))
    );
}

#[test]
fn prerequisite_cycles_and_unknown_references_are_refused() {
    let mut w = World::default();
    let mut a = bool_flag(json!([]));
    w.set("a", a.clone());
    let mut b = bool_flag(json!([]));
    b["prerequisites"] = json!([{"flag": "a", "variation": "on"}]);
    w.set("b", b);
    a["prerequisites"] = json!([{"flag": "b", "variation": "on"}]);
    let err = w.try_flag("a", a.clone()).unwrap_err();
    assert_eq!(err.path, "prerequisites[0].flag");
    assert!(err.why.contains("cycle: a -> b -> a"), "{}", err.why);
    a["prerequisites"] = json!([{"flag": "a", "variation": "on"}]);
    assert!(w
        .try_flag("a", a.clone())
        .unwrap_err()
        .why
        .contains("its own prerequisite"));
    a["prerequisites"] = json!([{"flag": "nope", "variation": "on"}]);
    assert!(w
        .try_flag("a", a.clone())
        .unwrap_err()
        .why
        .contains("unknown flag"));
    a["prerequisites"] = json!([{"flag": "b", "variation": "maybe"}]);
    assert_eq!(
        w.try_flag("a", a).unwrap_err().path,
        "prerequisites[0].variation"
    );
    let err = w.try_flag("s", one_clause("x", "in_segment", json!(["ghost"]), false));
    assert!(err.unwrap_err().why.contains("unknown segment"));
}

#[test]
fn segments_exclude_before_include_before_rules() {
    let mut w = World::default();
    w.put_segment(
        "beta",
        json!({"included": ["alice", "both"], "excluded": ["bob", "both"],
               "rules": [{"clauses": [{"attribute": "email", "op": "ends_with", "values": ["@acme.com"]}]}]}),
    );
    w.set("f", bool_flag(json!([{"clauses": [{"op": "in_segment", "values": ["beta"]}], "serve": {"variation": "on"}}])));
    assert_eq!(w.served("f", json!({"key": "alice"})), "on");
    assert_eq!(w.served("f", json!({"key": "both"})), "off");
    assert_eq!(
        w.served("f", json!({"key": "bob", "email": "bob@acme.com"})),
        "off"
    );
    assert_eq!(
        w.served("f", json!({"key": "carol", "email": "carol@acme.com"})),
        "on"
    );
    assert_eq!(
        w.served("f", json!({"key": "dave", "email": "dave@else.com"})),
        "off"
    );
}

#[test]
fn rollouts_bucket_by_the_chosen_attribute_and_missing_means_bucket_zero() {
    let mut w = World::default();
    let mut def = bool_flag(json!([]));
    def["fallthrough"] = json!({"rollout": [{"variation": "on", "weight": 1}, {"variation": "off", "weight": 9999}], "bucket_by": "org"});
    w.set("f", def);
    // No "org": bucket 0, which the first variation owns.
    assert_eq!(w.served("f", json!({"key": "anyone"})), "on");
    let b = bucket::bucket("f", "f", b"acme");
    assert_eq!(
        w.served("f", json!({"key": "x", "org": "acme"})),
        if b < 1 { "on" } else { "off" }
    );
    let n = bucket::bucket("f", "f", b"42");
    assert_eq!(
        w.served("f", json!({"org": 42})),
        if n < 1 { "on" } else { "off" }
    );
}

fn invalid(def: serde_json::Value) -> Invalid {
    parse_flag("prod:f", def.to_string().as_bytes()).unwrap_err()
}

#[test]
fn invalid_definitions_are_refused_with_a_json_path() {
    let mut d = bool_flag(json!([]));
    d["fallthrough"] = json!({"rollout": [{"variation": "on", "weight": 4000}, {"variation": "off", "weight": 5000}]});
    assert_eq!(
        invalid(d).to_string(),
        "fallthrough.rollout: weights sum to 9000, need 10000"
    );

    let mut d = bool_flag(
        json!([{"id": "r", "clauses": [{"attribute": "a", "op": "eqq", "values": [1]}], "serve": {"variation": "on"}}]),
    );
    let e = invalid(d.clone());
    assert_eq!(e.path, "rules[0].clauses[0].op");
    assert!(e.why.contains("unknown variant `eqq`"), "{}", e.why);

    d["rules"][0]["clauses"][0] =
        json!({"attribute": "a", "op": "matches", "values": ["(unclosed"]});
    assert_eq!(invalid(d.clone()).path, "rules[0].clauses[0].values[0]");
    d["rules"][0]["clauses"][0] = json!({"attribute": "a", "op": "semver_eq", "values": ["one"]});
    assert!(invalid(d.clone()).why.contains("not a semantic version"));
    d["rules"][0]["clauses"][0] = json!({"attribute": "a", "op": "lt", "values": ["ten"]});
    assert_eq!(invalid(d.clone()).why, "must be a number, not string");
    d["rules"][0]["clauses"][0] =
        json!({"attribute": "a", "op": "before", "values": ["yesterday"]});
    assert_eq!(invalid(d.clone()).path, "rules[0].clauses[0].values[0]");
    d["rules"][0]["serve"] = json!({"variation": "maybe"});
    d["rules"][0]["clauses"] = json!([]);
    assert_eq!(
        invalid(d.clone()).to_string(),
        "rules[0].serve.variation: unknown variation \"maybe\""
    );
    d["rules"][0] = json!({"serve": {"rollout": [{"variation": "on", "weight": 10000}]}});
    assert_eq!(invalid(d).path, "rules[0].id");

    let mut d = bool_flag(json!([]));
    d["variations"][1]["value"] = json!("yes");
    assert!(invalid(d)
        .why
        .contains("all variations must share one JSON type"));
    let mut d = bool_flag(json!([]));
    d["colour"] = json!("red");
    assert!(invalid(d).why.contains("unknown field `colour`"));
    let mut d = bool_flag(json!([]));
    d.as_object_mut().unwrap().remove("fallthrough");
    assert_eq!(
        invalid(d).to_string(),
        "fallthrough: required field is missing"
    );
    let mut d = bool_flag(json!([]));
    d["variations"][1]["name"] = json!("off");
    assert!(invalid(d).why.contains("duplicate variation name"));
    let mut d = bool_flag(json!([]));
    d["targets"] = json!([{"variation": "on", "keys": ["u"]}, {"variation": "off", "keys": ["u"]}]);
    assert_eq!(invalid(d).path, "targets[1].keys[0]");
    assert_eq!(parse_flag("bad key", b"{}").unwrap_err().path, "key");
    let syntax = parse_flag("f", b"{\"on\": tru").unwrap_err();
    assert_eq!(syntax.path, "on");
    assert!(syntax.why.contains("line 1 column"), "{}", syntax.why);
    assert_eq!(parse_flag("f", b"[1]").unwrap_err().path, "$");
}

#[test]
fn read_only_fields_from_flag_get_are_accepted_and_ignored() {
    let mut d = bool_flag(json!([]));
    d["version"] = json!(3);
    d["revision"] = json!(17);
    d["updated_at"] = json!("2026-01-01T00:00:00Z");
    d["updated_by"] = json!("alice");
    d["allocations"] = json!({"fallthrough": {}});
    let def = parse_flag("f", d.to_string().as_bytes()).unwrap();
    let back = serde_json::to_value(&def).unwrap();
    assert!(back.get("version").is_none() && back.get("allocations").is_none());
}

#[test]
fn regex_size_is_limited() {
    let mut d = bool_flag(json!([]));
    d["rules"] = json!([{"clauses": [{"attribute": "a", "op": "matches", "values": ["(a{1000}){1000}"]}], "serve": {"variation": "on"}}]);
    assert!(invalid(d).why.contains("regex"));
}

/// A view of a [`World`] that counts lookups of flags, to see how much of the
/// graph a walk touches.
struct Counting<'a> {
    world: &'a World,
    lookups: std::cell::Cell<usize>,
    users: HashMap<&'a str, Vec<&'a str>>,
}

impl<'a> Counting<'a> {
    fn new(world: &'a World) -> Self {
        let mut users: HashMap<&str, Vec<&str>> = HashMap::new();
        for (k, d) in &world.defs {
            for p in &d.prerequisites {
                users.entry(p.flag.as_str()).or_default().push(k.as_str());
            }
        }
        Counting {
            world,
            lookups: Default::default(),
            users,
        }
    }
}

impl FlagSource for Counting<'_> {
    fn flag(&self, key: &str) -> Option<&CompiledFlag> {
        self.lookups.set(self.lookups.get() + 1);
        self.world.flags.get(key)
    }
    fn segment(&self, key: &str) -> Option<&CompiledSegment> {
        FlagSource::segment(self.world, key)
    }
}

impl Catalog for Counting<'_> {
    fn flag(&self, key: &str) -> Option<&dyn FlagRefs> {
        self.lookups.set(self.lookups.get() + 1);
        self.world.defs.get(key).map(|d| d as &dyn FlagRefs)
    }
    fn has_segment(&self, key: &str) -> bool {
        self.world.has_segment(key)
    }
    fn dependents(&self, key: &str) -> Vec<&str> {
        self.users.get(key).cloned().unwrap_or_default()
    }
}

/// A flag that serves "on" to everyone and requires "on" of `prerequisites`.
fn requiring(prerequisites: &[String]) -> serde_json::Value {
    let mut d = bool_flag(json!([]));
    d["fallthrough"] = json!({"variation": "on"});
    d["prerequisites"] = prerequisites
        .iter()
        .map(|p| json!({"flag": p, "variation": "on"}))
        .collect();
    d
}

/// Four flags per level, each requiring all four of the level below; returns
/// the keys of the top level.
fn lattice(w: &mut World, levels: usize) -> Vec<String> {
    let mut below: Vec<String> = Vec::new();
    for level in 1..=levels {
        let keys: Vec<String> = (0..4).map(|i| format!("l{level}-{i}")).collect();
        for k in &keys {
            w.set(k, requiring(&below));
        }
        below = keys;
    }
    below
}

#[test]
fn a_shared_prerequisite_graph_is_checked_and_evaluated_once_per_flag() {
    let mut w = World::default();
    // Every path from the top to the bottom: 4^8 = 65,536 of them.
    let top = lattice(&mut w, 8);
    let counting = Counting::new(&w);
    let def = parse_flag("top", requiring(&top).to_string().as_bytes()).unwrap();
    check_references("top", &def, &counting).unwrap();
    let edges = 4 + 4 * 4 * 7;
    assert!(
        counting.lookups.get() <= edges + 4,
        "validation looked flags up {} times for {edges} edges",
        counting.lookups.get()
    );
    w.set("top", requiring(&top));
    let counting = Counting::new(&w);
    let ctx = Context::parse(b"{\"key\":\"u\"}").unwrap();
    let e = evaluate(&w.flags["top"], &ctx, &counting, 0.0);
    assert_eq!(e.reason, Reason::Fallthrough);
    assert!(
        counting.lookups.get() <= edges + 4,
        "evaluation looked flags up {} times for {edges} edges",
        counting.lookups.get()
    );
    // A failing flag at the bottom still fails the top, through the memo.
    let mut bottom = requiring(&[]);
    bottom["on"] = json!(false);
    w.set("l1-3", bottom);
    assert_eq!(w.served("top", json!({"key": "u"})), "off");
}

#[test]
fn prerequisite_chains_deeper_than_the_limit_are_refused() {
    let mut w = World::default();
    let chain = |w: &mut World, name: &str, len: usize| {
        for i in 0..len {
            let below: Vec<String> = (i > 0)
                .then(|| format!("{name}{}", i - 1))
                .into_iter()
                .collect();
            w.set(&format!("{name}{i}"), requiring(&below));
        }
    };
    // 16 flags in a chain are accepted; the 17th is not.
    chain(&mut w, "c", limits::MAX_PREREQUISITE_DEPTH);
    let err = w.try_flag("c16", requiring(&["c15".into()])).unwrap_err();
    assert!(err.path.starts_with("prerequisites"), "{err}");
    assert!(err.why.contains("at most 16 flags deep"), "{err}");
    // Deepening a flag is refused when a flag above it would get too deep.
    chain(&mut w, "a", 8);
    chain(&mut w, "b", 9);
    let err = w.try_flag("a0", requiring(&["b8".into()])).unwrap_err();
    assert_eq!(err.path, "prerequisites");
    assert!(
        err.why.contains("flags that depend on a0") && err.why.contains("deeper than 16"),
        "{err}"
    );
    w.set("a0", requiring(&["b7".into()]));
}

#[test]
fn a_flag_may_reach_at_most_the_closure_limit_through_prerequisites() {
    let mut w = World::default();
    let leaves: Vec<String> = (0..981).map(|i| format!("leaf{i}")).collect();
    for k in &leaves {
        w.set(k, requiring(&[]));
    }
    let hubs: Vec<String> = (0..20).map(|i| format!("hub{i}")).collect();
    for (i, h) in hubs.iter().enumerate() {
        w.set(h, requiring(&leaves[i * 49..(i + 1) * 49]));
    }
    // 20 hubs and 980 leaves: exactly the limit.
    w.set("all", requiring(&hubs));
    let err = w
        .try_flag("more", requiring(&["all".into(), "leaf980".into()]))
        .unwrap_err();
    assert_eq!(err.path, "prerequisites[0].flag");
    assert!(err.why.contains("at most 1000 flags"), "{err}");
    // A flag above: "most" reaches 19 hubs and 931 leaves, "above" one more.
    w.set("most", requiring(&hubs[..19]));
    w.set("above", requiring(&["most".into()]));
    // hub0 reaching hub19 brings "most" to 1000 and "above" to 1001.
    let mut hub0: Vec<String> = leaves[..49].to_vec();
    hub0.push("hub19".into());
    let err = w.try_flag("hub0", requiring(&hub0)).unwrap_err();
    assert_eq!(err.path, "prerequisites");
    assert!(
        err.why.contains("flag above depends on this flag") && err.why.contains("1000"),
        "{err}"
    );
    w.set("above", requiring(&[]));
    w.set("hub0", requiring(&hub0));
}

#[test]
fn a_flag_with_many_dependents_is_rewritten_without_walking_its_graph_per_dependent() {
    let mut w = World::default();
    let leaves: Vec<String> = (0..900).map(|i| format!("leaf{i}")).collect();
    let hubs: Vec<String> = (0..18).map(|i| format!("hub{i}")).collect();
    for k in &leaves {
        w.set(k, requiring(&[]));
    }
    for (i, h) in hubs.iter().enumerate() {
        w.set(h, requiring(&leaves[i * 50..(i + 1) * 50]));
    }
    w.set("core", requiring(&[]));
    // Stored directly: what matters is the check of the next write.
    for i in 0..2000 {
        let key = format!("user{i}");
        let def = parse_flag(&key, requiring(&["core".into()]).to_string().as_bytes()).unwrap();
        w.defs.insert(key, def);
    }
    // "core" now reaches 918 flags, so each of its 2,000 dependents 919.
    let def = parse_flag("core", requiring(&hubs).to_string().as_bytes()).unwrap();
    let counting = Counting::new(&w);
    check_references("core", &def, &counting).unwrap();
    let size = 900 + 18 + 1 + 2000 + 900 + 2000;
    assert!(
        counting.lookups.get() <= 2 * size,
        "{} lookups for {size} flags and edges",
        counting.lookups.get()
    );
}

#[test]
fn clauses_repeated_across_rules_are_tested_once_with_the_same_answers() {
    let mut w = World::default();
    let guard = json!({"attribute": "version", "op": "semver_gt", "values": ["1.0.0"]});
    let email = json!({"attribute": "email", "op": "matches", "values": ["^[a-z]+@x\\.com$"], "negate": true});
    let rules: Vec<_> = (0..5)
        .map(|i| json!({"id": format!("r{i}"), "clauses": [guard, email, {"attribute": "n", "op": "gt", "values": [i]}],
                        "serve": {"variation": if i % 2 == 0 { "on" } else { "off" }}}))
        .collect();
    w.set(
        "f",
        json!({"on": true, "variations": [{"name": "off", "value": 0}, {"name": "on", "value": 1}],
               "off_variation": "off", "rules": rules, "fallthrough": {"variation": "on"}}),
    );
    let memos: Vec<Vec<Option<u8>>> = w.flags["f"]
        .rules
        .iter()
        .map(|r| r.clauses.iter().map(|c| c.memo).collect())
        .collect();
    assert!(
        memos.iter().all(|m| m == &[Some(0), Some(1), None]),
        "{memos:?}"
    );
    let mut plain = w.flags["f"].clone();
    plain
        .rules
        .iter_mut()
        .flat_map(|r| &mut r.clauses)
        .for_each(|c| c.memo = None);
    for ctx in [
        json!({"version": "2.0.0", "email": "jo@y.com", "n": 3}),
        json!({"version": "2.0.0", "email": "jo@x.com", "n": 3}),
        json!({"version": "0.9.0", "n": 9}),
        json!({"version": "1.5.0", "n": 0.5}),
        json!({"version": ["0.1.0", "3.0.0"], "email": ["a@x.com", "B@x.com"], "n": 2}),
        json!({}),
    ] {
        let text = ctx.to_string();
        let ctx = Context::parse(text.as_bytes()).unwrap();
        assert_eq!(
            evaluate(&w.flags["f"], &ctx, &w, 0.0),
            evaluate(&plain, &ctx, &w, 0.0),
            "{text}"
        );
    }
}
