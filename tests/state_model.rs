//! Model-based test of the state machine: random sequences of writes (set,
//! delete, toggle, rollback, segments, import, MULTI) and restarts (clean and
//! kill -9) go to the real server and to a plain in-memory model side by
//! side; after every step every read of every key must agree.

mod common;

use std::collections::BTreeMap;

use common::{serial, Server};
use proptest::prelude::*;
use serde_json::{json, Value};

const FLAGS: usize = 4;
const SEGMENTS: usize = 2;
const USERS: [&str; 3] = ["u0", "u1", "u2"];

fn flag_key(i: usize) -> String {
    format!("m:f{i}")
}
fn segment_key(i: usize) -> String {
    format!("m:s{i}")
}

/// A flag definition the model understands: `value` when served "on";
/// optionally a rule serving "on" to a segment, and a prerequisite on a
/// flag with a lower index (so no cycle can arise).
#[derive(Debug, Clone, PartialEq)]
struct FlagDef {
    on: bool,
    value: i64,
    segment: Option<usize>,
    prerequisite: Option<usize>,
    fallthrough_on: bool,
}

impl FlagDef {
    fn json(&self) -> Value {
        let mut def = json!({
            "on": self.on,
            "variations": [{"name": "off", "value": -1}, {"name": "on", "value": self.value}],
            "off_variation": "off",
            "fallthrough": {"variation": if self.fallthrough_on { "on" } else { "off" }},
        });
        if let Some(s) = self.segment {
            def["rules"] = json!([{"id": "seg", "clauses": [{"op": "in_segment", "values": [segment_key(s)]}],
                                   "serve": {"variation": "on"}}]);
        }
        if let Some(p) = self.prerequisite {
            def["prerequisites"] = json!([{"flag": flag_key(p), "variation": "on"}]);
        }
        def
    }
}

#[derive(Debug, Clone)]
enum Write {
    Set {
        flag: usize,
        def: FlagDef,
        if_version: Option<u64>,
    },
    Del {
        flag: usize,
    },
    Toggle {
        flag: usize,
        on: bool,
    },
    SegSet {
        segment: usize,
        included: Vec<usize>,
    },
    SegDel {
        segment: usize,
    },
}

#[derive(Debug, Clone)]
enum Step {
    One(Write),
    Rollback {
        flag: usize,
        version: u64,
    },
    Import {
        flags: Vec<(usize, FlagDef)>,
        segments: Vec<(usize, Vec<usize>)>,
    },
    Multi(Vec<Write>),
    Restart {
        kill: bool,
    },
}

#[derive(Debug, Clone, Default)]
struct Model {
    flags: BTreeMap<usize, (FlagDef, u64)>,
    segments: BTreeMap<usize, (Vec<usize>, u64)>,
    flag_tombstones: BTreeMap<usize, u64>,
    segment_tombstones: BTreeMap<usize, u64>,
    /// Every definition each flag version had (what rollback restores).
    flag_history: BTreeMap<(usize, u64), FlagDef>,
}

/// What a write answered: a version or deleted count, or an error.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Int(i64),
    Error,
}

impl Model {
    fn next_flag_version(&self, f: usize) -> u64 {
        self.flags
            .get(&f)
            .map(|(_, v)| *v)
            .or(self.flag_tombstones.get(&f).copied())
            .unwrap_or(0)
            + 1
    }

    fn refs_ok(&self, def: &FlagDef) -> bool {
        def.segment.is_none_or(|s| self.segments.contains_key(&s))
            && def.prerequisite.is_none_or(|p| self.flags.contains_key(&p))
    }

    fn put_flag(&mut self, f: usize, def: FlagDef) -> Outcome {
        let v = self.next_flag_version(f);
        self.flag_history.insert((f, v), def.clone());
        self.flags.insert(f, (def, v));
        Outcome::Int(v as i64)
    }

    fn put_segment(&mut self, s: usize, included: Vec<usize>) -> Outcome {
        let v = self
            .segments
            .get(&s)
            .map(|(_, v)| *v)
            .or(self.segment_tombstones.get(&s).copied())
            .unwrap_or(0)
            + 1;
        self.segments.insert(s, (included, v));
        Outcome::Int(v as i64)
    }

    fn apply(&mut self, w: &Write) -> Outcome {
        match w {
            Write::Set {
                flag,
                def,
                if_version,
            } => {
                let have = self.flags.get(flag).map_or(0, |(_, v)| *v);
                if if_version.is_some_and(|want| want != have) || !self.refs_ok(def) {
                    return Outcome::Error;
                }
                self.put_flag(*flag, def.clone())
            }
            Write::Del { flag } => {
                let Some((_, v)) = self.flags.get(flag).cloned() else {
                    return Outcome::Int(0);
                };
                if self
                    .flags
                    .values()
                    .any(|(d, _)| d.prerequisite == Some(*flag))
                {
                    return Outcome::Error;
                }
                self.flags.remove(flag);
                self.flag_tombstones.insert(*flag, v);
                Outcome::Int(1)
            }
            Write::Toggle { flag, on } => {
                let Some((mut def, _)) = self.flags.get(flag).cloned() else {
                    return Outcome::Error;
                };
                def.on = *on;
                self.put_flag(*flag, def)
            }
            Write::SegSet { segment, included } => self.put_segment(*segment, included.clone()),
            Write::SegDel { segment } => {
                let Some((_, v)) = self.segments.get(segment).cloned() else {
                    return Outcome::Int(0);
                };
                if self
                    .flags
                    .values()
                    .any(|(d, _)| d.segment == Some(*segment))
                {
                    return Outcome::Error;
                }
                self.segments.remove(segment);
                self.segment_tombstones.insert(*segment, v);
                Outcome::Int(1)
            }
        }
    }

    fn rollback(&mut self, flag: usize, version: u64) -> Outcome {
        match self.flag_history.get(&(flag, version)).cloned() {
            Some(def) if self.refs_ok(&def) => self.put_flag(flag, def),
            _ => Outcome::Error,
        }
    }

    /// All or nothing: segments first, then flags in index order (so a
    /// prerequisite, which has a lower index, comes first).
    fn import(&mut self, flags: &[(usize, FlagDef)], segments: &[(usize, Vec<usize>)]) -> Outcome {
        let mut next = self.clone();
        for (s, included) in segments {
            next.put_segment(*s, included.clone());
        }
        let mut sorted: Vec<_> = flags.to_vec();
        sorted.sort_by_key(|(f, _)| *f);
        for (f, def) in &sorted {
            if !next.refs_ok(def) {
                return Outcome::Error;
            }
            next.put_flag(*f, def.clone());
        }
        *self = next;
        Outcome::Int((flags.len() + segments.len()) as i64)
    }

    /// The value `flag` serves `user`, as the evaluation order says.
    fn eval(&self, flag: usize, user: usize) -> Option<i64> {
        let (def, _) = self.flags.get(&flag)?;
        Some(if self.serves_on(flag, user) {
            def.value
        } else {
            -1
        })
    }

    fn serves_on(&self, flag: usize, user: usize) -> bool {
        let Some((def, _)) = self.flags.get(&flag) else {
            return false;
        };
        if !def.on || def.prerequisite.is_some_and(|p| !self.serves_on(p, user)) {
            return false;
        }
        let in_segment = def.segment.is_some_and(|s| {
            self.segments
                .get(&s)
                .is_some_and(|(included, _)| included.contains(&user))
        });
        in_segment || def.fallthrough_on
    }
}

fn write_args(w: &Write) -> Vec<String> {
    match w {
        Write::Set {
            flag,
            def,
            if_version,
        } => {
            let mut a = vec!["FLAG.SET".into(), flag_key(*flag), def.json().to_string()];
            if let Some(v) = if_version {
                a.extend(["IFVERSION".into(), v.to_string()]);
            }
            a
        }
        Write::Del { flag } => vec!["FLAG.DEL".into(), flag_key(*flag)],
        Write::Toggle { flag, on } => vec![
            "FLAG.TOGGLE".into(),
            flag_key(*flag),
            if *on { "ON" } else { "OFF" }.into(),
        ],
        Write::SegSet { segment, included } => {
            let users: Vec<&str> = included.iter().map(|u| USERS[*u]).collect();
            vec![
                "SEGMENT.SET".into(),
                segment_key(*segment),
                json!({ "included": users }).to_string(),
            ]
        }
        Write::SegDel { segment } => vec!["SEGMENT.DEL".into(), segment_key(*segment)],
    }
}

fn outcome(r: redis::RedisResult<redis::Value>) -> Outcome {
    match r {
        Ok(redis::Value::Int(n)) => Outcome::Int(n),
        Ok(redis::Value::ServerError(_)) | Err(_) => Outcome::Error,
        Ok(other) => panic!("unexpected write reply {other:?}"),
    }
}

fn run(con: &mut redis::Connection, args: &[String]) -> Outcome {
    let mut cmd = redis::cmd(&args[0]);
    for a in &args[1..] {
        cmd.arg(a);
    }
    outcome(cmd.query(con))
}

/// Every read of every key agrees with the model.
fn compare(con: &mut redis::Connection, model: &Model, step: usize) -> Result<(), TestCaseError> {
    for f in 0..FLAGS {
        let got: Option<String> = redis::cmd("FLAG.GET").arg(flag_key(f)).query(con).unwrap();
        match (model.flags.get(&f), got) {
            (None, None) => {}
            (Some((def, version)), Some(doc)) => {
                let doc: Value = serde_json::from_str(&doc).unwrap();
                prop_assert_eq!(
                    doc["version"].as_u64(),
                    Some(*version),
                    "step {} flag {}",
                    step,
                    f
                );
                prop_assert_eq!(
                    doc["on"].as_bool(),
                    Some(def.on),
                    "step {} flag {}",
                    step,
                    f
                );
                prop_assert_eq!(
                    doc["variations"][1]["value"].as_i64(),
                    Some(def.value),
                    "step {} flag {}",
                    step,
                    f
                );
            }
            (want, got) => prop_assert!(
                false,
                "step {step} flag {f}: model {want:?}, server {got:?}"
            ),
        }
        for (u, user) in USERS.iter().enumerate() {
            let got: Option<String> = redis::cmd("FLAG.EVAL")
                .arg(flag_key(f))
                .arg(json!({ "key": user }).to_string())
                .query(con)
                .unwrap();
            let got = got.map(|v| v.parse::<i64>().unwrap());
            prop_assert_eq!(
                got,
                model.eval(f, u),
                "step {} eval flag {} for {}",
                step,
                f,
                user
            );
        }
    }
    for s in 0..SEGMENTS {
        let got: Option<String> = redis::cmd("SEGMENT.GET")
            .arg(segment_key(s))
            .query(con)
            .unwrap();
        match (model.segments.get(&s), got) {
            (None, None) => {}
            (Some((included, version)), Some(doc)) => {
                let doc: Value = serde_json::from_str(&doc).unwrap();
                prop_assert_eq!(
                    doc["version"].as_u64(),
                    Some(*version),
                    "step {} segment {}",
                    step,
                    s
                );
                let users: Vec<&str> = included.iter().map(|u| USERS[*u]).collect();
                prop_assert_eq!(
                    &doc["included"],
                    &json!(users),
                    "step {} segment {}",
                    step,
                    s
                );
            }
            (want, got) => prop_assert!(
                false,
                "step {step} segment {s}: model {want:?}, server {got:?}"
            ),
        }
    }
    Ok(())
}

fn flag_def() -> impl Strategy<Value = (usize, FlagDef)> {
    (
        0..FLAGS,
        any::<bool>(),
        -3i64..50,
        proptest::option::of(0..SEGMENTS),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_flat_map(|(f, on, value, segment, with_prereq, fallthrough_on)| {
            let prereq = if with_prereq && f > 0 {
                (0..f).prop_map(Some).boxed()
            } else {
                Just(None).boxed()
            };
            prereq.prop_map(move |prerequisite| {
                (
                    f,
                    FlagDef {
                        on,
                        value,
                        segment,
                        prerequisite,
                        fallthrough_on,
                    },
                )
            })
        })
}

fn included() -> impl Strategy<Value = Vec<usize>> {
    proptest::sample::subsequence((0..USERS.len()).collect::<Vec<_>>(), 0..=USERS.len())
}

fn write() -> impl Strategy<Value = Write> {
    prop_oneof![
        4 => (flag_def(), proptest::option::weighted(0.2, 0u64..4))
            .prop_map(|((flag, def), if_version)| Write::Set { flag, def, if_version }),
        1 => (0..FLAGS).prop_map(|flag| Write::Del { flag }),
        2 => (0..FLAGS, any::<bool>()).prop_map(|(flag, on)| Write::Toggle { flag, on }),
        2 => (0..SEGMENTS, included()).prop_map(|(segment, included)| Write::SegSet { segment, included }),
        1 => (0..SEGMENTS).prop_map(|segment| Write::SegDel { segment }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => write().prop_map(Step::One),
        1 => (0..FLAGS, 1u64..6).prop_map(|(flag, version)| Step::Rollback { flag, version }),
        1 => (proptest::collection::vec(flag_def(), 0..3), proptest::collection::vec((0..SEGMENTS, included()), 0..2))
            .prop_map(|(flags, segments)| {
                // One definition per key, as a dump has.
                let flags: BTreeMap<_, _> = flags.into_iter().collect();
                let segments: BTreeMap<_, _> = segments.into_iter().collect();
                Step::Import { flags: flags.into_iter().collect(), segments: segments.into_iter().collect() }
            }),
        2 => proptest::collection::vec(write(), 1..5).prop_map(Step::Multi),
        1 => any::<bool>().prop_map(|kill| Step::Restart { kill }),
    ]
}

fn import_document(flags: &[(usize, FlagDef)], segments: &[(usize, Vec<usize>)]) -> String {
    let flags: serde_json::Map<String, Value> = flags
        .iter()
        .map(|(f, d)| (flag_key(*f), d.json()))
        .collect();
    let segments: serde_json::Map<String, Value> = segments
        .iter()
        .map(|(s, inc)| {
            let users: Vec<&str> = inc.iter().map(|u| USERS[*u]).collect();
            (segment_key(*s), json!({ "included": users }))
        })
        .collect();
    json!({ "flags": flags, "segments": segments }).to_string()
}

fn check_sequence(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut server = Server::start(&[]);
    let mut con = server.conn();
    let mut model = Model::default();
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::One(w) => {
                let want = model.apply(w);
                let got = run(&mut con, &write_args(w));
                prop_assert_eq!(got, want, "step {}: {:?}", i, w);
            }
            Step::Rollback { flag, version } => {
                let want = model.rollback(*flag, *version);
                let got = run(
                    &mut con,
                    &["FLAG.ROLLBACK".into(), flag_key(*flag), version.to_string()],
                );
                prop_assert_eq!(got, want, "step {}: {:?}", i, step);
            }
            Step::Import { flags, segments } => {
                let want = model.import(flags, segments);
                let got = run(
                    &mut con,
                    &["FLAG.IMPORT".into(), import_document(flags, segments)],
                );
                prop_assert_eq!(got, want, "step {}: {:?}", i, step);
            }
            Step::Multi(writes) => {
                let mut pipe = redis::pipe();
                pipe.atomic().ignore_errors();
                for w in writes {
                    let args = write_args(w);
                    pipe.cmd(&args[0]);
                    for a in &args[1..] {
                        pipe.arg(a);
                    }
                }
                let replies: Vec<redis::RedisResult<redis::Value>> = pipe.query(&mut con).unwrap();
                for (w, reply) in writes.iter().zip(replies) {
                    let want = model.apply(w);
                    prop_assert_eq!(outcome(reply), want, "step {} (MULTI): {:?}", i, w);
                }
            }
            Step::Restart { kill } => {
                if *kill {
                    server.kill9();
                } else {
                    let _ = redis::cmd("SHUTDOWN").query::<redis::Value>(&mut con);
                    server.wait_exit(std::time::Duration::from_secs(10));
                }
                server.restart();
                con = server.conn();
            }
        }
        compare(&mut con, &model, i)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_server_agrees_with_a_plain_model_after_every_step(steps in proptest::collection::vec(step(), 1..40)) {
        let _g = serial();
        check_sequence(steps)?;
    }
}
