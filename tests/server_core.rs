//! Server core, black-box: the real binary, real clients, exact bytes.

mod common;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{cmd_err, cmd_str, cmd_value, resp, serial, Raw, Server};
use redis::Value;

#[test]
fn ping_echo_and_inline_commands_answer_with_redis_bytes() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut raw = s.raw();
    raw.roundtrip(b"PING\r\n", b"+PONG\r\n");
    raw.roundtrip(&resp(&["PING", "hi"]), b"$2\r\nhi\r\n");
    raw.roundtrip(b"ECHO \"a b\\n\"\r\n", b"$4\r\na b\n\r\n");
    raw.roundtrip(b"echo 'it\\'s'\r\n", b"$4\r\nit's\r\n");
    raw.roundtrip(b"\r\n\r\nPING\r\n", b"+PONG\r\n");
    raw.roundtrip(
        &resp(&["PING", "a", "b"]),
        b"-ERR wrong number of arguments for 'ping' command\r\n",
    );
    raw.roundtrip(
        &resp(&["ECHO"]),
        b"-ERR wrong number of arguments for 'echo' command\r\n",
    );
    raw.roundtrip(
        &resp(&["NOPE", "x", "y"]),
        b"-ERR unknown command 'NOPE', with args beginning with: 'x' 'y' \r\n",
    );
    raw.roundtrip(&resp(&["SELECT", "0"]), b"+OK\r\n");
    raw.roundtrip(
        &resp(&["SELECT", "1"]),
        b"-ERR DB index is out of range\r\n",
    );
    raw.roundtrip(
        &resp(&["SELECT", "x"]),
        b"-ERR value is not an integer or out of range\r\n",
    );
    raw.roundtrip(&resp(&["RESET"]), b"+RESET\r\n");
    raw.roundtrip(&resp(&["QUIT"]), b"+OK\r\n");
    assert!(raw.is_closed());
}

#[test]
fn a_pipeline_of_10000_commands_is_answered_in_order() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut raw = s.raw();
    let mut request = Vec::new();
    let mut expected = Vec::new();
    for i in 0..10_000 {
        let msg = format!("m{i}");
        request.extend_from_slice(&resp(&["ECHO", &msg]));
        expected.extend_from_slice(format!("${}\r\n{msg}\r\n", msg.len()).as_bytes());
    }
    raw.send(&request);
    let got = raw.read_exact_len(expected.len());
    assert!(got == expected, "pipelined replies differ");
}

#[test]
fn a_request_sent_one_byte_at_a_time_is_answered_once() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut raw = s.raw();
    for chunk in resp(&["ECHO", "split"]).chunks(1) {
        raw.send(chunk);
        raw.stream.flush().unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(raw.read_exact_len(11), b"$5\r\nsplit\r\n");
}

#[test]
fn malformed_frames_get_protocol_errors_then_close_and_the_server_stays_up() {
    let _g = serial();
    let s = Server::start(&[]);
    let too_big_inline = vec![b'a'; 70 * 1024];
    let cases: Vec<(&[u8], &str)> = vec![
        (b"*abc\r\n", "invalid multibulk length"),
        (b"*1\n", "invalid multibulk length"),
        (b"*99999999999\r\n", "invalid multibulk length"),
        (b"*1\r\n$-5\r\n", "invalid bulk length"),
        (b"*1\r\n$x\r\n", "invalid bulk length"),
        (b"*1\r\n$99999999999\r\n", "invalid bulk length"),
        (b"*1\r\n:12\r\n", "expected '$', got ':'"),
        (b"*1\r\n+OK\r\n", "expected '$', got '+'"),
        (
            b"*1\r\n$4\r\nPINGXX",
            "expected CRLF after bulk string data",
        ),
        (b"\"unbalanced\r\n", "unbalanced quotes in request"),
        (&too_big_inline, "too big inline request"),
    ];
    for (input, why) in cases {
        let mut raw = s.raw();
        let expected = format!("-ERR Protocol error: {why}\r\n");
        raw.roundtrip(input, expected.as_bytes());
        assert!(raw.is_closed(), "connection should close after {why}");
        let mut other = s.raw();
        other.roundtrip(b"PING\r\n", b"+PONG\r\n");
    }
}

#[test]
fn a_declared_512mb_bulk_does_not_allocate_512mb() {
    let _g = serial();
    let s = Server::start(&[]);
    let before = common::rss_kib(s.child.id());
    let mut raw = s.raw();
    raw.send(b"*2\r\n$4\r\nECHO\r\n$536870912\r\nabc");
    std::thread::sleep(Duration::from_millis(300));
    let during = common::rss_kib(s.child.id());
    assert!(
        during < before + 64 * 1024,
        "RSS grew from {before} KiB to {during} KiB"
    );
    let mut other = s.raw();
    other.roundtrip(b"PING\r\n", b"+PONG\r\n");
}

#[test]
fn hello_negotiates_resp3_and_refuses_unknown_versions() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut raw = s.raw();
    raw.send(&resp(&["HELLO", "3"]));
    assert!(raw.read_exact_len(4).starts_with(b"%7\r\n"));
    let mut c3 = s.conn_proto(true);
    let hello = cmd_value(&mut c3, &["HELLO", "3"]).unwrap();
    let Value::Map(pairs) = hello else {
        panic!("HELLO 3 should be a map: {hello:?}")
    };
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| matches!(k, Value::BulkString(b) if b == name.as_bytes()))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("HELLO has no {name}"))
    };
    assert_eq!(get("proto"), Value::Int(3));
    assert_eq!(get("role"), Value::BulkString(b"master".to_vec()));
    assert!(matches!(get("modules"), Value::Array(v) if v.is_empty()));
    let mut c2 = s.conn();
    assert_eq!(
        cmd_err(&mut c2, &["HELLO", "4"]),
        "NOPROTO unsupported protocol version"
    );
    assert_eq!(
        cmd_err(&mut c2, &["HELLO", "x"]),
        "ERR Protocol version is not an integer or out of range"
    );
    // In RESP3 a map stays a map; RESP2 gets it flat.
    let Value::Array(flat) = cmd_value(&mut c2, &["HELLO", "2"]).unwrap() else {
        panic!("flat array")
    };
    assert_eq!(flat.len(), 14);
}

#[test]
fn requirepass_demands_auth_and_hello_can_authenticate() {
    let _g = serial();
    let s = Server::start(&["--requirepass", "s3cret"]);
    let mut raw = s.raw();
    raw.roundtrip(b"PING\r\n", b"-NOAUTH Authentication required.\r\n");
    raw.roundtrip(
        &resp(&["AUTH", "wrong"]),
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
    raw.roundtrip(&resp(&["AUTH", "s3cret"]), b"+OK\r\n");
    raw.roundtrip(b"PING\r\n", b"+PONG\r\n");
    let mut other = s.raw();
    other.send(&resp(&[
        "HELLO", "3", "AUTH", "default", "s3cret", "SETNAME", "app",
    ]));
    assert!(other.read_exact_len(4).starts_with(b"%7\r\n"));
    let url = format!("redis://:s3cret@127.0.0.1:{}/", s.port);
    let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
    assert_eq!(cmd_str(&mut con, &["PING"]).unwrap(), "PONG");
}

#[test]
fn auth_without_a_password_configured_is_refused_clearly() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut con = s.conn();
    assert!(cmd_err(&mut con, &["AUTH", "x"]).contains("without any password configured"));
}

#[test]
fn client_commands_name_list_and_kill_connections() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut a = s.conn();
    let mut b = s.conn();
    let b_id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut b).unwrap();
    assert_eq!(
        cmd_str(&mut a, &["CLIENT", "SETNAME", "worker-1"]).unwrap(),
        "OK"
    );
    assert_eq!(cmd_str(&mut a, &["CLIENT", "GETNAME"]).unwrap(), "worker-1");
    assert_eq!(
        cmd_str(&mut a, &["CLIENT", "SETINFO", "LIB-NAME", "mylib"]).unwrap(),
        "OK"
    );
    assert!(cmd_err(&mut a, &["CLIENT", "SETNAME", "has space"]).contains("cannot contain spaces"));
    let list = cmd_str(&mut a, &["CLIENT", "LIST"]).unwrap();
    assert!(
        list.contains("name=worker-1") && list.contains("lib-name=mylib"),
        "{list}"
    );
    assert_eq!(list.lines().count(), 2);
    assert!(cmd_str(&mut b, &["CLIENT", "INFO"])
        .unwrap()
        .starts_with(&format!("id={b_id} ")));
    assert_eq!(
        cmd_str(&mut a, &["CLIENT", "NO-EVICT", "on"]).unwrap(),
        "OK"
    );
    assert_eq!(
        cmd_str(&mut a, &["CLIENT", "NO-TOUCH", "off"]).unwrap(),
        "OK"
    );
    assert_eq!(
        cmd_err(&mut a, &["CLIENT", "BOGUS"]),
        "ERR unknown subcommand 'BOGUS'. Try CLIENT HELP."
    );
    assert_eq!(
        cmd_err(&mut a, &["CLIENT", "SETNAME"]),
        "ERR wrong number of arguments for 'client|setname' command"
    );
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(b_id)
        .query(&mut a)
        .unwrap();
    assert_eq!(killed, 1);
    assert!(
        cmd_str(&mut b, &["PING"]).is_err(),
        "killed connection should be closed"
    );
}

#[test]
fn command_reports_accurate_metadata_and_docs() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut con = s.conn();
    let count: i64 = redis::cmd("COMMAND").arg("COUNT").query(&mut con).unwrap();
    let Value::Array(all) = cmd_value(&mut con, &["COMMAND"]).unwrap() else {
        panic!()
    };
    assert_eq!(all.len() as i64, count);
    let Value::Array(info) =
        cmd_value(&mut con, &["COMMAND", "INFO", "flag.eval", "nosuch"]).unwrap()
    else {
        panic!()
    };
    let Value::Array(eval) = &info[0] else {
        panic!("{info:?}")
    };
    assert_eq!(eval[0], Value::BulkString(b"flag.eval".to_vec()));
    assert_eq!(eval[1], Value::Int(-2));
    assert_eq!(
        (&eval[3], &eval[4], &eval[5]),
        (&Value::Int(1), &Value::Int(1), &Value::Int(1))
    );
    assert_eq!(info[1], Value::Nil);
    let Value::Array(docs) = cmd_value(&mut con, &["COMMAND", "DOCS", "flag.set"]).unwrap() else {
        panic!()
    };
    assert_eq!(docs[0], Value::BulkString(b"flag.set".to_vec()));
    let Value::Array(doc) = &docs[1] else {
        panic!()
    };
    assert!(doc.contains(&Value::BulkString(b"arguments".to_vec())));
    let Value::Array(names) = cmd_value(&mut con, &["COMMAND", "LIST"]).unwrap() else {
        panic!()
    };
    assert!(names.contains(&Value::BulkString(b"flag.evalall".to_vec())));
}

#[test]
fn info_time_config_and_dbsize_answer_what_clients_read() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut con = s.conn();
    let info = cmd_str(&mut con, &["INFO"]).unwrap();
    for needle in [
        "# Server",
        "redis_version:",
        "flagstaff_version:",
        "loading:0",
        "role:master",
        "# Keyspace",
        "connected_clients:1",
    ] {
        assert!(info.contains(needle), "INFO lacks {needle}");
    }
    let repl = cmd_str(&mut con, &["INFO", "replication"]).unwrap();
    assert!(repl.starts_with("# Replication") && !repl.contains("# Server"));
    let mut c3 = s.conn_proto(true);
    assert!(cmd_str(&mut c3, &["INFO", "server"])
        .unwrap()
        .contains("redis_version:"));
    let time: Vec<String> = redis::cmd("TIME").query(&mut con).unwrap();
    let secs: u64 = time[0].parse().unwrap();
    assert!(secs > 1_700_000_000);
    let cfg: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("save")
        .arg("appendonly")
        .query(&mut con)
        .unwrap();
    assert_eq!(cfg, vec!["save", "", "appendonly", "yes"]);
    let ports: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("p*t")
        .query(&mut con)
        .unwrap();
    assert_eq!(ports, vec!["port".to_string(), s.port.to_string()]);
    let n: i64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(n, 0);
}

const FLAG: &str = r#"{"on":true,"variations":[{"name":"off","value":false},{"name":"on","value":true}],"off_variation":"off","fallthrough":{"variation":"on"}}"#;

#[test]
fn multi_exec_runs_queued_commands_and_pipelines_work() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut con = s.conn();
    let (v1, v2, got): (i64, i64, String) = redis::pipe()
        .atomic()
        .cmd("FLAG.SET")
        .arg("a")
        .arg(FLAG)
        .cmd("FLAG.SET")
        .arg("b")
        .arg(FLAG)
        .cmd("FLAG.EVAL")
        .arg("a")
        .query(&mut con)
        .unwrap();
    assert_eq!((v1, v2, got.as_str()), (1, 1, "true"));
    let (p, e): (String, String) = redis::pipe()
        .cmd("PING")
        .cmd("ECHO")
        .arg("x")
        .query(&mut con)
        .unwrap();
    assert_eq!((p.as_str(), e.as_str()), ("PONG", "x"));

    let mut raw = s.raw();
    raw.roundtrip(&resp(&["MULTI"]), b"+OK\r\n");
    raw.roundtrip(&resp(&["PING"]), b"+QUEUED\r\n");
    raw.roundtrip(&resp(&["MULTI"]), b"-ERR MULTI calls can not be nested\r\n");
    raw.roundtrip(
        &resp(&["ECHO"]),
        b"-ERR wrong number of arguments for 'echo' command\r\n",
    );
    raw.roundtrip(
        &resp(&["EXEC"]),
        b"-EXECABORT Transaction discarded because of previous errors.\r\n",
    );
    raw.roundtrip(&resp(&["EXEC"]), b"-ERR EXEC without MULTI\r\n");
    raw.roundtrip(&resp(&["DISCARD"]), b"-ERR DISCARD without MULTI\r\n");
    raw.roundtrip(&resp(&["MULTI"]), b"+OK\r\n");
    raw.roundtrip(&resp(&["FLAG.DEL", "b"]), b"+QUEUED\r\n");
    raw.roundtrip(&resp(&["DISCARD"]), b"+OK\r\n");
    raw.roundtrip(&resp(&["MULTI"]), b"+OK\r\n");
    raw.roundtrip(&resp(&["PING"]), b"+QUEUED\r\n");
    raw.roundtrip(&resp(&["FLAG.TOGGLE", "b", "OFF"]), b"+QUEUED\r\n");
    raw.roundtrip(&resp(&["FLAG.EVAL", "b"]), b"+QUEUED\r\n");
    raw.roundtrip(&resp(&["EXEC"]), b"*3\r\n+PONG\r\n:2\r\n$5\r\nfalse\r\n");
}

#[test]
fn exec_is_nil_when_a_watched_key_changed() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut other = s.conn();
    let mut raw = s.raw();
    raw.roundtrip(&resp(&["WATCH", "a"]), b"+OK\r\n");
    let _: i64 = redis::cmd("FLAG.SET")
        .arg("a")
        .arg(FLAG)
        .query(&mut other)
        .unwrap();
    raw.roundtrip(&resp(&["MULTI"]), b"+OK\r\n");
    raw.roundtrip(
        &resp(&["WATCH", "a"]),
        b"-ERR WATCH inside MULTI is not allowed\r\n",
    );
    raw.roundtrip(&resp(&["FLAG.SET", "a", FLAG]), b"+QUEUED\r\n");
    raw.roundtrip(&resp(&["EXEC"]), b"*-1\r\n");
    // Unchanged watched key: EXEC runs.
    raw.roundtrip(&resp(&["WATCH", "a"]), b"+OK\r\n");
    raw.roundtrip(&resp(&["MULTI"]), b"+OK\r\n");
    raw.roundtrip(&resp(&["FLAG.SET", "a", FLAG]), b"+QUEUED\r\n");
    raw.roundtrip(&resp(&["EXEC"]), b"*1\r\n:2\r\n");
    // UNWATCH forgets.
    raw.roundtrip(&resp(&["WATCH", "a"]), b"+OK\r\n");
    raw.roundtrip(&resp(&["UNWATCH"]), b"+OK\r\n");
    let _: i64 = redis::cmd("FLAG.TOGGLE")
        .arg("a")
        .arg("OFF")
        .query(&mut other)
        .unwrap();
    raw.roundtrip(&resp(&["MULTI"]), b"+OK\r\n");
    raw.roundtrip(&resp(&["FLAG.EVAL", "a"]), b"+QUEUED\r\n");
    raw.roundtrip(&resp(&["EXEC"]), b"*1\r\n$5\r\nfalse\r\n");
}

#[test]
fn sigterm_with_clients_connected_exits_zero_within_the_grace_period() {
    let _g = serial();
    let mut s = Server::start(&[]);
    let _a = s.raw();
    let mut b = s.conn();
    assert_eq!(cmd_str(&mut b, &["PING"]).unwrap(), "PONG");
    let start = Instant::now();
    s.signal(libc::SIGTERM);
    let status = s
        .wait_exit(Duration::from_secs(10))
        .expect("exit within grace period");
    assert!(status.success(), "exit status {status:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn shutdown_command_stops_the_server_cleanly() {
    let _g = serial();
    let mut s = Server::start(&[]);
    let mut raw = s.raw();
    raw.send(&resp(&["SHUTDOWN"]));
    assert!(raw.is_closed());
    let status = s.wait_exit(Duration::from_secs(10)).expect("exit");
    assert!(status.success());
}

#[test]
fn max_clients_refuses_the_extra_connection_with_redis_error() {
    let _g = serial();
    let s = Server::start(&["--maxclients", "2"]);
    let mut a = s.raw();
    a.roundtrip(b"PING\r\n", b"+PONG\r\n");
    let mut b = s.raw();
    b.roundtrip(b"PING\r\n", b"+PONG\r\n");
    let mut c = Raw::connect(s.port);
    assert_eq!(
        c.read_exact_len(36),
        b"-ERR max number of clients reached\r\n"
    );
    assert!(c.is_closed());
    drop(a);
    std::thread::sleep(Duration::from_millis(200));
    let mut d = s.raw();
    d.roundtrip(b"PING\r\n", b"+PONG\r\n");
}

#[test]
fn idle_clients_are_closed_after_the_timeout() {
    let _g = serial();
    let s = Server::start(&["--timeout", "1"]);
    let mut raw = s.raw();
    raw.roundtrip(b"PING\r\n", b"+PONG\r\n");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(raw.is_closed());
}

fn run_bin(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flagstaff"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configuration_exits_nonzero_with_one_clear_line() {
    let (code, err) = run_bin(&["--port", "99999"], &[]);
    assert_ne!(code, 0);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--port"), "{err}");

    let dir = common::temp_dir("cfg");
    let file = dir.join("flagstaff.toml");
    std::fs::write(&file, "port = 7000\nprot = 1\n").unwrap();
    let (code, err) = run_bin(&["--config", file.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("unknown field `prot`") && err.contains("line 2"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let (code, err) = run_bin(&["--config", "/nonexistent/flagstaff.toml"], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot read config file"), "{err}");

    let (code, err) = run_bin(&[], &[("FLAGSTAFF_PORT", "abc")]);
    assert_ne!(code, 0);
    assert!(err.contains("abc"), "{err}");

    let (code, out) = run_bin(&["--help"], &[]);
    assert_eq!(code, 0);
    let _ = out;
}

#[test]
fn settings_come_from_flags_then_env_then_file() {
    let _g = serial();
    let dir = common::temp_dir("prec");
    let file = dir.join("flagstaff.toml");
    let file_port = common::free_port();
    let env_port = common::free_port();
    std::fs::write(&file, format!("port = {file_port}\nmaxclients = 7\n")).unwrap();
    let data = common::temp_dir("precdata");
    let child = Command::new(env!("CARGO_BIN_EXE_flagstaff"))
        .args([
            "--config",
            file.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--log-level",
            "warn",
            "--http-port",
            "0",
        ])
        .env("FLAGSTAFF_PORT", env_port.to_string())
        .spawn()
        .unwrap();
    let _reap = common::Reap(child);
    assert!(
        common::wait_pong(env_port, Duration::from_secs(20)),
        "env port should win over the file"
    );
    let mut con = redis::Client::open(format!("redis://127.0.0.1:{env_port}/"))
        .unwrap()
        .get_connection()
        .unwrap();
    let cfg: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxclients")
        .query(&mut con)
        .unwrap();
    assert_eq!(
        cfg,
        vec!["maxclients", "7"],
        "the file still supplies what env and flags leave out"
    );
    assert!(data.exists(), "data dir is created");
}

/// A fresh node answers -LOADING until it leads its own one-member cluster,
/// so the first write after the first PONG is accepted (it used to be
/// refused with -CLUSTERDOWN about one start in three).
#[test]
fn a_fresh_node_takes_a_write_right_after_its_first_pong() {
    let _g = serial();
    let definition = r#"{"variations":[{"name":"a","value":1}],"on":true,"off_variation":"a","fallthrough":{"variation":"a"}}"#;
    for start in 0..50 {
        let port = common::free_port();
        let data_dir = common::temp_dir("fresh");
        let child = Command::new(env!("CARGO_BIN_EXE_flagstaff"))
            .args(["--port", &port.to_string(), "--log-level", "error"])
            .args(["--http-port", "0"])
            .arg("--data-dir")
            .arg(&data_dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let _reap = common::Reap(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut raw = loop {
            match std::net::TcpStream::connect(("127.0.0.1", port)) {
                Ok(_) => break Raw::connect(port),
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
                Err(e) => panic!("start {start}: never listened: {e}"),
            }
        };
        loop {
            raw.send(b"PING\r\n");
            let line = raw.read_until(b"\r\n");
            if line == b"+PONG\r\n" {
                break;
            }
            assert!(line.starts_with(b"-LOADING"), "start {start}: {line:?}");
            assert!(Instant::now() < deadline, "start {start}: still loading");
        }
        raw.send(&resp(&["FLAG.SET", "k", definition]));
        let reply = raw.read_until(b"\r\n");
        assert_eq!(
            String::from_utf8_lossy(&reply),
            ":1\r\n",
            "start {start}: the first write after PONG"
        );
        let _ = std::fs::remove_dir_all(&data_dir);
    }
}
