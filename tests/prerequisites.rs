//! The prerequisite graph and apply-time work through the real binary: a
//! graph where many flags share prerequisites costs its size, not its number
//! of paths; the depth and closure limits are refused with `-INVALID`; an
//! import of 10,000 flags is ordered in linear time; and a segment used by
//! 10,000 flags is replaced without recompiling them.

mod common;

use std::time::{Duration, Instant};

use common::{cmd_err, cmd_value, serial, Server};
use serde_json::{json, Value};

/// Longer than any of these commands takes with the fix, far shorter than
/// without it (an exponential walk, or a cubic import order).
const PATIENCE: Duration = Duration::from_secs(20);

/// A flag serving `true` to everyone, requiring `on` of each of `prerequisites`.
fn requiring(prerequisites: &[String]) -> Value {
    json!({
        "on": true,
        "variations": [{"name": "off", "value": false}, {"name": "on", "value": true}],
        "off_variation": "off",
        "prerequisites": prerequisites
            .iter()
            .map(|p| json!({"flag": p, "variation": "on"}))
            .collect::<Vec<_>>(),
        "fallthrough": {"variation": "on"}
    })
}

fn patient_conn(s: &Server) -> redis::Connection {
    let con = s.conn();
    con.set_read_timeout(Some(PATIENCE)).unwrap();
    con
}

fn set(con: &mut redis::Connection, key: &str, def: &Value) -> redis::RedisResult<i64> {
    redis::cmd("FLAG.SET")
        .arg(key)
        .arg(def.to_string())
        .query(con)
}

fn eval(con: &mut redis::Connection, key: &str) -> Option<String> {
    redis::cmd("FLAG.EVAL")
        .arg(key)
        .arg(r#"{"key":"user-1"}"#)
        .query(con)
        .unwrap()
}

#[test]
fn a_lattice_of_shared_prerequisites_is_accepted_to_the_depth_limit_and_evaluates() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut con = patient_conn(&s);
    let started = Instant::now();
    // Four flags per level, each requiring all four of the level below: the
    // top of level 16 has 4^15 paths to the bottom but reaches 60 flags.
    let mut below: Vec<String> = Vec::new();
    for level in 1..=16 {
        let keys: Vec<String> = (0..4).map(|i| format!("prod:l{level:02}-{i}")).collect();
        for k in &keys {
            assert_eq!(set(&mut con, k, &requiring(&below)).unwrap(), 1, "{k}");
        }
        below = keys;
    }
    // The 17th level would make chains of 17 flags.
    let err = cmd_err(
        &mut con,
        &["FLAG.SET", "prod:l17-0", &requiring(&below).to_string()],
    );
    assert!(err.starts_with("INVALID prerequisites"), "{err}");
    assert!(err.contains("at most 16 flags deep"), "{err}");
    assert_eq!(eval(&mut con, "prod:l16-0").as_deref(), Some("true"));
    // One flag at the bottom going off fails every flag above it.
    let _: i64 = redis::cmd("FLAG.TOGGLE")
        .arg("prod:l01-3")
        .arg("OFF")
        .query(&mut con)
        .unwrap();
    assert_eq!(eval(&mut con, "prod:l16-0").as_deref(), Some("false"));
    let detail = cmd_value(
        &mut con,
        &["FLAG.DETAIL", "prod:l02-0", r#"{"key":"user-1"}"#],
    );
    let detail = format!("{:?}", detail.unwrap());
    assert!(detail.contains("PREREQUISITE_FAILED"), "{detail}");
    // 65 writes and three reads; before the fix level 12 alone took seconds.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    // The same writes replay from the log at restart.
    let mut s = s;
    s.restart();
    let mut con = patient_conn(&s);
    assert_eq!(eval(&mut con, "prod:l16-0").as_deref(), Some("false"));
}

#[test]
fn deepening_a_flag_is_refused_when_a_flag_above_it_would_exceed_the_depth_limit() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut con = patient_conn(&s);
    let chain = |con: &mut redis::Connection, name: &str, len: usize| {
        for i in 0..len {
            let below: Vec<String> = (i > 0)
                .then(|| format!("prod:{name}{}", i - 1))
                .into_iter()
                .collect();
            set(con, &format!("prod:{name}{i}"), &requiring(&below)).unwrap();
        }
    };
    chain(&mut con, "a", 8);
    chain(&mut con, "b", 9);
    // prod:a0 would be 10 deep, so prod:a7 (8 flags above it) 17.
    let err = cmd_err(
        &mut con,
        &[
            "FLAG.SET",
            "prod:a0",
            &requiring(&["prod:b8".into()]).to_string(),
        ],
    );
    assert!(err.starts_with("INVALID prerequisites"), "{err}");
    assert!(err.contains("flags that depend on prod:a0"), "{err}");
    assert_eq!(
        set(&mut con, "prod:a0", &requiring(&["prod:b7".into()])).unwrap(),
        2
    );
}

#[test]
fn a_flag_reaching_more_than_a_thousand_flags_is_refused() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut con = patient_conn(&s);
    // 20 hubs of 50 leaves each, imported at once.
    let mut flags = serde_json::Map::new();
    let hubs: Vec<String> = (0..20).map(|h| format!("prod:hub{h:02}")).collect();
    for (h, hub) in hubs.iter().enumerate() {
        let leaves: Vec<String> = (0..50).map(|i| format!("prod:leaf{h:02}-{i:02}")).collect();
        for leaf in &leaves {
            flags.insert(leaf.clone(), requiring(&[]));
        }
        flags.insert(hub.clone(), requiring(&leaves));
    }
    let dump = json!({ "flags": flags }).to_string();
    let n: i64 = redis::cmd("FLAG.IMPORT")
        .arg(&dump)
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 1020);
    // 19 hubs reach 969 flags; 20 reach 1,020.
    assert_eq!(
        set(&mut con, "prod:most", &requiring(&hubs[..19])).unwrap(),
        1
    );
    let err = cmd_err(
        &mut con,
        &["FLAG.SET", "prod:all", &requiring(&hubs).to_string()],
    );
    assert!(err.starts_with("INVALID prerequisites"), "{err}");
    assert!(err.contains("at most 1000 flags"), "{err}");
    assert_eq!(
        cmd_value(&mut con, &["FLAG.GET", "prod:all"]).unwrap(),
        redis::Value::Nil
    );
}

#[test]
fn an_import_of_ten_thousand_flags_is_ordered_quickly_and_segment_set_recompiles_none() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut con = patient_conn(&s);
    // 625 chains of 16, named so that every flag sorts before its
    // prerequisite: a scan for the next ready flag finds it last.
    let mut flags = serde_json::Map::new();
    for chain in 0..625 {
        for level in 0..16 {
            let mut def = requiring(&[]);
            if level < 15 {
                def = requiring(&[format!("prod:c{:02}-{chain:03}", level + 1)]);
            }
            def["rules"] = json!([{"id": "beta",
                "clauses": [{"op": "in_segment", "values": ["prod:beta"]}],
                "serve": {"variation": "off"}}]);
            flags.insert(format!("prod:c{level:02}-{chain:03}"), def);
        }
    }
    let dump = json!({
        "segments": {"prod:beta": {"included": ["user-2"]}},
        "flags": flags,
    })
    .to_string();
    let started = Instant::now();
    let n: i64 = redis::cmd("FLAG.IMPORT")
        .arg(&dump)
        .query(&mut con)
        .unwrap();
    let import = started.elapsed();
    assert_eq!(n, 10_001);
    assert_eq!(eval(&mut con, "prod:c00-000").as_deref(), Some("true"));
    // Replacing the segment all 10,000 flags use changes what they serve.
    let started = Instant::now();
    let v: i64 = redis::cmd("SEGMENT.SET")
        .arg("prod:beta")
        .arg(r#"{"included": ["user-1"]}"#)
        .query(&mut con)
        .unwrap();
    let segment_set = started.elapsed();
    assert_eq!(v, 2);
    assert_eq!(eval(&mut con, "prod:c00-000").as_deref(), Some("false"));
    assert_eq!(eval(&mut con, "prod:c15-624").as_deref(), Some("false"));
    eprintln!("FLAG.IMPORT of 10,000 flags: {import:?}; SEGMENT.SET with 10,000 dependents: {segment_set:?}");
    assert!(import < Duration::from_secs(15), "import took {import:?}");
}
