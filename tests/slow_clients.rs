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
