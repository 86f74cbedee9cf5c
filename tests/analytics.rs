//! Evaluation insight through the real binary: FLAG.STATS and FLAG.STALE.

mod common;

use std::time::Duration;

use common::{cmd_err, cmd_value, eventually, serial, Server};
use redis::Value;
use serde_json::{json, Value as Json};

const TWO_WAY: &str = r#"{"on":true,"variations":[{"name":"off","value":false},{"name":"on","value":true}],"off_variation":"off","targets":[{"variation":"on","keys":["vip"]}],"fallthrough":{"variation":"off"}}"#;

/// A reply as JSON: maps (RESP3) become objects, everything else the obvious.
fn to_json(v: &Value) -> Json {
    match v {
        Value::Nil => Json::Null,
        Value::Int(n) => json!(n),
        Value::BulkString(b) => json!(String::from_utf8_lossy(b)),
        Value::SimpleString(s) => json!(s),
        Value::Boolean(b) => json!(b),
        Value::Array(items) | Value::Set(items) => Json::Array(items.iter().map(to_json).collect()),
        Value::Map(pairs) => Json::Object(
            pairs
                .iter()
                .map(|(k, v)| {
                    (
                        to_json(k).as_str().unwrap_or_default().to_string(),
                        to_json(v),
                    )
                })
                .collect(),
        ),
        other => panic!("unexpected reply {other:?}"),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn stats(con: &mut redis::Connection, args: &[&str]) -> Json {
    let mut all = vec!["FLAG.STATS"];
    all.extend_from_slice(args);
    to_json(&cmd_value(con, &all).unwrap())
}

fn eval(con: &mut redis::Connection, key: &str, user: &str, times: usize) {
    for _ in 0..times {
        let _: Option<String> = redis::cmd("FLAG.EVAL")
            .arg(key)
            .arg(json!({ "key": user }).to_string())
            .query(con)
            .unwrap();
    }
}

fn set_flag(con: &mut redis::Connection, key: &str, def: &str) {
    let _: i64 = redis::cmd("FLAG.SET").arg(key).arg(def).query(con).unwrap();
}

#[test]
fn stats_count_evaluations_by_variation_and_reason_with_times() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut con = s.conn_proto(true);
    set_flag(&mut con, "prod:checkout", TWO_WAY);
    let before = now_ms();
    eval(&mut con, "prod:checkout", "vip", 3);
    eval(&mut con, "prod:checkout", "someone", 5);
    let _: Value = redis::cmd("FLAG.DETAIL")
        .arg("prod:checkout")
        .arg(r#"{"key":"vip"}"#)
        .query(&mut con)
        .unwrap();
    let after = now_ms();

    let st = stats(&mut con, &["prod:checkout"]);
    assert_eq!(st["evaluations"], 9, "{st}");
    assert_eq!(st["by_variation"], json!({"on": 4, "off": 5}));
    assert_eq!(
        st["by_reason"],
        json!({"TARGET_MATCH": 4, "FALLTHROUGH": 5})
    );
    let first = st["first_evaluated"].as_i64().unwrap();
    let last = st["last_evaluated"].as_i64().unwrap();
    assert!(
        before - 60_000 <= first && first <= last && last <= after + 60_000,
        "{st}"
    );
    assert_eq!(st["nodes"]["answered"], json!([1]));
    assert_eq!(st["nodes"]["missing"], json!([]));

    // LOCAL answers for this node only; the same numbers on a single node.
    let local = stats(&mut con, &["prod:checkout", "LOCAL"]);
    assert_eq!(local["evaluations"], 9);

    // RESP2: the same map as a flat array of field, value.
    let mut con2 = s.conn();
    let flat = cmd_value(&mut con2, &["FLAG.STATS", "prod:checkout"]).unwrap();
    let Value::Array(items) = flat else {
        panic!("RESP2 FLAG.STATS should be a flat array");
    };
    assert_eq!(items[0], Value::BulkString(b"evaluations".to_vec()));
    assert_eq!(items[1], Value::Int(9));
}

#[test]
fn stats_keep_counting_across_a_flag_update_and_a_restart() {
    let _g = serial();
    let mut s = Server::start(&[]);
    let mut con = s.conn_proto(true);
    set_flag(&mut con, "prod:checkout", TWO_WAY);
    eval(&mut con, "prod:checkout", "someone", 4);
    // A new version of the flag compiles fresh counters; counts carry on.
    set_flag(
        &mut con,
        "prod:checkout",
        &TWO_WAY.replace("\"on\":true", "\"on\":false"),
    );
    eval(&mut con, "prod:checkout", "someone", 2);
    let st = stats(&mut con, &["prod:checkout"]);
    assert_eq!(st["by_reason"], json!({"FALLTHROUGH": 4, "OFF": 2}), "{st}");
    drop(con);

    // A graceful stop saves the counts not yet rolled up; they come back.
    s.signal(libc::SIGTERM);
    assert!(
        s.wait_exit(Duration::from_secs(30)).is_some(),
        "server did not stop"
    );
    s.restart();
    let mut con = s.conn_proto(true);
    let st = stats(&mut con, &["prod:checkout"]);
    assert_eq!(st["evaluations"], 6, "{st}");
    assert_eq!(st["by_variation"], json!({"off": 6}));
    assert!(st["first_evaluated"].is_i64() && st["last_evaluated"].is_i64());
    // SINCE after every evaluation's hour leaves nothing.
    let later = (now_ms() + 2 * 3_600_000).to_string();
    let st = stats(&mut con, &["prod:checkout", "SINCE", &later]);
    assert_eq!(st["evaluations"], 0, "{st}");
    assert_eq!(st["last_evaluated"], Json::Null);
}

/// The buckets of a `series` as (start, evaluations, by_variation), checking
/// each bucket's total is the sum of its variations.
fn buckets(st: &Json) -> Vec<(i64, i64, Json)> {
    st["series"]
        .as_array()
        .unwrap_or_else(|| panic!("no series in {st}"))
        .iter()
        .map(|b| {
            let by = b["by_variation"].clone();
            let sum: i64 = by
                .as_object()
                .unwrap()
                .values()
                .map(|n| n.as_i64().unwrap())
                .sum();
            assert_eq!(b["evaluations"], sum, "bucket total {b}");
            (b["start"].as_i64().unwrap(), sum, by)
        })
        .collect()
}

#[test]
fn stats_series_has_every_bucket_and_adds_up_to_the_totals() {
    let _g = serial();
    // Hours rolled up earlier (as an earlier run of this node left them):
    // three and five hours ago, and one past the retention.
    let hour = 3_600_000;
    // The expected buckets are computed from this hour: start well clear of
    // an hour (and so a day) boundary so the test never straddles one.
    let into_hour = now_ms() % hour;
    if into_hour > hour - 90_000 {
        std::thread::sleep(Duration::from_millis((hour - into_hour + 1_000) as u64));
    }
    let this_hour = now_ms() - now_ms() % hour;
    let dir = common::temp_dir("series");
    std::fs::create_dir_all(dir.join("analytics")).unwrap();
    let line = |h: i64, off: u64, on: u64| {
        json!({"key": "prod:checkout", "hour": h, "last": h + 60_000,
            "by_variation": {"off": off, "on": on}, "by_reason": {"FALLTHROUGH": off + on}})
        .to_string()
    };
    std::fs::write(
        dir.join("analytics/evaluations.jsonl"),
        [
            line(this_hour - 40 * 24 * hour, 100, 100),
            line(this_hour - 5 * hour, 3, 1),
            line(this_hour - 3 * hour, 0, 2),
        ]
        .join("\n")
            + "\n",
    )
    .unwrap();
    let s = Server::start_in(dir, &[]);
    let mut con = s.conn_proto(true);
    set_flag(&mut con, "prod:checkout", TWO_WAY);
    eval(&mut con, "prod:checkout", "someone", 4);
    eval(&mut con, "prod:checkout", "vip", 1);

    // Hourly buckets from the first with data to now, empty hours included.
    let st = stats(&mut con, &["prod:checkout", "BUCKETS", "3600"]);
    assert_eq!(st["evaluations"], 11, "{st}");
    let series = buckets(&st);
    let starts: Vec<i64> = series.iter().map(|b| b.0).collect();
    assert_eq!(
        starts,
        (0..=5)
            .rev()
            .map(|i| this_hour - i * hour)
            .collect::<Vec<_>>(),
        "{st}"
    );
    let counts: Vec<i64> = series.iter().map(|b| b.1).collect();
    assert_eq!(counts, [4, 0, 2, 0, 0, 5], "{st}");
    assert_eq!(series[5].2, json!({"off": 4, "on": 1}));
    // Per variation, the buckets add up to the totals.
    for (variation, total) in st["by_variation"].as_object().unwrap() {
        let sum: i64 = series
            .iter()
            .map(|b| b.2[variation].as_i64().unwrap_or(0))
            .sum();
        assert_eq!(json!(sum), *total, "{variation} in {st}");
    }
    // Without BUCKETS there is no series (the old shape).
    assert!(stats(&mut con, &["prod:checkout"]).get("series").is_none());

    // Daily buckets aligned to UTC days; SINCE starts the series at its bucket.
    let st = stats(&mut con, &["prod:checkout", "BUCKETS", "86400"]);
    let sum: i64 = buckets(&st).iter().map(|b| b.1).sum();
    assert_eq!(sum, 11, "{st}");
    assert!(buckets(&st).iter().all(|b| b.0 % (24 * hour) == 0), "{st}");
    let since = (this_hour - 4 * hour).to_string();
    let st = stats(
        &mut con,
        &["prod:checkout", "SINCE", &since, "BUCKETS", "7200"],
    );
    assert_eq!(st["evaluations"], 7, "{st}");
    let series = buckets(&st);
    assert_eq!(series.iter().map(|b| b.1).sum::<i64>(), 7, "{st}");
    assert_eq!(
        series[0].0,
        (this_hour - 4 * hour) - (this_hour - 4 * hour) % (2 * hour)
    );
    // A flag with no evaluations: an empty series, not an error.
    set_flag(&mut con, "prod:quiet", TWO_WAY);
    let st = stats(&mut con, &["prod:quiet", "BUCKETS", "3600"]);
    assert_eq!(st["series"], json!([]), "{st}");
}

#[test]
fn stale_lists_unevaluated_flags_and_flags_serving_one_variation() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut con = s.conn_proto(true);
    set_flag(&mut con, "prod:never", TWO_WAY);
    set_flag(&mut con, "prod:single", TWO_WAY);
    set_flag(&mut con, "prod:mixed", TWO_WAY);
    set_flag(&mut con, "staging:never", TWO_WAY);
    eval(&mut con, "prod:single", "someone", 3);
    eval(&mut con, "prod:mixed", "someone", 1);
    eval(&mut con, "prod:mixed", "vip", 1);
    std::thread::sleep(Duration::from_millis(20));

    let stale =
        to_json(&cmd_value(&mut con, &["FLAG.STALE", "DAYS", "0", "MATCH", "prod:*"]).unwrap());
    assert_eq!(stale["prod:never"]["why"], "not_evaluated", "{stale}");
    assert_eq!(stale["prod:never"]["last_evaluated"], Json::Null);
    assert_eq!(stale["prod:single"]["why"], "single_variation", "{stale}");
    assert_eq!(stale["prod:single"]["variation"], "off");
    assert!(stale.get("prod:mixed").is_none(), "{stale}");
    assert!(
        stale.get("staging:never").is_none(),
        "MATCH filters: {stale}"
    );

    // With the default of 7 days, flags just created are not stale yet.
    let stale = to_json(&cmd_value(&mut con, &["FLAG.STALE"]).unwrap());
    assert_eq!(stale, json!({}), "{stale}");
}

#[test]
fn bad_stats_and_stale_arguments_get_clear_errors() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut con = s.conn();
    set_flag(&mut con, "prod:checkout", TWO_WAY);
    assert_eq!(
        cmd_err(&mut con, &["FLAG.STATS", "prod:nope"]),
        "ERR no such flag 'prod:nope'"
    );
    assert!(cmd_err(
        &mut con,
        &["FLAG.STATS", "prod:checkout", "SINCE", "yesterday"]
    )
    .contains("SINCE must be a Unix time in milliseconds"));
    assert!(cmd_err(&mut con, &["FLAG.STATS", "prod:checkout", "BOGUS"]).starts_with("ERR syntax"));
    for bad in ["60", "0", "-3600", "hourly", "31708800"] {
        assert_eq!(
            cmd_err(&mut con, &["FLAG.STATS", "prod:checkout", "BUCKETS", bad]),
            "ERR BUCKETS must be a whole number of hours in seconds (3600, 86400, ...) up to a year",
            "BUCKETS {bad}"
        );
    }
    assert!(cmd_err(&mut con, &["FLAG.STALE", "DAYS", "-1"])
        .contains("DAYS must be a non-negative integer"));
    // The connection is still fine.
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn stats_add_up_every_node_and_name_a_node_that_is_down() {
    let _g = serial();
    let first = common::cluster_node(1, None, &[]);
    let second = common::cluster_node(2, Some(first.port), &[]);
    let mut third = common::cluster_node(3, Some(first.port), &[]);
    let mut con1 = first.conn_proto(true);
    set_flag(&mut con1, "prod:checkout", TWO_WAY);
    let mut con2 = second.conn_proto(true);
    let mut con3 = third.conn_proto(true);
    for con in [&mut con2, &mut con3] {
        eventually(Duration::from_secs(20), || {
            let v: Option<String> = redis::cmd("FLAG.GET")
                .arg("prod:checkout")
                .query(con)
                .unwrap();
            v.map(|_| ())
        });
    }
    eval(&mut con1, "prod:checkout", "vip", 1);
    eval(&mut con2, "prod:checkout", "someone", 2);
    eval(&mut con3, "prod:checkout", "someone", 4);

    // Any node answers for the whole cluster; LOCAL for itself.
    let st = stats(&mut con2, &["prod:checkout"]);
    assert_eq!(st["evaluations"], 7, "{st}");
    assert_eq!(st["by_variation"], json!({"on": 1, "off": 6}));
    assert_eq!(st["nodes"]["answered"], json!([1, 2, 3]), "{st}");
    assert_eq!(st["nodes"]["missing"], json!([]));
    assert_eq!(
        stats(&mut con3, &["prod:checkout", "LOCAL"])["evaluations"],
        4
    );
    // The series is merged the same way: its buckets add up to the totals.
    let st = stats(&mut con2, &["prod:checkout", "BUCKETS", "3600"]);
    let series = st["series"].as_array().unwrap_or_else(|| panic!("{st}"));
    let merged: i64 = series
        .iter()
        .map(|b| b["evaluations"].as_i64().unwrap())
        .sum();
    assert_eq!(merged, 7, "{st}");
    let last = &series[series.len() - 1]["by_variation"];
    assert_eq!(*last, json!({"on": 1, "off": 6}), "{st}");

    // A node down: the others still answer, and the reply names it.
    drop(con3);
    third.kill9();
    let st = stats(&mut con1, &["prod:checkout"]);
    assert_eq!(st["evaluations"], 3, "{st}");
    assert_eq!(st["nodes"]["answered"], json!([1, 2]));
    assert_eq!(st["nodes"]["missing"], json!([3]));
}
