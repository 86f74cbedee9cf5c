//! Change propagation: time from a FLAG.SET acknowledgement to the event's
//! arrival at a subscriber, over N changes. Run through
//! `benches/propagation.sh` (one node) or `benches/cluster.sh` (write on the
//! leader, subscribe on another node), or against running servers:
//! `cargo run --release --example propagation -- <port> [changes] [subscriber-port]`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Instant;

fn read_line(r: &mut impl BufRead) -> String {
    let mut s = String::new();
    r.read_line(&mut s).expect("read");
    s.trim_end().to_string()
}

/// Reads one pub/sub message frame (RESP2 array of bulks) and returns its last bulk.
fn read_message(r: &mut BufReader<TcpStream>) -> Vec<u8> {
    let header = read_line(r);
    let n: usize = header[1..].parse().expect("array header");
    let mut last = Vec::new();
    for _ in 0..n {
        let line = read_line(r);
        if let Some(int) = line.strip_prefix(':') {
            last = int.as_bytes().to_vec();
            continue;
        }
        let len: usize = line[1..].parse().expect("bulk header");
        let mut buf = vec![0u8; len + 2];
        r.read_exact(&mut buf).expect("bulk");
        buf.truncate(len);
        last = buf;
    }
    last
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args
        .get(1)
        .and_then(|p| p.parse().ok())
        .expect("usage: propagation <port> [changes] [subscriber-port]");
    let changes: u64 = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let sub_port: u16 = args.get(3).and_then(|p| p.parse().ok()).unwrap_or(port);
    let received: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let mut sub = TcpStream::connect(("127.0.0.1", sub_port)).expect("connect");
    sub.write_all(b"*2\r\n$9\r\nSUBSCRIBE\r\n$10\r\nflag:bench\r\n")
        .unwrap();
    let mut reader = BufReader::new(sub);
    let _confirm = read_message(&mut reader);
    let rx = received.clone();
    let listener = std::thread::spawn(move || {
        for _ in 0..changes {
            let payload = read_message(&mut reader);
            let now = Instant::now();
            let event: serde_json::Value = serde_json::from_slice(&payload).expect("event json");
            rx.lock()
                .unwrap()
                .insert(event["version"].as_u64().unwrap(), now);
        }
    });
    let mut con = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_connection()
        .unwrap();
    let mut acked = HashMap::new();
    for i in 0..changes {
        let def = format!(
            r#"{{"on":true,"variations":[{{"name":"a","value":{i}}}],"off_variation":"a","fallthrough":{{"variation":"a"}}}}"#
        );
        let version: u64 = redis::cmd("FLAG.SET")
            .arg("bench")
            .arg(def)
            .query(&mut con)
            .unwrap();
        acked.insert(version, Instant::now());
    }
    listener.join().unwrap();
    let received = received.lock().unwrap();
    let mut lat: Vec<f64> = acked
        .iter()
        .map(|(v, ack)| match received.get(v) {
            // An event can arrive before the writer has read its reply.
            Some(got) => got.saturating_duration_since(*ack).as_secs_f64() * 1e3,
            None => f64::INFINITY,
        })
        .collect();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize];
    let early = acked
        .iter()
        .filter(|(v, ack)| received.get(v).is_some_and(|g| g <= ack))
        .count();
    println!(
        "changes {changes}: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({} arrived before the writer read its reply)",
        pct(0.5),
        pct(0.99),
        lat[lat.len() - 1],
        early
    );
}
