//! Durability, recovery, audit and backup, through the real binary.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{cmd_err, cmd_value, serial, Server};
use serde_json::{json, Value};

fn flag_def(value: i64) -> String {
    json!({"on": true,
           "variations": [{"name": "a", "value": value}, {"name": "b", "value": -1}],
           "off_variation": "b",
           "rules": [{"id": "half", "clauses": [{"attribute": "tier", "op": "eq", "values": ["x"]}],
                      "serve": {"rollout": [{"variation": "a", "weight": 5000}, {"variation": "b", "weight": 5000}]}}],
           "fallthrough": {"variation": "a"}})
    .to_string()
}

fn dump(s: &Server) -> Value {
    let mut con = s.conn();
    let text: String = redis::cmd("FLAG.DUMP").query(&mut con).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn history(con: &mut redis::Connection, key: &str) -> Vec<HashMap<String, Option<String>>> {
    let entries: Vec<Vec<redis::Value>> = redis::cmd("FLAG.HISTORY").arg(key).query(con).unwrap();
    entries
        .into_iter()
        .map(|flat| {
            flat.chunks(2)
                .map(|kv| {
                    let k: String = redis::from_redis_value(kv[0].clone()).unwrap();
                    let v: Option<String> = redis::from_redis_value(kv[1].clone()).unwrap();
                    (k, v)
                })
                .collect()
        })
        .collect()
}

/// Runs `flagstaff import` against the server on `port`.
fn import_file(port: u16, file: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_flagstaff"))
        .args(["import", "--addr", &format!("127.0.0.1:{port}")])
        .arg(file)
        .output()
        .unwrap()
}

fn populate(s: &Server) {
    let mut con = s.conn();
    let _: i64 = redis::cmd("SEGMENT.SET")
        .arg("prod:beta")
        .arg(r#"{"included":["u1"]}"#)
        .query(&mut con)
        .unwrap();
    for i in 0..20 {
        let _: i64 = redis::cmd("FLAG.SET")
            .arg(format!("prod:f{i}"))
            .arg(flag_def(i))
            .query(&mut con)
            .unwrap();
    }
    let _: i64 = redis::cmd("FLAG.TOGGLE")
        .arg("prod:f3")
        .arg("OFF")
        .arg("REASON")
        .arg("incident")
        .query(&mut con)
        .unwrap();
    let _: i64 = redis::cmd("FLAG.DEL")
        .arg("prod:f4")
        .query(&mut con)
        .unwrap();
}

#[test]
fn restart_keeps_flags_segments_versions_revisions_and_history() {
    let _g = serial();
    let mut s = Server::start(&[]);
    populate(&s);
    let before = dump(&s);
    let hist_before = history(&mut s.conn(), "prod:f3");
    // Graceful restart.
    s.signal(libc::SIGTERM);
    assert!(s.wait_exit(Duration::from_secs(10)).unwrap().success());
    s.restart();
    assert_eq!(dump(&s), before);
    assert_eq!(history(&mut s.conn(), "prod:f3"), hist_before);
    // Crash restart.
    s.kill9();
    s.restart();
    assert_eq!(dump(&s), before);
    let mut con = s.conn();
    let v: i64 = redis::cmd("FLAG.SET")
        .arg("prod:f4")
        .arg(flag_def(4))
        .query(&mut con)
        .unwrap();
    assert_eq!(
        v, 2,
        "a re-created flag continues its version after restarts"
    );
    let info: String = redis::cmd("INFO")
        .arg("persistence")
        .query(&mut con)
        .unwrap();
    assert!(
        info.contains("loading:0") && info.contains("aof_enabled:1"),
        "{info}"
    );
}

/// Everything a client reads back about flags, as the bytes the server sent.
fn read_back(s: &Server, keys: &[String]) -> Vec<redis::Value> {
    let mut con = s.conn();
    let mut out = vec![
        cmd_value(&mut con, &["FLAG.DUMP"]).unwrap(),
        cmd_value(&mut con, &["XRANGE", "flagstaff:changes", "-", "+"]).unwrap(),
        cmd_value(&mut con, &["FLAG.HISTORY", "prod:mix-0007"]).unwrap(),
        cmd_value(&mut con, &["FLAG.HISTORY", "prod:mix-0003"]).unwrap(),
    ];
    for context in [
        r#"{"key":"u1"}"#,
        r#"{"key":"target-9","country":"DE","plan":"pro"}"#,
        r#"{"key":"u77","country":"FR","plan":"free","beta":true}"#,
    ] {
        let mut args = vec!["FLAG.MEVAL", context];
        args.extend(keys.iter().map(String::as_str));
        out.push(cmd_value(&mut con, &args).unwrap());
    }
    for key in keys.iter().step_by(97) {
        out.push(cmd_value(&mut con, &["FLAG.GET", key]).unwrap());
    }
    out
}

/// Issue 13: a restart builds the view straight from the stored records, a
/// chunk at a time on every core; what clients read must not change by a
/// byte. Flags of many shapes (targets, prerequisites, segments, sticky
/// allocations moved by a weight change, odd JSON values, non-ASCII text),
/// more than one chunk of them, a toggle and a delete.
#[test]
fn a_restart_answers_every_read_byte_for_byte_as_before() {
    const FLAGS: usize = 1_300;
    let _g = serial();
    let mut s = Server::start(&[]);
    let mut con = s.conn();
    let _: i64 = redis::cmd("SEGMENT.SET")
        .arg("prod:beta")
        .arg(r#"{"description":"béta \"testers\"","included":["u1"],"rules":[{"clauses":[{"attribute":"beta","op":"eq","values":[true]}]}]}"#)
        .query(&mut con)
        .unwrap();
    let mut flags = serde_json::Map::new();
    flags.insert(
        "prod:parent".into(),
        json!({"on": true, "variations": [{"name": "off", "value": false}, {"name": "on", "value": true}],
               "off_variation": "off", "fallthrough": {"variation": "on"}}),
    );
    for i in 0..FLAGS {
        let values = match i % 4 {
            0 => json!([1.5, -0.0]),
            1 => json!([{"n": [1, 2, {"deep": null}], "s": "ü\u{1F600}"}, {"n": []}]),
            2 => json!([12345678901234567890u64, -7]),
            _ => json!(["a\"b\\c", "line\nbreak"]),
        };
        let mut def = json!({
            "description": format!("flag {i}: «quoted \"text\"»"),
            "tags": ["t", format!("g{}", i % 3)],
            "on": i % 11 != 0,
            "variations": [{"name": "x", "value": values[0]}, {"name": "y", "value": values[1]}],
            "off_variation": "y",
            "targets": [{"variation": "x", "keys": ["target-9", format!("t{i}")]}],
            "rules": [
                {"id": "eu", "clauses": [{"attribute": "country", "op": "in", "values": ["DE", "FR"]},
                                         {"attribute": "plan", "op": "eq", "values": ["pro"], "negate": i % 2 == 0}],
                 "serve": {"rollout": [{"variation": "x", "weight": 3300}, {"variation": "y", "weight": 6700}],
                           "bucket_by": "key"}},
                {"clauses": [{"op": "in_segment", "values": ["prod:beta"]}], "serve": {"variation": "x"}}
            ],
            "fallthrough": {"rollout": [{"variation": "x", "weight": 5000}, {"variation": "y", "weight": 5000}]},
        });
        if i % 7 == 0 {
            def["prerequisites"] = json!([{"flag": "prod:parent", "variation": "on"}]);
            def["salt"] = json!(format!("salt-{i}"));
        }
        flags.insert(format!("prod:mix-{i:04}"), def);
    }
    let doc = json!({"flags": flags}).to_string();
    let n: i64 = redis::cmd("FLAG.IMPORT").arg(&doc).query(&mut con).unwrap();
    assert_eq!(n as usize, FLAGS + 1);
    // Sticky allocations that are not the fresh ones, a toggle and a delete.
    let mut moved: Value = flags["prod:mix-0007"].clone();
    moved["fallthrough"]["rollout"] =
        json!([{"variation": "x", "weight": 8000}, {"variation": "y", "weight": 2000}]);
    let _: i64 = redis::cmd("FLAG.SET")
        .arg("prod:mix-0007")
        .arg(moved.to_string())
        .arg("REASON")
        .arg("ramp up")
        .query(&mut con)
        .unwrap();
    let _: i64 = redis::cmd("FLAG.TOGGLE")
        .arg("prod:mix-0003")
        .arg("OFF")
        .query(&mut con)
        .unwrap();
    let _: i64 = redis::cmd("FLAG.DEL")
        .arg("prod:mix-0005")
        .query(&mut con)
        .unwrap();
    let keys: Vec<String> = flags.keys().cloned().collect();
    let before = read_back(&s, &keys);
    s.signal(libc::SIGTERM);
    assert!(s.wait_exit(Duration::from_secs(60)).unwrap().success());
    s.restart();
    assert!(
        read_back(&s, &keys) == before,
        "reads changed across a restart"
    );
    s.kill9();
    s.restart();
    assert!(
        read_back(&s, &keys) == before,
        "reads changed across a crash restart"
    );
    let v: i64 = redis::cmd("FLAG.SET")
        .arg("prod:mix-0005")
        .arg(flags["prod:mix-0005"].to_string())
        .query(&mut s.conn())
        .unwrap();
    assert_eq!(v, 2, "the deleted flag's version survives the restarts");
}

#[test]
fn history_is_newest_first_with_actor_reason_and_definitions_and_rollback_restores() {
    let _g = serial();
    let s = Server::start(&["--audit-retention", "4"]);
    let mut con = s.conn();
    let _: i64 = redis::cmd("FLAG.SET")
        .arg("k")
        .arg(flag_def(1))
        .arg("REASON")
        .arg("create")
        .query(&mut con)
        .unwrap();
    let _: i64 = redis::cmd("FLAG.SET")
        .arg("k")
        .arg(flag_def(2))
        .query(&mut con)
        .unwrap();
    let _: i64 = redis::cmd("FLAG.TOGGLE")
        .arg("k")
        .arg("OFF")
        .arg("REASON")
        .arg("kill")
        .query(&mut con)
        .unwrap();
    let h = history(&mut con, "k");
    assert_eq!(h.len(), 3);
    assert_eq!(h[0]["event"].as_deref(), Some("toggle"));
    assert_eq!(h[0]["version"].as_deref(), Some("3"));
    assert_eq!(h[0]["reason"].as_deref(), Some("kill"));
    assert_eq!(h[2]["event"].as_deref(), Some("set"));
    assert_eq!(h[2]["reason"].as_deref(), Some("create"));
    assert_eq!(h[2]["actor"].as_deref(), Some("default"));
    assert_eq!(h[2]["before"], None);
    let after: Value = serde_json::from_str(h[1]["after"].as_deref().unwrap()).unwrap();
    assert_eq!(after["variations"][0]["value"], 2);
    let before: Value = serde_json::from_str(h[1]["before"].as_deref().unwrap()).unwrap();
    assert_eq!(before["variations"][0]["value"], 1);

    let v: i64 = redis::cmd("FLAG.ROLLBACK")
        .arg("k")
        .arg(1)
        .arg("REASON")
        .arg("back to v1")
        .query(&mut con)
        .unwrap();
    assert_eq!(v, 4);
    let value: String = redis::cmd("FLAG.EVAL")
        .arg("k")
        .arg("{}")
        .query(&mut con)
        .unwrap();
    assert_eq!(value, "1");
    let h = history(&mut con, "k");
    assert_eq!(h[0]["event"].as_deref(), Some("rollback"));
    assert!(cmd_err(&mut con, &["FLAG.ROLLBACK", "k", "99"]).contains("has no version 99"));
    let limited: Vec<redis::Value> = redis::cmd("FLAG.HISTORY")
        .arg("k")
        .arg("COUNT")
        .arg(2)
        .query(&mut con)
        .unwrap();
    assert_eq!(limited.len(), 2);
    // Retention keeps the newest 4.
    let _: i64 = redis::cmd("FLAG.TOGGLE")
        .arg("k")
        .arg("ON")
        .query(&mut con)
        .unwrap();
    let h = history(&mut con, "k");
    assert_eq!(h.len(), 4);
    assert_eq!(h[3]["version"].as_deref(), Some("2"));
}

#[test]
fn export_then_import_reproduces_every_flag_and_segment() {
    let _g = serial();
    let a = Server::start(&[]);
    populate(&a);
    {
        // Make an allocation that is not the fresh one, so import must carry it.
        let mut con = a.conn();
        let mut def: Value = serde_json::from_str(&flag_def(7)).unwrap();
        def["rules"][0]["serve"]["rollout"] =
            json!([{"variation": "a", "weight": 7000}, {"variation": "b", "weight": 3000}]);
        let _: i64 = redis::cmd("FLAG.SET")
            .arg("prod:f7")
            .arg(def.to_string())
            .query(&mut con)
            .unwrap();
    }
    let dir = common::temp_dir("backup");
    let file = dir.join("backup.json");
    let out = Command::new(env!("CARGO_BIN_EXE_flagstaff"))
        .args(["export", "--addr", &format!("127.0.0.1:{}", a.port)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&file, &out.stdout).unwrap();

    let b = Server::start(&[]);
    let out = import_file(b.port, &file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let strip = |mut d: Value| {
        for section in ["flags", "segments"] {
            for (_, v) in d[section].as_object_mut().unwrap().iter_mut() {
                for meta in ["version", "revision", "updated_at", "updated_by"] {
                    v.as_object_mut().unwrap().remove(meta);
                }
            }
        }
        d.as_object_mut().unwrap().remove("revision");
        d.as_object_mut().unwrap().remove("stream_id");
        d
    };
    let (da, db) = (strip(dump(&a)), strip(dump(&b)));
    assert_eq!(da, db);
    assert_eq!(
        db["flags"]["prod:f7"]["allocations"]["half"]["ranges"]["a"],
        json!([[0, 5000], [8000, 10000]])
    );
}

#[test]
fn a_corrupt_import_is_rejected_and_changes_nothing() {
    let _g = serial();
    let s = Server::start(&[]);
    populate(&s);
    let before = dump(&s);
    let dir = common::temp_dir("corrupt");
    let mut doc = before.clone();
    doc["flags"]["prod:new"] = serde_json::from_str(&flag_def(1)).unwrap();
    doc["flags"]["prod:bad"] = json!({"on": true, "variations": [], "off_variation": "x", "fallthrough": {"variation": "x"}});
    let cases = [
        ("invalid.json", doc.to_string()),
        ("truncated.json", before.to_string()[..200].to_string()),
    ];
    for (name, text) in cases {
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        let out = import_file(s.port, &file);
        assert!(!out.status.success(), "{name} should be rejected");
        assert!(!out.stderr.is_empty());
    }
    // The server refuses a dump whose references do not resolve, atomically.
    let mut con = s.conn();
    let mut dangling = json!({"flags": {}});
    let mut def: Value = serde_json::from_str(&flag_def(1)).unwrap();
    dangling["flags"]["prod:ok"] = def.clone();
    def["prerequisites"] = json!([{"flag": "prod:missing", "variation": "a"}]);
    dangling["flags"]["prod:dangling"] = def;
    let err = cmd_err(&mut con, &["FLAG.IMPORT", &dangling.to_string()]);
    assert!(
        err.starts_with("INVALID flags[\"prod:dangling\"].prerequisites[0].flag"),
        "{err}"
    );
    assert_eq!(dump(&s), before);
}

#[test]
fn a_data_dir_of_another_node_is_refused() {
    let _g = serial();
    let mut s = Server::start(&[]);
    s.signal(libc::SIGTERM);
    s.wait_exit(Duration::from_secs(10));
    let out = Command::new(env!("CARGO_BIN_EXE_flagstaff"))
        .args([
            "--node-id",
            "2",
            "--http-port",
            "0",
            "--port",
            &common::free_port().to_string(),
            "--data-dir",
        ])
        .arg(&s.data_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("belongs to node 1"), "{err}");
    let file = common::temp_dir("notdir").join("file");
    std::fs::write(&file, "x").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flagstaff"))
        .args(["--port", &common::free_port().to_string(), "--data-dir"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("data dir"));
}

#[test]
fn every_command_gets_loading_until_the_data_is_loaded() {
    let _g = serial();
    let mut s = Server::start(&["--write-timeout-ms", "120000"]);
    let mut flags = serde_json::Map::new();
    for i in 0..20_000 {
        flags.insert(
            format!("prod:f{i:05}"),
            serde_json::from_str(&flag_def(i)).unwrap(),
        );
    }
    let doc = json!({ "flags": flags }).to_string();
    let mut con = s.conn();
    con.set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let n: i64 = redis::cmd("FLAG.IMPORT").arg(doc).query(&mut con).unwrap();
    assert_eq!(n, 20_000);
    s.signal(libc::SIGTERM);
    assert!(s.wait_exit(Duration::from_secs(30)).unwrap().success());
    s.respawn();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut replies = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "never became ready: {replies:?}");
        let Ok(stream) = std::net::TcpStream::connect(("127.0.0.1", s.port)) else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let mut raw = common::Raw { stream };
        raw.send(b"PING\r\n");
        let mut buf = [0u8; 128];
        let n = std::io::Read::read(&mut raw.stream, &mut buf).unwrap_or(0);
        let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
        if reply == "+PONG\r\n" {
            break;
        }
        replies.push(reply);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        replies
            .iter()
            .any(|r| r == "-LOADING flagstaff is loading the dataset in memory\r\n"),
        "no -LOADING seen while loading 20,000 flags: {replies:?}"
    );
    assert!(
        replies
            .iter()
            .all(|r| r.starts_with("-LOADING") || r.is_empty()),
        "{replies:?}"
    );
    let n: i64 = redis::cmd("DBSIZE").query(&mut s.conn()).unwrap();
    assert_eq!(n, 20_000);
}

/// Tiny deterministic PRNG so a failing cycle can be replayed from its seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// What the crash harness found after `cycles` kill -9/restart cycles.
struct CrashReport {
    acknowledged: usize,
    violations: Vec<String>,
}

/// Writers update pairs of flags in MULTI/EXEC (one raft entry), recording
/// every acknowledged counter; the server is killed at a random moment and
/// restarted; then every pair must be at its acknowledged counter or later,
/// and both flags of a pair must agree (never half-applied).
fn crash_cycles(cycles: usize, env: &[(&str, &str)], seed: u64) -> CrashReport {
    let mut rng = Rng(seed | 1);
    let data = common::temp_dir("crash");
    let mut s = Server::start_with_env(data, &["--snapshot-every", "64"], env);
    let writers = 4;
    let acked: Arc<Mutex<Vec<i64>>> = Arc::new(Mutex::new(vec![0; writers]));
    let mut report = CrashReport {
        acknowledged: 0,
        violations: Vec::new(),
    };
    for cycle in 0..cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..writers)
            .map(|w| {
                let (stop, acked, url) = (stop.clone(), acked.clone(), s.url(false));
                std::thread::spawn(move || {
                    let Ok(mut con) = redis::Client::open(url).and_then(|c| c.get_connection())
                    else {
                        return 0;
                    };
                    let _ = con.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut n = acked.lock().unwrap()[w];
                    let mut count = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let r: redis::RedisResult<(i64, i64)> = redis::pipe()
                            .atomic()
                            .cmd("FLAG.SET")
                            .arg(format!("w{w}:a"))
                            .arg(flag_def(n))
                            .cmd("FLAG.SET")
                            .arg(format!("w{w}:b"))
                            .arg(flag_def(n))
                            .query(&mut con);
                        match r {
                            Ok(_) => {
                                acked.lock().unwrap()[w] = n;
                                count += 1;
                            }
                            Err(_) => return count,
                        }
                    }
                    count
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(30 + rng.next() % 250));
        s.kill9();
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            report.acknowledged += t.join().unwrap_or(0);
        }
        s.restart();
        let mut con = s.conn();
        for w in 0..writers {
            let want = acked.lock().unwrap()[w];
            let value = |key: String, con: &mut redis::Connection| -> i64 {
                let v: Option<String> = redis::cmd("FLAG.EVAL")
                    .arg(&key)
                    .arg("{}")
                    .query(con)
                    .unwrap();
                v.map_or(0, |v| v.parse().unwrap())
            };
            let (a, b) = (
                value(format!("w{w}:a"), &mut con),
                value(format!("w{w}:b"), &mut con),
            );
            if a < want {
                report.violations.push(format!(
                    "cycle {cycle}: writer {w} acknowledged {want} but found {a}"
                ));
            }
            if a != b {
                report.violations.push(format!(
                    "cycle {cycle}: writer {w} half-applied: a={a} b={b}"
                ));
            }
            // Carry on from what survived, so later cycles check new writes.
            acked.lock().unwrap()[w] = a.max(want);
        }
    }
    report
}

fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Writers racing on one node share proposals (group commit): every write
/// must still get its own outcome, in order per writer, and a read on
/// another connection right after the answer must see it. Guards any change
/// to how a batch's outcomes reach its writers.
#[test]
fn racing_writers_each_get_their_own_answer_and_see_it_at_once() {
    let _g = serial();
    let s = Server::start(&[]);
    let port = s.port;
    let writers: Vec<_> = (0..12)
        .map(|t| {
            std::thread::spawn(move || {
                let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
                let mut w = client.get_connection().unwrap();
                let mut r = client.get_connection().unwrap();
                let key = format!("race:{t}");
                let mut revisions = Vec::new();
                for i in 0..30i64 {
                    let version: i64 = redis::cmd("FLAG.SET")
                        .arg(&key)
                        .arg(flag_def(i))
                        .query(&mut w)
                        .unwrap();
                    assert_eq!(
                        version,
                        i + 1,
                        "{key}: write {i} got another write's answer"
                    );
                    let text: String = redis::cmd("FLAG.GET").arg(&key).query(&mut r).unwrap();
                    let got: Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(got["version"], json!(i + 1), "{key}: read after write {i}");
                    assert_eq!(
                        got["variations"][0]["value"],
                        json!(i),
                        "{key}: read after write {i}"
                    );
                    revisions.push(got["revision"].as_u64().unwrap());
                }
                assert!(
                    revisions.windows(2).all(|p| p[0] < p[1]),
                    "{key}: {revisions:?}"
                );
            })
        })
        .collect();
    for h in writers {
        h.join().unwrap();
    }
    let mut con = s.conn();
    let text: String = redis::cmd("FLAG.GET")
        .arg("race:0")
        .query(&mut con)
        .unwrap();
    let got: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(got["version"], json!(30));
}

#[test]
fn kill_9_at_random_moments_loses_no_acknowledged_write() {
    let _g = serial();
    let seed = seed();
    let started = Instant::now();
    let report = crash_cycles(20, &[], seed);
    assert!(
        report.violations.is_empty(),
        "seed {seed}: {:#?}",
        report.violations
    );
    assert!(
        report.acknowledged > 100,
        "the writers made too little progress to prove anything: {}",
        report.acknowledged
    );
    eprintln!(
        "crash test: 20 cycles, {} acknowledged writes, {:?}",
        report.acknowledged,
        started.elapsed()
    );
}

/// The control: with a planted bug that acknowledges log writes before they
/// are written, the same harness must find lost writes. The bug exists only
/// in builds with the `planted-bugs` feature; `.ci/run` runs this with
/// `cargo test --features planted-bugs --test durability control_`.
#[cfg(feature = "planted-bugs")]
#[test]
fn control_the_crash_test_catches_acknowledging_before_the_log_write() {
    let _g = serial();
    let seed = seed();
    let report = crash_cycles(20, &[("FLAGSTAFF_UNSAFE_ACK_BEFORE_LOG", "1")], seed);
    eprintln!(
        "control: {} violations in 20 cycles: {:#?}",
        report.violations.len(),
        report.violations
    );
    assert!(
        !report.violations.is_empty(),
        "seed {seed}: the planted bug went unnoticed"
    );
}

/// `--max-entry-bytes` for the entry-limit tests: small, so they stay fast.
const ENTRY_LIMIT: usize = 4 * 1024 * 1024;

/// A flag whose first variation is a string of `pad` copies of `fill`:
/// one more `pad` makes the raft entry exactly one byte larger.
fn padded_flag(pad: usize, fill: char) -> String {
    format!(
        r#"{{"on":true,"variations":[{{"name":"a","value":"{}"}},{{"name":"b","value":""}}],"off_variation":"b","fallthrough":{{"variation":"a"}}}}"#,
        fill.to_string().repeat(pad)
    )
}

/// Bytes of padding in the first variation of `key`'s definition, and its fill.
fn padding_of(con: &mut redis::Connection, key: &str) -> Option<(usize, char)> {
    let def: Option<String> = redis::cmd("FLAG.GET").arg(key).query(con).unwrap();
    let def: Value = serde_json::from_str(&def?).unwrap();
    let value = def["variations"][0]["value"].as_str().unwrap().to_string();
    Some((value.len(), value.chars().next().unwrap_or(' ')))
}

/// Largest `n` in `lo..hi` with `accepted(n)`, given `accepted(lo)` and not `accepted(hi)`.
fn largest_accepted(
    mut lo: usize,
    mut hi: usize,
    mut accepted: impl FnMut(usize) -> bool,
) -> usize {
    assert!(accepted(lo), "the smallest probe was refused");
    assert!(!accepted(hi), "the largest probe was accepted");
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if accepted(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// The EXEC reply to four 800 kB FLAG.SETs on `{prefix}:0..3` and one with
/// `pad` bytes on `{prefix}:4`: per command, Ok(version) or the error text.
fn exec_five(
    con: &mut redis::Connection,
    prefix: &str,
    pad: usize,
    fill: char,
) -> Vec<Result<i64, String>> {
    let _: () = redis::cmd("MULTI").query(con).unwrap();
    for i in 0..5 {
        let def = padded_flag(if i < 4 { 800_000 } else { pad }, fill);
        let queued: String = redis::cmd("FLAG.SET")
            .arg(format!("{prefix}:{i}"))
            .arg(def)
            .query(con)
            .unwrap();
        assert_eq!(queued, "QUEUED");
    }
    // Read the raw reply: `query` would turn an error inside the array into Err.
    con.send_packed_command(&redis::cmd("EXEC").get_packed_command())
        .unwrap();
    let reply = con.recv_response().unwrap();
    let redis::Value::Array(items) = reply else {
        panic!("EXEC answered {reply:?}");
    };
    items
        .into_iter()
        .map(|v| match v {
            redis::Value::Int(n) => Ok(n),
            redis::Value::ServerError(e) => Err(format!("{e:?}")),
            other => Err(format!("{other:?}")),
        })
        .collect()
}

/// A FLAG.IMPORT document of four 800 kB flags `{prefix}:0..3` and one of `pad` bytes.
fn import_doc(prefix: &str, pad: usize, fill: char) -> String {
    let mut flags = serde_json::Map::new();
    for i in 0..5 {
        let def: Value =
            serde_json::from_str(&padded_flag(if i < 4 { 800_000 } else { pad }, fill)).unwrap();
        flags.insert(format!("{prefix}:{i}"), def);
    }
    json!({"flags": flags, "segments": {}}).to_string()
}

/// Whether `result` is the entry-limit refusal.
fn refused_as_too_large(result: &Result<i64, String>) -> bool {
    matches!(result, Err(e) if e.contains("max-entry-bytes"))
}

/// Issue 10 item 2: writes up to `--max-entry-bytes` are acknowledged and
/// survive kill -9; one byte more is refused before anything is logged.
/// (Before the fix nothing bounded an entry, and the WAL cut records over
/// 256 MiB on replay: acknowledged writes were lost.)
#[test]
fn writes_just_under_the_entry_limit_survive_kill_9_and_one_byte_over_is_refused() {
    let _g = serial();
    let limit = ENTRY_LIMIT.to_string();
    let mut s = Server::start(&["--max-entry-bytes", &limit, "--write-timeout-ms", "60000"]);
    let mut con = s.conn();

    // MULTI/EXEC: the five writes are one raft entry.
    let multi_max = largest_accepted(0, 1_040_000, |pad| {
        let replies = exec_five(&mut con, "m", pad, 'a');
        if replies.iter().all(|r| r.is_ok()) {
            return true;
        }
        assert!(replies.iter().all(refused_as_too_large), "{replies:?}");
        false
    });
    let replies = exec_five(&mut con, "m", multi_max, 'z');
    assert!(replies.iter().all(|r| r.is_ok()), "{replies:?}");
    let over = exec_five(&mut con, "x", multi_max + 1, 'z');
    assert!(over.iter().all(refused_as_too_large), "{over:?}");

    // FLAG.IMPORT: one command, one entry.
    let import = |con: &mut redis::Connection, prefix: &str, pad: usize, fill: char| {
        redis::cmd("FLAG.IMPORT")
            .arg(import_doc(prefix, pad, fill))
            .query::<i64>(con)
            .map_err(|e| e.to_string())
    };
    let import_max = largest_accepted(0, 1_040_000, |pad| match import(&mut con, "i", pad, 'a') {
        Ok(_) => true,
        Err(e) => {
            assert!(e.contains("max-entry-bytes"), "{e}");
            false
        }
    });
    assert_eq!(import(&mut con, "i", import_max, 'z'), Ok(5));
    let over = import(&mut con, "j", import_max + 1, 'z');
    assert!(
        matches!(&over, Err(e) if e.contains("max-entry-bytes")),
        "{over:?}"
    );
    // The connection and the server stay up.
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
    eprintln!("largest accepted padding: EXEC {multi_max}, FLAG.IMPORT {import_max}");

    s.kill9();
    s.restart();
    let mut con = s.conn();
    for i in 0..5 {
        let pad = if i < 4 { 800_000 } else { multi_max };
        assert_eq!(
            padding_of(&mut con, &format!("m:{i}")),
            Some((pad, 'z')),
            "m:{i}"
        );
        assert_eq!(padding_of(&mut con, &format!("x:{i}")), None, "x:{i}");
        let pad = if i < 4 { 800_000 } else { import_max };
        assert_eq!(
            padding_of(&mut con, &format!("i:{i}")),
            Some((pad, 'z')),
            "i:{i}"
        );
        assert_eq!(padding_of(&mut con, &format!("j:{i}")), None, "j:{i}");
    }
}

/// Copies the directory tree `from` into `to`.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A copy of `tests/fixtures/datadir-v0`: a data dir written by the release
/// before the on-disk format was checked (see tests/fixtures/README.md).
fn previous_release_data_dir() -> std::path::PathBuf {
    let dir = common::temp_dir("v0");
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/datadir-v0");
    copy_tree(&fixture, &dir);
    dir
}

fn data_format(dir: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(dir.join("node.json")).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["format"].clone()
}

/// Issue 10 item 12: the previous release's data dir opens with every flag,
/// segment, version and audit record, and is upgraded to the current format.
#[test]
fn a_data_dir_written_by_the_previous_release_opens_and_is_upgraded() {
    let _g = serial();
    let dir = previous_release_data_dir();
    assert_eq!(data_format(&dir), json!(1));
    let mut s = Server::start_in(dir.clone(), &[]);
    assert_eq!(
        data_format(&dir),
        json!(4),
        "node.json records the current format"
    );
    let check = |s: &Server| {
        let mut con = s.conn();
        let mut keys: Vec<String> = redis::cmd("FLAG.LIST").query(&mut con).unwrap();
        keys.retain(|k| k != "prod:after-upgrade");
        assert_eq!(
            keys,
            ["prod:dark-mode", "prod:new-checkout", "staging:limit"]
        );
        let def: String = redis::cmd("FLAG.GET")
            .arg("prod:dark-mode")
            .query(&mut con)
            .unwrap();
        let def: Value = serde_json::from_str(&def).unwrap();
        assert_eq!(
            (def["on"].clone(), def["version"].clone()),
            (json!(true), json!(2))
        );
        let segment: String = redis::cmd("SEGMENT.GET")
            .arg("prod:beta-testers")
            .query(&mut con)
            .unwrap();
        assert!(segment.contains("user-7"), "{segment}");
        let eval = |con: &mut redis::Connection, key: &str, ctx: &str| -> String {
            redis::cmd("FLAG.EVAL")
                .arg(key)
                .arg(ctx)
                .query(con)
                .unwrap()
        };
        assert_eq!(
            eval(
                &mut con,
                "prod:new-checkout",
                r#"{"key":"u1","country":"DE","plan":"pro"}"#
            ),
            "true"
        );
        assert_eq!(
            eval(
                &mut con,
                "prod:new-checkout",
                r#"{"key":"u1","country":"US"}"#
            ),
            "false"
        );
        assert_eq!(eval(&mut con, "staging:limit", r#"{"key":"u1"}"#), "1000");
        let h = history(&mut con, "prod:dark-mode");
        assert_eq!(h.len(), 2);
        assert_eq!(h[0]["reason"].as_deref(), Some("turn on"));
        assert_eq!(h[1]["reason"].as_deref(), Some("fixture v0"));
    };
    check(&s);
    // It takes writes, and they and the old data survive kill -9.
    let mut con = s.conn();
    let _: i64 = redis::cmd("FLAG.SET")
        .arg("prod:after-upgrade")
        .arg(flag_def(5))
        .query(&mut con)
        .unwrap();
    s.kill9();
    s.restart();
    check(&s);
    let def: Option<String> = redis::cmd("FLAG.GET")
        .arg("prod:after-upgrade")
        .query(&mut s.conn())
        .unwrap();
    assert!(def.is_some());
}

/// Issue 10 item 12: a data dir in a format newer than this build reads is
/// refused at start with one line naming the format and what to do.
#[test]
fn a_data_dir_in_a_future_format_is_refused_with_one_line() {
    let _g = serial();
    let dir = previous_release_data_dir();
    std::fs::write(dir.join("node.json"), r#"{"node_id":1,"format":99}"#).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_flagstaff"))
        .args(["--port", &common::free_port().to_string(), "--data-dir"])
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = common::Reap(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "a future-format data dir was not refused"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    // The refusal is one line (beside the same text in the log, if logging to stderr).
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("flagstaff: "))
        .collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains("format 99") && lines[0].contains("newer"),
        "{err}"
    );
    assert!(lines[0].contains("release"), "says what to do: {err}");
    // Nothing was changed.
    assert_eq!(data_format(&dir), json!(99));
    let _ = std::fs::remove_dir_all(&dir);
}
