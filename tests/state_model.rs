//! Model-based property test of the state machine through the real binary:
//! random sequences of FLAG.SET / DEL / TOGGLE / ROLLBACK, SEGMENT.SET / DEL,
//! FLAG.IMPORT, MULTI and restarts (kill -9, then the same data dir) are sent
//! to a server and applied to a plain in-memory model; after every step every
//! key is read back (FLAG.GET, SEGMENT.GET, FLAG.EVAL) and compared.
//!
//! One server serves every case; each case uses its own key prefix, so cases
//! start from an empty model without a server start of their own.

mod common;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};

use common::{error_text, serial, Server};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};

const FLAGS: usize = 3;
const SEGMENTS: usize = 2;

/// The parts of a flag definition the test varies.
#[derive(Debug, Clone, PartialEq)]
struct Shape {
    on: bool,
    prerequisite: Option<usize>,
    segment: Option<usize>,
    rule_serves_on: bool,
    fallthrough_on: bool,
}

#[derive(Debug, Clone)]
enum Op {
    SetFlag(usize, Shape),
    DelFlag(usize),
    Toggle(usize, bool),
    Rollback(usize, u64),
    SetSegment(usize, bool),
    DelSegment(usize),
    Import(BTreeMap<usize, bool>, BTreeMap<usize, Shape>),
    Multi(Vec<Op>),
    Restart,
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        any::<bool>(),
        proptest::option::of(0..FLAGS),
        proptest::option::of(0..SEGMENTS),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(on, prerequisite, segment, rule_serves_on, fallthrough_on)| Shape {
                on,
                prerequisite,
                segment,
                rule_serves_on,
                fallthrough_on,
            },
        )
}

/// Writes that may sit inside MULTI.
fn simple_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..FLAGS, shape()).prop_map(|(k, s)| Op::SetFlag(k, s)),
        1 => (0..FLAGS).prop_map(Op::DelFlag),
        2 => (0..FLAGS, any::<bool>()).prop_map(|(k, on)| Op::Toggle(k, on)),
        2 => (0..SEGMENTS, any::<bool>()).prop_map(|(k, u1)| Op::SetSegment(k, u1)),
        1 => (0..SEGMENTS).prop_map(Op::DelSegment),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => simple_op(),
        2 => (0..FLAGS, 1..6u64).prop_map(|(k, v)| Op::Rollback(k, v)),
        3 => (
            proptest::collection::btree_map(0..SEGMENTS, any::<bool>(), 0..=SEGMENTS),
            proptest::collection::btree_map(0..FLAGS, shape(), 1..=FLAGS),
        )
            .prop_map(|(s, f)| Op::Import(s, f)),
        2 => proptest::collection::vec(simple_op(), 1..4).prop_map(Op::Multi),
        1 => Just(Op::Restart),
    ]
}

/// A flag or segment as the model holds it.
#[derive(Debug, Clone)]
struct Stored<T> {
    def: T,
    version: u64,
}

/// What the server should hold, kept as plainly as possible.
#[derive(Debug, Clone, Default)]
struct Model {
    flags: BTreeMap<usize, Stored<Shape>>,
    segments: BTreeMap<usize, Stored<bool>>,
    flag_versions: BTreeMap<usize, u64>,
    segment_versions: BTreeMap<usize, u64>,
    /// Every version a flag had, for FLAG.ROLLBACK.
    history: BTreeMap<(usize, u64), Shape>,
}

/// What a write answered: an integer, or an error.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Int(i64),
    Error,
}

impl Model {
    /// Whether `from` reaches `to` through prerequisites.
    fn reaches(&self, from: usize, to: usize) -> bool {
        let mut at = Some(from);
        let mut steps = 0;
        while let Some(k) = at {
            if k == to {
                return true;
            }
            steps += 1;
            if steps > FLAGS {
                return false;
            }
            at = self.flags.get(&k).and_then(|f| f.def.prerequisite);
        }
        false
    }

    fn set_flag(&mut self, key: usize, shape: &Shape) -> Answer {
        if let Some(p) = shape.prerequisite {
            if p == key || !self.flags.contains_key(&p) || self.reaches(p, key) {
                return Answer::Error;
            }
        }
        if let Some(s) = shape.segment {
            if !self.segments.contains_key(&s) {
                return Answer::Error;
            }
        }
        self.put_flag(key, shape.clone())
    }

    fn put_flag(&mut self, key: usize, shape: Shape) -> Answer {
        let version = self.flag_versions.get(&key).copied().unwrap_or(0) + 1;
        self.flag_versions.insert(key, version);
        self.history.insert((key, version), shape.clone());
        self.flags.insert(
            key,
            Stored {
                def: shape,
                version,
            },
        );
        Answer::Int(version as i64)
    }

    fn set_segment(&mut self, key: usize, includes_u1: bool) -> Answer {
        let version = self.segment_versions.get(&key).copied().unwrap_or(0) + 1;
        self.segment_versions.insert(key, version);
        self.segments.insert(
            key,
            Stored {
                def: includes_u1,
                version,
            },
        );
        Answer::Int(version as i64)
    }

    fn apply(&mut self, op: &Op) -> Answer {
        match op {
            Op::SetFlag(k, shape) => self.set_flag(*k, shape),
            Op::DelFlag(k) => {
                if !self.flags.contains_key(k) {
                    return Answer::Int(0);
                }
                if self.flags.values().any(|f| f.def.prerequisite == Some(*k)) {
                    return Answer::Error;
                }
                self.flags.remove(k);
                Answer::Int(1)
            }
            Op::Toggle(k, on) => match self.flags.get(k) {
                None => Answer::Error,
                Some(f) => {
                    let mut shape = f.def.clone();
                    shape.on = *on;
                    self.put_flag(*k, shape)
                }
            },
            Op::Rollback(k, v) => match self.history.get(&(*k, *v)).cloned() {
                None => Answer::Error,
                Some(shape) => self.set_flag(*k, &shape),
            },
            Op::SetSegment(k, u1) => self.set_segment(*k, *u1),
            Op::DelSegment(k) => {
                if !self.segments.contains_key(k) {
                    return Answer::Int(0);
                }
                if self.flags.values().any(|f| f.def.segment == Some(*k)) {
                    return Answer::Error;
                }
                self.segments.remove(k);
                Answer::Int(1)
            }
            Op::Import(segments, flags) => {
                if flags.iter().any(|(k, s)| s.prerequisite == Some(*k)) {
                    return Answer::Error;
                }
                let mut next = self.clone();
                for (k, u1) in segments {
                    next.set_segment(*k, *u1);
                }
                // The documented order: a flag after those of its
                // prerequisites the import brings and the store lacks; among
                // the ready ones, the first by key.
                let absent: BTreeSet<usize> = flags
                    .keys()
                    .filter(|k| !self.flags.contains_key(k))
                    .copied()
                    .collect();
                let mut pending: Vec<usize> = flags.keys().copied().collect();
                while !pending.is_empty() {
                    let ready = pending
                        .iter()
                        .position(|k| {
                            flags[k]
                                .prerequisite
                                .is_none_or(|p| !absent.contains(&p) || next.flags.contains_key(&p))
                        })
                        .unwrap_or(0);
                    let k = pending.remove(ready);
                    if next.set_flag(k, &flags[&k]) == Answer::Error {
                        return Answer::Error;
                    }
                }
                *self = next;
                Answer::Int((segments.len() + flags.len()) as i64)
            }
            Op::Multi(ops) => {
                for op in ops {
                    self.apply(op);
                }
                Answer::Int(0)
            }
            Op::Restart => Answer::Int(0),
        }
    }

    /// What FLAG.EVAL answers for `{"key":"u1"}`.
    fn eval(&self, key: usize, depth: usize) -> Option<bool> {
        let f = &self.flags.get(&key)?.def;
        if !f.on || depth > FLAGS {
            return Some(false);
        }
        if let Some(p) = f.prerequisite {
            if self.eval(p, depth + 1) != Some(true) {
                return Some(false);
            }
        }
        if let Some(s) = f.segment {
            if self.segments.get(&s).is_some_and(|s| s.def) {
                return Some(f.rule_serves_on);
            }
        }
        Some(f.fallthrough_on)
    }
}

struct Keys {
    prefix: String,
}

impl Keys {
    fn flag(&self, k: usize) -> String {
        format!("{}:f{k}", self.prefix)
    }
    fn segment(&self, k: usize) -> String {
        format!("{}:s{k}", self.prefix)
    }

    fn flag_def(&self, s: &Shape) -> Value {
        let name = |on: bool| if on { "on" } else { "off" };
        let mut def = json!({
            "on": s.on,
            "variations": [{"name": "off", "value": false}, {"name": "on", "value": true}],
            "off_variation": "off",
            "fallthrough": {"variation": name(s.fallthrough_on)},
        });
        if let Some(p) = s.prerequisite {
            def["prerequisites"] = json!([{"flag": self.flag(p), "variation": "on"}]);
        }
        if let Some(seg) = s.segment {
            def["rules"] = json!([{
                "clauses": [{"op": "in_segment", "values": [self.segment(seg)]}],
                "serve": {"variation": name(s.rule_serves_on)},
            }]);
        }
        def
    }

    fn segment_def(&self, includes_u1: bool) -> Value {
        let who = if includes_u1 { "u1" } else { "u2" };
        json!({"included": [who], "excluded": [], "rules": []})
    }

    fn command(&self, op: &Op) -> redis::Cmd {
        match op {
            Op::SetFlag(k, s) => redis::cmd("FLAG.SET")
                .arg(self.flag(*k))
                .arg(self.flag_def(s).to_string())
                .clone(),
            Op::DelFlag(k) => redis::cmd("FLAG.DEL").arg(self.flag(*k)).clone(),
            Op::Toggle(k, on) => redis::cmd("FLAG.TOGGLE")
                .arg(self.flag(*k))
                .arg(if *on { "ON" } else { "OFF" })
                .clone(),
            Op::Rollback(k, v) => redis::cmd("FLAG.ROLLBACK")
                .arg(self.flag(*k))
                .arg(*v)
                .clone(),
            Op::SetSegment(k, u1) => redis::cmd("SEGMENT.SET")
                .arg(self.segment(*k))
                .arg(self.segment_def(*u1).to_string())
                .clone(),
            Op::DelSegment(k) => redis::cmd("SEGMENT.DEL").arg(self.segment(*k)).clone(),
            Op::Import(segments, flags) => {
                let segments: serde_json::Map<String, Value> = segments
                    .iter()
                    .map(|(k, u1)| (self.segment(*k), self.segment_def(*u1)))
                    .collect();
                let flags: serde_json::Map<String, Value> = flags
                    .iter()
                    .map(|(k, s)| (self.flag(*k), self.flag_def(s)))
                    .collect();
                redis::cmd("FLAG.IMPORT")
                    .arg(json!({"segments": segments, "flags": flags}).to_string())
                    .clone()
            }
            Op::Multi(_) | Op::Restart => unreachable!("sent otherwise"),
        }
    }
}

/// Strips what FLAG.GET / SEGMENT.GET add to a definition, returning the version.
fn split_document(doc: &str) -> (Value, u64) {
    let mut v: Value = serde_json::from_str(doc).unwrap();
    let version = v["version"].as_u64().unwrap();
    for field in [
        "version",
        "revision",
        "updated_at",
        "updated_by",
        "allocations",
    ] {
        v.as_object_mut().unwrap().remove(field);
    }
    (v, version)
}

fn check_reads(con: &mut redis::Connection, keys: &Keys, model: &Model, step: &str) {
    for k in 0..FLAGS {
        let got: Option<String> = redis::cmd("FLAG.GET").arg(keys.flag(k)).query(con).unwrap();
        let want = model.flags.get(&k);
        match (got, want) {
            (None, None) => {}
            (Some(doc), Some(f)) => {
                let (def, version) = split_document(&doc);
                assert_eq!(version, f.version, "{step}: version of f{k}");
                assert_eq!(def, keys.flag_def(&f.def), "{step}: definition of f{k}");
            }
            (got, want) => panic!("{step}: f{k} is {got:?} on the server, {want:?} in the model"),
        }
        let served: Option<String> = redis::cmd("FLAG.EVAL")
            .arg(keys.flag(k))
            .arg(r#"{"key":"u1"}"#)
            .query(con)
            .unwrap();
        assert_eq!(
            served,
            model.eval(k, 0).map(|b| b.to_string()),
            "{step}: FLAG.EVAL f{k}"
        );
    }
    for k in 0..SEGMENTS {
        let got: Option<String> = redis::cmd("SEGMENT.GET")
            .arg(keys.segment(k))
            .query(con)
            .unwrap();
        let want = model.segments.get(&k);
        match (got, want) {
            (None, None) => {}
            (Some(doc), Some(s)) => {
                let (def, version) = split_document(&doc);
                assert_eq!(version, s.version, "{step}: version of s{k}");
                assert_eq!(def, keys.segment_def(s.def), "{step}: definition of s{k}");
            }
            (got, want) => panic!("{step}: s{k} is {got:?} on the server, {want:?} in the model"),
        }
    }
}

fn answer(result: redis::RedisResult<redis::Value>) -> Answer {
    match result {
        Ok(redis::Value::Int(n)) => Answer::Int(n),
        Ok(other) => panic!("unexpected reply {other:?}"),
        Err(e) if e.code().is_some() => Answer::Error,
        Err(e) => panic!("connection failed: {}", error_text(&e)),
    }
}

/// Sends `ops` under key prefix `prefix` and checks every answer and every
/// read against the model.
fn run_case(
    server: &RefCell<Server>,
    con: &RefCell<redis::Connection>,
    prefix: &str,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let keys = Keys {
        prefix: prefix.to_string(),
    };
    let mut model = Model::default();
    for (i, op) in ops.iter().enumerate() {
        let step = format!("{prefix} step {i} {op:?}");
        match op {
            Op::Restart => {
                server.borrow_mut().restart();
                *con.borrow_mut() = server.borrow().conn();
            }
            Op::Multi(queued) => {
                let mut pipe = redis::pipe();
                pipe.atomic();
                for q in queued {
                    pipe.add_command(keys.command(q)).ignore();
                }
                // Each queued command answers for itself; the reads below
                // check what EXEC applied.
                let _: redis::RedisResult<()> = pipe.query(&mut con.borrow_mut());
                model.apply(op);
            }
            _ => {
                let got = answer(keys.command(op).query(&mut con.borrow_mut()));
                let want = model.apply(op);
                prop_assert_eq!(got, want, "{}", step);
            }
        }
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check_reads(&mut con.borrow_mut(), &keys, &model, &step)
        }));
        if let Err(e) = checked {
            let why = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            return Err(TestCaseError::fail(why));
        }
    }
    Ok(())
}

fn start() -> (RefCell<Server>, RefCell<redis::Connection>) {
    let server = Server::start(&[]);
    let con = server.conn();
    (RefCell::new(server), RefCell::new(con))
}

#[test]
fn the_store_behaves_as_a_plain_model_across_writes_multi_import_and_restarts() {
    let _g = serial();
    let (server, con) = start();
    let case = Cell::new(0u32);
    let mut runner = TestRunner::new(Config {
        cases: 48,
        max_shrink_iters: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&proptest::collection::vec(op(), 1..20), |ops| {
        case.set(case.get() + 1);
        run_case(&server, &con, &format!("m{}", case.get()), &ops)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Found by the model: the delete record carries the last version too, and
/// FLAG.ROLLBACK took it (it has no definition) for the version asked for.
#[test]
fn a_deleted_flag_rolls_back_to_any_of_its_versions() {
    let _g = serial();
    let (server, con) = start();
    let plain = Shape {
        on: true,
        prerequisite: None,
        segment: None,
        rule_serves_on: false,
        fallthrough_on: true,
    };
    let ops = [
        Op::SetFlag(0, plain.clone()),
        Op::Toggle(0, false),
        Op::DelFlag(0),
        Op::Rollback(0, 2),
        Op::Multi(vec![Op::SetFlag(1, plain), Op::DelFlag(1)]),
        Op::Rollback(1, 1),
        Op::Restart,
        Op::Rollback(0, 1),
    ];
    if let Err(e) = run_case(&server, &con, "fixed", &ops) {
        panic!("{e}");
    }
}
