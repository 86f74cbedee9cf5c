//! PING latency of a well-behaved client while hostile clients run, one
//! scenario at a time, against a server already listening on loopback.
//! Every scenario is bounded in time and count and stops by itself.
//!
//! `cargo run --release --example hostile_latency -- <port> [seconds-per-scenario]`
//! (benches/hostile_latency.sh starts the server and runs this).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn connect(port: u16) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(s)
}

fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// PINGs once a millisecond for `duration`; returns every round trip.
fn measure(port: u16, duration: Duration) -> Vec<Duration> {
    let mut s = connect(port).expect("the well-behaved client connects");
    let mut samples = Vec::new();
    let mut reply = [0u8; 7];
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let sent = Instant::now();
        s.write_all(b"PING\r\n").expect("PING sent");
        s.read_exact(&mut reply).expect("PONG read");
        samples.push(sent.elapsed());
        std::thread::sleep(Duration::from_millis(1));
    }
    samples
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!(
        "{name:<44} pings {:>6}  p50 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms",
        samples.len(),
        at(0.50).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3,
    );
}

/// Runs `hostile` on its own threads until `stop`, measuring meanwhile.
fn scenario<F>(name: &str, port: u16, duration: Duration, hostile: F)
where
    F: FnOnce(u16, Arc<AtomicBool>) + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let attacker = std::thread::spawn(move || hostile(port, flag));
    // Let the attack get going before measuring.
    std::thread::sleep(Duration::from_millis(300));
    let samples = measure(port, duration);
    stop.store(true, Ordering::Relaxed);
    let _ = attacker.join();
    report(name, samples);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args
        .next()
        .and_then(|p| p.parse().ok())
        .expect("usage: hostile_latency <port> [seconds]");
    let secs: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let d = Duration::from_secs(secs);

    // 200 versions of a flag with a 64 KiB description: the change stream
    // and history the large-reply scenario reads back.
    {
        let mut c = connect(port).expect("setup connects");
        let description = "d".repeat(64 * 1024);
        let mut reply = vec![0u8; 64];
        for i in 0..200 {
            let def = format!(
                r#"{{"description":"{description}","on":true,"variations":[{{"name":"a","value":{i}}}],"off_variation":"a","fallthrough":{{"variation":"a"}}}}"#
            );
            c.write_all(&resp(&[b"FLAG.SET", b"hostile:big", def.as_bytes()]))
                .expect("setup write");
            let _ = c.read(&mut reply).expect("setup reply");
        }
    }

    report("baseline (no hostile client)", measure(port, d));

    scenario("slowloris: 500 conns, 1 byte/s", port, d, |port, stop| {
        let request = resp(&[b"ECHO", b"slowloris"]);
        let mut conns: Vec<TcpStream> = (0..500).filter_map(|_| connect(port).ok()).collect();
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) && i < request.len() {
            for c in &mut conns {
                let _ = c.write_all(&request[i..i + 1]);
            }
            i += 1;
            for _ in 0..10 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });

    scenario(
        "idle: 9,000 connections held open",
        port,
        d,
        |port, stop| {
            let _conns: Vec<TcpStream> = (0..9_000).filter_map(|_| connect(port).ok()).collect();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
        },
    );

    scenario(
        "never reads: pipelines ECHO 64 KiB, no reads",
        port,
        d,
        |port, stop| {
            let Ok(mut c) = connect(port) else { return };
            let payload = vec![b'x'; 64 * 1024];
            let request = resp(&[b"ECHO", &payload]);
            let _ = c.set_write_timeout(Some(Duration::from_millis(100)));
            let mut sent = 0usize;
            while !stop.load(Ordering::Relaxed) && sent < 16 * 1024 {
                if c.write_all(&request).is_ok() {
                    sent += 1;
                }
            }
        },
    );

    scenario("MULTI: 1,000,000 queued commands", port, d, |port, stop| {
        let Ok(mut c) = connect(port) else { return };
        let mut reader = c.try_clone().expect("clone");
        let drain = std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
            }
        });
        let _ = c.write_all(&resp(&[b"MULTI"]));
        let one = resp(&[b"ECHO", b"queued"]);
        let batch: Vec<u8> = one
            .iter()
            .copied()
            .cycle()
            .take(one.len() * 10_000)
            .collect();
        for _ in 0..100 {
            if stop.load(Ordering::Relaxed) || c.write_all(&batch).is_err() {
                break;
            }
        }
        let _ = c.write_all(&resp(&[b"DISCARD"]));
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.shutdown(std::net::Shutdown::Both);
        let _ = drain.join();
    });

    scenario(
        "deep JSON: 100k-deep contexts, looped",
        port,
        d,
        |port, stop| {
            let Ok(mut c) = connect(port) else { return };
            let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
            let request = resp(&[b"FLAG.EVAL", b"hostile:f", deep.as_bytes()]);
            let mut buf = vec![0u8; 4096];
            for _ in 0..10_000 {
                if stop.load(Ordering::Relaxed) || c.write_all(&request).is_err() {
                    break;
                }
                if c.read(&mut buf).is_err() {
                    break;
                }
            }
        },
    );

    scenario(
        "blocked: 1,000 XREAD BLOCK 0 woken by writes",
        port,
        d,
        |port, stop| {
            let mut readers: Vec<TcpStream> =
                (0..1_000).filter_map(|_| connect(port).ok()).collect();
            let block = resp(&[
                b"XREAD",
                b"BLOCK",
                b"0",
                b"STREAMS",
                b"flagstaff:changes",
                b"$",
            ]);
            for r in &mut readers {
                let _ = r.write_all(&block);
            }
            let Ok(mut writer) = connect(port) else {
                return;
            };
            let def = br#"{"on":true,"variations":[{"name":"a","value":1}],"off_variation":"a","fallthrough":{"variation":"a"}}"#;
            let mut reply = vec![0u8; 64];
            let mut buf = vec![0u8; 1 << 16];
            while !stop.load(Ordering::Relaxed) {
                let _ = writer.write_all(&resp(&[b"FLAG.SET", b"hostile:woken", def]));
                let _ = writer.read(&mut reply);
                // Every reader wakes with the entry; block again.
                for r in &mut readers {
                    let _ = r.read(&mut buf);
                    let _ = r.write_all(&block);
                }
            }
        },
    );

    scenario(
        "large replies: XRANGE of 200 x 64 KiB entries",
        port,
        d,
        |port, stop| {
            let Ok(mut c) = connect(port) else { return };
            let request = resp(&[b"XRANGE", b"flagstaff:changes", b"-", b"+"]);
            let mut buf = vec![0u8; 1 << 20];
            while !stop.load(Ordering::Relaxed) {
                if c.write_all(&request).is_err() {
                    break;
                }
                // Read the whole reply (at least 200 x 64 KiB) before asking again.
                let mut got = 0usize;
                while got < 200 * 64 * 1024 {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got += n,
                    }
                }
            }
        },
    );

    scenario(
        "glob: a*a*...b MATCH patterns, looped",
        port,
        d,
        |port, stop| {
            let Ok(mut c) = connect(port) else { return };
            let glob = format!("{}b", "a*".repeat(2_000));
            let request = resp(&[b"FLAG.LIST", b"MATCH", glob.as_bytes()]);
            let mut buf = vec![0u8; 4096];
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) || c.write_all(&request).is_err() {
                    break;
                }
                if c.read(&mut buf).is_err() {
                    break;
                }
            }
        },
    );
}
