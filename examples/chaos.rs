//! The load and the checker behind `cluster/chaos.sh`.
//!
//! `chaos load --nodes A,B,.. --history FILE --stop FILE` writes flags from
//! several clients (spread over every node) until the stop file appears, and
//! records every request and its reply, with invoke and completion times.
//!
//! `chaos check --nodes A,B,.. --history FILE` then checks, against every
//! node's audit history (run the cluster with a large `--audit-retention`):
//! every acknowledged write is present on every node with its value; per key,
//! a write acknowledged before another began has the lower version; no two
//! different values share a version; every node holds the same history.
//! It prints a summary and exits non-zero on any violation.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::{Duration, Instant};

const CLIENTS: usize = 8;
const KEYS: usize = 12;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Op {
    client: usize,
    node: String,
    key: String,
    value: u64,
    /// Microseconds since the load started.
    invoked: u64,
    completed: u64,
    /// `ok` with the version, or the error text.
    ok: Option<u64>,
    error: Option<String>,
}

fn definition(value: u64) -> String {
    format!(
        r#"{{"on":true,"variations":[{{"name":"v","value":{value}}},{{"name":"off","value":0}}],"off_variation":"off","fallthrough":{{"variation":"v"}}}}"#
    )
}

fn connect(addr: &str) -> Option<redis::Connection> {
    let client = redis::Client::open(format!("redis://{addr}/")).ok()?;
    let con = client
        .get_connection_with_timeout(Duration::from_secs(1))
        .ok()?;
    con.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
    Some(con)
}

fn load(nodes: &[String], history: &Path, stop: &Path) {
    let start = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel::<Op>();
    let mut handles = Vec::new();
    for client in 0..CLIENTS {
        let node = nodes[client % nodes.len()].clone();
        let tx = tx.clone();
        let stop = stop.to_path_buf();
        handles.push(std::thread::spawn(move || {
            let mut con: Option<redis::Connection> = None;
            let mut seq = 0u64;
            while !stop.exists() {
                if con.is_none() {
                    con = connect(&node);
                    if con.is_none() {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                }
                seq += 1;
                let value = (client as u64 + 1) * 1_000_000_000 + seq;
                let key = format!("chaos:k{}", (seq as usize * 7 + client) % KEYS);
                let invoked = start.elapsed().as_micros() as u64;
                let Some(c) = con.as_mut() else { continue };
                let reply: redis::RedisResult<u64> = redis::cmd("FLAG.SET")
                    .arg(&key)
                    .arg(definition(value))
                    .query(c);
                let completed = start.elapsed().as_micros() as u64;
                let (ok, error) = match reply {
                    Ok(v) => (Some(v), None),
                    Err(e) => {
                        if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                            con = None;
                        }
                        (None, Some(e.to_string()))
                    }
                };
                let failed = error.is_some();
                let _ = tx.send(Op {
                    client,
                    node: node.clone(),
                    key,
                    value,
                    invoked,
                    completed,
                    ok,
                    error,
                });
                if failed {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }));
    }
    drop(tx);
    let file = std::fs::File::create(history).expect("create the history file");
    let mut out = std::io::BufWriter::new(file);
    for op in rx {
        let _ = writeln!(out, "{}", serde_json::to_string(&op).unwrap_or_default());
    }
    let _ = out.flush();
    for h in handles {
        let _ = h.join();
    }
}

/// Per key, every version a node holds and its value.
type Histories = BTreeMap<String, BTreeMap<u64, u64>>;

/// Every version of `key` a node's audit log holds: version → value.
fn node_history(con: &mut redis::Connection, key: &str) -> Result<BTreeMap<u64, u64>, String> {
    let entries: Vec<HashMap<String, redis::Value>> = redis::cmd("FLAG.HISTORY")
        .arg(key)
        .query(con)
        .map_err(|e| format!("FLAG.HISTORY {key}: {e}"))?;
    let mut versions = BTreeMap::new();
    for entry in entries {
        let version = match entry.get("version") {
            Some(redis::Value::Int(v)) => *v as u64,
            other => return Err(format!("{key}: history entry without a version: {other:?}")),
        };
        let Some(redis::Value::BulkString(after)) = entry.get("after") else {
            return Err(format!("{key}: history entry without a definition"));
        };
        let after: serde_json::Value =
            serde_json::from_slice(after).map_err(|e| format!("{key}: history entry: {e}"))?;
        let value = after["variations"][0]["value"]
            .as_u64()
            .ok_or_else(|| format!("{key}: history entry without a value"))?;
        versions.insert(version, value);
    }
    Ok(versions)
}

fn check(nodes: &[String], history: &Path) -> bool {
    let file = std::fs::File::open(history).expect("open the history file");
    let ops: Vec<Op> = std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect();
    let acked: Vec<&Op> = ops.iter().filter(|o| o.ok.is_some()).collect();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for o in ops.iter().filter_map(|o| o.error.as_deref()) {
        let code = o.split([':', ' ']).next().unwrap_or(o).to_string();
        *errors.entry(code).or_default() += 1;
    }
    println!(
        "history: {} writes, {} acknowledged, errors by kind: {errors:?}",
        ops.len(),
        acked.len()
    );
    let mut violations = Vec::new();
    // No two acknowledged writes share a key and version.
    let mut seen: BTreeMap<(&str, u64), u64> = BTreeMap::new();
    for o in &acked {
        let version = o.ok.unwrap_or_default();
        if let Some(other) = seen.insert((o.key.as_str(), version), o.value) {
            violations.push(format!(
                "{} version {version} acknowledged for two values: {other} and {}",
                o.key, o.value
            ));
        }
    }
    // Versions grow in real time: acknowledged before another began → lower version.
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for o in &acked {
        by_key.entry(o.key.as_str()).or_default().push(o);
    }
    for (key, writes) in &by_key {
        let mut by_completion = writes.clone();
        by_completion.sort_by_key(|o| o.completed);
        let mut by_invocation = writes.clone();
        by_invocation.sort_by_key(|o| o.invoked);
        // For each write, the highest version of any write completed before it began.
        let mut i = 0;
        let mut max_before = 0u64;
        for b in by_invocation {
            while i < by_completion.len() && by_completion[i].completed < b.invoked {
                max_before = max_before.max(by_completion[i].ok.unwrap_or_default());
                i += 1;
            }
            let vb = b.ok.unwrap_or_default();
            if vb <= max_before {
                violations.push(format!(
                    "{key}: value {} got version {vb} although version {max_before} was acknowledged before it began",
                    b.value
                ));
            }
        }
    }
    // Every node holds every acknowledged write, and all nodes hold the same history.
    let mut reference: Option<(String, Histories)> = None;
    for node in nodes {
        let Some(mut con) = connect(node) else {
            violations.push(format!("{node}: unreachable for the check"));
            continue;
        };
        let mut all = BTreeMap::new();
        for k in 0..KEYS {
            let key = format!("chaos:k{k}");
            match node_history(&mut con, &key) {
                Ok(h) => {
                    all.insert(key, h);
                }
                Err(e) => violations.push(format!("{node}: {e}")),
            }
        }
        for o in &acked {
            let version = o.ok.unwrap_or_default();
            match all.get(&o.key).and_then(|h| h.get(&version)) {
                Some(v) if *v == o.value => {}
                Some(v) => violations.push(format!(
                    "{node}: {} version {version} holds {v}, but {} was acknowledged",
                    o.key, o.value
                )),
                None => violations.push(format!(
                    "{node}: acknowledged {} version {version} (value {}) is missing",
                    o.key, o.value
                )),
            }
        }
        match &reference {
            None => reference = Some((node.clone(), all)),
            Some((first, expected)) => {
                if *expected != all {
                    violations.push(format!("{node}: history differs from {first}"));
                }
            }
        }
    }
    for v in violations.iter().take(20) {
        println!("VIOLATION {v}");
    }
    println!(
        "check: {} violations over {} acknowledged writes on {} nodes",
        violations.len(),
        acked.len(),
        nodes.len()
    );
    violations.is_empty() && !acked.is_empty()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| -> Option<String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let nodes: Vec<String> = flag("--nodes")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let history = flag("--history").unwrap_or_else(|| "history.jsonl".into());
    match args.first().map(String::as_str) {
        Some("load") if !nodes.is_empty() => {
            let stop = flag("--stop").unwrap_or_else(|| "stop".into());
            load(&nodes, Path::new(&history), Path::new(&stop));
        }
        Some("check") if !nodes.is_empty() => {
            if !check(&nodes, Path::new(&history)) {
                std::process::exit(1);
            }
        }
        _ => {
            eprintln!("usage: chaos load|check --nodes host:port,... --history FILE [--stop FILE]");
            std::process::exit(2);
        }
    }
}
