//! Clients that read slowly or not at all, ask for huge replies, or hang up
//! while blocked: each can be closed at once, holds bounded memory, and never
//! stops the server from answering others.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{resp, serial, Server};

/// A flag whose definition is about 1 MB (one variation holds a long string).
fn big_flag(size: usize) -> String {
    format!(
        r#"{{"on":true,"variations":[{{"name":"off","value":"{}"}},{{"name":"on","value":"y"}}],"off_variation":"off","fallthrough":{{"variation":"on"}}}}"#,
        "x".repeat(size)
    )
}

fn info_field(con: &mut redis::Connection, section: &str, field: &str) -> String {
    let info: String = redis::cmd("INFO").arg(section).query(con).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("INFO has no {field}"))
        .trim()
        .to_string()
}

fn connected_clients(con: &mut redis::Connection) -> usize {
    info_field(con, "clients", "connected_clients")
        .parse()
        .unwrap()
}

/// Polls until `f` holds or `limit` passes; returns whether it held.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// Opens a connection that pipelines `n` FLAG.GETs of `key` and never reads.
fn never_reads(port: u16, key: &str, n: usize) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let one = resp(&["FLAG.GET", key]);
    let mut all = Vec::with_capacity(one.len() * n);
    for _ in 0..n {
        all.extend_from_slice(&one);
    }
    s.write_all(&all).unwrap();
    s
}

#[test]
fn a_client_that_never_reads_is_killed_promptly_and_frees_its_memory() {
    let _g = serial();
    let s = Server::start(&["--shutdown-timeout", "60"]);
    let mut con = s.conn();
    let _: i64 = redis::cmd("FLAG.SET")
        .arg("big")
        .arg(big_flag(1_000_000))
        .query(&mut con)
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let baseline = common::rss_kib(s.child.id());

    // 1,000 replies of 1 MB requested: 1 GB the client will never read.
    let hostile = never_reads(s.port, "big", 1000);
    let addr = hostile.local_addr().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(connected_clients(&mut con), 2);
    let stuck = common::rss_kib(s.child.id());

    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ADDR")
        .arg(&addr)
        .query(&mut con)
        .unwrap();
    assert_eq!(killed, 1);
    let started = Instant::now();
    assert!(
        eventually(Duration::from_secs(1), || connected_clients(&mut con) == 1),
        "the killed client was still connected after 1 s"
    );
    eprintln!("killed after {:?}", started.elapsed());
    let after = common::rss_kib(s.child.id());
    eprintln!("RSS: baseline {baseline} KiB, stuck {stuck} KiB, after kill {after} KiB");
    assert!(
        after < baseline + 32 * 1024,
        "RSS stayed at {after} KiB after the kill (baseline {baseline} KiB)"
    );
    // The other connection was answered throughout.
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
    drop(hostile);
}

#[test]
fn sigterm_exits_within_the_grace_period_despite_a_client_that_never_reads() {
    let _g = serial();
    let mut s = Server::start(&["--shutdown-timeout", "60"]);
    let mut con = s.conn();
    let _: i64 = redis::cmd("FLAG.SET")
        .arg("big")
        .arg(big_flag(1_000_000))
        .query(&mut con)
        .unwrap();
    let hostile = never_reads(s.port, "big", 1000);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(connected_clients(&mut con), 2);
    let started = Instant::now();
    s.signal(libc::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some(),
        "still running 10 s after SIGTERM (grace period 60 s)"
    );
    eprintln!("exited {:?} after SIGTERM", started.elapsed());
    drop(hostile);
}

#[test]
fn a_client_over_its_output_limit_is_disconnected() {
    let _g = serial();
    // Backpressure keeps a stuck client's pending output to the rest of one
    // reply, so the soft limit is set low enough for that to exceed it.
    let s = Server::start(&["--client-soft-limit", "1000", "--client-soft-seconds", "1"]);
    let mut con = s.conn();
    let _: i64 = redis::cmd("FLAG.SET")
        .arg("big")
        .arg(big_flag(1_000_000))
        .query(&mut con)
        .unwrap();
    // A client that reads gets its large reply in time.
    let value: String = redis::cmd("FLAG.GET").arg("big").query(&mut con).unwrap();
    assert!(value.len() > 1_000_000);

    let mut hostile = never_reads(s.port, "big", 100);
    assert!(eventually(Duration::from_secs(5), || connected_clients(
        &mut con
    ) == 2));
    assert!(
        eventually(Duration::from_secs(10), || connected_clients(&mut con) == 1),
        "a client above its soft limit for over 1 s stayed connected"
    );
    assert_eq!(
        info_field(
            &mut con,
            "stats",
            "client_output_buffer_limit_disconnections"
        ),
        "1"
    );
    // Its socket is closed: reading drains what the kernel holds, then ends.
    hostile
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match hostile.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }

    let s = Server::start(&["--client-hard-limit", "500000"]);
    let mut con = s.conn();
    let _: i64 = redis::cmd("FLAG.SET")
        .arg("big")
        .arg(big_flag(1_000_000))
        .query(&mut con)
        .unwrap();
    let err = redis::cmd("FLAG.GET")
        .arg("big")
        .query::<String>(&mut con)
        .unwrap_err();
    assert!(err.is_connection_dropped() || err.is_io_error(), "{err:?}");
}

#[test]
fn the_idle_timeout_spares_subscribers() {
    let _g = serial();
    let s = Server::start(&["--timeout", "1"]);
    let mut sub = s.raw();
    sub.roundtrip(
        &resp(&["SUBSCRIBE", "news"]),
        b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n",
    );
    let mut idle = s.raw();
    std::thread::sleep(Duration::from_millis(2500));
    let mut buf = [0u8; 16];
    assert!(
        matches!(idle.stream.read(&mut buf), Ok(0)),
        "an idle normal client is closed"
    );
    let mut con = s.conn();
    let n: i64 = redis::cmd("PUBLISH")
        .arg("news")
        .arg("hi")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 1, "the idle subscriber is still subscribed");
    sub.read_until(b"$2\r\nhi\r\n");
}

#[test]
fn a_client_that_hangs_up_during_xread_block_frees_its_slot_at_once() {
    let _g = serial();
    let s = Server::start(&["--threads", "1"]);
    let mut con = s.conn();
    let mut blocked = s.raw();
    blocked.send(&resp(&[
        "XREAD",
        "BLOCK",
        "0",
        "STREAMS",
        "flagstaff:changes",
        "$",
    ]));
    assert!(eventually(Duration::from_secs(5), || connected_clients(
        &mut con
    ) == 2));
    // Others are answered while it waits.
    let started = Instant::now();
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
    assert!(started.elapsed() < Duration::from_secs(1));
    drop(blocked);
    assert!(
        eventually(Duration::from_secs(1), || connected_clients(&mut con) == 1),
        "a client that hung up during XREAD BLOCK 0 still held its slot after 1 s"
    );
}

fn raft_info(s: &Server, field: &str) -> String {
    let text: String = redis::cmd("RAFT.INFO").query(&mut s.conn()).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn a_node_installing_a_large_snapshot_keeps_answering_clients() {
    let _g = serial();
    let extra = ["--snapshot-every", "20", "--threads", "1"];
    let first = common::cluster_node(1, None, &extra);
    // Tens of MB of state, compacted into a snapshot: a node that joins now
    // can only catch up by installing it.
    let mut con = first.conn();
    con.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    for i in 0..50 {
        let _: i64 = redis::cmd("FLAG.SET")
            .arg(format!("big{i}"))
            .arg(big_flag(200_000 + i))
            .query(&mut con)
            .unwrap();
    }
    for i in 0..25 {
        let _: i64 = redis::cmd("FLAG.SET")
            .arg(format!("small{}", i % 5))
            .arg(big_flag(10))
            .query(&mut con)
            .unwrap();
    }
    assert_ne!(raft_info(&first, "snapshot_index"), "0");
    let port = common::free_port();
    let seed = first.port;
    let joiner = std::thread::spawn(move || {
        let args = [
            "--node-id",
            "2",
            "--cluster-port",
            &common::free_port().to_string(),
            "--cluster-secret",
            common::CLUSTER_SECRET,
            "--join",
            &format!("127.0.0.1:{seed}"),
            "--threads",
            "1",
        ]
        .map(String::from);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Server::start_on(port, common::temp_dir("slow-joiner"), &args, &[])
    });
    // Until it has joined and installed the snapshot the node answers
    // -LOADING; what matters is that it answers at once all along.
    let mut raw = loop {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            break s;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    raw.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut worst = Duration::ZERO;
    let mut pings = 0;
    let mut buf = [0u8; 256];
    while !joiner.is_finished() {
        let started = Instant::now();
        raw.write_all(b"PING\r\n").unwrap();
        let n = raw.read(&mut buf).unwrap();
        assert!(n > 0, "the joining node closed the connection");
        worst = worst.max(started.elapsed());
        pings += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    let second = joiner.join().unwrap();
    eprintln!("slowest of {pings} PINGs while joining by snapshot: {worst:?}");
    assert_ne!(
        raft_info(&second, "snapshot_index"),
        "0",
        "the new node caught up by snapshot"
    );
    assert!(
        worst < Duration::from_secs(1),
        "a PING took {worst:?} while the node installed a snapshot"
    );
}

/// Sets `n` small flags `p0`..`p{n-1}` in one transaction (one revision).
fn set_many(con: &mut redis::Connection, prefix: &str, n: usize, size: usize) {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for i in 0..n {
        pipe.cmd("FLAG.SET")
            .arg(format!("{prefix}{i}"))
            .arg(big_flag(size));
    }
    let _: redis::Value = pipe.query(con).unwrap();
}

/// The ids of XRANGE-shaped entries.
fn ids(v: &redis::Value) -> Vec<String> {
    let redis::Value::Array(entries) = v else {
        panic!("not an array: {v:?}")
    };
    entries
        .iter()
        .map(|e| match e {
            redis::Value::Array(pair) => match &pair[0] {
                redis::Value::BulkString(b) => String::from_utf8(b.clone()).unwrap(),
                other => panic!("id {other:?}"),
            },
            other => panic!("entry {other:?}"),
        })
        .collect()
}

/// The entries of a RESP2 XREAD reply.
fn xread_entries(v: redis::Value) -> redis::Value {
    let redis::Value::Array(mut streams) = v else {
        panic!("XREAD reply {v:?}")
    };
    let redis::Value::Array(mut pair) = streams.remove(0) else {
        panic!("XREAD stream")
    };
    pair.remove(1)
}

#[test]
fn long_ranges_and_histories_are_exact_across_pages_with_redis_count_semantics() {
    let _g = serial();
    let s = Server::start(&["--audit-retention", "1000"]);
    let mut con = s.conn();
    set_many(&mut con, "p", 700, 10);
    let stream = "flagstaff:changes";
    let all = cmd(&mut con, &["XRANGE", stream, "-", "+"]);
    let all_ids = ids(&all);
    assert_eq!(all_ids.len(), 700, "every entry, across pages");
    let mut sorted = all_ids.clone();
    sorted.sort_by_key(|id| {
        let (r, s) = id.split_once('-').unwrap();
        (r.parse::<u64>().unwrap(), s.parse::<u32>().unwrap())
    });
    assert_eq!(all_ids, sorted, "in id order");
    let mut rev = ids(&cmd(&mut con, &["XREVRANGE", stream, "+", "-"]));
    rev.reverse();
    assert_eq!(rev, all_ids);
    // COUNT as Redis 7: the last COUNT counts; 0 or less is a null array.
    assert_eq!(
        ids(&cmd(
            &mut con,
            &["XRANGE", stream, "-", "+", "COUNT", "300"]
        )),
        all_ids[..300]
    );
    assert_eq!(
        ids(&cmd(
            &mut con,
            &["XRANGE", stream, "-", "+", "COUNT", "5", "COUNT", "400"]
        )),
        all_ids[..400]
    );
    for zero in ["0", "-3"] {
        assert_eq!(
            cmd(&mut con, &["XRANGE", stream, "-", "+", "COUNT", zero]),
            redis::Value::Nil
        );
    }
    assert_eq!(
        common::cmd_err(&mut con, &["XRANGE", stream, "-", "+", "COUNT", "x"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        common::cmd_err(&mut con, &["XRANGE", stream, "-", "+", "LIMIT", "1"]),
        "ERR syntax error"
    );
    assert_eq!(
        common::cmd_err(
            &mut con,
            &["XRANGE", stream, "(18446744073709551615-4294967295", "+"]
        ),
        "ERR invalid start ID for the interval"
    );
    assert_eq!(
        common::cmd_err(&mut con, &["XRANGE", stream, "-", "(0-0"]),
        "ERR invalid end ID for the interval"
    );
    // XREAD: no COUNT, or COUNT 0 or less, is no limit.
    for count in [None, Some("0"), Some("-1")] {
        let mut args = vec!["XREAD"];
        if let Some(c) = count {
            args.extend(["COUNT", c]);
        }
        args.extend(["STREAMS", stream, "0"]);
        let got = ids(&xread_entries(cmd(&mut con, &args)));
        assert_eq!(got, all_ids, "XREAD with COUNT {count:?}");
    }
    let got = ids(&xread_entries(cmd(
        &mut con,
        &["XREAD", "COUNT", "2", "STREAMS", stream, "0"],
    )));
    assert_eq!(got, all_ids[..2]);
    // `+` reads the last entry (Redis 7.4).
    let got = ids(&xread_entries(cmd(
        &mut con,
        &["XREAD", "STREAMS", stream, "+"],
    )));
    assert_eq!(got, all_ids[699..]);
    assert_eq!(
        common::cmd_err(&mut con, &["XREAD", "BLOCK", "x", "STREAMS", stream, "0"]),
        "ERR timeout is not an integer or out of range"
    );
    // A long history, newest first, across pages; and inside EXEC.
    let mut pipe = redis::pipe();
    pipe.atomic();
    for i in 0..600 {
        pipe.cmd("FLAG.SET").arg("h").arg(big_flag(i));
    }
    let _: redis::Value = pipe.query(&mut con).unwrap();
    let history = cmd(&mut con, &["FLAG.HISTORY", "h"]);
    let redis::Value::Array(entries) = &history else {
        panic!("{history:?}")
    };
    assert_eq!(entries.len(), 600);
    let versions: Vec<i64> = entries
        .iter()
        .map(|e| {
            let redis::Value::Array(kv) = e else {
                panic!("{e:?}")
            };
            match &kv[3] {
                redis::Value::Int(v) => *v,
                other => panic!("version {other:?}"),
            }
        })
        .collect();
    assert_eq!(versions, (1..=600).rev().collect::<Vec<i64>>());
    let rolled: i64 = redis::cmd("FLAG.ROLLBACK")
        .arg("h")
        .arg(3)
        .query(&mut con)
        .unwrap();
    assert_eq!(rolled, 601);
    let (range, hist): (redis::Value, redis::Value) = redis::pipe()
        .atomic()
        .cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .cmd("FLAG.HISTORY")
        .arg("h")
        .query(&mut con)
        .unwrap();
    assert_eq!(ids(&range).len(), 700 + 600 + 1);
    let redis::Value::Array(hist) = hist else {
        panic!()
    };
    assert_eq!(hist.len(), 601);
}

fn cmd(con: &mut redis::Connection, args: &[&str]) -> redis::Value {
    common::cmd_value(con, args).unwrap()
}

#[test]
fn a_huge_xrange_is_written_in_pages_with_bounded_memory() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut con = s.conn();
    // 80 changes of about 1 MB each.
    for batch in 0..8 {
        set_many(&mut con, &format!("b{batch}_"), 10, 1_000_000);
    }
    std::thread::sleep(Duration::from_millis(300));
    let baseline = common::rss_kib(s.child.id());
    let mut raw = s.raw();
    raw.send(&resp(&["XRANGE", "flagstaff:changes", "-", "+"]));
    // Read slowly, watching the server's memory.
    let mut peak = baseline;
    let mut got = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    while got < 80_000_000 {
        let n = raw.stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {got} bytes");
        got += n;
        peak = peak.max(common::rss_kib(s.child.id()));
        std::thread::sleep(Duration::from_millis(2));
    }
    eprintln!("XRANGE of {got} bytes: RSS {baseline} KiB before, peak {peak} KiB");
    assert!(
        peak < baseline + 64 * 1024,
        "RSS grew from {baseline} KiB to {peak} KiB for an 80 MB reply"
    );
    // The connection keeps working after the whole reply.
    raw.stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    while let Ok(n) = raw.stream.read(&mut buf) {
        assert!(n > 0, "closed after the reply");
    }
    raw.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    raw.roundtrip(&resp(&["PING"]), b"+PONG\r\n");
}
