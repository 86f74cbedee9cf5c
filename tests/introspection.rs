//! Introspection and the protocol details a Redis user relies on, black-box:
//! CLIENT KILL filters, CLIENT LIST/INFO lines, INFO figures, MONITOR,
//! CLIENT REPLY, error precedence and commands refused inside MULTI.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{cmd_err, cmd_str, resp, serial, Raw, Server};

/// The fields of one `CLIENT LIST` line, in order.
fn fields(line: &str) -> Vec<(String, String)> {
    line.trim_end()
        .split(' ')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// The `CLIENT LIST` line of client `id`, as a map.
fn line_of(list: &str, id: i64) -> HashMap<String, String> {
    let prefix = format!("id={id} ");
    let line = list
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no client {id} in {list}"));
    fields(line).into_iter().collect()
}

fn client_id(con: &mut redis::Connection) -> i64 {
    redis::cmd("CLIENT").arg("ID").query(con).unwrap()
}

fn kill(con: &mut redis::Connection, filters: &[&str]) -> i64 {
    let mut c = redis::cmd("CLIENT");
    c.arg("KILL");
    for f in filters {
        c.arg(*f);
    }
    c.query(con).unwrap()
}

fn alive(con: &mut redis::Connection) -> bool {
    cmd_str(con, &["PING"]).is_ok()
}

/// INFO as a map of `field -> value`.
fn info(con: &mut redis::Connection, section: &str) -> HashMap<String, String> {
    let text = cmd_str(con, &["INFO", section]).unwrap();
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn client_kill_filters_combine_and_spare_clients_that_do_not_match() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut admin = s.conn();
    let mut normal = s.conn();
    let normal_id = client_id(&mut normal);
    let mut sub = s.raw();
    sub.send(&resp(&["SUBSCRIBE", "news"]));
    sub.read_until(b":1\r\n");

    // Nothing here is a replica or a master: nobody is closed.
    assert_eq!(kill(&mut admin, &["TYPE", "replica"]), 0);
    assert_eq!(kill(&mut admin, &["TYPE", "slave"]), 0);
    assert_eq!(kill(&mut admin, &["TYPE", "master"]), 0);
    assert!(
        alive(&mut normal),
        "TYPE replica must not close a normal client"
    );
    // Filters are ANDed: the normal client is not a pub/sub client.
    assert_eq!(
        kill(
            &mut admin,
            &["ID", &normal_id.to_string(), "TYPE", "pubsub"]
        ),
        0
    );
    // Nobody is a day old yet.
    assert_eq!(kill(&mut admin, &["MAXAGE", "86400"]), 0);
    assert!(alive(&mut normal));
    // TYPE pubsub closes the subscriber only.
    assert_eq!(kill(&mut admin, &["TYPE", "pubsub"]), 1);
    assert!(sub.is_closed(), "the subscriber is closed");
    assert!(alive(&mut normal));
    // SKIPME is yes by default: TYPE normal closes the other normal client,
    // not the caller; LADDR and USER filter on what they name.
    let laddr = format!("127.0.0.1:{}", s.port);
    assert_eq!(
        kill(
            &mut admin,
            &["TYPE", "normal", "USER", "default", "LADDR", &laddr]
        ),
        1
    );
    assert!(!alive(&mut normal));
    assert!(alive(&mut admin), "SKIPME yes is the default");
    assert_eq!(kill(&mut admin, &["LADDR", "127.0.0.1:1"]), 0);

    // Arguments are refused as Redis words it.
    for (args, error) in [
        (&["ID", "0"][..], "ERR client-id should be greater than 0"),
        (&["ID", "x"][..], "ERR client-id should be greater than 0"),
        (&["TYPE", "robot"][..], "ERR Unknown client type 'robot'"),
        (&["USER", "bob"][..], "ERR No such user 'bob'"),
        (&["MAXAGE", "0"][..], "ERR maxage should be greater than 0"),
        (&["FLAVOR", "x"][..], "ERR syntax error"),
        (&["ID", "1", "TYPE"][..], "ERR syntax error"),
        (&["SKIPME", "maybe"][..], "ERR syntax error"),
    ] {
        let mut cmd = vec!["CLIENT", "KILL"];
        cmd.extend_from_slice(args);
        assert_eq!(cmd_err(&mut admin, &cmd), error, "{args:?}");
    }
    assert_eq!(
        cmd_err(&mut admin, &["CLIENT", "LIST", "TYPE", "robot"]),
        "ERR Unknown client type 'robot'"
    );
    // SKIPME no lets a client close itself, after its reply.
    let me = client_id(&mut admin).to_string();
    assert_eq!(kill(&mut admin, &["ID", &me, "SKIPME", "no"]), 1);
    assert!(!alive(&mut admin));
}

#[test]
fn client_list_and_info_print_the_fields_of_redis_7_with_real_values() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut me = s.raw();
    me.send(&resp(&["CLIENT", "INFO"]));
    let head = me.read_until(b"\r\n");
    let len: usize = String::from_utf8_lossy(&head[1..head.len() - 2])
        .parse()
        .unwrap();
    let body = String::from_utf8(me.read_exact_len(len + 2)).unwrap();
    let names: Vec<String> = fields(body.trim_end())
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        names.join(" "),
        "id addr laddr fd name age idle flags db sub psub ssub multi qbuf qbuf-free argv-mem \
         multi-mem rbs rbp obl oll omem tot-mem events cmd user redir resp lib-name lib-ver"
    );
    let info: HashMap<String, String> = fields(body.trim_end()).into_iter().collect();
    // The request being run is in the query buffer, as Redis counts it:
    // "*2\r\n$6\r\nCLIENT\r\n$4\r\nINFO\r\n" is 26 bytes, its arguments 10.
    assert_eq!(info["qbuf"], "26", "{body}");
    assert_eq!(info["argv-mem"], "10", "{body}");
    assert_eq!(info["cmd"], "client|info", "{body}");
    assert_eq!(info["flags"], "N");
    assert_eq!(info["multi"], "-1");
    assert_ne!(info["fd"], "0", "a real file descriptor");
    assert!(info["tot-mem"].parse::<u64>().unwrap() > 0);

    // Another client's state as it last left it: a subscriber, and a client
    // with two commands queued in MULTI.
    let mut sub = s.raw();
    sub.send(&[resp(&["SUBSCRIBE", "a", "b"]), resp(&["PSUBSCRIBE", "c*"])].concat());
    sub.read_until(b":3\r\n");
    let mut tx = s.conn();
    let tx_id = client_id(&mut tx);
    redis::cmd("MULTI").query::<()>(&mut tx).unwrap();
    redis::cmd("FLAG.GET")
        .arg("k")
        .query::<()>(&mut tx)
        .unwrap();
    redis::cmd("FLAG.LIST").query::<()>(&mut tx).unwrap();
    let mut admin = s.conn();
    let admin_id = client_id(&mut admin);
    let list = cmd_str(&mut admin, &["CLIENT", "LIST"]).unwrap();
    let t = line_of(&list, tx_id);
    assert_eq!(
        (t["multi"].as_str(), t["flags"].as_str(), t["cmd"].as_str()),
        ("2", "x", "flag.list"),
        "{list}"
    );
    assert_eq!(
        t["multi-mem"],
        (8 + 1 + 9).to_string(),
        "queued argument bytes"
    );
    let sub_line = list
        .lines()
        .find(|l| l.contains(" sub=2 "))
        .unwrap_or_else(|| panic!("no subscriber line in {list}"));
    let p: HashMap<String, String> = fields(sub_line).into_iter().collect();
    assert_eq!(
        (p["psub"].as_str(), p["flags"].as_str(), p["cmd"].as_str()),
        ("1", "P", "psubscribe")
    );
    let a = line_of(&list, admin_id);
    assert_eq!(a["cmd"], "client|list");
    assert_eq!(
        cmd_str(&mut admin, &["CLIENT", "LIST", "TYPE", "pubsub"])
            .unwrap()
            .lines()
            .count(),
        1
    );
    assert_eq!(
        cmd_str(&mut admin, &["CLIENT", "NO-EVICT", "on"]).unwrap(),
        "OK"
    );
    let info = cmd_str(&mut admin, &["CLIENT", "INFO"]).unwrap();
    assert!(info.contains(" flags=e "), "{info}");
}

#[test]
fn info_reports_measured_rates_errors_cpu_memory_and_blocked_clients() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut con = s.conn();
    // (-LOADING answers while the server started count too.)
    let errors = |con: &mut redis::Connection| -> u64 {
        info(con, "stats")["total_error_replies"].parse().unwrap()
    };
    let before = errors(&mut con);
    for args in [
        &["NOSUCH"][..],
        &["FLAG.GET"][..],
        &["CLIENT", "KILL", "ID", "0"][..],
    ] {
        cmd_err(&mut con, args);
    }
    let mut tx = s.raw();
    tx.send(
        &[
            resp(&["MULTI"]),
            resp(&["FLAG.EVAL", "k", "[]"]),
            resp(&["EXEC"]),
        ]
        .concat(),
    );
    tx.read_until(b"*1\r\n-");
    assert_eq!(
        errors(&mut con) - before,
        4,
        "three refusals and one inside EXEC"
    );

    // A client that keeps sending commands shows up in the rate.
    let port = s.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut raw = Raw::connect(port);
            let batch = b"PING\r\n".repeat(100);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                raw.send(&batch);
                raw.read_exact_len(700);
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut ops = 0;
    while Instant::now() < deadline {
        ops = info(&mut con, "stats")["instantaneous_ops_per_sec"]
            .parse::<u64>()
            .unwrap();
        if ops > 100 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    busy.join().unwrap();
    assert!(ops > 100, "instantaneous_ops_per_sec stayed at {ops}");

    let cpu = info(&mut con, "cpu");
    let user: f64 = cpu["used_cpu_user"].parse().unwrap();
    let sys: f64 = cpu["used_cpu_sys"].parse().unwrap();
    assert!(user + sys > 0.0, "{cpu:?}");

    // used_memory is what the allocator holds, not the resident set.
    let mem = info(&mut con, "memory");
    let used: u64 = mem["used_memory"].parse().unwrap();
    let rss: u64 = mem["used_memory_rss"].parse().unwrap();
    assert!(used > 0 && used != rss, "{mem:?}");
    let rss_kib = common::rss_kib(s.child.id());
    assert!(
        rss / 1024 >= rss_kib / 2 && rss / 1024 <= rss_kib * 2,
        "used_memory_rss {rss} vs VmRSS {rss_kib} KiB"
    );

    assert_eq!(info(&mut con, "clients")["blocked_clients"], "0");
    let mut reader = s.raw();
    reader.send(&resp(&[
        "XREAD",
        "BLOCK",
        "0",
        "STREAMS",
        "flagstaff:changes",
        "$",
    ]));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut blocked = String::new();
    while Instant::now() < deadline {
        blocked = info(&mut con, "clients")["blocked_clients"].clone();
        if blocked == "1" {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(blocked, "1");
    let list = cmd_str(&mut con, &["CLIENT", "LIST"]).unwrap();
    assert!(
        list.contains(" flags=b ") && list.contains(" cmd=xread "),
        "{list}"
    );
    drop(reader);
}

/// Reads one MONITOR line (without its CRLF).
fn monitor_line(raw: &mut Raw) -> String {
    let line = raw.read_until(b"\r\n");
    String::from_utf8(line[..line.len() - 2].to_vec()).unwrap()
}

/// Asserts `line` is `+<secs>.<usecs> [0 127.0.0.1:<port>] <args>`.
fn assert_monitor_line(line: &str, args: &str) {
    let rest = line.strip_prefix('+').unwrap_or_else(|| panic!("{line}"));
    let (time, rest) = rest.split_once(' ').unwrap();
    let (secs, usecs) = time.split_once('.').unwrap();
    assert!(secs.parse::<u64>().is_ok() && usecs.len() == 6, "{line}");
    let (client, shown) = rest.split_once("] ").unwrap();
    assert!(client.starts_with("[0 127.0.0.1:"), "{line}");
    assert_eq!(shown, args, "{line}");
}

#[test]
fn monitor_shows_each_command_as_redis_does_with_secrets_redacted() {
    let _g = serial();
    let s = Server::start(&["--requirepass", "pw"]);
    let mut mon = s.raw();
    mon.roundtrip(&resp(&["AUTH", "pw"]), b"+OK\r\n");
    mon.roundtrip(&resp(&["MONITOR"]), b"+OK\r\n");
    let mut raw = s.raw();
    raw.send(&resp(&["AUTH", "pw"]));
    raw.read_until(b"\r\n");
    assert_monitor_line(&monitor_line(&mut mon), r#""AUTH" "(redacted)""#);
    raw.send(&resp(&["AUTH", "default", "nope"]));
    raw.read_until(b"\r\n");
    assert_monitor_line(
        &monitor_line(&mut mon),
        r#""AUTH" "(redacted)" "(redacted)""#,
    );
    raw.send(&resp(&[
        "HELLO", "2", "AUTH", "default", "pw", "SETNAME", "app",
    ]));
    raw.read_until(b"modules\r\n*0\r\n");
    assert_monitor_line(
        &monitor_line(&mut mon),
        r#""HELLO" "2" "AUTH" "(redacted)" "(redacted)" "SETNAME" "app""#,
    );
    raw.roundtrip(
        &resp(&["FLAG.EVAL", "k", "{\"key\":\"a \\\"b\"}\n"]),
        b"$-1\r\n",
    );
    assert_monitor_line(
        &monitor_line(&mut mon),
        r#""FLAG.EVAL" "k" "{\"key\":\"a \\\"b\"}\n""#,
    );
    // Admin commands and refused commands are not shown.
    raw.send(&resp(&["CLIENT", "LIST"]));
    raw.read_until(b"\r\n");
    raw.read_until(b"\n\r\n");
    raw.roundtrip(
        &resp(&["NOSUCH"]),
        b"-ERR unknown command 'NOSUCH', with args beginning with: \r\n",
    );
    // A transaction: MULTI, its commands as EXEC runs them, then EXEC.
    raw.roundtrip(&resp(&["MULTI"]), b"+OK\r\n");
    raw.roundtrip(&resp(&["PING"]), b"+QUEUED\r\n");
    raw.roundtrip(&resp(&["EXEC"]), b"*1\r\n+PONG\r\n");
    assert_monitor_line(&monitor_line(&mut mon), r#""MULTI""#);
    assert_monitor_line(&monitor_line(&mut mon), r#""PING""#);
    assert_monitor_line(&monitor_line(&mut mon), r#""EXEC""#);
    // The monitor may still ping (and sees its own command, as in Redis), but
    // not touch the keyspace.
    mon.send(b"PING\r\n");
    assert_eq!(monitor_line(&mut mon), "+PONG");
    assert_monitor_line(&monitor_line(&mut mon), r#""PING""#);
    mon.roundtrip(
        &resp(&["FLAG.GET", "k"]),
        b"-ERR Replica can't interact with the keyspace\r\n",
    );
    // After RESET the monitor is an ordinary client again.
    mon.roundtrip(&resp(&["RESET"]), b"+RESET\r\n");
    raw.roundtrip(b"PING\r\n", b"+PONG\r\n");
    mon.roundtrip(&resp(&["AUTH", "pw"]), b"+OK\r\n");
}

#[test]
fn client_reply_off_skip_and_on_silence_replies_as_redis() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut raw = s.raw();
    let request = [
        resp(&["CLIENT", "REPLY", "OFF"]),
        resp(&["ECHO", "hidden-1"]),
        resp(&["CLIENT", "REPLY", "ON"]),
        resp(&["ECHO", "shown-1"]),
        resp(&["CLIENT", "REPLY", "SKIP"]),
        resp(&["ECHO", "hidden-2"]),
        resp(&["ECHO", "shown-2"]),
        resp(&["CLIENT", "REPLY", "MAYBE"]),
    ]
    .concat();
    raw.roundtrip(
        &request,
        b"+OK\r\n$7\r\nshown-1\r\n$7\r\nshown-2\r\n-ERR syntax error\r\n",
    );
}

#[test]
fn errors_come_in_redis_order_and_no_multi_commands_are_refused_in_multi() {
    let _g = serial();
    let s = Server::start(&["--requirepass", "pw"]);
    let mut raw = s.raw();
    // Existence and arity come before authentication, as in Redis.
    raw.roundtrip(
        &resp(&["NOSUCH"]),
        b"-ERR unknown command 'NOSUCH', with args beginning with: \r\n",
    );
    raw.roundtrip(
        &resp(&["FLAG.GET"]),
        b"-ERR wrong number of arguments for 'flag.get' command\r\n",
    );
    raw.roundtrip(
        &resp(&["CLIENT", "NOSUCH"]),
        b"-ERR unknown subcommand 'NOSUCH'. Try CLIENT HELP.\r\n",
    );
    raw.roundtrip(
        &resp(&["FLAG.GET", "k"]),
        b"-NOAUTH Authentication required.\r\n",
    );
    raw.roundtrip(
        &resp(&["CLIENT", "ID"]),
        b"-NOAUTH Authentication required.\r\n",
    );
    raw.roundtrip(&resp(&["AUTH", "pw"]), b"+OK\r\n");

    // SHUTDOWN inside MULTI is refused and aborts the transaction; the server
    // stays up.
    raw.roundtrip(&resp(&["MULTI"]), b"+OK\r\n");
    raw.roundtrip(
        &resp(&["SHUTDOWN"]),
        b"-ERR Command not allowed inside a transaction\r\n",
    );
    raw.roundtrip(
        &resp(&["EXEC"]),
        b"-EXECABORT Transaction discarded because of previous errors.\r\n",
    );
    raw.roundtrip(b"PING\r\n", b"+PONG\r\n");
    // WATCH inside MULTI answers its own error and does not abort.
    raw.roundtrip(&resp(&["MULTI"]), b"+OK\r\n");
    raw.roundtrip(
        &resp(&["WATCH", "k"]),
        b"-ERR WATCH inside MULTI is not allowed\r\n",
    );
    raw.roundtrip(&resp(&["MONITOR"]), b"+QUEUED\r\n");
    raw.roundtrip(
        &resp(&["EXEC"]),
        b"*1\r\n-ERR MONITOR isn't allowed for DENY BLOCKING client\r\n",
    );
    raw.roundtrip(b"PING\r\n", b"+PONG\r\n");

    // COMMAND shows only flags dispatch honours.
    let mut con = redis::Client::open(format!("redis://:pw@127.0.0.1:{}/", s.port))
        .unwrap()
        .get_connection()
        .unwrap();
    let flags = |con: &mut redis::Connection, name: &str| -> Vec<String> {
        let v: redis::Value = redis::cmd("COMMAND")
            .arg("INFO")
            .arg(name)
            .query(con)
            .unwrap();
        let redis::Value::Array(items) = v else {
            panic!()
        };
        let redis::Value::Array(info) = &items[0] else {
            panic!()
        };
        redis::from_redis_value::<Vec<String>>(info[2].clone()).unwrap()
    };
    assert_eq!(flags(&mut con, "shutdown"), ["admin", "no-multi"]);
    assert_eq!(flags(&mut con, "ping"), ["fast"]);
    assert_eq!(flags(&mut con, "flag.set"), ["write"]);
    assert!(flags(&mut con, "raft.info").contains(&"loading".to_string()));
}

#[test]
fn a_malformed_context_is_reported_even_for_a_missing_flag() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut con = s.conn();
    assert!(
        cmd_err(&mut con, &["FLAG.EVAL", "missing", "[1,2]"]).starts_with("ERR malformed context"),
        "FLAG.EVAL of a missing flag with a bad context names the context"
    );
    let detail: Vec<redis::Value> = redis::cmd("FLAG.DETAIL")
        .arg("missing")
        .arg("{not json")
        .query(&mut con)
        .unwrap();
    let pos = detail
        .iter()
        .position(|v| *v == redis::Value::BulkString(b"error".to_vec()))
        .unwrap();
    assert_eq!(
        detail[pos + 1],
        redis::Value::BulkString(b"MALFORMED_CONTEXT".to_vec())
    );
}

/// The `calls=` of a command's `cmdstat_` line (0 when it has none yet).
fn calls(con: &mut redis::Connection, cmd: &str) -> u64 {
    let stats: String = redis::cmd("INFO").arg("commandstats").query(con).unwrap();
    let prefix = format!("cmdstat_{cmd}:calls=");
    stats
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[test]
fn commandstats_count_every_pipelined_fast_command_before_the_next_command_runs() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut con = s.conn();
    // The start-up probe PINGed already.
    let pings = calls(&mut con, "ping");
    // Runs of a fast command are counted once per run: a command after
    // them, in the same pipeline, must still see every one.
    let mut pipe = redis::pipe();
    for _ in 0..20 {
        pipe.cmd("FLAG.EVAL").arg("nosuch:flag");
    }
    for _ in 0..3 {
        pipe.cmd("PING");
    }
    pipe.cmd("FLAG.EVAL").arg("nosuch:flag");
    pipe.cmd("INFO").arg("commandstats");
    let replies: Vec<redis::Value> = pipe.query(&mut con).unwrap();
    let redis::Value::BulkString(info) = &replies[24] else {
        panic!("INFO answered {:?}", replies[24]);
    };
    let info = String::from_utf8_lossy(info);
    assert!(info.contains("cmdstat_flag.eval:calls=21,"), "{info}");
    assert!(
        info.contains(&format!("cmdstat_ping:calls={},", pings + 3)),
        "{info}"
    );
    // The end of a read batch counts the last run for other connections.
    let _: Vec<redis::Value> = redis::pipe()
        .cmd("PING")
        .cmd("PING")
        .query(&mut con)
        .unwrap();
    let mut other = s.conn();
    assert_eq!(calls(&mut other, "ping"), pings + 5);
    assert_eq!(calls(&mut other, "flag.eval"), 21);
}
