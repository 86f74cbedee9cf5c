//! Test harness: starts the real `flagstaff` binary on a free loopback port
//! and gives real clients to it. Tests that start processes hold [`serial`]
//! so they never run in parallel within one test binary.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the process-test lock for the caller's lifetime.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A free loopback port.
/// Never the same port twice in one test process: the kernel may hand a
/// just-released port out again, and a server given the same port for two
/// of its listeners refuses to start.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A fresh, empty directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("flagstaff-test-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Kills and reaps a child process when dropped (also on panic).
pub struct Reap(pub Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether a server on `port` answers PING with PONG (not -LOADING) within `limit`.
pub fn wait_pong(port: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            if s.write_all(b"PING\r\n").is_ok() {
                let mut buf = [0u8; 64];
                if let Ok(n) = s.read(&mut buf) {
                    if buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH") {
                        return true;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Whether a server on `port` with `--requirepass password` answers PING with
/// PONG after AUTH within `limit` (NOAUTH comes before LOADING, so a bare
/// PING cannot tell that it has loaded).
pub fn wait_pong_auth(port: u16, password: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let request = [resp(&["AUTH", password]), b"PING\r\n".to_vec()].concat();
    while Instant::now() < deadline {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            if s.write_all(&request).is_ok() {
                let mut got = Vec::new();
                let mut buf = [0u8; 128];
                while got.iter().filter(|&&b| b == b'\n').count() < 2 {
                    match s.read(&mut buf) {
                        Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                        _ => break,
                    }
                }
                if got.ends_with(b"+PONG\r\n") {
                    return true;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A running server process; killed when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub data_dir: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Server {
    /// Starts a server with extra arguments and waits until it answers PING.
    pub fn start(extra: &[&str]) -> Server {
        let data_dir = temp_dir("data");
        Self::start_in(data_dir, extra)
    }

    /// Starts a server on `data_dir`.
    pub fn start_in(data_dir: PathBuf, extra: &[&str]) -> Server {
        Self::start_with_env(data_dir, extra, &[])
    }

    /// Starts a server on `data_dir` with extra environment variables.
    pub fn start_with_env(data_dir: PathBuf, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Self::start_on(free_port(), data_dir, extra, env)
    }

    /// Starts a server on a chosen client port (cluster members name each other's).
    pub fn start_on(port: u16, data_dir: PathBuf, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let child = spawn(port, &data_dir, &args, &env);
        let mut server = Server {
            child,
            port,
            data_dir,
            args,
            env,
        };
        server.wait_ready();
        server
    }

    /// Kills the process with SIGKILL and waits for it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the process again without waiting until it is ready.
    pub fn respawn(&mut self) {
        self.kill9();
        self.child = spawn(self.port, &self.data_dir, &self.args, &self.env);
    }

    /// Starts the process again on the same port and data dir (after kill9 or exit).
    pub fn restart(&mut self) {
        self.kill9();
        self.child = spawn(self.port, &self.data_dir, &self.args, &self.env);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let password = self
            .args
            .iter()
            .position(|a| a == "--requirepass")
            .and_then(|i| self.args.get(i + 1));
        let ready = match password {
            Some(pw) => wait_pong_auth(self.port, pw, Duration::from_secs(30)),
            None => wait_pong(self.port, Duration::from_secs(30)),
        };
        if !ready {
            let exited = self.child.try_wait().ok().flatten();
            let _ = self.child.kill();
            match exited {
                Some(status) => panic!(
                    "flagstaff on port {} exited before it was ready ({status}); its error is above",
                    self.port
                ),
                None => panic!("flagstaff did not become ready on port {}", self.port),
            }
        }
    }

    /// The redis URL for this server (RESP2 or RESP3).
    pub fn url(&self, resp3: bool) -> String {
        let proto = if resp3 { "?protocol=resp3" } else { "" };
        format!("redis://127.0.0.1:{}/{proto}", self.port)
    }

    /// A RESP2 connection through the `redis` crate.
    pub fn conn(&self) -> redis::Connection {
        self.conn_proto(false)
    }

    /// A connection in the given protocol.
    pub fn conn_proto(&self, resp3: bool) -> redis::Connection {
        let client = redis::Client::open(self.url(resp3)).unwrap();
        let con = client.get_connection().unwrap();
        con.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        con
    }

    /// A raw TCP connection.
    pub fn raw(&self) -> Raw {
        Raw::connect(self.port)
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn spawn(port: u16, data_dir: &PathBuf, args: &[String], env: &[(String, String)]) -> Child {
    // HTTP stays off unless a test asks for a port: servers started side by
    // side must not race for port + 1000.
    let http_off: &[&str] = if args.iter().any(|a| a == "--http-port") {
        &[]
    } else {
        &["--http-port", "0"]
    };
    Command::new(env!("CARGO_BIN_EXE_flagstaff"))
        .args(["--port", &port.to_string(), "--data-dir"])
        .arg(data_dir)
        .args(["--log-level", "warn"])
        .args(http_off)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start flagstaff")
}

/// A raw TCP client for exact bytes.
pub struct Raw {
    pub stream: TcpStream,
}

impl Raw {
    /// Connects to a loopback port.
    pub fn connect(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Raw { stream }
    }

    /// Sends bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Reads until `expected.len()` bytes arrived (or the connection closed) and returns them.
    pub fn read_exact_len(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut buf = vec![0u8; 64 * 1024];
        while out.len() < len {
            match self.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => panic!("read failed after {} of {len} bytes: {e}", out.len()),
            }
        }
        out
    }

    /// Reads until the received bytes end with `suffix`.
    pub fn read_until(&mut self, suffix: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut byte = [0u8; 1];
        while !out.ends_with(suffix) {
            match self.stream.read(&mut byte) {
                Ok(1) => out.push(byte[0]),
                _ => panic!(
                    "connection ended before {:?}",
                    String::from_utf8_lossy(suffix)
                ),
            }
        }
        out
    }

    /// Sends `request` and asserts the reply is exactly `expected`.
    pub fn roundtrip(&mut self, request: &[u8], expected: &[u8]) {
        self.send(request);
        let got = self.read_exact_len(expected.len());
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expected),
            "reply to {:?}",
            String::from_utf8_lossy(request)
        );
    }

    /// Whether the server closed the connection (reads EOF within a second).
    pub fn is_closed(&mut self) -> bool {
        self.stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 1024];
        matches!(self.stream.read(&mut buf), Ok(0) | Err(_))
    }
}

/// Encodes a command as a RESP multibulk request.
pub fn resp(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

/// A string command reply through the redis crate.
pub fn cmd_str(con: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<String> {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(con)
}

/// Any command through the redis crate, as a raw value.
pub fn cmd_value(con: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(con)
}

/// The error text of a command that must fail (code and message).
pub fn cmd_err(con: &mut redis::Connection, args: &[&str]) -> String {
    match cmd_value(con, args) {
        Ok(v) => panic!("{args:?} should fail, got {v:?}"),
        Err(e) => error_text(&e),
    }
}

/// `CODE message` of a redis error.
pub fn error_text(e: &redis::RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_string(),
        _ => e.to_string(),
    }
}

/// Resident set size of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap()
}

/// The cluster-bus secret of [`cluster_node`]s.
pub const CLUSTER_SECRET: &str = "common-test-secret";

/// Cluster node `id` of a test cluster (bus on a free port, [`CLUSTER_SECRET`]);
/// with `join`, it joins the member whose client port that is.
pub fn cluster_node(id: u64, join: Option<u16>, extra: &[&str]) -> Server {
    let mut args: Vec<String> = vec![
        "--node-id".into(),
        id.to_string(),
        "--cluster-port".into(),
        free_port().to_string(),
        "--cluster-secret".into(),
        CLUSTER_SECRET.into(),
    ];
    if let Some(port) = join {
        args.push("--join".into());
        args.push(format!("127.0.0.1:{port}"));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_on(free_port(), temp_dir(&format!("node{id}")), &args, &[])
}

/// Polls `f` until it gives a value, for up to `limit` (panics after).
pub fn eventually<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "condition not met in {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A FLAG.IMPORT document of `n` flags `prod:flag-000000`… of
/// `benches/restart.sh`'s shape (one country rule serving a 50/50 rollout),
/// for tests that measure memory or disk per flag.
pub fn rollout_flags_dump(n: usize) -> String {
    let flag = serde_json::json!({
        "on": true,
        "variations": [{"name": "off", "value": false}, {"name": "on", "value": true}],
        "off_variation": "off",
        "rules": [{"id": "eu", "clauses": [{"attribute": "country", "op": "in", "values": ["DE", "FR"]}],
                   "serve": {"rollout": [{"variation": "on", "weight": 5000}, {"variation": "off", "weight": 5000}]}}],
        "fallthrough": {"variation": "off"},
    });
    let flags: serde_json::Map<String, serde_json::Value> = (0..n)
        .map(|i| (format!("prod:flag-{i:06}"), flag.clone()))
        .collect();
    serde_json::json!({ "flags": flags }).to_string()
}
