//! Pub/sub and flag change events through the real binary.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{resp, serial, Server};
use serde_json::Value;

/// A RESP frame as the tests need it: arrays/pushes of bulks, ints and nils.
#[derive(Debug, Clone, PartialEq)]
enum Frame {
    Bulk(Vec<u8>),
    Int(i64),
    Nil,
    Simple(String),
    Error(String),
    Array(Vec<Frame>),
}

fn line(r: &mut impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    loop {
        r.read_exact(&mut b).expect("connection ended");
        if b[0] == b'\n' && out.last() == Some(&b'\r') {
            out.pop();
            return out;
        }
        out.push(b[0]);
    }
}

fn frame(r: &mut impl Read) -> Frame {
    let l = line(r);
    let rest = String::from_utf8_lossy(&l[1..]).into_owned();
    match l[0] {
        b'$' if rest == "-1" => Frame::Nil,
        b'$' => {
            let n: usize = rest.parse().unwrap();
            let mut buf = vec![0u8; n + 2];
            r.read_exact(&mut buf).unwrap();
            buf.truncate(n);
            Frame::Bulk(buf)
        }
        b'_' => Frame::Nil,
        b':' => Frame::Int(rest.parse().unwrap()),
        b'+' => Frame::Simple(rest),
        b'-' => Frame::Error(rest),
        b'*' | b'>' => Frame::Array(
            (0..rest.parse::<usize>().unwrap())
                .map(|_| frame(r))
                .collect(),
        ),
        b'%' => Frame::Array(
            (0..2 * rest.parse::<usize>().unwrap())
                .map(|_| frame(r))
                .collect(),
        ),
        other => panic!("unexpected frame type {}", other as char),
    }
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

const FLAG: &str = r#"{"on":true,"variations":[{"name":"a","value":1},{"name":"b","value":2}],"off_variation":"a","fallthrough":{"variation":"b"}}"#;

#[test]
fn resp2_subscribe_replies_and_subscribed_state_rules_are_redis_exact() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut raw = s.raw();
    raw.roundtrip(
        &resp(&["SUBSCRIBE", "a", "b"]),
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n",
    );
    raw.roundtrip(
        &resp(&["FLAG.GET", "x"]),
        b"-ERR Can't execute 'flag.get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n",
    );
    raw.roundtrip(&resp(&["PING"]), b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    raw.roundtrip(
        &resp(&["PSUBSCRIBE", "n*"]),
        b"*3\r\n$10\r\npsubscribe\r\n$2\r\nn*\r\n:3\r\n",
    );
    let mut publisher = s.conn();
    let n: i64 = redis::cmd("PUBLISH")
        .arg("a")
        .arg("hi")
        .query(&mut publisher)
        .unwrap();
    assert_eq!(n, 1);
    raw.roundtrip(b"", b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n");
    let n: i64 = redis::cmd("PUBLISH")
        .arg("news")
        .arg("x")
        .query(&mut publisher)
        .unwrap();
    assert_eq!(n, 1);
    raw.roundtrip(
        b"",
        b"*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$1\r\nx\r\n",
    );
    let numsub: Vec<redis::Value> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("a")
        .arg("zz")
        .query(&mut publisher)
        .unwrap();
    assert_eq!(numsub.len(), 4);
    let chans: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .query(&mut publisher)
        .unwrap();
    assert_eq!(chans, vec!["a", "b"]);
    let numpat: i64 = redis::cmd("PUBSUB")
        .arg("NUMPAT")
        .query(&mut publisher)
        .unwrap();
    assert_eq!(numpat, 1);
    raw.roundtrip(
        &resp(&["UNSUBSCRIBE"]),
        b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:2\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:1\r\n",
    );
    raw.roundtrip(
        &resp(&["PUNSUBSCRIBE"]),
        b"*3\r\n$12\r\npunsubscribe\r\n$2\r\nn*\r\n:0\r\n",
    );
    raw.roundtrip(
        &resp(&["UNSUBSCRIBE"]),
        b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n",
    );
    raw.roundtrip(&resp(&["PING"]), b"+PONG\r\n");
    let err = common::cmd_err(&mut publisher, &["PUBLISH", "flag:prod:x", "forged"]);
    assert!(err.contains("reserved"), "{err}");
    let chans: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .query(&mut publisher)
        .unwrap();
    assert!(chans.is_empty());
}

#[test]
fn resp3_subscriptions_use_push_frames_and_allow_other_commands() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut raw = s.raw();
    raw.send(&resp(&["HELLO", "3"]));
    raw.read_until(b"*0\r\n");
    raw.roundtrip(
        &resp(&["SUBSCRIBE", "c"]),
        b">3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n",
    );
    raw.roundtrip(&resp(&["FLAG.EVAL", "missing"]), b"_\r\n");
    raw.roundtrip(&resp(&["PING"]), b"+PONG\r\n");
    let mut publisher = s.conn();
    let _: i64 = redis::cmd("PUBLISH")
        .arg("c")
        .arg("m")
        .query(&mut publisher)
        .unwrap();
    raw.roundtrip(b"", b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n");
    raw.roundtrip(&resp(&["RESET"]), b"+RESET\r\n");
    let n: i64 = redis::cmd("PUBLISH")
        .arg("c")
        .arg("m")
        .query(&mut publisher)
        .unwrap();
    assert_eq!(n, 0, "RESET drops subscriptions");
}

/// Reads `count` change events from a subscriber and returns their revisions.
fn read_events(sub: &mut BufReader<TcpStream>, count: usize) -> Vec<u64> {
    let mut revisions = Vec::with_capacity(count);
    while revisions.len() < count {
        let Frame::Array(parts) = frame(sub) else {
            panic!("expected a message")
        };
        let payload = match parts.last() {
            Some(Frame::Bulk(p)) => p.clone(),
            other => panic!("bad message {other:?}"),
        };
        let event: Value = serde_json::from_slice(&payload).unwrap();
        for field in [
            "event",
            "kind",
            "key",
            "version",
            "revision",
            "actor",
            "ts",
            "definition",
        ] {
            assert!(event.get(field).is_some(), "event lacks {field}: {event}");
        }
        revisions.push(event["revision"].as_u64().unwrap());
    }
    revisions
}

#[test]
fn two_hundred_subscribers_see_every_one_of_1000_changes_once_in_revision_order() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut subs = Vec::new();
    for i in 0..200 {
        let mut sock = connect(s.port);
        let resp3 = i % 2 == 0;
        if resp3 {
            sock.write_all(&resp(&["HELLO", "3"])).unwrap();
        }
        let cmd = if i % 4 < 2 {
            resp(&["SUBSCRIBE", "flag:prod:hot"])
        } else {
            resp(&["PSUBSCRIBE", "flag:prod:*"])
        };
        sock.write_all(&cmd).unwrap();
        let mut reader = BufReader::new(sock);
        if resp3 {
            let _hello = frame(&mut reader);
        }
        let _confirm = frame(&mut reader);
        subs.push(reader);
    }
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let url = s.url(false);
            std::thread::spawn(move || {
                let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
                for i in 0..250 {
                    let def = FLAG.replace("\"value\":2", &format!("\"value\":{}", w * 1000 + i));
                    let _: i64 = redis::cmd("FLAG.SET")
                        .arg("prod:hot")
                        .arg(def)
                        .query(&mut con)
                        .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let mut reference: Option<Vec<u64>> = None;
    for sub in subs.iter_mut() {
        let revisions = read_events(sub, 1000);
        assert!(
            revisions.windows(2).all(|w| w[0] <= w[1]),
            "revisions out of order"
        );
        match &reference {
            None => reference = Some(revisions),
            Some(r) => assert_eq!(&revisions, r, "every subscriber sees the same sequence"),
        }
        // Nothing more than the 1000 events.
        sub.get_mut()
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut b = [0u8; 1];
        assert!(
            sub.get_mut().read(&mut b).is_err(),
            "an event was delivered twice"
        );
    }
}

#[test]
fn a_subscriber_that_never_reads_is_cut_off_and_memory_stays_bounded() {
    let _g = serial();
    let limit = 4 * 1024 * 1024;
    let s = Server::start(&["--pubsub-hard-limit", &limit.to_string()]);
    let mut stuck = connect(s.port);
    stuck
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    // Tiny receive buffer so the kernel cannot absorb the backlog for it.
    stuck.write_all(&resp(&["SUBSCRIBE", "load"])).unwrap();
    let mut healthy = BufReader::new(connect(s.port));
    healthy
        .get_mut()
        .write_all(&resp(&["SUBSCRIBE", "load"]))
        .unwrap();
    let _ = frame(&mut healthy);
    std::thread::sleep(Duration::from_millis(100));
    let before = common::rss_kib(s.child.id());
    let payload = "x".repeat(200);
    let total = 200_000;
    let reader = std::thread::spawn(move || {
        let mut got = 0;
        while got < total {
            let Frame::Array(_) = frame(&mut healthy) else {
                panic!("expected message")
            };
            got += 1;
        }
        got
    });
    let mut publisher = connect(s.port);
    let mut peak = before;
    let mut batch = Vec::new();
    for i in 0..total {
        batch.extend_from_slice(&resp(&["PUBLISH", "load", &payload]));
        if i % 2000 == 1999 {
            publisher.write_all(&batch).unwrap();
            batch.clear();
            peak = peak.max(common::rss_kib(s.child.id()));
        }
    }
    // Drain the publisher's replies.
    let mut replies = BufReader::new(publisher);
    for _ in 0..total {
        let _ = frame(&mut replies);
    }
    assert_eq!(
        reader.join().unwrap(),
        total,
        "the healthy subscriber got everything"
    );
    let margin_kib = 48 * 1024;
    assert!(
        peak < before + (limit as u64 / 1024) + margin_kib,
        "RSS grew from {before} KiB to {peak} KiB"
    );
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query(&mut s.conn())
        .unwrap();
    assert!(
        info.contains("client_output_buffer_limit_disconnections:1"),
        "{info}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut closed = false;
    let mut sink = vec![0u8; 1 << 20];
    while Instant::now() < deadline && !closed {
        match stuck.read(&mut sink) {
            Ok(0) => closed = true,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => closed = true,
        }
    }
    assert!(closed, "the stuck subscriber was disconnected");
}
