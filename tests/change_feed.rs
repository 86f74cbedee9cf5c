//! The resumable change stream `flagstaff:changes`, through the real binary.

mod common;

use std::time::{Duration, Instant};

use common::{cmd_err, resp, rollout_flags_dump, serial, Server};
use redis::Value;

const FLAG: &str = r#"{"on":true,"variations":[{"name":"a","value":1},{"name":"b","value":2}],"off_variation":"a","fallthrough":{"variation":"b"}}"#;

/// (id, fields) of stream entries.
type Entries = Vec<(String, Vec<(String, String)>)>;

fn entries(v: Value) -> Entries {
    let Value::Array(items) = v else {
        panic!("entries: {v:?}")
    };
    items
        .into_iter()
        .map(|item| {
            let Value::Array(mut pair) = item else {
                panic!("entry")
            };
            let fields: Vec<String> = redis::from_redis_value(pair.pop().unwrap()).unwrap();
            let id: String = redis::from_redis_value(pair.pop().unwrap()).unwrap();
            (
                id,
                fields
                    .chunks(2)
                    .map(|c| (c[0].clone(), c[1].clone()))
                    .collect(),
            )
        })
        .collect()
}

fn xread(con: &mut redis::Connection, after: &str, count: usize) -> Entries {
    let v: Value = redis::cmd("XREAD")
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg("flagstaff:changes")
        .arg(after)
        .query(con)
        .unwrap();
    match v {
        Value::Nil => Vec::new(),
        Value::Array(mut streams) => {
            let Value::Array(mut kv) = streams.remove(0) else {
                panic!()
            };
            entries(kv.pop().unwrap())
        }
        other => panic!("XREAD reply {other:?}"),
    }
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    &fields
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no field {name}"))
        .1
}

fn set(con: &mut redis::Connection, key: &str) {
    let _: i64 = redis::cmd("FLAG.SET")
        .arg(key)
        .arg(FLAG)
        .query(con)
        .unwrap();
}

#[test]
fn a_reader_that_disconnects_resumes_with_exactly_the_changes_it_missed() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut con = s.conn();
    for i in 0..10 {
        set(&mut con, &format!("prod:f{i}"));
    }
    let mut reader = s.conn();
    let seen = xread(&mut reader, "0", 10_000);
    assert_eq!(seen.len(), 10);
    let last_id = seen.last().unwrap().0.clone();
    drop(reader);
    for i in 0..500 {
        set(&mut con, &format!("prod:g{}", i % 50));
    }
    let mut reader = s.conn();
    let mut missed = Vec::new();
    let mut after = last_id;
    loop {
        let batch = xread(&mut reader, &after, 128);
        if batch.is_empty() {
            break;
        }
        after = batch.last().unwrap().0.clone();
        missed.extend(batch);
    }
    assert_eq!(missed.len(), 500, "exactly the missed changes");
    let ids: Vec<&String> = missed.iter().map(|(id, _)| id).collect();
    let mut sorted = ids.clone();
    sorted.sort_by_key(|id| {
        let (r, s) = id.split_once('-').unwrap();
        (r.parse::<u64>().unwrap(), s.parse::<u32>().unwrap())
    });
    sorted.dedup();
    assert_eq!(ids, sorted, "in order, none repeated");
    assert_eq!(field(&missed[0].1, "event"), "set");
    assert_eq!(field(&missed[0].1, "kind"), "flag");
    let n: i64 = redis::cmd("XLEN")
        .arg("flagstaff:changes")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 510);
}

#[test]
fn an_id_older_than_retention_gets_a_resync_entry_first() {
    let _g = serial();
    let s = Server::start(&["--snapshot-every", "20"]);
    let mut con = s.conn();
    for i in 0..120 {
        set(&mut con, &format!("prod:f{}", i % 7));
    }
    // Snapshots run in the background; wait until one has compacted the stream.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut first = xread(&mut con, "0", 5);
    while field(&first[0].1, "event") != "resync" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        set(&mut con, "prod:tick");
        first = xread(&mut con, "0", 5);
    }
    assert_eq!(first.len(), 1, "only the resync entry");
    assert_eq!(field(&first[0].1, "event"), "resync");
    let range = entries(
        redis::cmd("XRANGE")
            .arg("flagstaff:changes")
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(3)
            .query(&mut con)
            .unwrap(),
    );
    assert_eq!(field(&range[0].1, "event"), "resync");
    // Reload with FLAG.DUMP and resume from its stream_id: nothing old, the next change new.
    let dump: String = redis::cmd("FLAG.DUMP").query(&mut con).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let resume = doc["stream_id"].as_str().unwrap().to_string();
    assert!(xread(&mut con, &resume, 10).is_empty());
    set(&mut con, "prod:after");
    let next = xread(&mut con, &resume, 10);
    assert_eq!(next.len(), 1);
    assert_eq!(field(&next[0].1, "key"), "prod:after");
}

#[test]
fn stream_commands_reply_like_redis_and_refuse_other_keys() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut con = s.conn();
    set(&mut con, "prod:a");
    set(&mut con, "prod:b");
    let _: i64 = redis::cmd("FLAG.DEL")
        .arg("prod:a")
        .query(&mut con)
        .unwrap();
    let all = entries(
        redis::cmd("XRANGE")
            .arg("flagstaff:changes")
            .arg("-")
            .arg("+")
            .query(&mut con)
            .unwrap(),
    );
    assert_eq!(all.len(), 3);
    assert_eq!(field(&all[2].1, "event"), "delete");
    assert_eq!(field(&all[2].1, "definition"), "null");
    let names: Vec<&str> = all[0].1.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "event",
            "kind",
            "key",
            "version",
            "revision",
            "actor",
            "ts",
            "definition"
        ]
    );
    let rev = entries(
        redis::cmd("XREVRANGE")
            .arg("flagstaff:changes")
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query(&mut con)
            .unwrap(),
    );
    assert_eq!(rev[0].0, all[2].0);
    let excl = entries(
        redis::cmd("XRANGE")
            .arg("flagstaff:changes")
            .arg(format!("({}", all[0].0))
            .arg("+")
            .query(&mut con)
            .unwrap(),
    );
    assert_eq!(excl.len(), 2);
    assert!(cmd_err(&mut con, &["XLEN", "mystream"])
        .contains("streams are flagstaff:changes and flagstaff:events"));
    assert!(
        cmd_err(&mut con, &["XRANGE", "flagstaff:changes", "x", "+"]).contains("Invalid stream ID")
    );
    assert!(cmd_err(
        &mut con,
        &["XREAD", "COUNT", "1", "STREAMS", "flagstaff:changes"]
    )
    .contains("Unbalanced"));
    let mut raw = s.raw();
    raw.roundtrip(
        &resp(&["XREAD", "STREAMS", "flagstaff:changes", "$"]),
        b"*-1\r\n",
    );
    let mut c3 = s.conn_proto(true);
    let v: Value = redis::cmd("XREAD")
        .arg("STREAMS")
        .arg("flagstaff:changes")
        .arg("0")
        .query(&mut c3)
        .unwrap();
    assert!(
        matches!(v, Value::Map(ref m) if m.len() == 1),
        "RESP3 XREAD is a map: {v:?}"
    );
}

#[test]
fn xread_block_wakes_on_the_next_change_and_times_out_with_nil() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut con = s.conn();
    set(&mut con, "prod:a");
    let started = Instant::now();
    let mut raw = s.raw();
    raw.roundtrip(
        &resp(&["XREAD", "BLOCK", "200", "STREAMS", "flagstaff:changes", "$"]),
        b"*-1\r\n",
    );
    assert!(started.elapsed() >= Duration::from_millis(150));
    let url = s.url(false);
    let waiter = std::thread::spawn(move || {
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        let v: Value = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(0)
            .arg("STREAMS")
            .arg("flagstaff:changes")
            .arg("$")
            .query(&mut c)
            .unwrap();
        v
    });
    std::thread::sleep(Duration::from_millis(300));
    set(&mut con, "prod:wake");
    let v = waiter.join().unwrap();
    let Value::Array(mut streams) = v else {
        panic!("{v:?}")
    };
    let Value::Array(mut kv) = streams.remove(0) else {
        panic!()
    };
    let got = entries(kv.pop().unwrap());
    assert_eq!(field(&got[0].1, "key"), "prod:wake");
}

#[test]
fn malformed_arguments_to_newer_commands_get_clear_errors_and_the_connection_stays() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut con = s.conn();
    set(&mut con, "prod:a");
    let cases: [(&[&str], &str); 12] = [
        (&["FLAG.HISTORY", "prod:a", "COUNT", "x"], "not an integer"),
        (
            &["FLAG.HISTORY", "prod:a", "COUNT", "0"],
            "COUNT must be positive",
        ),
        (&["FLAG.HISTORY", "prod:a", "LIMIT", "1"], "syntax error"),
        (&["FLAG.ROLLBACK", "prod:a", "v1"], "not an integer"),
        (&["FLAG.ROLLBACK", "prod:a", "7"], "has no version 7"),
        (&["FLAG.IMPORT", "not json"], "INVALID $"),
        (&["FLAG.IMPORT", "[1]"], "INVALID $"),
        (
            &["XREAD", "BLOCK", "-1", "STREAMS", "flagstaff:changes", "0"],
            "timeout is negative",
        ),
        (
            &["XRANGE", "flagstaff:changes", "-", "+", "COUNT"],
            "syntax error",
        ),
        (
            &["XREVRANGE", "flagstaff:changes", "+", "1-x"],
            "Invalid stream ID",
        ),
        (&["PUBSUB", "BOGUS"], "unknown subcommand"),
        (&["SUBSCRIBE"], "wrong number of arguments"),
    ];
    for (args, want) in cases {
        let err = cmd_err(&mut con, args);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
    let n: i64 = redis::cmd("XLEN")
        .arg("flagstaff:changes")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 1, "nothing was written by the refused commands");
}

/// A write applied between a blocked XREAD waking (storage caught up with
/// the view) and its read used to fail the read with "state storage is
/// behind (at N, need N+1)": the fault soak's stream reader then backed off
/// and fell behind. Now the read stops at what storage holds and the next
/// one gets the rest.
#[test]
fn a_blocking_reader_under_steady_writes_gets_no_errors_and_every_entry() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let _g = serial();
    let s = Server::start(&[]);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..12)
        .map(|i| {
            let url = s.url(false);
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
                while !stop.load(Ordering::Relaxed) {
                    set(&mut c, &format!("hammer:{i}"));
                }
            })
        })
        .collect();
    let mut con = s.conn();
    let (mut last, mut seen, mut errors) = ("0-0".to_string(), 0usize, Vec::new());
    let read = |con: &mut redis::Connection, last: &mut String| -> redis::RedisResult<usize> {
        let v: Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(500)
            .arg("BLOCK")
            .arg(200)
            .arg("STREAMS")
            .arg("flagstaff:changes")
            .arg(last.as_str())
            .query(con)?;
        let Value::Array(mut streams) = v else {
            return Ok(0);
        };
        let Value::Array(mut kv) = streams.remove(0) else {
            panic!()
        };
        let got = entries(kv.pop().unwrap());
        if let Some((id, _)) = got.last() {
            *last = id.clone();
        }
        Ok(got.len())
    };
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        match read(&mut con, &mut last) {
            Ok(n) => seen += n,
            Err(e) => errors.push(e.to_string()),
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    loop {
        match read(&mut con, &mut last) {
            Ok(0) => break,
            Ok(n) => seen += n,
            Err(e) => errors.push(e.to_string()),
        }
    }
    assert!(
        errors.is_empty(),
        "{} errors, e.g. {:?}",
        errors.len(),
        &errors[..1]
    );
    let len: usize = redis::cmd("XLEN")
        .arg("flagstaff:changes")
        .query(&mut con)
        .unwrap();
    assert!(seen > 100, "only {seen} entries written");
    assert_eq!(seen, len);
}

fn history_replies(con: &mut redis::Connection, key: &str) -> Vec<Value> {
    match redis::cmd("FLAG.HISTORY").arg(key).query(con).unwrap() {
        Value::Array(items) => items,
        other => panic!("FLAG.HISTORY reply {other:?}"),
    }
}

fn all_entries(con: &mut redis::Connection) -> Entries {
    entries(
        redis::cmd("XRANGE")
            .arg("flagstaff:changes")
            .arg("-")
            .arg("+")
            .query(con)
            .unwrap(),
    )
}

/// Issue 13: the stream and the audit log store each definition once (they
/// refer to the key's record); what clients read stays the same when the
/// record they refer to is replaced, rolled back, deleted, or its audit
/// record is dropped by retention, and after kill -9.
#[test]
fn entries_and_history_read_the_same_after_the_record_they_refer_to_changes() {
    let _g = serial();
    let mut s = Server::start(&["--audit-retention", "2"]);
    let mut con = s.conn();
    let mut gets = Vec::new();
    let mut last_history: Vec<Value> = Vec::new();
    let mut last_entries: Entries = Vec::new();
    for i in 1..=4 {
        let def = format!(
            r#"{{"on":true,"variations":[{{"name":"a","value":{i}}},{{"name":"b","value":{i}0}}],"off_variation":"a","fallthrough":{{"variation":"b"}}}}"#
        );
        let _: i64 = redis::cmd("FLAG.SET")
            .arg("k")
            .arg(&def)
            .query(&mut con)
            .unwrap();
        let get: String = redis::cmd("FLAG.GET").arg("k").query(&mut con).unwrap();
        gets.push(get);
        let range = all_entries(&mut con);
        assert_eq!(range.len(), i);
        for (entry, get) in range.iter().zip(&gets) {
            assert_eq!(field(&entry.1, "definition"), get, "entry {}", entry.0);
        }
        assert_eq!(range[..i - 1], last_entries[..]);
        let history = history_replies(&mut con, "k");
        assert_eq!(history.len(), i.min(2));
        // The record that referred to the replaced version reads the same.
        assert_eq!(history[1..], last_history[..history.len() - 1]);
        last_history = history;
        last_entries = range;
    }
    let _: i64 = redis::cmd("FLAG.ROLLBACK")
        .arg("k")
        .arg(3)
        .query(&mut con)
        .unwrap();
    let history = history_replies(&mut con, "k");
    assert_eq!(history[1], last_history[0]);
    let _: i64 = redis::cmd("FLAG.DEL").arg("k").query(&mut con).unwrap();
    let history = history_replies(&mut con, "k");
    assert_eq!(history.len(), 2);
    let range = all_entries(&mut con);
    assert_eq!(range.len(), 6);
    assert_eq!(range[..4], last_entries[..]);
    s.kill9();
    s.restart();
    let mut con = s.conn();
    assert_eq!(history_replies(&mut con, "k"), history);
    assert_eq!(all_entries(&mut con), range);
}

/// Issue 13: state storage holds an import's definitions once, not three
/// times (the record, its audit record and its stream entry).
#[test]
fn imported_flags_take_under_seven_times_their_dump_in_state_storage() {
    let _g = serial();
    let mut s = Server::start(&[]);
    let mut con = s.conn();
    let dump = rollout_flags_dump(5000);
    let n: i64 = redis::cmd("FLAG.IMPORT")
        .arg(&dump)
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 5000);
    let dumped: String = redis::cmd("FLAG.DUMP").query(&mut con).unwrap();
    let _ = redis::cmd("SHUTDOWN").query::<()>(&mut con);
    assert!(s.wait_exit(Duration::from_secs(120)).is_some());
    let mut state = 0;
    for e in std::fs::read_dir(s.data_dir.join("state")).unwrap() {
        let m = e.unwrap().metadata().unwrap();
        if m.is_file() {
            state += m.len();
        }
    }
    let ratio = state as f64 / dumped.len() as f64;
    assert!(ratio < 7.0, "state storage is {ratio:.2}x the dump");
}
