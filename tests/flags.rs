//! FLAG.* and SEGMENT.* through the real binary, in RESP2 and RESP3.

mod common;

use common::{cmd_err, cmd_str, cmd_value, resp, rollout_flags_dump, serial, Server};
use redis::Value;
use serde_json::json;

const CHECKOUT: &str = r#"{
  "description": "New checkout flow",
  "tags": ["payments"],
  "on": true,
  "variations": [{"name": "off", "value": false}, {"name": "on", "value": true}],
  "off_variation": "off",
  "prerequisites": [{"flag": "prod:payments-v2", "variation": "on"}],
  "targets": [{"variation": "on", "keys": ["user-1", "user-2"]}],
  "rules": [
    {"id": "eu-pro",
     "clauses": [{"attribute": "country", "op": "in", "values": ["DE", "FR"]},
                 {"attribute": "plan", "op": "eq", "values": ["pro"], "negate": false}],
     "serve": {"variation": "on"}},
    {"id": "beta", "clauses": [{"op": "in_segment", "values": ["prod:beta-testers"]}],
     "serve": {"rollout": [{"variation": "on", "weight": 5000}, {"variation": "off", "weight": 5000}],
               "bucket_by": "key"}}
  ],
  "fallthrough": {"variation": "off"},
  "salt": "new-checkout"
}"#;

const PAYMENTS: &str = r#"{"on":true,"variations":[{"name":"off","value":false},{"name":"on","value":true}],"off_variation":"off","fallthrough":{"variation":"on"}}"#;
const BETA: &str = r#"{"description":"beta testers","included":["tester-1"],"rules":[{"clauses":[{"attribute":"email","op":"ends_with","values":["@acme.com"]}]}]}"#;

fn setup(s: &Server) -> redis::Connection {
    let mut con = s.conn();
    for (command, key, definition) in [
        ("FLAG.SET", "prod:payments-v2", PAYMENTS),
        ("SEGMENT.SET", "prod:beta-testers", BETA),
        ("FLAG.SET", "prod:new-checkout", CHECKOUT),
    ] {
        let v: i64 = redis::cmd(command)
            .arg(key)
            .arg(definition)
            .query(&mut con)
            .unwrap();
        assert_eq!(v, 1, "{command} {key}");
    }
    con
}

/// Revision of the first write `setup` made; later ones follow one by one.
fn base_revision(con: &mut redis::Connection) -> i64 {
    let doc: String = redis::cmd("FLAG.GET")
        .arg("prod:payments-v2")
        .query(con)
        .unwrap();
    serde_json::from_str::<serde_json::Value>(&doc).unwrap()["revision"]
        .as_i64()
        .unwrap()
}

fn eval(con: &mut redis::Connection, key: &str, ctx: &str) -> Option<String> {
    redis::cmd("FLAG.EVAL")
        .arg(key)
        .arg(ctx)
        .query(con)
        .unwrap()
}

#[test]
fn the_design_example_evaluates_by_targets_rules_and_prerequisites() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut con = setup(&s);
    let base = base_revision(&mut con);
    assert_eq!(
        eval(&mut con, "prod:new-checkout", r#"{"key":"user-1"}"#).as_deref(),
        Some("true")
    );
    assert_eq!(
        eval(
            &mut con,
            "prod:new-checkout",
            r#"{"key":"u9","country":"DE","plan":"pro"}"#
        )
        .as_deref(),
        Some("true")
    );
    assert_eq!(
        eval(
            &mut con,
            "prod:new-checkout",
            r#"{"key":"u9","country":"US","plan":"pro"}"#
        )
        .as_deref(),
        Some("false")
    );
    assert_eq!(eval(&mut con, "prod:nope", "{}"), None);
    // Kill switch on the prerequisite turns the dependent off.
    let _: i64 = redis::cmd("FLAG.TOGGLE")
        .arg("prod:payments-v2")
        .arg("OFF")
        .arg("REASON")
        .arg("incident")
        .query(&mut con)
        .unwrap();
    assert_eq!(
        eval(&mut con, "prod:new-checkout", r#"{"key":"user-1"}"#).as_deref(),
        Some("false")
    );
    let detail: Vec<Value> = redis::cmd("FLAG.DETAIL")
        .arg("prod:new-checkout")
        .arg(r#"{"key":"user-1"}"#)
        .query(&mut con)
        .unwrap();
    let text: Vec<String> = detail
        .iter()
        .map(|v| match v {
            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            Value::Int(n) => n.to_string(),
            Value::Nil => "nil".into(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        text,
        [
            "value",
            "false",
            "variation",
            "off",
            "reason",
            "PREREQUISITE_FAILED",
            "rule_id",
            "nil",
            "rule_index",
            "nil",
            "prerequisite",
            "prod:payments-v2",
            "error",
            "nil",
            "version",
            "1",
            "revision",
            &(base + 3).to_string(),
            "stale",
            "0",
            "openfeature_reason",
            "DISABLED"
        ]
    );
}

#[test]
fn detail_explains_rules_and_missing_flags_in_resp3_maps() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut con = setup(&s);
    let base = base_revision(&mut con);
    let mut c3 = s.conn_proto(true);
    let detail = cmd_value(
        &mut c3,
        &[
            "FLAG.DETAIL",
            "prod:new-checkout",
            r#"{"key":"x","email":"x@acme.com"}"#,
        ],
    )
    .unwrap();
    let Value::Map(pairs) = detail else {
        panic!("RESP3 detail should be a map: {detail:?}")
    };
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| *k == Value::BulkString(name.into()))
            .unwrap()
            .1
            .clone()
    };
    assert_eq!(get("reason"), Value::BulkString(b"RULE_MATCH".to_vec()));
    assert_eq!(get("rule_id"), Value::BulkString(b"beta".to_vec()));
    assert_eq!(get("rule_index"), Value::Int(1));
    assert_eq!(get("stale"), Value::Boolean(false));
    assert_eq!(get("revision"), Value::Int(base + 2));
    assert_eq!(
        get("openfeature_reason"),
        Value::BulkString(b"SPLIT".to_vec()),
        "the beta rule serves a rollout"
    );
    let missing = cmd_value(&mut c3, &["FLAG.DETAIL", "prod:ghost"]).unwrap();
    let Value::Map(pairs) = missing else { panic!() };
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| *k == Value::BulkString(name.into()))
            .unwrap()
            .1
            .clone()
    };
    assert_eq!(get("reason"), Value::BulkString(b"ERROR".to_vec()));
    assert_eq!(get("error"), Value::BulkString(b"FLAG_NOT_FOUND".to_vec()));
    assert_eq!(get("value"), Value::Nil);
    let bad = cmd_value(&mut c3, &["FLAG.DETAIL", "prod:new-checkout", "[1,2]"]).unwrap();
    let Value::Map(pairs) = bad else { panic!() };
    assert!(pairs.contains(&(
        Value::BulkString(b"error".to_vec()),
        Value::BulkString(b"MALFORMED_CONTEXT".to_vec())
    )));
}

#[test]
fn get_returns_the_same_bytes_until_the_flag_changes_and_round_trips() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut con = setup(&s);
    let a: String = redis::cmd("FLAG.GET")
        .arg("prod:new-checkout")
        .query(&mut con)
        .unwrap();
    let b: String = redis::cmd("FLAG.GET")
        .arg("prod:new-checkout")
        .query(&mut con)
        .unwrap();
    assert_eq!(a, b);
    let doc: serde_json::Value = serde_json::from_str(&a).unwrap();
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["revision"], base_revision(&mut con) + 2);
    assert_eq!(doc["updated_by"], "default");
    assert_eq!(
        doc["allocations"]["beta"]["ranges"]["on"],
        json!([[0, 5000]])
    );
    // GET -> edit -> SET works: read-only fields are ignored.
    let mut edited = doc.clone();
    edited["rules"][1]["serve"]["rollout"] =
        json!([{"variation": "on", "weight": 6000}, {"variation": "off", "weight": 4000}]);
    let v: i64 = redis::cmd("FLAG.SET")
        .arg("prod:new-checkout")
        .arg(edited.to_string())
        .query(&mut con)
        .unwrap();
    assert_eq!(v, 2);
    let c: String = redis::cmd("FLAG.GET")
        .arg("prod:new-checkout")
        .query(&mut con)
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&c).unwrap();
    assert_eq!(doc["version"], 2);
    // Sticky: "off" gives up its 1000 highest buckets to "on"; users of "on" never move.
    assert_eq!(
        doc["allocations"]["beta"]["ranges"]["on"],
        json!([[0, 5000], [9000, 10000]])
    );
    assert_eq!(
        doc["allocations"]["beta"]["ranges"]["off"],
        json!([[5000, 9000]])
    );
    let none: Option<String> = redis::cmd("FLAG.GET")
        .arg("prod:absent")
        .query(&mut con)
        .unwrap();
    assert_eq!(none, None);
}

#[test]
fn invalid_definitions_are_refused_with_a_path_and_nothing_changes() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut con = setup(&s);
    let before: String = redis::cmd("FLAG.GET")
        .arg("prod:new-checkout")
        .query(&mut con)
        .unwrap();
    let mut bad: serde_json::Value = serde_json::from_str(CHECKOUT).unwrap();
    bad["rules"][1]["serve"]["rollout"][0]["weight"] = json!(4000);
    assert_eq!(
        cmd_err(
            &mut con,
            &["FLAG.SET", "prod:new-checkout", &bad.to_string()]
        ),
        "INVALID rules[1].serve.rollout: weights sum to 9000, need 10000"
    );
    assert!(
        cmd_err(&mut con, &["FLAG.SET", "prod:new-checkout", "{not json"]).starts_with("INVALID ")
    );
    let mut unknown_segment: serde_json::Value = serde_json::from_str(CHECKOUT).unwrap();
    unknown_segment["rules"][1]["clauses"][0]["values"] = json!(["prod:ghosts"]);
    assert_eq!(
        cmd_err(
            &mut con,
            &[
                "FLAG.SET",
                "prod:new-checkout",
                &unknown_segment.to_string()
            ]
        ),
        "INVALID rules[1].clauses[0].values[0]: unknown segment \"prod:ghosts\""
    );
    assert!(cmd_err(&mut con, &["FLAG.SET", "bad key!", PAYMENTS]).starts_with("ERR invalid key"));
    assert_eq!(
        cmd_err(&mut con, &["FLAG.SET", "k", PAYMENTS, "BOGUS", "1"]),
        "ERR syntax error"
    );
    let after: String = redis::cmd("FLAG.GET")
        .arg("prod:new-checkout")
        .query(&mut con)
        .unwrap();
    assert_eq!(before, after);
    assert_eq!(cmd_str(&mut con, &["PING"]).unwrap(), "PONG");
}

#[test]
fn ifversion_conflicts_and_references_block_deletes() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut con = setup(&s);
    assert_eq!(
        cmd_err(
            &mut con,
            &["FLAG.SET", "prod:payments-v2", PAYMENTS, "IFVERSION", "7"]
        ),
        "CONFLICT flag prod:payments-v2 is at version 1, not 7"
    );
    let v: i64 = redis::cmd("FLAG.SET")
        .arg("prod:payments-v2")
        .arg(PAYMENTS)
        .arg("IFVERSION")
        .arg(1)
        .query(&mut con)
        .unwrap();
    assert_eq!(v, 2);
    assert!(cmd_err(
        &mut con,
        &["FLAG.SET", "prod:fresh", PAYMENTS, "IFVERSION", "1"]
    )
    .starts_with("CONFLICT"));
    let v: i64 = redis::cmd("FLAG.SET")
        .arg("prod:fresh")
        .arg(PAYMENTS)
        .arg("IFVERSION")
        .arg(0)
        .query(&mut con)
        .unwrap();
    assert_eq!(v, 1);
    assert_eq!(
        cmd_err(&mut con, &["FLAG.DEL", "prod:payments-v2"]),
        "ERR prod:payments-v2 is referenced by prod:new-checkout"
    );
    assert_eq!(
        cmd_err(&mut con, &["SEGMENT.DEL", "prod:beta-testers"]),
        "ERR prod:beta-testers is referenced by prod:new-checkout"
    );
    let n: i64 = redis::cmd("FLAG.DEL")
        .arg("prod:new-checkout")
        .arg("REASON")
        .arg("cleanup")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 1);
    let n: i64 = redis::cmd("FLAG.DEL")
        .arg("prod:new-checkout")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 0);
    let n: i64 = redis::cmd("SEGMENT.DEL")
        .arg("prod:beta-testers")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 1);
    assert!(cmd_err(&mut con, &["FLAG.TOGGLE", "prod:ghost", "ON"]).contains("no such flag"));
    assert!(cmd_err(&mut con, &["FLAG.TOGGLE", "prod:fresh", "MAYBE"]).contains("ON or OFF"));
    // A re-created flag continues its version count.
    let n: i64 = redis::cmd("FLAG.DEL")
        .arg("prod:fresh")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 1);
    let v: i64 = redis::cmd("FLAG.SET")
        .arg("prod:fresh")
        .arg(PAYMENTS)
        .query(&mut con)
        .unwrap();
    assert_eq!(v, 2);
}

#[test]
fn list_scan_meval_and_evalall_cover_environments() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut con = s.conn();
    for env in ["prod", "staging"] {
        for i in 0..30 {
            let _: i64 = redis::cmd("FLAG.SET")
                .arg(format!("{env}:f{i:02}"))
                .arg(PAYMENTS)
                .query(&mut con)
                .unwrap();
        }
    }
    let prod: Vec<String> = redis::cmd("FLAG.LIST")
        .arg("MATCH")
        .arg("prod:*")
        .query(&mut con)
        .unwrap();
    assert_eq!(prod.len(), 30);
    assert_eq!(prod[0], "prod:f00");
    let all: Vec<String> = redis::cmd("FLAG.LIST").query(&mut con).unwrap();
    assert_eq!(all.len(), 60);
    let mut seen = std::collections::BTreeSet::new();
    let mut cursor = "0".to_string();
    loop {
        let (next, keys): (String, Vec<String>) = redis::cmd("FLAG.SCAN")
            .arg(&cursor)
            .arg("MATCH")
            .arg("staging:*")
            .arg("COUNT")
            .arg(7)
            .query(&mut con)
            .unwrap();
        seen.extend(keys);
        if next == "0" {
            break;
        }
        cursor = next;
    }
    assert_eq!(seen.len(), 30);
    assert!(seen.iter().all(|k| k.starts_with("staging:")));
    let values: Vec<Option<String>> = redis::cmd("FLAG.MEVAL")
        .arg(r#"{"key":"u"}"#)
        .arg("prod:f01")
        .arg("prod:none")
        .arg("staging:f02")
        .query(&mut con)
        .unwrap();
    assert_eq!(
        values,
        vec![Some("true".to_string()), None, Some("true".to_string())]
    );
    let map: Vec<String> = redis::cmd("FLAG.EVALALL")
        .arg(r#"{"key":"u"}"#)
        .arg("MATCH")
        .arg("staging:f0*")
        .query(&mut con)
        .unwrap();
    assert_eq!(map.len(), 20);
    assert_eq!(map[0], "staging:f00");
    let mut c3 = s.conn_proto(true);
    let Value::Map(pairs) = cmd_value(&mut c3, &["FLAG.EVALALL", "{}", "MATCH", "prod:*"]).unwrap()
    else {
        panic!("map")
    };
    assert_eq!(pairs.len(), 30);
    assert!(cmd_err(&mut con, &["FLAG.MEVAL", "not json", "prod:f01"])
        .starts_with("ERR malformed context"));
    assert!(
        cmd_err(&mut con, &["FLAG.EVAL", "prod:f01", "[1]"]).starts_with("ERR malformed context")
    );
    assert_eq!(
        cmd_err(&mut con, &["FLAG.EVAL"]),
        "ERR wrong number of arguments for 'flag.eval' command"
    );
    let n: i64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(n, 60);
}

#[test]
fn segments_set_get_list_and_relink_dependent_flags() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut con = setup(&s);
    let seg: String = redis::cmd("SEGMENT.GET")
        .arg("prod:beta-testers")
        .query(&mut con)
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&seg).unwrap();
    assert_eq!(doc["included"], json!(["tester-1"]));
    assert_eq!(doc["version"], 1);
    let list: Vec<String> = redis::cmd("SEGMENT.LIST").query(&mut con).unwrap();
    assert_eq!(list, vec!["prod:beta-testers"]);
    // Find a key whose bucket serves "on" in the beta rollout, then move it out of the segment.
    let ctx = |k: &str| format!(r#"{{"key":"{k}"}}"#);
    let insider = (0..200)
        .map(|i| format!("tester-{i}"))
        .find(|k| {
            let v: i64 = redis::cmd("SEGMENT.SET")
                .arg("prod:beta-testers")
                .arg(format!(r#"{{"included":["{k}"]}}"#))
                .query(&mut con)
                .unwrap();
            assert!(v > 1);
            eval(&mut con, "prod:new-checkout", &ctx(k)).as_deref() == Some("true")
        })
        .expect("some tester lands in the on half");
    let _: i64 = redis::cmd("SEGMENT.SET")
        .arg("prod:beta-testers")
        .arg(r#"{"excluded":[]}"#)
        .query(&mut con)
        .unwrap();
    assert_eq!(
        eval(&mut con, "prod:new-checkout", &ctx(&insider)).as_deref(),
        Some("false")
    );
    assert!(cmd_err(
        &mut con,
        &[
            "SEGMENT.SET",
            "prod:s",
            r#"{"rules":[{"clauses":[{"op":"in_segment","values":["x"]}]}]}"#
        ]
    )
    .starts_with("INVALID rules[0].clauses[0].op"));
    assert!(
        cmd_err(&mut con, &["SEGMENT.SET", "prod:s", r#"{"include":[]}"#])
            .contains("unknown field `include`")
    );
}

#[test]
fn flag_commands_answer_in_raw_resp2_bytes() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut raw = s.raw();
    raw.roundtrip(&resp(&["FLAG.SET", "a", PAYMENTS]), b":1\r\n");
    raw.roundtrip(&resp(&["FLAG.EVAL", "a"]), b"$4\r\ntrue\r\n");
    raw.roundtrip(&resp(&["FLAG.EVAL", "zzz"]), b"$-1\r\n");
    raw.roundtrip(
        &resp(&["FLAG.MEVAL", "{}", "a", "zzz"]),
        b"*2\r\n$4\r\ntrue\r\n$-1\r\n",
    );
    raw.send(&resp(&["HELLO", "3"]));
    raw.read_until(b"*0\r\n");
    raw.roundtrip(&resp(&["FLAG.EVAL", "zzz"]), b"_\r\n");
    raw.roundtrip(&resp(&["FLAG.DEL", "a"]), b":1\r\n");
}

#[test]
fn remote_config_values_are_served_as_json_text() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut con = s.conn();
    let def = json!({"on": true,
        "variations": [{"name": "small", "value": {"limit": 10, "mode": "a"}}, {"name": "big", "value": {"limit": 1000, "mode": "b"}}],
        "off_variation": "small",
        "rules": [{"id": "paid", "clauses": [{"attribute": "seats", "op": "gte", "values": [50]}], "serve": {"variation": "big"}}],
        "fallthrough": {"variation": "small"}});
    let _: i64 = redis::cmd("FLAG.SET")
        .arg("prod:limits")
        .arg(def.to_string())
        .query(&mut con)
        .unwrap();
    let v = eval(&mut con, "prod:limits", r#"{"key":"org-1","seats":80}"#).unwrap();
    assert_eq!(v, r#"{"limit":1000,"mode":"b"}"#);
}

/// FLAG.IMPORT parses each definition from its own slice of the document
/// (no JSON tree of the whole dump) and GET renders on demand: a dump
/// round-trips byte for byte, pretty-printed dumps import, and what the
/// tree parse refused is still refused with the same paths.
#[test]
fn import_reads_definitions_in_place_and_get_renders_the_same_bytes() {
    let _g = serial();
    let mut s = Server::start(&[]);
    let mut con = setup(&s);
    let get =
        |con: &mut redis::Connection| cmd_str(con, &["FLAG.GET", "prod:new-checkout"]).unwrap();
    let before = get(&mut con);
    let dump = cmd_str(&mut con, &["FLAG.DUMP"]).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&dump).unwrap();
    // Pretty-printed, with the read-only fields and allocations GET adds.
    let pretty = serde_json::to_string_pretty(&doc).unwrap();
    let n: i64 = redis::cmd("FLAG.IMPORT")
        .arg(&pretty)
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 3);
    let after: serde_json::Value = serde_json::from_str(&get(&mut con)).unwrap();
    let old: serde_json::Value = serde_json::from_str(&before).unwrap();
    assert_eq!(
        after["allocations"], old["allocations"],
        "import keeps sticky allocations"
    );
    assert_eq!(after["rules"], old["rules"]);
    s.restart();
    let mut con = s.conn();
    let again = get(&mut con);
    assert_eq!(
        again,
        get(&mut con),
        "GET renders the same bytes every time"
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&again).unwrap(),
        after
    );
    for (doc, expected) in [
        (
            r#"{"flags":{"prod:x":{"allocations":null}}}"#,
            "flags[\"prod:x\"].allocations",
        ),
        (r#"{"flags":[]}"#, "flags: must be an object"),
        (r#"{"flags":{},"nope":1}"#, "nope: unknown field"),
        (r#"[1]"#, "a dump is a JSON object"),
        (r#"{"flags":{"#, "EOF"),
        (r#"{"flags":{"prod:x":{"on":true}}}"#, "flags[\"prod:x\"]"),
    ] {
        let err = cmd_err(&mut con, &["FLAG.IMPORT", doc]);
        assert!(err.contains(expected), "{doc}: {err}");
    }
}

/// Heap the server holds (INFO memory `used_memory`, counted exactly).
fn used_memory(con: &mut redis::Connection) -> i64 {
    let info: String = redis::cmd("INFO").arg("memory").query(con).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// Issue 13: a stored flag is its compiled form and its definition as text,
/// not also a definition tree (with spare capacity in every list). 5,000
/// flags of `benches/restart.sh`'s shape, restarted: ~3.4 KB of heap each
/// with sled's cache of the records it read, ~5.0 KB with the tree.
#[test]
fn a_restarted_server_holds_a_flag_in_under_4_kb_of_heap() {
    const FLAGS: i64 = 5_000;
    let _g = serial();
    let mut s = Server::start(&[]);
    let mut con = s.conn();
    con.set_read_timeout(Some(std::time::Duration::from_secs(120)))
        .unwrap();
    let empty = used_memory(&mut con);
    let dump = rollout_flags_dump(FLAGS as usize);
    let n: i64 = redis::cmd("FLAG.IMPORT")
        .arg(&dump)
        .query(&mut con)
        .unwrap();
    assert_eq!(n, FLAGS);
    let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN").query(&mut con);
    s.wait_exit(std::time::Duration::from_secs(60));
    s.restart();
    let mut con = s.conn();
    assert_eq!(
        cmd_str(
            &mut con,
            &["FLAG.EVAL", "prod:flag-004999", r#"{"key":"u1"}"#]
        )
        .unwrap(),
        "false"
    );
    let per_flag = (used_memory(&mut con) - empty) / FLAGS;
    assert!(
        per_flag < 4096,
        "{per_flag} B of heap per flag after a restart"
    );
}

#[test]
fn flag_eval_keeps_what_segments_and_prerequisites_read_and_refuses_bad_json_as_before() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut con = s.conn();
    let bool_flag = |rules: serde_json::Value, prerequisites: serde_json::Value| {
        json!({"on": true, "variations": [{"name": "off", "value": false}, {"name": "on", "value": true}],
               "off_variation": "off", "prerequisites": prerequisites, "rules": rules,
               "fallthrough": {"variation": "off"}})
        .to_string()
    };
    let on_if = |clause: serde_json::Value| json!([{"id": "r", "clauses": [clause], "serve": {"variation": "on"}}]);
    let set = |con: &mut redis::Connection, cmd: &str, key: &str, def: String| {
        let _: i64 = redis::cmd(cmd).arg(key).arg(def).query(con).unwrap();
    };
    set(
        &mut con,
        "SEGMENT.SET",
        "prod:s",
        json!({"included": ["x"]}).to_string(),
    );
    set(
        &mut con,
        "FLAG.SET",
        "prod:seg",
        bool_flag(
            on_if(json!({"op": "in_segment", "values": ["prod:s"]})),
            json!([]),
        ),
    );
    set(
        &mut con,
        "FLAG.SET",
        "prod:parent",
        bool_flag(
            on_if(json!({"attribute": "beta", "op": "eq", "values": [true]})),
            json!([]),
        ),
    );
    let mut child: serde_json::Value = serde_json::from_str(&bool_flag(
        json!([]),
        json!([{"flag": "prod:parent", "variation": "on"}]),
    ))
    .unwrap();
    child["fallthrough"] = json!({"variation": "on"});
    set(&mut con, "FLAG.SET", "prod:child", child.to_string());
    set(
        &mut con,
        "FLAG.SET",
        "prod:country",
        bool_flag(
            on_if(json!({"attribute": "country", "op": "in", "values": ["DE"]})),
            json!([]),
        ),
    );
    let eval = |con: &mut redis::Connection, key: &str, ctx: &str| -> String {
        cmd_str(con, &["FLAG.EVAL", key, ctx]).unwrap()
    };

    // The segment's rules read attributes the flag itself never names, and
    // the segment changes without the flag changing.
    assert_eq!(
        eval(&mut con, "prod:seg", r#"{"key":"y","plan":"pro"}"#),
        "false"
    );
    set(
        &mut con,
        "SEGMENT.SET",
        "prod:s",
        json!({"rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}]}]})
            .to_string(),
    );
    assert_eq!(
        eval(&mut con, "prod:seg", r#"{"key":"y","plan":"pro"}"#),
        "true"
    );
    assert_eq!(
        eval(&mut con, "prod:seg", r#"{"plan":"free","key":"y"}"#),
        "false"
    );
    assert_eq!(
        eval(&mut con, "prod:child", r#"{"key":"y","beta":true}"#),
        "true"
    );
    assert_eq!(
        eval(&mut con, "prod:child", r#"{"key":"y","beta":false}"#),
        "false"
    );
    assert_eq!(
        eval(
            &mut con,
            "prod:country",
            r#"{"a":{"b":[1,2,{}]},"country":"DE","z":"\u00e9"}"#
        ),
        "true"
    );

    // Bad JSON in attributes the flag does not read is refused with
    // serde_json's words, whether the flag exists or not.
    for (bad, why) in [
        (
            r#"{"country":"DE","other":[1,]}"#,
            "trailing comma at line 1 column 28",
        ),
        (
            r#"{"other":{"x":01},"country":"DE"}"#,
            "invalid number at line 1 column 16",
        ),
        (
            r#"{"country":"DE","other":"#,
            "EOF while parsing a value at line 1 column 24",
        ),
        (
            "{\"other\":\"a\u{1}\",\"country\":\"DE\"}",
            "control character (\\u0000-\\u001F) found while parsing a string at line 1 column 12",
        ),
        (
            r#"{"country":"DE"} {}"#,
            "trailing characters at line 1 column 18",
        ),
        (r#"{"other":tru}"#, "expected ident at line 1 column 13"),
    ] {
        for key in ["prod:country", "prod:missing"] {
            assert_eq!(
                cmd_err(&mut con, &["FLAG.EVAL", key, bad]),
                format!("ERR malformed context: {why}"),
                "{key} {bad}"
            );
        }
    }
}
