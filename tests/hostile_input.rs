//! Hostile clients, each bounded in time and count: the server stays up, a
//! well-behaved client keeps being answered meanwhile, and memory returns
//! to near its baseline once the hostile clients are gone.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{resp, rss_kib, serial, Raw, Server};

/// How much RSS may stay above the baseline once the hostile clients left.
const NEAR_BASELINE_KIB: u64 = 48 * 1024;
/// The slowest PING answer a well-behaved client may see meanwhile. Generous:
/// the two cores are shared with the hostile clients and the test itself;
/// benches/hostile_latency.sh measures the real figures.
const ANSWER_BOUND: Duration = Duration::from_secs(2);

/// A well-behaved client that PINGs every 20 ms until stopped and reports
/// its slowest answer.
struct Watcher {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<Duration, String>>,
}

impl Watcher {
    fn start(port: u16) -> Watcher {
        let mut raw = Raw::connect(port);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut worst = Duration::ZERO;
            let mut buf = [0u8; 7];
            while !flag.load(Ordering::Relaxed) {
                let sent = Instant::now();
                raw.send(b"PING\r\n");
                if let Err(e) = raw.stream.read_exact(&mut buf) {
                    return Err(format!("the watcher lost its connection: {e}"));
                }
                if &buf != b"+PONG\r\n" {
                    return Err(format!(
                        "the watcher got {:?}",
                        String::from_utf8_lossy(&buf)
                    ));
                }
                worst = worst.max(sent.elapsed());
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(worst)
        });
        Watcher { stop, thread }
    }

    /// Stops and asserts every PING was answered within the bound.
    fn finish(self, what: &str) {
        self.stop.store(true, Ordering::Relaxed);
        let worst = self.thread.join().unwrap().unwrap();
        assert!(
            worst < ANSWER_BOUND,
            "{what}: a PING waited {worst:?} for its answer"
        );
        eprintln!("{what}: slowest PING of a well-behaved client {worst:?}");
    }
}

/// Asserts the server's RSS settles back near `baseline` (allocators give
/// memory back lazily, so this polls for a while).
fn assert_memory_settles(s: &Server, baseline: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = rss_kib(s.child.id());
        if now < baseline + NEAR_BASELINE_KIB {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: RSS stayed at {now} KiB (baseline {baseline} KiB)"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn assert_still_serving(s: &Server) {
    let mut raw = s.raw();
    raw.roundtrip(b"PING\r\n", b"+PONG\r\n");
}

#[test]
fn a_multi_of_a_million_commands_is_refused_past_the_queue_bound() {
    let _g = serial();
    let s = Server::start(&[]);
    let baseline = rss_kib(s.child.id());
    let watcher = Watcher::start(s.port);
    let mut raw = s.raw();
    raw.roundtrip(&resp(&["MULTI"]), b"+OK\r\n");
    let one = resp(&["ECHO", "queued-payload"]);
    let reader = {
        let mut stream = raw.stream.try_clone().unwrap();
        std::thread::spawn(move || {
            // Count replies: QUEUED up to the bound, then the error.
            let (mut queued, mut refused, mut first_error) = (0usize, 0usize, None);
            let mut pending = Vec::new();
            let mut buf = vec![0u8; 1 << 16];
            while queued + refused < 1_000_000 {
                let n = stream.read(&mut buf).unwrap();
                assert!(n > 0, "closed after {queued} queued, {refused} refused");
                pending.extend_from_slice(&buf[..n]);
                let mut start = 0;
                while let Some(end) = pending[start..].windows(2).position(|w| w == b"\r\n") {
                    let line = &pending[start..start + end];
                    if line == b"+QUEUED" {
                        queued += 1;
                    } else {
                        refused += 1;
                        first_error
                            .get_or_insert_with(|| String::from_utf8_lossy(line).into_owned());
                    }
                    start += end + 2;
                }
                pending.drain(..start);
            }
            (queued, refused, first_error)
        })
    };
    let mut batch = Vec::with_capacity(one.len() * 10_000);
    for _ in 0..100 {
        batch.clear();
        for _ in 0..10_000 {
            batch.extend_from_slice(&one);
        }
        raw.send(&batch);
    }
    let (queued, refused, first_error) = reader.join().unwrap();
    assert_eq!(queued, 100_000);
    assert_eq!(refused, 900_000);
    assert_eq!(
        first_error.as_deref(),
        Some("-ERR MULTI queue is full: at most 100000 commands in a transaction")
    );
    raw.roundtrip(
        &resp(&["EXEC"]),
        b"-EXECABORT Transaction discarded because of previous errors.\r\n",
    );
    raw.roundtrip(b"PING\r\n", b"+PONG\r\n");
    watcher.finish("a MULTI of 1,000,000 commands");
    drop(raw);
    assert_memory_settles(&s, baseline, "a MULTI of 1,000,000 commands");
}

/// 100,000 levels of nesting, as an evaluation context and as a definition.
#[test]
fn json_nested_100k_deep_is_refused_as_invalid_input() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut con = s.conn();
    let deep_array = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_object = format!("{}1{}", r#"{"a":"#.repeat(100_000), "}".repeat(100_000));
    let flag = r#"{"on":true,"variations":[{"name":"a","value":1}],"off_variation":"a","fallthrough":{"variation":"a"}}"#;
    let _: i64 = redis::cmd("FLAG.SET")
        .arg("f")
        .arg(flag)
        .query(&mut con)
        .unwrap();
    let e = common::cmd_err(&mut con, &["FLAG.EVAL", "f", &deep_array]);
    assert!(e.starts_with("ERR") && e.contains("context"), "{e}");
    // A nested object attribute is present but matched by nothing: skipped
    // without recursion, however deep.
    let got: String = redis::cmd("FLAG.EVAL")
        .arg("f")
        .arg(&deep_object)
        .query(&mut con)
        .unwrap();
    assert_eq!(got, "1");
    for definition in [&deep_array, &deep_object] {
        let e = common::cmd_err(&mut con, &["FLAG.SET", "g", definition]);
        assert!(e.starts_with("INVALID"), "{e}");
        let e = common::cmd_err(&mut con, &["SEGMENT.SET", "g", definition]);
        assert!(e.starts_with("INVALID"), "{e}");
    }
    // A value nested deep inside an otherwise valid definition.
    let deep_value = flag.replace(r#""value":1"#, &format!(r#""value":{deep_object}"#));
    let e = common::cmd_err(&mut con, &["FLAG.SET", "g", &deep_value]);
    assert!(e.starts_with("INVALID"), "{e}");
    let got: String = redis::cmd("FLAG.EVAL").arg("f").query(&mut con).unwrap();
    assert_eq!(got, "1");
    assert_still_serving(&s);
}

#[test]
fn pathological_regex_and_glob_patterns_answer_promptly() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut con = s.conn();
    // Catastrophic for a backtracking engine; linear for ours.
    let flag = r#"{"on":true,"variations":[{"name":"a","value":1},{"name":"b","value":2}],"off_variation":"a",
        "rules":[{"id":"r","clauses":[{"attribute":"email","op":"matches","values":["^(a+)+$","(x+x+)+y","^(.*a){20}$"]}],"serve":{"variation":"b"}}],
        "fallthrough":{"variation":"a"}}"#;
    let _: i64 = redis::cmd("FLAG.SET")
        .arg("re")
        .arg(flag)
        .query(&mut con)
        .unwrap();
    let long_key = format!("k{}", "a".repeat(250));
    let _: i64 = redis::cmd("FLAG.SET")
        .arg(&long_key)
        .arg(flag)
        .query(&mut con)
        .unwrap();
    let watcher = Watcher::start(s.port);
    let started = Instant::now();
    let context = format!(r#"{{"key":"u","email":"{}!"}}"#, "a".repeat(100_000));
    for _ in 0..20 {
        let got: String = redis::cmd("FLAG.EVAL")
            .arg("re")
            .arg(&context)
            .query(&mut con)
            .unwrap();
        assert_eq!(got, "1");
    }
    let glob = format!("{}b", "a*".repeat(500));
    for _ in 0..20 {
        let keys: Vec<String> = redis::cmd("FLAG.LIST")
            .arg("MATCH")
            .arg(&glob)
            .query(&mut con)
            .unwrap();
        assert!(keys.is_empty());
        let mut sub = s.raw();
        sub.send(&resp(&["PSUBSCRIBE", &glob]));
        sub.read_until(b":1\r\n");
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "pathological patterns took {:?}",
        started.elapsed()
    );
    watcher.finish("pathological regex and glob patterns");
}

#[test]
fn slowloris_connections_do_not_starve_other_clients() {
    let _g = serial();
    let s = Server::start(&[]);
    let baseline = rss_kib(s.child.id());
    let watcher = Watcher::start(s.port);
    let request = resp(&["ECHO", "slow"]);
    let mut slow: Vec<TcpStream> = (0..500)
        .map(|_| TcpStream::connect(("127.0.0.1", s.port)).unwrap())
        .collect();
    // One byte per second on each of the 500 connections, for 5 seconds.
    for i in 0..5 {
        for c in &mut slow {
            c.write_all(&request[i..i + 1]).unwrap();
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    // The rest of the request arrives: each is answered once, whole.
    for c in &mut slow {
        c.write_all(&request[5..]).unwrap();
    }
    for c in &mut slow {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = [0u8; 10];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"$4\r\nslow\r\n");
    }
    watcher.finish("500 slowloris connections");
    drop(slow);
    assert_memory_settles(&s, baseline, "500 slowloris connections");
    assert_still_serving(&s);
}

#[test]
fn ten_thousand_idle_connections_fill_maxclients_and_the_next_is_refused() {
    let _g = serial();
    let s = Server::start(&["--maxclients", "10000"]);
    let baseline = rss_kib(s.child.id());
    let watcher = Watcher::start(s.port);
    let mut idle = Vec::with_capacity(10_000);
    // The watcher holds one slot; fill the other 9,999, checking each is
    // registered (answered) so the count is exact.
    for i in 0..9_999 {
        let mut c = TcpStream::connect(("127.0.0.1", s.port))
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        if i % 1000 == 999 {
            c.write_all(b"PING\r\n").unwrap();
            let mut got = [0u8; 7];
            c.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"+PONG\r\n", "connection {i}");
        }
        idle.push(c);
    }
    let mut extra = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    let _ = extra.read_to_end(&mut got);
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR max number of clients reached\r\n"
    );
    watcher.finish("10,000 idle connections");
    drop(idle);
    // Slots come back: a new client is served again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"PING\r\n").unwrap();
        let mut reply = [0u8; 7];
        if c.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n" {
            break;
        }
        assert!(Instant::now() < deadline, "slots were not given back");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_memory_settles(&s, baseline, "10,000 idle connections");
}
