//! `flagstaff:events` through the real binary: exposures, tracked events and
//! sampled evaluations read as a Redis stream by a plain RESP client (as a
//! redis-py consumer would: XREAD BLOCK, XRANGE, XLEN), kept across a
//! restart, trimmed by age and length, with the change stream's errors.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{cmd_err, eventually, resp, serial, Server};
use serde_json::json;

const ROLLOUT: &str = r#"{"on":true,"variations":[{"name":"off","value":false},{"name":"on","value":true}],"off_variation":"off","fallthrough":{"rollout":[{"variation":"off","weight":5000},{"variation":"on","weight":5000}]}}"#;

/// A RESP2 reply, as a redis-py-like client decodes it.
#[derive(Debug, Clone, PartialEq)]
enum V {
    Str(String),
    Int(i64),
    Err(String),
    Nil,
    Arr(Vec<V>),
}

impl V {
    fn arr(&self) -> &[V] {
        match self {
            V::Arr(a) => a,
            other => panic!("not an array: {other:?}"),
        }
    }

    fn str(&self) -> &str {
        match self {
            V::Str(s) => s,
            other => panic!("not a string: {other:?}"),
        }
    }
}

/// A minimal blocking Redis client speaking RESP2 over TCP.
struct Client {
    out: TcpStream,
    inp: BufReader<TcpStream>,
}

impl Client {
    fn connect(port: u16) -> Client {
        let out = TcpStream::connect(("127.0.0.1", port)).unwrap();
        out.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let inp = BufReader::new(out.try_clone().unwrap());
        Client { out, inp }
    }

    fn call(&mut self, args: &[&str]) -> V {
        self.out.write_all(&resp(args)).unwrap();
        self.read()
    }

    fn read(&mut self) -> V {
        let mut line = String::new();
        self.inp.read_line(&mut line).unwrap();
        let line = line.trim_end_matches("\r\n");
        let (tag, rest) = line.split_at(1);
        match tag {
            "+" => V::Str(rest.to_string()),
            "-" => V::Err(rest.to_string()),
            ":" => V::Int(rest.parse().unwrap()),
            "$" => {
                let n: i64 = rest.parse().unwrap();
                if n < 0 {
                    return V::Nil;
                }
                let mut buf = vec![0u8; n as usize + 2];
                std::io::Read::read_exact(&mut self.inp, &mut buf).unwrap();
                buf.truncate(n as usize);
                V::Str(String::from_utf8(buf).unwrap())
            }
            "*" => {
                let n: i64 = rest.parse().unwrap();
                if n < 0 {
                    return V::Nil;
                }
                V::Arr((0..n).map(|_| self.read()).collect())
            }
            _ => panic!("unexpected reply line {line:?}"),
        }
    }
}

/// An entry's id and its fields as a map.
fn entry(v: &V) -> (String, std::collections::HashMap<String, String>) {
    let pair = v.arr();
    let fields = pair[1].arr();
    let map = fields
        .chunks(2)
        .map(|kv| (kv[0].str().to_string(), kv[1].str().to_string()))
        .collect();
    (pair[0].str().to_string(), map)
}

fn start_experiment(c: &mut Client) {
    assert_eq!(c.call(&["FLAG.SET", "prod:checkout", ROLLOUT]), V::Int(1));
    let def = json!({"flag": "prod:checkout", "control": "off",
        "metrics": [{"name": "purchase", "kind": "binary", "event": "purchase"}]})
    .to_string();
    assert_eq!(c.call(&["EXPERIMENT.SET", "exp:checkout", &def]), V::Int(1));
    assert_eq!(c.call(&["EXPERIMENT.START", "exp:checkout"]), V::Int(2));
}

fn xlen(c: &mut Client) -> i64 {
    match c.call(&["XLEN", "flagstaff:events"]) {
        V::Int(n) => n,
        other => panic!("XLEN: {other:?}"),
    }
}

#[test]
fn exposures_and_tracks_are_read_with_xread_block_and_xrange() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut c = Client::connect(s.port);
    start_experiment(&mut c);
    assert_eq!(xlen(&mut c), 0);

    // A consumer waits for the next event.
    let port = s.port;
    let waiter = std::thread::spawn(move || {
        let mut r = Client::connect(port);
        r.call(&[
            "XREAD",
            "BLOCK",
            "20000",
            "STREAMS",
            "flagstaff:events",
            "$",
        ])
    });
    std::thread::sleep(Duration::from_millis(300));
    let ctx = json!({"key": "user-1"}).to_string();
    let served = c.call(&["FLAG.EVAL", "prod:checkout", &ctx]);
    let variation = if served == V::Str("true".into()) {
        "on"
    } else {
        "off"
    };
    let got = waiter.join().unwrap();
    let streams = got.arr();
    assert_eq!(streams[0].arr()[0], V::Str("flagstaff:events".into()));
    let (id, exposure) = entry(&streams[0].arr()[1].arr()[0]);
    assert!(id.split_once('-').is_some(), "{id}");
    assert_eq!(exposure["type"], "exposure");
    assert_eq!(exposure["flag"], "prod:checkout");
    assert_eq!(exposure["experiment"], "exp:checkout");
    assert_eq!(exposure["unit"], "user-1");
    assert_eq!(exposure["variation"], variation);
    assert_eq!(exposure["node"], "1");
    assert!(exposure["ts"].parse::<u64>().unwrap() > 1_600_000_000_000);

    // A second evaluation of the same unit is no new exposure.
    c.call(&["FLAG.EVAL", "prod:checkout", &ctx]);
    assert_eq!(
        c.call(&["FLAG.TRACK", "purchase", &ctx, "VALUE", "2.5"]),
        V::Int(1)
    );
    assert_eq!(
        c.call(&[
            "FLAG.TRACK",
            "signup",
            &json!({"key": "user-2"}).to_string()
        ]),
        V::Int(0)
    );
    let all = c.call(&["XRANGE", "flagstaff:events", "-", "+"]);
    let all: Vec<_> = all.arr().iter().map(entry).collect();
    assert_eq!(all.len(), 3, "{all:?}");
    assert_eq!(all[0].0, id);
    assert_eq!(all[1].1["type"], "track");
    assert_eq!(all[1].1["event"], "purchase");
    assert_eq!(all[1].1["unit"], "user-1");
    assert_eq!(all[1].1["value"], "2.5");
    assert_eq!(all[2].1["event"], "signup");
    assert_eq!(all[2].1["value"], "1");
    assert!(all
        .windows(2)
        .all(|w| w[0].0 < w[1].0 || w[0].0.len() < w[1].0.len()));
    assert_eq!(xlen(&mut c), 3);

    // Newest first, a count, an exclusive start, reading on after an id.
    let last = c.call(&["XREVRANGE", "flagstaff:events", "+", "-", "COUNT", "1"]);
    assert_eq!(entry(&last.arr()[0]).0, all[2].0);
    let after = c.call(&["XRANGE", "flagstaff:events", &format!("({id}"), "+"]);
    assert_eq!(after.arr().len(), 2);
    let read = c.call(&["XREAD", "COUNT", "1", "STREAMS", "flagstaff:events", &id]);
    assert_eq!(entry(&read.arr()[0].arr()[1].arr()[0]).0, all[1].0);
    let none = c.call(&["XREAD", "STREAMS", "flagstaff:events", &all[2].0]);
    assert_eq!(none, V::Nil);

    // The same errors as on flagstaff:changes.
    let mut con = s.conn();
    for stream in ["flagstaff:changes", "flagstaff:events"] {
        for (args, want) in [
            (vec!["XRANGE", stream, "x", "+"], "Invalid stream ID"),
            (
                vec!["XRANGE", stream, "-", "+", "COUNT", "abc"],
                "not an integer",
            ),
            (
                vec!["XREAD", "COUNT", "x", "STREAMS", stream, "0"],
                "not an integer",
            ),
            (vec!["XREAD", "STREAMS", stream, "1-x"], "Invalid stream ID"),
            (
                vec!["XREAD", "BLOCK", "-1", "STREAMS", stream, "0"],
                "timeout is negative",
            ),
        ] {
            let got = cmd_err(&mut con, &args);
            assert!(got.contains(want), "{args:?}: {got}");
        }
    }
    assert!(cmd_err(
        &mut con,
        &[
            "XREAD",
            "STREAMS",
            "flagstaff:changes",
            "flagstaff:events",
            "0",
            "0"
        ]
    )
    .contains("one of"));
}

#[test]
fn events_survive_a_restart_and_are_trimmed_by_length_and_age() {
    let _g = serial();
    let mut s = Server::start(&["--events-max-len", "3"]);
    let mut c = Client::connect(s.port);
    for i in 0..5 {
        let ctx = json!({ "key": format!("user-{i}") }).to_string();
        c.call(&["FLAG.TRACK", "visit", &ctx]);
    }
    assert_eq!(xlen(&mut c), 3);
    let before = c.call(&["XRANGE", "flagstaff:events", "-", "+"]);
    assert_eq!(entry(&before.arr()[0]).1["unit"], "user-2");
    // Once the writer handed the lines to the OS, a kill -9 loses none.
    let file = s.data_dir.join("analytics").join("events.jsonl");
    eventually(Duration::from_secs(20), || {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        text.contains("user-4").then_some(())
    });
    s.restart();
    let mut c = Client::connect(s.port);
    assert_eq!(c.call(&["XRANGE", "flagstaff:events", "-", "+"]), before);
    // New ids stay above the old ones.
    c.call(&["FLAG.TRACK", "visit", &json!({"key": "user-5"}).to_string()]);
    let newest = c.call(&["XREVRANGE", "flagstaff:events", "+", "-", "COUNT", "1"]);
    assert_eq!(entry(&newest.arr()[0]).1["unit"], "user-5");
    assert_eq!(xlen(&mut c), 3);
    drop(s);

    // Age: with a 2-second retention, events go on their own, and stay gone
    // after a restart.
    let mut s = Server::start(&["--events-retention", "2s"]);
    let mut c = Client::connect(s.port);
    c.call(&["FLAG.TRACK", "visit", &json!({"key": "user-1"}).to_string()]);
    assert_eq!(xlen(&mut c), 1);
    eventually(Duration::from_secs(30), || {
        (xlen(&mut c) == 0).then_some(())
    });
    assert_eq!(
        c.call(&["XRANGE", "flagstaff:events", "-", "+"]),
        V::Arr(vec![])
    );
    s.restart();
    let mut c = Client::connect(s.port);
    assert_eq!(xlen(&mut c), 0);
    let mut con = s.conn();
    assert!(cmd_err(&mut con, &["XLEN", "mystream"]).contains("flagstaff:events"));
}

#[test]
fn bad_event_settings_are_refused_at_start() {
    let bin = env!("CARGO_BIN_EXE_flagstaff");
    for args in [
        ["--events-retention", "3w"],
        ["--events-retention", "0"],
        ["--eval-log-sample", "1.5"],
        ["--eval-log-sample", "NaN"],
    ] {
        let mut child = std::process::Command::new(bin)
            .args(args)
            .args(["--port", "0", "--data-dir"])
            .arg(common::temp_dir("badcfg"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let status = eventually(Duration::from_secs(20), || child.try_wait().unwrap());
        assert!(!status.success(), "{args:?} was accepted");
    }
}

#[test]
fn evaluations_are_sampled_into_the_stream() {
    let _g = serial();
    let s = Server::start(&["--eval-log-sample", "1.0"]);
    let mut c = Client::connect(s.port);
    assert_eq!(c.call(&["FLAG.SET", "prod:checkout", ROLLOUT]), V::Int(1));
    for i in 0..20 {
        let ctx = json!({ "key": format!("user-{i}") }).to_string();
        c.call(&["FLAG.EVAL", "prod:checkout", &ctx]);
    }
    assert_eq!(xlen(&mut c), 20);
    let first = c.call(&["XRANGE", "flagstaff:events", "-", "+", "COUNT", "1"]);
    let (_, e) = entry(&first.arr()[0]);
    assert_eq!(e["type"], "eval");
    assert_eq!(e["flag"], "prod:checkout");
    assert_eq!(e["unit"], "user-0");
    assert_eq!(e["reason"], "FALLTHROUGH");
    assert!(e["variation"] == "on" || e["variation"] == "off");
    drop(s);

    // Off by default.
    let s = Server::start(&[]);
    let mut c = Client::connect(s.port);
    assert_eq!(c.call(&["FLAG.SET", "prod:checkout", ROLLOUT]), V::Int(1));
    for i in 0..20 {
        let ctx = json!({ "key": format!("user-{i}") }).to_string();
        c.call(&["FLAG.EVAL", "prod:checkout", &ctx]);
    }
    assert_eq!(xlen(&mut c), 0);
}
