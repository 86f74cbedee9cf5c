//! MULTI/EXEC as a Redis user sees it: each queued command answers for
//! itself, and the writes of one EXEC are one raft entry, so a crash applies
//! all of them or none.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{serial, Server};
use redis::Value;

fn flag_def(value: u64) -> String {
    format!(
        r#"{{"on":true,"variations":[{{"name":"a","value":{value}}}],"off_variation":"a","fallthrough":{{"variation":"a"}}}}"#
    )
}

fn eval(con: &mut redis::Connection, key: &str) -> Option<u64> {
    let v: Option<String> = redis::cmd("FLAG.EVAL").arg(key).query(con).unwrap();
    v.map(|v| v.parse().unwrap())
}

/// What redis-rs's atomic pipeline (like redis-py's `pipeline()`) gets back
/// when the middle command of an EXEC is refused at apply time: the others
/// are applied and answer their versions; the refused one answers its error
/// in its place.
#[test]
fn a_refused_write_in_the_middle_of_exec_answers_alone_and_the_others_apply() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut con = s.conn();
    // Without ignore_errors, redis-rs (like redis-py) raises the first error
    // after reading every reply; the writes around it are applied all the same.
    let first_error = redis::pipe()
        .atomic()
        .cmd("FLAG.SET")
        .arg("tx:x")
        .arg(flag_def(9))
        .cmd("FLAG.DEL")
        .arg("tx:missing")
        .arg("IFVERSION")
        .query::<Vec<Value>>(&mut con)
        .unwrap_err();
    assert!(first_error.to_string().contains("syntax"), "{first_error}");
    assert_eq!(eval(&mut con, "tx:x"), Some(9));
    let replies: Vec<Value> = redis::pipe()
        .atomic()
        .ignore_errors()
        .cmd("FLAG.SET")
        .arg("tx:a")
        .arg(flag_def(1))
        .cmd("FLAG.SET")
        .arg("tx:b")
        .arg(flag_def(2))
        .arg("IFVERSION")
        .arg(7)
        .cmd("FLAG.SET")
        .arg("tx:c")
        .arg(flag_def(3))
        .cmd("FLAG.EVAL")
        .arg("tx:a")
        .query(&mut con)
        .unwrap();
    assert_eq!(replies.len(), 4, "{replies:?}");
    assert_eq!(replies[0], Value::Int(1));
    match &replies[1] {
        Value::ServerError(e) => {
            assert_eq!(e.code(), "CONFLICT", "{e:?}");
        }
        other => panic!("the refused write should answer its error, got {other:?}"),
    }
    assert_eq!(replies[2], Value::Int(1));
    assert_eq!(replies[3], Value::BulkString(b"1".to_vec()));
    assert_eq!(eval(&mut con, "tx:a"), Some(1));
    assert_eq!(eval(&mut con, "tx:b"), None, "the refused write applied");
    assert_eq!(eval(&mut con, "tx:c"), Some(3));
    // The three writes of that EXEC share one revision.
    let revision = |con: &mut redis::Connection, key: &str| -> u64 {
        let doc: String = redis::cmd("FLAG.GET").arg(key).query(con).unwrap();
        let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
        v["revision"].as_u64().unwrap()
    };
    assert_eq!(revision(&mut con, "tx:a"), revision(&mut con, "tx:c"));
}

/// A writer runs EXECs of 40 flag writes each (one key set per EXEC); the
/// server is killed with SIGKILL at random moments. After each restart every
/// acknowledged EXEC is there whole, and no EXEC is there in part.
#[test]
fn kill_9_during_exec_applies_all_of_it_or_none() {
    let _g = serial();
    const WRITES: u64 = 40;
    let mut s = Server::start(&["--snapshot-every", "32"]);
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut next_round = 0u64;
    let mut acknowledged = Vec::new();
    for cycle in 0..8 {
        let stop = Arc::new(AtomicBool::new(false));
        let round = Arc::new(AtomicU64::new(next_round));
        let writer = {
            let (stop, round, url) = (stop.clone(), round.clone(), s.url(false));
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let Ok(mut con) = redis::Client::open(url).and_then(|c| c.get_connection()) else {
                    return acked;
                };
                let _ = con.set_read_timeout(Some(Duration::from_secs(5)));
                while !stop.load(Ordering::Relaxed) {
                    let r = round.fetch_add(1, Ordering::Relaxed);
                    let mut pipe = redis::pipe();
                    pipe.atomic();
                    for i in 0..WRITES {
                        pipe.cmd("FLAG.SET")
                            .arg(format!("r{r}:{i}"))
                            .arg(flag_def(r));
                    }
                    match pipe.query::<Vec<i64>>(&mut con) {
                        Ok(versions) if versions.len() == WRITES as usize => acked.push(r),
                        _ => return acked,
                    }
                }
                acked
            })
        };
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(40 + seed % 200));
        s.kill9();
        stop.store(true, Ordering::Relaxed);
        acknowledged.extend(writer.join().unwrap());
        next_round = round.load(Ordering::Relaxed) + 1;
        s.restart();
        let mut con = s.conn();
        let keys: Vec<String> = redis::cmd("FLAG.LIST").query(&mut con).unwrap();
        let mut per_round = std::collections::BTreeMap::<u64, u64>::new();
        for key in &keys {
            let r: u64 = key[1..key.find(':').unwrap()].parse().unwrap();
            *per_round.entry(r).or_default() += 1;
        }
        for (r, n) in &per_round {
            assert_eq!(
                *n, WRITES,
                "cycle {cycle}: EXEC of round {r} applied in part"
            );
        }
        for r in &acknowledged {
            assert_eq!(
                per_round.get(r),
                Some(&WRITES),
                "cycle {cycle}: acknowledged EXEC of round {r} lost"
            );
        }
    }
    assert!(
        acknowledged.len() > 20,
        "too few EXECs acknowledged to prove anything: {}",
        acknowledged.len()
    );
}
