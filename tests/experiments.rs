//! Experiments through the real binary: definitions replicated and
//! validated, exposures from FLAG.EVAL, metric events from FLAG.TRACK, and
//! EXPERIMENT.RESULTS over one node and over a cluster.

mod common;

use std::time::Duration;

use common::{cmd_err, cmd_str, cmd_value, eventually, serial, Server};
use serde_json::{json, Value};

const ROLLOUT: &str = r#"{"on":true,"variations":[{"name":"off","value":false},{"name":"on","value":true}],"off_variation":"off","targets":[{"variation":"on","keys":["qa"]}],"fallthrough":{"rollout":[{"variation":"off","weight":5000},{"variation":"on","weight":5000}]}}"#;
const FIXED: &str = r#"{"on":true,"variations":[{"name":"off","value":false},{"name":"on","value":true}],"off_variation":"off","fallthrough":{"variation":"on"}}"#;

fn experiment() -> String {
    json!({"flag": "prod:checkout", "control": "off",
           "metrics": [{"name": "purchase", "kind": "binary", "event": "purchase"},
                       {"name": "revenue", "kind": "continuous", "event": "purchase", "covariate": "revenue_pre"}],
           "guardrails": [{"metric": "errors", "kind": "binary", "event": "error", "max_relative_change": 0.02}],
           "alpha": 0.05, "power": 0.8})
    .to_string()
}

fn int(con: &mut redis::Connection, args: &[&str]) -> i64 {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(con).unwrap()
}

fn results(con: &mut redis::Connection, key: &str) -> Value {
    serde_json::from_str(&cmd_str(con, &["EXPERIMENT.RESULTS", key]).unwrap()).unwrap()
}

fn eval(con: &mut redis::Connection, user: &str) -> bool {
    let v: String = redis::cmd("FLAG.EVAL")
        .arg("prod:checkout")
        .arg(json!({ "key": user }).to_string())
        .query(con)
        .unwrap();
    v == "true"
}

fn track(con: &mut redis::Connection, event: &str, user: &str, value: f64) {
    let _: i64 = redis::cmd("FLAG.TRACK")
        .arg(event)
        .arg(json!({ "key": user }).to_string())
        .arg("VALUE")
        .arg(value.to_string())
        .query(con)
        .unwrap();
}

/// Sets the rollout flag `prod:checkout` and starts experiment `prod:exp` on it.
fn start_checkout_experiment(con: &mut redis::Connection) {
    int(con, &["FLAG.SET", "prod:checkout", ROLLOUT]);
    int(con, &["EXPERIMENT.SET", "prod:exp", &experiment()]);
    int(con, &["EXPERIMENT.START", "prod:exp"]);
}

#[test]
fn experiments_are_validated_and_go_through_their_lifecycle() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut con = s.conn();
    int(&mut con, &["FLAG.SET", "prod:fixed", FIXED]);
    let exp = experiment();
    assert_eq!(
        cmd_err(&mut con, &["EXPERIMENT.SET", "prod:exp", &exp]),
        "INVALID $.flag: no such flag \"prod:checkout\""
    );
    let fixed = exp.replace("prod:checkout", "prod:fixed");
    assert_eq!(
        cmd_err(&mut con, &["EXPERIMENT.SET", "prod:exp", &fixed]),
        "INVALID $.flag: prod:fixed has no rollout to assign variations"
    );
    int(&mut con, &["FLAG.SET", "prod:checkout", ROLLOUT]);
    let bad_control = exp.replace("\"control\":\"off\"", "\"control\":\"nope\"");
    assert_eq!(
        cmd_err(&mut con, &["EXPERIMENT.SET", "prod:exp", &bad_control]),
        "INVALID $.control: \"nope\" is not a variation of prod:checkout"
    );
    let bad_kind = exp.replace("\"kind\":\"binary\"", "\"kind\":\"ratio\"");
    assert!(
        cmd_err(&mut con, &["EXPERIMENT.SET", "prod:exp", &bad_kind])
            .starts_with("INVALID $.metrics[0].kind")
    );
    // Nothing refused was stored.
    assert_eq!(
        cmd_value(&mut con, &["EXPERIMENT.GET", "prod:exp"]).unwrap(),
        redis::Value::Nil
    );

    assert_eq!(int(&mut con, &["EXPERIMENT.SET", "prod:exp", &exp]), 1);
    let doc: Value =
        serde_json::from_str(&cmd_str(&mut con, &["EXPERIMENT.GET", "prod:exp"]).unwrap()).unwrap();
    assert_eq!(doc["state"], "draft");
    assert_eq!(doc["control"], "off");
    // GET → SET round-trips.
    assert_eq!(
        int(&mut con, &["EXPERIMENT.SET", "prod:exp", &doc.to_string()]),
        2
    );
    assert_eq!(int(&mut con, &["EXPERIMENT.START", "prod:exp"]), 3);
    let doc: Value =
        serde_json::from_str(&cmd_str(&mut con, &["EXPERIMENT.GET", "prod:exp"]).unwrap()).unwrap();
    assert_eq!(doc["state"], "running");
    assert!(doc["started_at"].is_u64());
    let list: Vec<String> = redis::cmd("EXPERIMENT.LIST").query(&mut con).unwrap();
    assert_eq!(list, vec!["prod:exp".to_string()]);
    assert_eq!(int(&mut con, &["EXPERIMENT.STOP", "prod:exp"]), 4);
    assert_eq!(
        cmd_err(&mut con, &["EXPERIMENT.START", "prod:none"]),
        "ERR no such experiment 'prod:none'"
    );
    assert_eq!(
        cmd_err(&mut con, &["EXPERIMENT.RESULTS", "prod:none"]),
        "ERR no such experiment 'prod:none'"
    );
    assert_eq!(int(&mut con, &["EXPERIMENT.DEL", "prod:exp"]), 1);
    assert_eq!(int(&mut con, &["EXPERIMENT.DEL", "prod:exp"]), 0);
}

#[test]
fn track_refuses_bad_values_and_contexts_with_clear_errors() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut con = s.conn();
    for bad in ["abc", "NaN", "inf", "-Infinity", ""] {
        assert_eq!(
            cmd_err(
                &mut con,
                &["FLAG.TRACK", "purchase", r#"{"key":"u1"}"#, "VALUE", bad]
            ),
            "ERR VALUE must be a finite number",
            "VALUE {bad:?}"
        );
    }
    assert!(cmd_err(&mut con, &["FLAG.TRACK", "purchase", "{not json"]).starts_with("ERR "));
    assert_eq!(
        cmd_err(&mut con, &["FLAG.TRACK", "purchase", r#"{"plan":"pro"}"#]),
        "ERR the context has no \"key\" to track"
    );
    assert_eq!(
        int(
            &mut con,
            &["FLAG.TRACK", "purchase", r#"{"key":"u1"}"#, "VALUE", "9.5"]
        ),
        0
    );
}

/// Deterministic conversions: treatment converts 14 % of the time, control 10 %.
fn converts(user: usize, treatment: bool) -> bool {
    let x = (user as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    (x % 100) < if treatment { 14 } else { 10 }
}

/// Exposes `users` through `eval_on` and tracks through `track_on` (round robin).
fn run_traffic(eval_on: &mut [redis::Connection], users: usize) -> (usize, usize) {
    let mut arms = (0, 0);
    for u in 0..users {
        let user = format!("user-{u}");
        let n = eval_on.len();
        let treated = eval(&mut eval_on[u % n], &user);
        if treated {
            arms.1 += 1;
        } else {
            arms.0 += 1;
        }
        // Pre-period revenue tracked before exposure would be the covariate;
        // here events land on another node than the exposure.
        let other = &mut eval_on[(u + 1) % n];
        if converts(u, treated) {
            track(other, "purchase", &user, 20.0 + (u % 7) as f64);
        }
    }
    arms
}

#[test]
fn results_find_a_clear_winner_on_one_node() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut con = s.conn();
    int(&mut con, &["FLAG.SET", "prod:checkout", ROLLOUT]);
    int(&mut con, &["EXPERIMENT.SET", "prod:exp", &experiment()]);
    // Before START nothing is recorded.
    eval(&mut con, "early");
    int(&mut con, &["EXPERIMENT.START", "prod:exp"]);
    // A targeted user is not part of the experiment.
    assert!(eval(&mut con, "qa"));
    let mut cons = vec![con];
    let (control, treatment) = run_traffic(&mut cons, 4000);
    // Evaluating again does not expose twice.
    eval(&mut cons[0], "user-1");
    let r = results(&mut cons[0], "prod:exp");
    assert_eq!(r["units"], 4000, "{r}");
    assert_eq!(r["variations"][0]["units"], control);
    assert_eq!(r["variations"][1]["units"], treatment);
    assert_eq!(r["srm"], false, "{r}");
    let purchase = &r["metrics"][0];
    assert_eq!(purchase["name"], "purchase");
    let cmp = &purchase["comparisons"][0];
    assert_eq!(cmp["variation"], "on");
    assert!(cmp["p_value"].as_f64().unwrap() < 0.05, "{cmp}");
    assert_eq!(cmp["significant"], true);
    assert!(cmp["ci_low"].as_f64().unwrap() > 0.0);
    assert!(r["metrics"][1]["comparisons"][0]["cuped"]["variance_reduction"].is_number());
    assert_eq!(r["guardrails"][0]["metric"], "errors");
    assert_eq!(r["nodes"]["answered"], json!([1]));

    // Deleting the experiment drops its units: a new one starts empty.
    int(&mut cons[0], &["EXPERIMENT.DEL", "prod:exp"]);
    int(&mut cons[0], &["EXPERIMENT.SET", "prod:exp", &experiment()]);
    let r = results(&mut cons[0], "prod:exp");
    assert_eq!(r["units"], 0, "{r}");
}

#[test]
fn results_over_three_nodes_match_one_node_and_name_a_missing_node() {
    let _g = serial();
    // One node: the reference.
    let single = Server::start(&[]);
    let mut one = single.conn();
    int(&mut one, &["FLAG.SET", "prod:checkout", ROLLOUT]);
    int(&mut one, &["EXPERIMENT.SET", "prod:exp", &experiment()]);
    int(&mut one, &["EXPERIMENT.START", "prod:exp"]);
    let mut only = vec![one];
    run_traffic(&mut only, 1500);
    let reference = results(&mut only[0], "prod:exp");

    let first = common::cluster_node(1, None, &[]);
    let second = common::cluster_node(2, Some(first.port), &[]);
    let mut third = common::cluster_node(3, Some(first.port), &[]);
    let mut con = first.conn();
    start_checkout_experiment(&mut con);
    let mut cons = vec![con, second.conn(), third.conn()];
    for c in cons.iter_mut().skip(1) {
        eventually(Duration::from_secs(20), || {
            let v: Option<String> = redis::cmd("EXPERIMENT.GET")
                .arg("prod:exp")
                .query(c)
                .unwrap();
            v.filter(|d| d.contains("running")).map(|_| ())
        });
    }
    run_traffic(&mut cons, 1500);
    let spread = results(&mut cons[1], "prod:exp");
    assert_eq!(spread["nodes"]["answered"], json!([1, 2, 3]), "{spread}");
    for field in [
        "units",
        "variations",
        "srm_p_value",
        "metrics",
        "guardrails",
    ] {
        assert_eq!(
            spread[field], reference[field],
            "{field} differs: {spread} vs {reference}"
        );
    }

    third.kill9();
    let partial = results(&mut cons[0], "prod:exp");
    assert_eq!(partial["nodes"]["missing"], json!([3]), "{partial}");
    assert!(partial["units"].as_u64().unwrap() < 1500);
}

/// The units file once it holds `count` units in all (a save ran after
/// the exposures); it never names a unit key, only hashes.
fn wait_saved(s: &Server, count: usize) {
    let file = s.data_dir.join("analytics").join("units.json");
    eventually(Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let saved: Value = serde_json::from_str(&text).ok()?;
        let units: usize = saved["experiments"]
            .as_object()?
            .values()
            .map(|v| v.as_array().map_or(0, Vec::len))
            .sum();
        assert!(!text.contains("user-"), "unit keys saved: {text}");
        (units == count).then_some(())
    });
}

#[test]
fn units_survive_kill_9_and_go_with_their_experiment_or_their_retention() {
    let _g = serial();
    let mut s = Server::start(&[]);
    let mut con = s.conn();
    start_checkout_experiment(&mut con);
    let mut cons = vec![con];
    run_traffic(&mut cons, 300);
    let before = results(&mut cons[0], "prod:exp");
    assert_eq!(before["units"], 300, "{before}");
    wait_saved(&s, 300);
    s.restart();
    let mut con = s.conn();
    let after = results(&mut con, "prod:exp");
    for field in ["units", "variations", "metrics", "guardrails"] {
        assert_eq!(after[field], before[field], "{field}: {after} vs {before}");
    }
    // Still deduplicated after the restart: no unit is exposed twice.
    eval(&mut con, "user-1");
    assert_eq!(results(&mut con, "prod:exp")["units"], 300);

    // Deleting the experiment removes its units from disk too.
    int(&mut con, &["EXPERIMENT.DEL", "prod:exp"]);
    wait_saved(&s, 0);
    drop(s);

    // Units older than --events-retention are dropped.
    let s = Server::start(&["--events-retention", "3s"]);
    let mut con = s.conn();
    start_checkout_experiment(&mut con);
    for i in 0..10 {
        eval(&mut con, &format!("user-{i}"));
    }
    assert_eq!(results(&mut con, "prod:exp")["units"], 10);
    eventually(Duration::from_secs(40), || {
        (results(&mut con, "prod:exp")["units"] == 0).then_some(())
    });
}

/// A units.json from before units were hashed (unit keys, no version) is
/// read, its keys hashed: the units count and stay deduplicated, and the
/// next save names no unit key.
#[test]
fn units_saved_with_unit_keys_load_hashed() {
    let _g = serial();
    let mut s = Server::start(&[]);
    let mut con = s.conn();
    start_checkout_experiment(&mut con);
    eval(&mut con, "probe");
    wait_saved(&s, 1);
    let file = s.data_dir.join("analytics").join("units.json");
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let units_key = saved["experiments"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    s.kill9();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let old: Vec<Value> = (0..10)
        .map(|i| {
            let v = if i % 2 == 0 { "off" } else { "on" };
            json!([format!("user-{i}"), {"variation": v, "exposed_at": now - 1_000 + i, "post": [], "pre": []}])
        })
        .collect();
    std::fs::write(&file, json!({ units_key: old }).to_string()).unwrap();
    s.restart();
    let mut con = s.conn();
    let r = results(&mut con, "prod:exp");
    assert_eq!(r["units"], 10, "{r}");
    // The loaded units are the same units as the keys evaluated now.
    for i in 0..10 {
        eval(&mut con, &format!("user-{i}"));
    }
    assert_eq!(results(&mut con, "prod:exp")["units"], 10);
    eval(&mut con, "user-10");
    assert_eq!(results(&mut con, "prod:exp")["units"], 11);
    wait_saved(&s, 11);
}

#[test]
fn experiment_writes_are_audited_and_streamed_with_their_actor() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut admin = s.conn();
    let _: String = redis::cmd("ACL")
        .arg(&["SETUSER", "alice", "on", ">secret-pw", "~*", "&*", "+@all"])
        .query(&mut admin)
        .unwrap();
    let mut con = s.conn();
    let _: String = redis::cmd("AUTH")
        .arg("alice")
        .arg("secret-pw")
        .query(&mut con)
        .unwrap();
    start_checkout_experiment(&mut con);
    int(&mut con, &["EXPERIMENT.STOP", "prod:exp"]);
    int(&mut con, &["EXPERIMENT.DEL", "prod:exp"]);

    let history: Vec<std::collections::HashMap<String, redis::Value>> =
        redis::cmd("EXPERIMENT.HISTORY")
            .arg("prod:exp")
            .query(&mut con)
            .unwrap();
    let text = |e: &std::collections::HashMap<String, redis::Value>, f: &str| -> Option<String> {
        redis::from_redis_value(e[f].clone()).ok()
    };
    let events: Vec<String> = history.iter().filter_map(|e| text(e, "event")).collect();
    assert_eq!(events, ["delete", "stop", "start", "set"]);
    assert!(history
        .iter()
        .all(|e| text(e, "actor").as_deref() == Some("alice")));
    let set_after = text(&history[3], "after").unwrap();
    assert!(set_after.contains("\"control\":\"off\""), "{set_after}");
    assert_eq!(text(&history[0], "after"), None);
    let versions: Vec<i64> = history
        .iter()
        .map(|e| redis::from_redis_value(e["version"].clone()).unwrap())
        .collect();
    assert_eq!(versions, [3, 3, 2, 1]);
    let limited = cmd_value(&mut con, &["EXPERIMENT.HISTORY", "prod:exp", "COUNT", "1"]).unwrap();
    assert!(format!("{limited:?}").contains("delete"));

    // The change stream carries them too, as kind experiment.
    let stream: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("flagstaff:changes")
        .arg("-")
        .arg("+")
        .query(&mut con)
        .unwrap();
    let experiment_events: Vec<(String, String)> = stream
        .iter()
        .map(|(_, fields)| {
            fields
                .iter()
                .cloned()
                .collect::<std::collections::HashMap<_, _>>()
        })
        .filter(|f| f["kind"] == "experiment")
        .map(|f| {
            assert_eq!(f["key"], "prod:exp");
            (f["event"].clone(), f["actor"].clone())
        })
        .collect();
    let want: Vec<(String, String)> = ["set", "start", "stop", "delete"]
        .iter()
        .map(|e| (e.to_string(), "alice".to_string()))
        .collect();
    assert_eq!(experiment_events, want);
}
