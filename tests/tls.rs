//! TLS through the real binary: the TLS client port (`--tls-auth-clients`
//! yes/no/optional), start-up errors naming the bad file, `--port 0`, reload
//! on SIGHUP, HTTPS (`--tls-http`) and a cluster bus over mutual TLS
//! (`--tls-cluster`). Certificates are generated per test with rcgen.

#[path = "common/certs.rs"]
mod certs;
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use certs::{Leaf, Pki};
use common::{free_port, resp, serial, temp_dir, Server};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

const FLAG: &str = r#"{"on":true,"variations":[{"name":"off","value":false},{"name":"on","value":true}],"off_variation":"off","fallthrough":{"variation":"on"}}"#;

/// A TLS client over a blocking socket.
type TlsConn = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn client_config(ca: &Path, cert: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    Arc::new(match cert {
        None => builder.with_no_client_auth(),
        Some(leaf) => {
            let chain = CertificateDer::pem_file_iter(&leaf.cert)
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(&leaf.key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    })
}

/// Connects and completes the handshake (the server may still refuse the
/// client's certificate afterwards: TLS 1.3 reports that on the first read).
fn tls_connect(port: u16, ca: &Path, cert: Option<&Leaf>) -> std::io::Result<TlsConn> {
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(client_config(ca, cert), name).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// Sends one command and reads one reply (simple line, or a bulk string).
fn tls_cmd(s: &mut TlsConn, args: &[&str]) -> std::io::Result<String> {
    s.write_all(&resp(args))?;
    s.flush()?;
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if got.ends_with(b"\r\n") {
            if got[0] != b'$' {
                break;
            }
            let len: i64 = String::from_utf8_lossy(&got[1..got.len() - 2])
                .parse()
                .unwrap();
            if len < 0 {
                break;
            }
            let mut body = vec![0u8; len as usize + 2];
            s.read_exact(&mut body)?;
            got.extend_from_slice(&body);
            break;
        }
        match s.read(&mut byte)? {
            0 => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed",
                ))
            }
            _ => got.push(byte[0]),
        }
    }
    Ok(String::from_utf8_lossy(&got).into_owned())
}

/// Whether a client with `cert` gets PONG on the TLS port.
fn pong(port: u16, ca: &Path, cert: Option<&Leaf>) -> bool {
    match tls_connect(port, ca, cert) {
        Ok(mut s) => matches!(tls_cmd(&mut s, &["PING"]), Ok(r) if r == "+PONG\r\n"),
        Err(_) => false,
    }
}

/// A flagstaff process whose stderr goes to a file (so tests can read its log).
struct Proc {
    child: Child,
    log: PathBuf,
    data: PathBuf,
}

impl Proc {
    fn spawn(args: &[String]) -> Proc {
        let data = temp_dir("tls-data");
        let log = data.with_extension("log");
        let child = Command::new(env!("CARGO_BIN_EXE_flagstaff"))
            .arg("--data-dir")
            .arg(&data)
            .args(["--log-level", "info", "--http-port", "0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Proc { child, log, data }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
        let _ = std::fs::remove_file(&self.log);
    }
}

fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Runs the binary to completion (a start-up that must fail) and returns its stderr.
fn start_fails(args: &[String]) -> String {
    let data = temp_dir("tls-fail");
    let port = free_port().to_string();
    let port_arg: &[&str] = if args.iter().any(|a| a == "--port") {
        &[]
    } else {
        &["--port", &port]
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_flagstaff"))
        .arg("--data-dir")
        .arg(&data)
        .args(["--http-port", "0"])
        .args(port_arg)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("flagstaff kept running with {args:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let _ = std::fs::remove_dir_all(&data);
    assert!(!status.success(), "started with {args:?}: {stderr}");
    stderr
}

#[test]
fn tls_clients_with_a_certificate_evaluate_flags_and_others_are_refused() {
    let _g = serial();
    let pki = Pki::generate(&temp_dir("pki"));
    let tls_port = free_port();
    let args = pki.server_args(tls_port);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // A CA and no --tls-auth-clients: client certificates are required (Redis's default).
    let server = Server::start(&args);
    assert!(wait_for(Duration::from_secs(10), || pong(
        tls_port,
        &pki.ca_file,
        Some(&pki.client)
    )));
    let mut s = tls_connect(tls_port, &pki.ca_file, Some(&pki.client)).unwrap();
    let set = tls_cmd(&mut s, &["FLAG.SET", "prod:checkout", FLAG]).unwrap();
    assert!(set.starts_with(':'), "{set}");
    assert_eq!(
        tls_cmd(&mut s, &["FLAG.EVAL", "prod:checkout", r#"{"key":"u1"}"#]).unwrap(),
        "$4\r\ntrue\r\n"
    );
    // The same data through the plaintext port, which stays open beside TLS.
    let mut plain = server.conn();
    let v: String = redis::cmd("FLAG.EVAL")
        .arg("prod:checkout")
        .arg(r#"{"key":"u1"}"#)
        .query(&mut plain)
        .unwrap();
    assert_eq!(v, "true");
    // No certificate, or one from another CA: no answer, and the server is unharmed.
    assert!(!pong(tls_port, &pki.ca_file, None));
    assert!(!pong(tls_port, &pki.ca_file, Some(&pki.foreign)));
    // Plaintext bytes on the TLS port get nothing either.
    let mut raw = common::Raw::connect(tls_port);
    raw.send(b"PING\r\n");
    let mut buf = [0u8; 64];
    let n = raw.stream.read(&mut buf).unwrap_or(0);
    assert!(!buf[..n].starts_with(b"+PONG"), "{:?}", &buf[..n]);
    // A client that does not trust the server's CA refuses the server.
    assert!(!pong(tls_port, &pki.foreign_ca_file, Some(&pki.client)));
    assert_eq!(tls_cmd(&mut s, &["PING"]).unwrap(), "+PONG\r\n");
    let _ = std::fs::remove_dir_all(&pki.dir);
}

#[test]
fn tls_auth_clients_optional_and_no() {
    let _g = serial();
    let pki = Pki::generate(&temp_dir("pki"));
    let tls_port = free_port();
    let mut args = pki.server_args(tls_port);
    args.extend(strings(&["--tls-auth-clients", "optional"]));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(&args);
    assert!(wait_for(Duration::from_secs(10), || pong(
        tls_port,
        &pki.ca_file,
        None
    )));
    assert!(pong(tls_port, &pki.ca_file, Some(&pki.client)));
    // Optional still verifies a certificate that is sent.
    assert!(!pong(tls_port, &pki.ca_file, Some(&pki.foreign)));
    drop(server);

    // `no`, without any CA: certificates are neither asked for nor checked.
    let tls_port = free_port();
    let server = Server::start(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        pki.server.cert.to_str().unwrap(),
        "--tls-key-file",
        pki.server.key.to_str().unwrap(),
    ]);
    assert!(wait_for(Duration::from_secs(10), || pong(
        tls_port,
        &pki.ca_file,
        None
    )));
    assert!(pong(tls_port, &pki.ca_file, Some(&pki.foreign)));
    drop(server);
    let _ = std::fs::remove_dir_all(&pki.dir);
}

#[test]
fn bad_tls_files_stop_start_up_with_one_line_naming_the_file() {
    let _g = serial();
    let pki = Pki::generate(&temp_dir("pki"));
    let dir = &pki.dir;
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM\n").unwrap();
    let missing = dir.join("missing.pem");
    let other = pki.ca.localhost(dir, "other");
    let tls = |cert: &Path, key: &Path| {
        strings(&[
            "--tls-port",
            &free_port().to_string(),
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
        ])
    };
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (
            tls(&missing, &pki.server.key),
            vec!["--tls-cert-file", missing.to_str().unwrap(), "cannot read"],
        ),
        (
            tls(&garbage, &pki.server.key),
            vec![
                "--tls-cert-file",
                garbage.to_str().unwrap(),
                "no certificate",
            ],
        ),
        (
            // A certificate where the key should be.
            tls(&pki.server.cert, &pki.server.cert),
            vec![
                "--tls-key-file",
                pki.server.cert.to_str().unwrap(),
                "no private key",
            ],
        ),
        (
            tls(&pki.server.cert, &other.key),
            vec![
                "--tls-key-file",
                other.key.to_str().unwrap(),
                "does not go with",
                pki.server.cert.to_str().unwrap(),
            ],
        ),
        (
            [
                tls(&pki.server.cert, &pki.server.key),
                strings(&["--tls-ca-cert-file", garbage.to_str().unwrap()]),
            ]
            .concat(),
            vec!["--tls-ca-cert-file", garbage.to_str().unwrap()],
        ),
        (
            strings(&["--tls-port", &free_port().to_string()]),
            vec!["needs --tls-cert-file"],
        ),
        (
            [
                tls(&pki.server.cert, &pki.server.key),
                strings(&["--tls-auth-clients", "yes"]),
            ]
            .concat(),
            vec!["--tls-ca-cert-file"],
        ),
    ];
    for (args, wanted) in cases {
        let stderr = start_fails(&args);
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("flagstaff:"))
            .collect();
        assert_eq!(lines.len(), 1, "one line for {args:?}: {stderr}");
        for w in wanted {
            assert!(lines[0].contains(w), "{w:?} missing in {:?}", lines[0]);
        }
    }
    // --port 0 without a TLS port would serve nobody.
    let stderr = start_fails(&strings(&["--port", "0"]));
    assert!(stderr.contains("--tls-port"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The TCP ports process `pid` listens on (from /proc).
fn listening_ports(pid: u32) -> Vec<u16> {
    let mut inodes = std::collections::HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        if let Ok(target) = std::fs::read_link(fd.unwrap().path()) {
            let t = target.to_string_lossy().into_owned();
            if let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                inodes.insert(inode.to_string());
            }
        }
    }
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address, st (0A = LISTEN), inode
            if f.len() > 9 && f[3] == "0A" && inodes.contains(f[9]) {
                let port = f[1].rsplit(':').next().unwrap();
                ports.push(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports.sort();
    ports
}

#[test]
fn port_0_serves_tls_only() {
    let _g = serial();
    let pki = Pki::generate(&temp_dir("pki"));
    let tls_port = free_port();
    let mut args = pki.server_args(tls_port);
    args.extend(strings(&["--port", "0"]));
    let p = Proc::spawn(&args);
    assert!(
        wait_for(Duration::from_secs(30), || pong(
            tls_port,
            &pki.ca_file,
            Some(&pki.client)
        )),
        "{}",
        p.log()
    );
    assert_eq!(listening_ports(p.child.id()), vec![tls_port]);
    let _ = std::fs::remove_dir_all(&pki.dir);
}

/// The leaf certificate the server presents on a new connection.
fn presented(port: u16, pki: &Pki) -> Vec<u8> {
    let s = tls_connect(port, &pki.ca_file, Some(&pki.client)).unwrap();
    s.conn.peer_certificates().unwrap()[0].to_vec()
}

fn der_of(file: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(file)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

#[test]
fn sighup_reloads_certificates_without_dropping_connections() {
    let _g = serial();
    let pki = Pki::generate(&temp_dir("pki"));
    let tls_port = free_port();
    let p = Proc::spawn(&pki.server_args(tls_port));
    assert!(
        wait_for(Duration::from_secs(30), || pong(
            tls_port,
            &pki.ca_file,
            Some(&pki.client)
        )),
        "{}",
        p.log()
    );
    let first = der_of(&pki.server.cert);
    assert_eq!(presented(tls_port, &pki), first);
    let mut old = tls_connect(tls_port, &pki.ca_file, Some(&pki.client)).unwrap();
    assert_eq!(tls_cmd(&mut old, &["PING"]).unwrap(), "+PONG\r\n");

    // New files in place, then SIGHUP.
    let renewed = pki.ca.localhost(&pki.dir, "renewed");
    std::fs::copy(&renewed.cert, &pki.server.cert).unwrap();
    std::fs::copy(&renewed.key, &pki.server.key).unwrap();
    let second = der_of(&pki.server.cert);
    assert_ne!(first, second);
    p.signal(libc::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(10), || presented(tls_port, &pki)
            == second),
        "{}",
        p.log()
    );
    assert!(p.log().contains("TLS certificates reloaded"), "{}", p.log());
    // The connection made before the reload is still served.
    assert_eq!(tls_cmd(&mut old, &["PING"]).unwrap(), "+PONG\r\n");

    // A reload that fails keeps the certificates in use, and says so once.
    std::fs::write(&pki.server.cert, "not a certificate").unwrap();
    p.signal(libc::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(10), || p
            .log()
            .contains("TLS reload failed")),
        "{}",
        p.log()
    );
    let failures: Vec<String> = p
        .log()
        .lines()
        .filter(|l| l.contains("TLS reload failed"))
        .map(String::from)
        .collect();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].contains(pki.server.cert.to_str().unwrap()),
        "{}",
        failures[0]
    );
    assert_eq!(presented(tls_port, &pki), second);
    assert_eq!(tls_cmd(&mut old, &["PING"]).unwrap(), "+PONG\r\n");
    let _ = std::fs::remove_dir_all(&pki.dir);
}

/// One HTTP/1.1 request over TLS; returns the status line and the body.
fn https_get(port: u16, pki: &Pki, path: &str) -> std::io::Result<(String, String)> {
    let text = https_exchange(
        port,
        pki,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )?;
    let status = text.lines().next().unwrap_or_default().to_string();
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    Ok((status, body))
}

/// Sends one raw HTTP/1.1 request over TLS and returns the whole answer (head and body).
fn https_exchange(port: u16, pki: &Pki, request: &str) -> std::io::Result<String> {
    let mut s = tls_connect(port, &pki.ca_file, Some(&pki.client))?;
    s.write_all(request.as_bytes())?;
    s.flush()?;
    let mut raw = Vec::new();
    match s.read_to_end(&mut raw) {
        Ok(_) => {}
        // hyper closes without close_notify; what was read is complete.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(e),
    }
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

#[test]
fn tls_http_serves_https_with_the_same_certificate() {
    let _g = serial();
    let pki = Pki::generate(&temp_dir("pki"));
    let http_port = free_port();
    let mut args = pki.server_args(free_port());
    args.extend(strings(&[
        "--tls-http",
        "yes",
        "--http-port",
        &http_port.to_string(),
    ]));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _server = Server::start(&args);
    let mut answer = None;
    assert!(wait_for(Duration::from_secs(10), || {
        answer = https_get(http_port, &pki, "/livez").ok();
        answer.is_some()
    }));
    let (status, body) = answer.unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("ok"), "{body}");
    assert_eq!(presented(http_port, &pki), der_of(&pki.server.cert));
    // A console login over HTTPS gets a session cookie browsers only send back over TLS.
    let login = r#"{"user":"default","password":"any"}"#;
    let answer = https_exchange(
        http_port,
        &pki,
        &format!(
            "POST /api/v1/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{login}",
            login.len()
        ),
    )
    .unwrap();
    let cookie = answer
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no session cookie: {answer}"));
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    // Plain HTTP on the HTTPS port gets no HTTP answer.
    let mut plain = TcpStream::connect(("127.0.0.1", http_port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain
        .write_all(b"GET /livez HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf);
    assert!(!buf.starts_with(b"HTTP/1.1 200"), "{buf:?}");
    let _ = std::fs::remove_dir_all(&pki.dir);
}

/// A member of a `--tls-cluster` cluster: plaintext port for the test's
/// checks, TLS port for joins, bus over mutual TLS.
struct Member {
    server: Server,
    tls_port: u16,
}

fn member(id: u64, pki: &Pki, leaf: &Leaf, ca: &Path, join: Option<u16>) -> Member {
    let tls_port = free_port();
    let mut args = strings(&[
        "--node-id",
        &id.to_string(),
        "--cluster-port",
        &free_port().to_string(),
        "--cluster-secret",
        common::CLUSTER_SECRET,
        "--tls-cluster",
        "yes",
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        leaf.cert.to_str().unwrap(),
        "--tls-key-file",
        leaf.key.to_str().unwrap(),
        "--tls-ca-cert-file",
        ca.to_str().unwrap(),
    ]);
    if let Some(port) = join {
        args.extend(strings(&["--join", &format!("127.0.0.1:{port}")]));
    }
    let _ = pki;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start_on(free_port(), temp_dir(&format!("tls-node{id}")), &args, &[]);
    Member { server, tls_port }
}

fn raft_info(port: u16) -> Option<String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
    let mut con = client.get_connection().ok()?;
    redis::cmd("RAFT.INFO").query(&mut con).ok()
}

fn info_field(text: &str, field: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
}

fn leader_of(nodes: &[&Member]) -> Option<usize> {
    nodes
        .iter()
        .position(|n| raft_info(n.server.port).is_some_and(|t| t.contains("\r\nrole:leader\r\n")))
}

#[test]
fn a_tls_cluster_forms_fails_over_and_refuses_a_foreign_member() {
    let _g = serial();
    let pki = Pki::generate(&temp_dir("pki"));
    let leaves: Vec<Leaf> = (1..=3)
        .map(|i| pki.ca.localhost(&pki.dir, &format!("node{i}")))
        .collect();
    let n1 = member(1, &pki, &leaves[0], &pki.ca_file, None);
    // Joins go to the first member's TLS port, over TLS.
    let n2 = member(2, &pki, &leaves[1], &pki.ca_file, Some(n1.tls_port));
    let n3 = member(3, &pki, &leaves[2], &pki.ca_file, Some(n1.tls_port));
    let mut nodes = vec![n1, n2, n3];
    let info = raft_info(nodes[0].server.port).unwrap();
    assert_eq!(info_field(&info, "members").as_deref(), Some("3"), "{info}");
    let mut con = nodes[0].server.conn();
    let written: i64 = redis::cmd("FLAG.SET")
        .arg("prod:a")
        .arg(FLAG)
        .query(&mut con)
        .unwrap();
    assert!(written > 0);
    // Replicated over the TLS bus to every member.
    for n in &nodes {
        assert!(wait_for(Duration::from_secs(10), || {
            let mut c = n.server.conn();
            redis::cmd("FLAG.EVAL")
                .arg("prod:a")
                .arg("{}")
                .query::<String>(&mut c)
                .is_ok_and(|v| v == "true")
        }));
    }

    // Kill the leader: another takes over and takes writes.
    let refs: Vec<&Member> = nodes.iter().collect();
    let mut old = None;
    assert!(wait_for(Duration::from_secs(10), || {
        old = leader_of(&refs);
        old.is_some()
    }));
    let old = old.unwrap();
    nodes[old].server.kill9();
    let rest: Vec<&Member> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != old)
        .map(|(_, n)| n)
        .collect();
    let mut new = None;
    assert!(
        wait_for(Duration::from_secs(20), || {
            new = leader_of(&rest);
            new.is_some()
        }),
        "no new leader after the old one was killed"
    );
    let mut con = rest[new.unwrap()].server.conn();
    let written: i64 = redis::cmd("FLAG.SET")
        .arg("prod:b")
        .arg(FLAG)
        .query(&mut con)
        .unwrap();
    assert!(written > 0);
    let survivor = rest[1 - new.unwrap()];
    assert!(wait_for(Duration::from_secs(10), || {
        let mut c = survivor.server.conn();
        redis::cmd("FLAG.GET")
            .arg("prod:b")
            .query::<String>(&mut c)
            .is_ok()
    }));

    // A node whose certificate comes from another CA cannot join: the member
    // refuses its certificate, and it exits saying so.
    let seed = rest[new.unwrap()];
    let args = strings(&[
        "--node-id",
        "4",
        "--cluster-port",
        &free_port().to_string(),
        "--cluster-secret",
        common::CLUSTER_SECRET,
        "--tls-cluster",
        "yes",
        "--tls-cert-file",
        pki.foreign.cert.to_str().unwrap(),
        "--tls-key-file",
        pki.foreign.key.to_str().unwrap(),
        "--tls-ca-cert-file",
        pki.ca_file.to_str().unwrap(),
        "--join",
        &format!("127.0.0.1:{}", seed.tls_port),
    ]);
    let stderr = start_fails(&args);
    assert!(stderr.contains("cannot join"), "{stderr}");
    assert!(stderr.contains("TLS"), "{stderr}");
    // Nor can it reach the bus with the right secret but a foreign certificate.
    let bus: u16 = seed.server.args[3].parse().unwrap();
    let refused = tls_connect(bus, &pki.ca_file, Some(&pki.foreign)).and_then(|mut s| {
        tls_cmd(
            &mut s,
            &[
                "HELLO",
                "flagstaff-bus/1",
                "0123456789abcdef0123456789abcdef",
            ],
        )
    });
    assert!(refused.is_err(), "{refused:?}");
    let info = raft_info(seed.server.port).unwrap();
    assert_eq!(info_field(&info, "members").as_deref(), Some("3"), "{info}");
    let count: u64 = info_field(&info, "bus_peers_refused")
        .unwrap()
        .parse()
        .unwrap();
    assert!(count >= 1, "{info}");
    // A plaintext peer on a TLS bus is refused too.
    let mut raw = common::Raw::connect(bus);
    raw.send(&resp(&[
        "HELLO",
        "flagstaff-bus/1",
        "0123456789abcdef0123456789abcdef",
    ]));
    let mut got = Vec::new();
    let _ = raw.stream.read_to_end(&mut got);
    assert!(!got.windows(9).any(|w| w == b"CHALLENGE"), "{got:?}");
    drop(nodes);
    let _ = std::fs::remove_dir_all(&pki.dir);
}

#[test]
fn tls_auth_clients_user_cn_logs_a_certificate_in_as_its_acl_user() {
    let _g = serial();
    let pki = Pki::generate(&temp_dir("pki"));
    let nobody = pki.ca.leaf(&pki.dir, "nobody", "nobody", &[]);
    let disabled = pki.ca.leaf(&pki.dir, "disabled", "sleeper", &[]);
    let tls_port = free_port();
    let mut args = pki.server_args(tls_port);
    args.extend(strings(&[
        "--requirepass",
        "admin-pw",
        "--tls-auth-clients-user",
        "CN",
    ]));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(&args);
    let mut admin = server.conn();
    redis::cmd("AUTH")
        .arg("admin-pw")
        .query::<()>(&mut admin)
        .unwrap();
    for rule in [
        vec![
            "ACL",
            "SETUSER",
            "app",
            "on",
            ">app-secret",
            "~prod:*",
            "+@all",
        ],
        vec!["ACL", "SETUSER", "sleeper", "off", "nopass", "~*", "+@all"],
    ] {
        common::cmd_str(&mut admin, &rule).unwrap();
    }
    // The client certificate (CN app) is the credential: no AUTH needed.
    let mut app = tls_connect(tls_port, &pki.ca_file, Some(&pki.client)).unwrap();
    assert_eq!(
        tls_cmd(&mut app, &["ACL", "WHOAMI"]).unwrap(),
        "$3\r\napp\r\n"
    );
    let ok = tls_cmd(&mut app, &["FLAG.SET", "prod:a", FLAG]).unwrap();
    assert!(ok.starts_with(':'), "{ok}");
    // ... and the user's key patterns apply.
    let denied = tls_cmd(&mut app, &["FLAG.SET", "staging:a", FLAG]).unwrap();
    assert!(denied.starts_with("-NOPERM"), "{denied}");
    // A CN that names no user, or a disabled one, logs nobody in.
    for leaf in [&nobody, &disabled] {
        let mut s = tls_connect(tls_port, &pki.ca_file, Some(leaf)).unwrap();
        let r = tls_cmd(&mut s, &["FLAG.GET", "prod:a"]).unwrap();
        assert!(r.starts_with("-NOAUTH"), "{r}");
        // AUTH still works on such a connection.
        assert_eq!(tls_cmd(&mut s, &["AUTH", "admin-pw"]).unwrap(), "+OK\r\n");
    }
    drop(server);

    // Without the setting a certificate is not a login.
    let tls_port = free_port();
    let mut args = pki.server_args(tls_port);
    args.extend(strings(&["--requirepass", "admin-pw"]));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _server = Server::start(&args);
    let mut app = tls_connect(tls_port, &pki.ca_file, Some(&pki.client)).unwrap();
    let r = tls_cmd(&mut app, &["ACL", "WHOAMI"]).unwrap();
    assert!(r.starts_with("-NOAUTH"), "{r}");
    let _ = std::fs::remove_dir_all(&pki.dir);
}

#[test]
fn pipelines_and_large_replies_arrive_whole_over_tls() {
    let _g = serial();
    let pki = Pki::generate(&temp_dir("pki"));
    let tls_port = free_port();
    let args = pki.server_args(tls_port);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _server = Server::start(&args);
    assert!(wait_for(Duration::from_secs(10), || pong(
        tls_port,
        &pki.ca_file,
        Some(&pki.client)
    )));
    let mut s = tls_connect(tls_port, &pki.ca_file, Some(&pki.client)).unwrap();
    // 5,000 commands in one write: every reply comes back, in order.
    let batch: Vec<u8> = (0..5000).flat_map(|_| resp(&["PING"])).collect();
    s.write_all(&batch).unwrap();
    s.flush().unwrap();
    let want = b"+PONG\r\n".repeat(5000);
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got).unwrap();
    assert!(got == want, "pipelined replies differ");
    // A reply far larger than the socket buffers, read slowly: the server
    // keeps finding the socket full, and its last TLS records must still go
    // out once it drains (nothing else would push them).
    let big = "x".repeat(8 * 1024 * 1024);
    s.write_all(&resp(&["ECHO", &big])).unwrap();
    s.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let header = format!("${}\r\n", big.len());
    let mut echoed = vec![0u8; header.len() + big.len() + 2];
    let mut at = 0;
    while at < echoed.len() {
        let end = (at + 16 * 1024).min(echoed.len());
        let n = s.read(&mut echoed[at..end]).unwrap();
        assert!(n > 0, "closed after {at} bytes");
        at += n;
        std::thread::sleep(Duration::from_micros(500));
    }
    assert!(echoed.starts_with(header.as_bytes()) && echoed.ends_with(b"xxxx\r\n"));
    assert_eq!(tls_cmd(&mut s, &["PING"]).unwrap(), "+PONG\r\n");
    let _ = std::fs::remove_dir_all(&pki.dir);
}
