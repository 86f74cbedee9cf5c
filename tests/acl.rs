//! Access control as Redis 7.2 does it: users, the rule grammar, NOPERM texts,
//! ACL LOG and INFO counters, and flag environments as key patterns.
//! Cases follow Redis's tests/unit/acl.tcl and acl-v2.tcl, on FLAG.* commands.

mod common;

use std::time::Duration;

use common::{cmd_err, cmd_str, cmd_value, resp, serial, Server};

const FLAG: &str = r#"{"on":true,"variations":[{"name":"off","value":false},{"name":"on","value":true}],"off_variation":"off","fallthrough":{"variation":"on"}}"#;
const SEGMENT: &str = r#"{"description":"s","included":["u1"]}"#;

fn set(con: &mut redis::Connection, args: &[&str]) {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    let v: i64 = c.query(con).unwrap();
    assert!(v >= 1, "{args:?}");
}

fn ok(con: &mut redis::Connection, args: &[&str]) {
    assert_eq!(cmd_str(con, args).unwrap(), "OK", "{args:?}");
}

/// A connection logged in as `user`.
fn login(s: &Server, user: &str, pass: &str) -> redis::Connection {
    let url = format!("redis://{user}:{pass}@127.0.0.1:{}/", s.port);
    let con = redis::Client::open(url).unwrap().get_connection().unwrap();
    con.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    con
}

fn info_field(con: &mut redis::Connection, field: &str) -> i64 {
    let info = cmd_str(con, &["INFO", "stats"]).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("INFO has no {field}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn users_log_in_with_their_passwords_and_hashes() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut admin = s.conn();
    assert_eq!(cmd_str(&mut admin, &["ACL", "WHOAMI"]).unwrap(), "default");
    // New users start disabled.
    ok(&mut admin, &["ACL", "SETUSER", "newuser", ">passwd1"]);
    let mut raw = s.raw();
    raw.roundtrip(
        &resp(&["AUTH", "newuser", "passwd1"]),
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
    ok(&mut admin, &["ACL", "SETUSER", "newuser", "on", "+acl"]);
    raw.roundtrip(&resp(&["AUTH", "newuser", "passwd1"]), b"+OK\r\n");
    raw.roundtrip(&resp(&["ACL", "WHOAMI"]), b"$7\r\nnewuser\r\n");
    // Several passwords, then removal.
    ok(&mut admin, &["ACL", "SETUSER", "newuser", ">passwd2"]);
    raw.roundtrip(&resp(&["AUTH", "newuser", "passwd2"]), b"+OK\r\n");
    raw.roundtrip(&resp(&["AUTH", "newuser", "passwd1"]), b"+OK\r\n");
    ok(&mut admin, &["ACL", "SETUSER", "newuser", "<passwd1"]);
    raw.roundtrip(
        &resp(&["AUTH", "newuser", "passwd1"]),
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
    // Hashes.
    let hash = "34344e4d60c2b6d639b7bd22e18f2b0b91bc34bf0ac5f9952744435093cfb4e6";
    ok(
        &mut admin,
        &["ACL", "SETUSER", "newuser", &format!("#{hash}")],
    );
    raw.roundtrip(&resp(&["AUTH", "newuser", "passwd4"]), b"+OK\r\n");
    let short = &hash[1..];
    assert_eq!(
        cmd_err(&mut admin, &["ACL", "SETUSER", "newuser", &format!("#{short}")]),
        format!("ERR Error in ACL SETUSER modifier '#{short}': The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters")
    );
    let got = cmd_value(&mut admin, &["ACL", "GETUSER", "newuser"]).unwrap();
    let text = format!("{got:?}");
    assert!(text.contains(hash) && !text.contains("passwd2"), "{text}");
    ok(
        &mut admin,
        &["ACL", "SETUSER", "newuser", &format!("!{hash}")],
    );
    raw.roundtrip(
        &resp(&["AUTH", "newuser", "passwd4"]),
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
    // A bad rule changes nothing and creates nobody.
    assert_eq!(
        cmd_err(&mut admin, &["ACL", "SETUSER", "ghost", "on", "+nosuchcmd"]),
        "ERR Error in ACL SETUSER modifier '+nosuchcmd': Unknown command or category name in ACL"
    );
    assert_eq!(
        cmd_value(&mut admin, &["ACL", "GETUSER", "ghost"]).unwrap(),
        redis::Value::Nil
    );
    assert_eq!(
        cmd_err(&mut admin, &["ACL", "SETUSER", "ghost", "(+get", "~x"]),
        "ERR Unmatched parenthesis in acl selector starting at '(+get ~x'."
    );
    assert_eq!(
        cmd_err(&mut admin, &["ACL", "DELUSER", "default"]),
        "ERR The 'default' user cannot be removed"
    );
    let users: Vec<String> = redis::cmd("ACL").arg("USERS").query(&mut admin).unwrap();
    assert_eq!(users, ["default", "newuser"]);
    let n: i64 = redis::cmd("ACL")
        .arg("DELUSER")
        .arg("newuser")
        .arg("nosuch")
        .query(&mut admin)
        .unwrap();
    assert_eq!(n, 1);
    // The deleted user's connection is closed.
    assert!(
        raw.is_closed(),
        "DELUSER closes the deleted user's connections"
    );
}

#[test]
fn denials_use_redis_texts_count_in_info_and_aggregate_in_acl_log() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut admin = s.conn();
    set(&mut admin, &["FLAG.SET", "prod:a", FLAG]);
    ok(&mut admin, &["ACL", "SETUSER", "alice", "on", ">pw"]);
    let mut alice = login(&s, "alice", "pw");
    // The client's own CLIENT SETINFO at connect was denied too, as in Redis.
    let cmd0 = info_field(&mut admin, "acl_access_denied_cmd");
    assert_eq!(
        cmd_err(&mut alice, &["FLAG.EVAL", "prod:a"]),
        "NOPERM User alice has no permissions to run the 'flag.eval' command"
    );
    assert_eq!(
        cmd_err(&mut alice, &["CLIENT", "LIST"]),
        "NOPERM User alice has no permissions to run the 'client|list' command"
    );
    ok(&mut admin, &["ACL", "SETUSER", "alice", "+flag.eval"]);
    assert_eq!(
        cmd_err(&mut alice, &["FLAG.EVAL", "prod:a"]),
        "NOPERM No permissions to access a key"
    );
    ok(&mut admin, &["ACL", "SETUSER", "alice", "+publish"]);
    assert_eq!(
        cmd_err(&mut alice, &["PUBLISH", "app:prod:a", "x"]),
        "NOPERM No permissions to access a channel"
    );
    assert_eq!(info_field(&mut admin, "acl_access_denied_cmd"), cmd0 + 2);
    assert_eq!(info_field(&mut admin, "acl_access_denied_key"), 1);
    assert_eq!(info_field(&mut admin, "acl_access_denied_channel"), 1);
    let mut raw = s.raw();
    raw.roundtrip(
        &resp(&["AUTH", "alice", "wrong"]),
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
    assert_eq!(info_field(&mut admin, "acl_access_denied_auth"), 1);

    ok(&mut admin, &["ACL", "LOG", "RESET"]);
    for _ in 0..3 {
        cmd_err(&mut alice, &["FLAG.SET", "prod:a", FLAG]);
    }
    let log: Vec<std::collections::HashMap<String, redis::Value>> =
        redis::cmd("ACL").arg("LOG").query(&mut admin).unwrap();
    assert_eq!(log.len(), 1);
    let e = &log[0];
    let s_of = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::Int(i) => i.to_string(),
        other => format!("{other:?}"),
    };
    assert_eq!(e.len(), 10, "7.2 entries have 10 fields");
    assert_eq!(s_of(&e["count"]), "3");
    assert_eq!(s_of(&e["reason"]), "command");
    assert_eq!(s_of(&e["context"]), "toplevel");
    assert_eq!(s_of(&e["object"]), "flag.set");
    assert_eq!(s_of(&e["username"]), "alice");
    assert!(
        s_of(&e["client-info"]).contains("cmd=flag.set"),
        "{:?}",
        e["client-info"]
    );
    let first_id: i64 = s_of(&e["entry-id"]).parse().unwrap();
    // A different denial gets the next id; inside MULTI the context is multi.
    ok(&mut admin, &["ACL", "SETUSER", "alice", "+@transaction"]);
    ok(&mut alice, &["MULTI"]);
    cmd_err(&mut alice, &["FLAG.EVAL", "staging:b"]);
    let exec = cmd_err(&mut alice, &["EXEC"]);
    assert!(exec.starts_with("EXECABORT"), "{exec}");
    let log: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("ACL")
        .arg("LOG")
        .arg("1")
        .query(&mut admin)
        .unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(s_of(&log[0]["reason"]), "key");
    assert_eq!(s_of(&log[0]["object"]), "staging:b");
    assert_eq!(s_of(&log[0]["context"]), "multi");
    assert_eq!(s_of(&log[0]["entry-id"]), (first_id + 1).to_string());
}

#[test]
fn an_evaluator_sees_one_environment_and_an_editor_writes_one() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut admin = s.conn();
    for key in ["prod:a", "prod:b", "staging:a"] {
        set(&mut admin, &["FLAG.SET", key, FLAG]);
    }
    set(&mut admin, &["SEGMENT.SET", "prod:s", SEGMENT]);
    set(&mut admin, &["SEGMENT.SET", "staging:s", SEGMENT]);
    ok(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "app",
            "on",
            ">apppw",
            "~prod:*",
            "&flag:prod:*",
            "+@connection",
            "+@flag-eval",
        ],
    );
    ok(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "viewer",
            "on",
            ">vpw",
            "~prod:*",
            "+@connection",
            "+@flag-eval",
            "+@flag-read",
        ],
    );
    ok(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "ed",
            "on",
            ">epw",
            "~staging:*",
            "+@connection",
            "+@flag-eval",
            "+@flag-read",
            "+@flag-write",
        ],
    );
    let mut app = login(&s, "app", "apppw");
    assert_eq!(
        cmd_str(&mut app, &["FLAG.EVAL", "prod:a", "{}"]).unwrap(),
        "true"
    );
    assert_eq!(
        cmd_err(&mut app, &["FLAG.EVAL", "staging:a", "{}"]),
        "NOPERM No permissions to access a key"
    );
    assert_eq!(
        cmd_err(&mut app, &["FLAG.MEVAL", "{}", "prod:a", "staging:a"]),
        "NOPERM No permissions to access a key"
    );
    assert_eq!(
        cmd_err(&mut app, &["FLAG.SET", "prod:a", FLAG]),
        "NOPERM User app has no permissions to run the 'flag.set' command"
    );
    assert_eq!(
        cmd_err(&mut app, &["FLAG.GET", "prod:a"]),
        "NOPERM User app has no permissions to run the 'flag.get' command"
    );
    // The change stream: readable with @flag-eval, only entries on its keys.
    let changes = format!(
        "{:?}",
        cmd_value(&mut app, &["XRANGE", "flagstaff:changes", "-", "+"]).unwrap()
    );
    assert!(
        changes.contains("prod:a") && !changes.contains("staging"),
        "{changes}"
    );
    let changes = format!(
        "{:?}",
        cmd_value(&mut app, &["XREAD", "STREAMS", "flagstaff:changes", "0"]).unwrap()
    );
    // COUNT counts what the user sees: the staging entry does not use it up.
    let one = format!(
        "{:?}",
        cmd_value(
            &mut app,
            &["XREVRANGE", "flagstaff:changes", "+", "-", "COUNT", "1"]
        )
        .unwrap()
    );
    assert!(one.contains("prod:s"), "{one}");
    assert!(
        changes.contains("prod:b") && !changes.contains("staging"),
        "{changes}"
    );
    let all = format!(
        "{:?}",
        cmd_value(&mut app, &["FLAG.EVALALL", "{}"]).unwrap()
    );
    assert!(
        all.contains("prod:a") && all.contains("prod:b") && !all.contains("staging"),
        "{all}"
    );

    let mut viewer = login(&s, "viewer", "vpw");
    let keys: Vec<String> = redis::cmd("FLAG.LIST").query(&mut viewer).unwrap();
    assert_eq!(keys, ["prod:a", "prod:b"]);
    let segs: Vec<String> = redis::cmd("SEGMENT.LIST").query(&mut viewer).unwrap();
    assert_eq!(segs, ["prod:s"]);
    let dump = cmd_str(&mut viewer, &["FLAG.DUMP"]).unwrap();
    assert!(
        dump.contains("prod:b") && dump.contains("prod:s") && !dump.contains("staging"),
        "{dump}"
    );
    let scan = format!(
        "{:?}",
        cmd_value(&mut viewer, &["FLAG.SCAN", "0", "COUNT", "100"]).unwrap()
    );
    assert!(
        scan.contains("prod:a") && !scan.contains("staging"),
        "{scan}"
    );
    // The default user still sees everything.
    let keys: Vec<String> = redis::cmd("FLAG.LIST").query(&mut admin).unwrap();
    assert_eq!(keys, ["prod:a", "prod:b", "staging:a"]);

    let mut ed = login(&s, "ed", "epw");
    let v: i64 = redis::cmd("FLAG.TOGGLE")
        .arg("staging:a")
        .arg("OFF")
        .query(&mut ed)
        .unwrap();
    assert_eq!(v, 2);
    // The writer's user name is the actor in the history.
    let history = format!(
        "{:?}",
        cmd_value(&mut admin, &["FLAG.HISTORY", "staging:a", "COUNT", "1"]).unwrap()
    );
    assert!(history.contains("bulk-string('\"ed\"')"), "{history}");
    assert_eq!(
        cmd_err(&mut ed, &["FLAG.TOGGLE", "prod:a", "OFF"]),
        "NOPERM No permissions to access a key"
    );
    assert_eq!(
        cmd_err(&mut ed, &["FLAG.IMPORT", "{}"]),
        "NOPERM User ed has no permissions to run the 'flag.import' command"
    );
    assert_eq!(
        cmd_err(&mut ed, &["RAFT.INFO"]),
        "NOPERM User ed has no permissions to run the 'raft.info' command"
    );
}

#[test]
fn getuser_and_list_read_back_in_redis_canonical_form() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut admin = s.conn();
    ok(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "alice",
            "on",
            ">s3cret",
            "~flag:*",
            "&flagstaff:*",
            "+flag.get",
            "+@read",
            "-flag.list",
            "%R~cfg:*",
        ],
    );
    let h = "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0";
    let mut raw = s.raw();
    raw.send(&resp(&["ACL", "GETUSER", "alice"]));
    let expected = format!(
        "*12\r\n$5\r\nflags\r\n*2\r\n$2\r\non\r\n$16\r\nsanitize-payload\r\n$9\r\npasswords\r\n*1\r\n$64\r\n{h}\r\n$8\r\ncommands\r\n$33\r\n-@all +flag.get +@read -flag.list\r\n$4\r\nkeys\r\n$16\r\n~flag:* %R~cfg:*\r\n$8\r\nchannels\r\n$12\r\n&flagstaff:*\r\n$9\r\nselectors\r\n*0\r\n"
    );
    assert_eq!(
        String::from_utf8_lossy(&raw.read_exact_len(expected.len())),
        expected
    );
    // RESP3: a map whose flags are a set.
    raw.send(&resp(&["HELLO", "3"]));
    let _ = raw.read_until(b"modules\r\n*0\r\n");
    raw.send(&resp(&["ACL", "GETUSER", "alice"]));
    let got = raw.read_until(b"selectors\r\n*0\r\n");
    assert!(
        got.starts_with(b"%6\r\n$5\r\nflags\r\n~2\r\n"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    ok(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "bob",
            "on",
            "(~w:*",
            "+flag.set)",
            "clearselectors",
            "(+flag.set ~w:*)",
        ],
    );
    let list: Vec<String> = redis::cmd("ACL").arg("LIST").query(&mut admin).unwrap();
    assert_eq!(
        list,
        [
            format!("user alice on sanitize-payload #{h} ~flag:* %R~cfg:* resetchannels &flagstaff:* -@all +flag.get +@read -flag.list"),
            "user bob on sanitize-payload resetchannels -@all (~w:* resetchannels -@all +flag.set)".to_string(),
            "user default on nopass sanitize-payload ~* &* +@all".to_string(),
        ]
    );
    ok(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "carol",
            "reset",
            "+@all",
            "~*",
            "-@flag-write",
            "+flag.set",
        ],
    );
    let got = format!(
        "{:?}",
        cmd_value(&mut admin, &["ACL", "GETUSER", "carol"]).unwrap()
    );
    assert!(got.contains("+@all -@flag-write +flag.set"), "{got}");
    let cats: Vec<String> = redis::cmd("ACL").arg("CAT").query(&mut admin).unwrap();
    assert_eq!(cats.len(), 25);
    assert_eq!(
        &cats[21..],
        ["flag-eval", "flag-read", "flag-write", "flag-admin"]
    );
    let evals: Vec<String> = redis::cmd("ACL")
        .arg("CAT")
        .arg("flag-eval")
        .query(&mut admin)
        .unwrap();
    assert!(evals.contains(&"flag.eval".to_string()) && !evals.contains(&"flag.get".to_string()));
    assert_eq!(
        cmd_err(&mut admin, &["ACL", "CAT", "nosuch"]),
        "ERR Unknown category 'nosuch'"
    );
    let info = format!(
        "{:?}",
        cmd_value(&mut admin, &["COMMAND", "INFO", "flag.eval"]).unwrap()
    );
    assert!(info.contains("@flag-eval"), "{info}");
    let pass: String = redis::cmd("ACL").arg("GENPASS").query(&mut admin).unwrap();
    assert_eq!(pass.len(), 64);
    let pass: String = redis::cmd("ACL")
        .arg("GENPASS")
        .arg("32")
        .query(&mut admin)
        .unwrap();
    assert_eq!(pass.len(), 8);
}

#[test]
fn selectors_are_not_additive_and_dryrun_explains() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut admin = s.conn();
    ok(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "sel",
            "on",
            "nopass",
            "(+@flag-write ~write:*)",
            "(+@flag-eval ~read:*)",
        ],
    );
    let dry = |admin: &mut redis::Connection, args: &[&str]| -> String {
        let mut full = vec!["ACL", "DRYRUN", "sel"];
        full.extend_from_slice(args);
        cmd_str(admin, &full).unwrap()
    };
    assert_eq!(dry(&mut admin, &["FLAG.SET", "write:x", FLAG]), "OK");
    assert_eq!(dry(&mut admin, &["FLAG.EVAL", "read:x"]), "OK");
    assert_eq!(
        dry(&mut admin, &["FLAG.SET", "read:x", FLAG]),
        "User sel has no permissions to access the 'read:x' key"
    );
    assert_eq!(
        dry(&mut admin, &["FLAG.EVAL", "write:x"]),
        "User sel has no permissions to access the 'write:x' key"
    );
    assert_eq!(
        dry(&mut admin, &["FLAG.GET", "read:x"]),
        "User sel has no permissions to run the 'flag.get' command"
    );
    assert_eq!(
        cmd_err(&mut admin, &["ACL", "DRYRUN", "nosuch", "PING"]),
        "ERR User 'nosuch' not found"
    );
    assert_eq!(
        cmd_err(&mut admin, &["ACL", "DRYRUN", "sel", "NOTACMD"]),
        "ERR Command 'NOTACMD' not found"
    );
    // Channels: names glob-match, patterns must match literally.
    ok(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "sub",
            "on",
            "nopass",
            "+@all",
            "resetchannels",
            "&app:prod:*",
        ],
    );
    let mut sub = login(&s, "sub", "x");
    let n: i64 = redis::cmd("PUBLISH")
        .arg("app:prod:a")
        .arg("m")
        .query(&mut sub)
        .unwrap();
    assert_eq!(n, 0);
    assert_eq!(
        cmd_err(&mut sub, &["PUBLISH", "app:staging:a", "m"]),
        "NOPERM No permissions to access a channel"
    );
    let mut raw = s.raw();
    raw.roundtrip(&resp(&["AUTH", "sub", "x"]), b"+OK\r\n");
    raw.roundtrip(
        &resp(&["PSUBSCRIBE", "app:*"]),
        b"-NOPERM No permissions to access a channel\r\n",
    );
    raw.roundtrip(
        &resp(&["PSUBSCRIBE", "app:prod:*"]),
        b"*3\r\n$10\r\npsubscribe\r\n$10\r\napp:prod:*\r\n:1\r\n",
    );
}

#[test]
fn requirepass_sets_the_default_password_and_hello_auths_users() {
    let _g = serial();
    let s = Server::start(&["--requirepass", "topsecret"]);
    let mut raw = s.raw();
    raw.roundtrip(b"PING\r\n", b"-NOAUTH Authentication required.\r\n");
    raw.roundtrip(&resp(&["AUTH", "topsecret"]), b"+OK\r\n");
    raw.send(&resp(&["ACL", "LIST"]));
    let got = raw.read_until(b"+@all\r\n");
    let h = {
        // sha256("topsecret")
        "53336a676c64c1396553b2b7c92f38126768827c93b64d9142069c10eda7a721"
    };
    assert!(
        String::from_utf8_lossy(&got).contains(&format!(
            "user default on sanitize-payload #{h} ~* &* +@all"
        )),
        "{}",
        String::from_utf8_lossy(&got)
    );
    raw.roundtrip(
        &resp(&[
            "ACL",
            "SETUSER",
            "app",
            "on",
            ">apppw",
            "+@connection",
            "-@all",
            "+ping",
        ]),
        b"+OK\r\n",
    );
    // HELLO AUTH works for a user without HELLO permission; a failed HELLO
    // AUTH does not apply SETNAME.
    let mut other = s.raw();
    other.roundtrip(
        &resp(&["HELLO", "2", "AUTH", "app", "bad", "SETNAME", "n1"]),
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
    other.send(&resp(&["HELLO", "3", "AUTH", "app", "apppw"]));
    let _ = other.read_until(b"modules\r\n*0\r\n");
    other.roundtrip(b"PING\r\n", b"+PONG\r\n");
    other.roundtrip(
        &resp(&["ACL", "WHOAMI"]),
        b"-NOPERM User app has no permissions to run the 'acl|whoami' command\r\n",
    );
    // AUTH with the default user's password only.
    let mut third = s.raw();
    third.roundtrip(
        &resp(&["AUTH", "wrong"]),
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
}

#[test]
fn failed_logins_back_off_per_address_while_others_are_served() {
    let _g = serial();
    let s = Server::start(&["--requirepass", "right"]);
    let mut admin = s.raw();
    admin.roundtrip(&resp(&["AUTH", "right"]), b"+OK\r\n");
    let mut guesser = s.raw();
    // 5 free failures, then 7 penalised ones: 10+20+40+80+160+320+640 ms.
    let started = std::time::Instant::now();
    let wrong = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n";
    let guesses: Vec<u8> = (0..12)
        .flat_map(|i| resp(&["AUTH", &format!("guess{i}")]))
        .collect();
    guesser.send(&guesses);
    // While the guesser waits, another client is answered.
    std::thread::sleep(Duration::from_millis(300));
    let ping = std::time::Instant::now();
    admin.roundtrip(b"PING\r\n", b"+PONG\r\n");
    assert!(
        ping.elapsed() < Duration::from_secs(5),
        "PING took {:?}",
        ping.elapsed()
    );
    let got = guesser.read_exact_len(wrong.len() * 12);
    assert_eq!(got, wrong.repeat(12));
    assert!(
        started.elapsed() >= Duration::from_millis(1200),
        "12 failures were answered in {:?}",
        started.elapsed()
    );
    admin.send(&resp(&["INFO", "stats"]));
    let info =
        String::from_utf8_lossy(&admin.read_until(b"acl_access_denied_channel:0\r\n")).into_owned();
    assert!(info.contains("acl_access_denied_auth:12\r\n"), "{info}");
    admin.send(&resp(&["ACL", "LOG", "1"]));
    let log =
        String::from_utf8_lossy(&admin.read_until(b"timestamp-last-updated\r\n")).into_owned();
    assert!(
        log.contains("count\r\n:12\r\n") && log.contains("reason\r\n$4\r\nauth\r\n"),
        "{log}"
    );
}

#[test]
fn users_travel_in_an_admins_dump_and_import_as_one_entry() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut admin = s.conn();
    set(&mut admin, &["FLAG.SET", "prod:a", FLAG]);
    ok(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "app",
            "on",
            ">apppw",
            "~prod:*",
            "+@flag-eval",
            "+@flag-read",
        ],
    );
    ok(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "ops",
            "on",
            ">opspw",
            "allkeys",
            "+@flag-admin",
            "+@flag-read",
        ],
    );
    let dump = cmd_str(&mut admin, &["FLAG.DUMP"]).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let app_line = doc["users"]["app"].as_str().unwrap().to_string();
    assert!(
        app_line.starts_with("user app on ") && app_line.contains(" #"),
        "{app_line}"
    );
    assert!(
        !dump.contains("apppw"),
        "never a clear-text password: {dump}"
    );
    // A non-admin's dump has no users; an admin user's has them.
    let mut app = login(&s, "app", "apppw");
    let dump_app: serde_json::Value =
        serde_json::from_str(&cmd_str(&mut app, &["FLAG.DUMP"]).unwrap()).unwrap();
    assert!(dump_app.get("users").is_none(), "{dump_app}");
    assert!(dump_app["flags"].get("prod:a").is_some());
    let mut ops = login(&s, "ops", "opspw");
    let dump_ops: serde_json::Value =
        serde_json::from_str(&cmd_str(&mut ops, &["FLAG.DUMP"]).unwrap()).unwrap();
    assert_eq!(dump_ops["users"]["app"], app_line.as_str());
    // Imported into an empty server, the users work there at once.
    let other = Server::start(&[]);
    let mut other_admin = other.conn();
    let revision = |c: &mut redis::Connection| {
        cmd_str(c, &["RAFT.INFO"])
            .unwrap()
            .lines()
            .find_map(|l| {
                l.strip_prefix("last_log_index:")
                    .map(|v| v.trim().parse::<u64>().unwrap())
            })
            .unwrap()
    };
    let before = revision(&mut other_admin);
    let n: i64 = redis::cmd("FLAG.IMPORT")
        .arg(&dump)
        .query(&mut other_admin)
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(revision(&mut other_admin), before + 1, "one raft entry");
    let mut app2 = login(&other, "app", "apppw");
    assert_eq!(
        cmd_str(&mut app2, &["FLAG.EVAL", "prod:a"]).unwrap(),
        "true"
    );
    assert_eq!(
        cmd_err(&mut app2, &["FLAG.EVAL", "staging:a"]),
        "NOPERM No permissions to access a key"
    );
    let list: Vec<String> = redis::cmd("ACL")
        .arg("LIST")
        .query(&mut other_admin)
        .unwrap();
    assert!(list.contains(&app_line), "{list:?}");
    // Importing users takes ACL SETUSER; a bad line changes nothing.
    ok(
        &mut other_admin,
        &[
            "ACL",
            "SETUSER",
            "importer",
            "on",
            ">ipw",
            "allkeys",
            "+flag.import",
        ],
    );
    let mut importer = login(&other, "importer", "ipw");
    assert!(cmd_err(&mut importer, &["FLAG.IMPORT", &dump]).starts_with("NOPERM"));
    let bad = dump.replace("+@flag-eval", "+@no-such-category");
    assert!(cmd_err(&mut other_admin, &["FLAG.IMPORT", &bad]).starts_with("INVALID users"));
}

#[test]
fn user_changes_are_audited_as_acl_user_history_for_admins_only() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut admin = s.conn();
    ok(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "ops",
            "on",
            ">opspw",
            "allkeys",
            "+@flag-admin",
            "+@flag-read",
        ],
    );
    let mut ops = login(&s, "ops", "opspw");
    ok(
        &mut ops,
        &[
            "ACL",
            "SETUSER",
            "app",
            "on",
            ">apppw",
            "~prod:*",
            "+@flag-eval",
        ],
    );
    ok(&mut admin, &["ACL", "SETUSER", "app", "+@flag-read"]);
    let _: i64 = redis::cmd("ACL")
        .arg("DELUSER")
        .arg("app")
        .query(&mut ops)
        .unwrap();
    let history: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("FLAG.HISTORY")
        .arg("acl:app")
        .query(&mut admin)
        .unwrap();
    let text = |e: &std::collections::HashMap<String, redis::Value>, f: &str| match &e[f] {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::Nil => "nil".into(),
        other => format!("{other:?}"),
    };
    let summary: Vec<(String, String)> = history
        .iter()
        .map(|e| (text(e, "event"), text(e, "actor")))
        .collect();
    assert_eq!(
        summary,
        [("delete", "ops"), ("set", "default"), ("set", "ops")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let created: serde_json::Value = serde_json::from_str(&text(&history[2], "after")).unwrap();
    let line = created["acl"].as_str().unwrap();
    assert!(
        line.starts_with("user app on ") && line.contains(" #"),
        "{line}"
    );
    assert_eq!(text(&history[2], "before"), "nil");
    assert_eq!(text(&history[0], "after"), "nil");
    let all = format!("{history:?}");
    assert!(!all.contains("apppw"), "never a clear-text password: {all}");
    assert!(all.contains("+@flag-read"), "{all}");
    // Only user administrators read it; the change stream does not carry it.
    ok(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "viewer",
            "on",
            ">vpw",
            "allkeys",
            "+@flag-read",
            "+@flag-eval",
        ],
    );
    let mut viewer = login(&s, "viewer", "vpw");
    assert!(cmd_err(&mut viewer, &["FLAG.HISTORY", "acl:app"]).starts_with("NOPERM"));
    let stream = format!(
        "{:?}",
        cmd_value(&mut admin, &["XRANGE", "flagstaff:changes", "-", "+"]).unwrap()
    );
    assert!(
        !stream.contains("acl") && !stream.contains("\"user\""),
        "{stream}"
    );
    // The prefix is reserved: no flag can hide a user's history.
    assert!(cmd_err(&mut admin, &["FLAG.SET", "acl:app", FLAG]).contains("reserved"));
}

/// Counts the replies (one line each) in what is readable on `stream` now.
fn drain_lines(stream: &mut std::net::TcpStream) -> usize {
    use std::io::Read;
    let mut buf = [0u8; 64 * 1024];
    let mut lines = 0;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return lines,
            Ok(n) => lines += buf[..n].iter().filter(|b| **b == b'\n').count(),
            Err(_) => return lines,
        }
    }
}

#[test]
fn ten_thousand_wrong_auths_over_100_connections_are_slowed_counted_and_logged() {
    use std::io::Write;
    let _g = serial();
    let s = Server::start(&["--requirepass", "right"]);
    let mut admin = login(&s, "default", "right");
    let mut guessers: Vec<std::net::TcpStream> = (0..100)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap())
        .collect();
    let started = std::time::Instant::now();
    for (c, g) in guessers.iter_mut().enumerate() {
        let guesses: Vec<u8> = (0..100)
            .flat_map(|i| resp(&["AUTH", &format!("guess-{c}-{i}")]))
            .collect();
        g.write_all(&guesses).unwrap();
        g.set_nonblocking(true).unwrap();
    }
    // Each connection's guesses are decided one after the other, each
    // waiting its turn in the address's backoff; the counter moves as they
    // are decided.
    std::thread::sleep(Duration::from_secs(1).saturating_sub(started.elapsed()));
    let first_second = info_field(&mut admin, "acl_access_denied_auth") as usize;
    assert!(
        (100..10_000).contains(&first_second),
        "the backoff did not slow the guesser: {first_second} decided in the first second"
    );
    // Another client keeps being answered while 100 connections guess.
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let t = std::time::Instant::now();
        assert_eq!(cmd_str(&mut admin, &["PING"]).unwrap(), "PONG");
        slowest = slowest.max(t.elapsed());
    }
    assert!(slowest < Duration::from_secs(5), "PING took {slowest:?}");
    std::thread::sleep(Duration::from_secs(2));
    let counted = info_field(&mut admin, "acl_access_denied_auth") as usize;
    let log = cmd_value(&mut admin, &["ACL", "LOG"]).unwrap();
    let counted_after = info_field(&mut admin, "acl_access_denied_auth") as usize;
    let answered: usize = guessers.iter_mut().map(drain_lines).sum();
    assert!(
        answered <= counted_after,
        "{answered} answered, {counted_after} counted"
    );
    assert!(counted < 10_000, "{counted} decided in 3 s");
    // One ACL LOG entry aggregates them (count), as Redis groups similar entries.
    let redis::Value::Array(entries) = log else {
        panic!("{log:?}")
    };
    assert_eq!(entries.len(), 1, "{entries:?}");
    let fields: Vec<redis::Value> = match &entries[0] {
        redis::Value::Array(kv) => kv.clone(),
        redis::Value::Map(kv) => kv
            .iter()
            .flat_map(|(k, v)| [k.clone(), v.clone()])
            .collect(),
        other => panic!("{other:?}"),
    };
    let field = |name: &str| {
        fields
            .chunks(2)
            .find(|p| p[0] == redis::Value::BulkString(name.as_bytes().to_vec()))
            .map(|p| p[1].clone())
            .unwrap_or_else(|| panic!("no {name} in {fields:?}"))
    };
    assert_eq!(field("reason"), redis::Value::BulkString(b"auth".to_vec()));
    let redis::Value::Int(count) = field("count") else {
        panic!("{fields:?}")
    };
    assert!(
        (counted..=counted_after).contains(&(count as usize)),
        "ACL LOG count {count}, INFO {counted}..{counted_after}"
    );
    let secs = started.elapsed().as_secs_f64();
    println!(
        "brute force: {counted_after} of 10000 guesses decided in {secs:.1} s ({:.0} attempts/s; {first_second} in the first second); slowest PING {slowest:?}",
        counted_after as f64 / secs
    );
}

#[test]
fn revoking_channel_access_disconnects_only_unauthorised_subscribers() {
    let _g = serial();
    let s = Server::start(&[]);
    let mut admin = s.conn();
    ok(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "sub",
            "on",
            "nopass",
            "+@all",
            "resetchannels",
            "&app:prod:*",
        ],
    );
    let mut literal = s.raw();
    literal.roundtrip(&resp(&["AUTH", "sub", "x"]), b"+OK\r\n");
    literal.roundtrip(
        &resp(&["SUBSCRIBE", "app:prod:a"]),
        b"*3\r\n$9\r\nsubscribe\r\n$10\r\napp:prod:a\r\n:1\r\n",
    );
    let mut pattern = s.raw();
    pattern.roundtrip(&resp(&["AUTH", "sub", "x"]), b"+OK\r\n");
    pattern.roundtrip(
        &resp(&["PSUBSCRIBE", "app:prod:*"]),
        b"*3\r\n$10\r\npsubscribe\r\n$10\r\napp:prod:*\r\n:1\r\n",
    );
    // Keeping the literal channel: the pattern subscriber loses its pattern.
    ok(
        &mut admin,
        &["ACL", "SETUSER", "sub", "resetchannels", "&app:prod:a"],
    );
    assert!(
        pattern.is_closed(),
        "the pattern subscriber is disconnected"
    );
    let n: i64 = redis::cmd("PUBLISH")
        .arg("app:prod:a")
        .arg("still")
        .query(&mut admin)
        .unwrap();
    assert_eq!(n, 1);
    let msg = b"*3\r\n$7\r\nmessage\r\n$10\r\napp:prod:a\r\n$5\r\nstill\r\n";
    assert_eq!(literal.read_exact_len(msg.len()), msg);
    // Gaining allchannels keeps it; losing everything closes it.
    ok(&mut admin, &["ACL", "SETUSER", "sub", "allchannels"]);
    ok(&mut admin, &["ACL", "SETUSER", "sub", "resetchannels"]);
    assert!(
        literal.is_closed(),
        "the channel subscriber is disconnected"
    );
}

/// Retries `f` for up to 10 s until it returns true.
#[track_caller]
fn eventually(mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "not within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn users_replicate_to_followers_and_survive_kill_9() {
    let _g = serial();
    let mut first = common::cluster_node(1, None, &[]);
    let mut second = common::cluster_node(2, Some(first.port), &[]);
    let mut admin = first.conn();
    set(&mut admin, &["FLAG.SET", "prod:a", FLAG]);
    ok(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "app",
            "on",
            ">apppw",
            "~prod:*",
            "+@connection",
            "+@flag-eval",
        ],
    );
    let line = {
        let list: Vec<String> = redis::cmd("ACL").arg("LIST").query(&mut admin).unwrap();
        list.into_iter()
            .find(|l| l.starts_with("user app "))
            .unwrap()
    };
    assert!(!line.contains("apppw"), "{line}");
    // Enforced on the follower within one round trip: after a read barrier
    // there, the very next AUTH succeeds (no retry).
    let mut raw = second.raw();
    raw.send(&resp(&["RAFT.BARRIER"]));
    let applied = raw.read_until(b"\r\n");
    assert!(applied.starts_with(b":"), "{applied:?}");
    raw.roundtrip(&resp(&["AUTH", "app", "apppw"]), b"+OK\r\n");
    raw.roundtrip(&resp(&["FLAG.EVAL", "prod:a"]), b"$4\r\ntrue\r\n");
    let mut app = login(&second, "app", "apppw");
    assert_eq!(
        cmd_err(&mut app, &["FLAG.EVAL", "staging:a"]),
        "NOPERM No permissions to access a key"
    );
    // Deleting through the follower closes the user's connections there.
    let mut app_raw = second.raw();
    app_raw.roundtrip(&resp(&["AUTH", "app", "apppw"]), b"+OK\r\n");
    let n: i64 = redis::cmd("ACL")
        .arg("DELUSER")
        .arg("app")
        .query(&mut second.conn())
        .unwrap();
    assert_eq!(n, 1);
    assert!(
        app_raw.is_closed(),
        "DELUSER closed the deleted user's connection"
    );
    ok(
        &mut first.conn(),
        &[
            "ACL",
            "SETUSER",
            "keeper",
            "on",
            ">kpw",
            "~prod:*",
            "+@flag-eval",
        ],
    );
    // Every node killed; users come back from disk.
    first.kill9();
    second.kill9();
    first.restart();
    second.restart();
    for node in [&first, &second] {
        eventually(|| {
            let mut raw = node.raw();
            raw.send(&resp(&["AUTH", "keeper", "kpw"]));
            raw.read_exact_len(5) == b"+OK\r\n"
        });
        let mut raw = node.raw();
        raw.roundtrip(
            &resp(&["AUTH", "app", "apppw"]),
            b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
        );
    }
}

#[test]
fn an_aclfile_seeds_users_and_acl_load_is_all_or_nothing() {
    let _g = serial();
    let dir = common::temp_dir("aclfile");
    let file = dir.join("users.acl");
    let f = file.display().to_string();
    std::fs::write(
        &file,
        "user alice on #1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0 ~prod:* +@flag-eval\n\nuser default on nopass ~* &* +@all\n",
    )
    .unwrap();
    let s = Server::start(&["--aclfile", &f]);
    let mut admin = s.conn();
    let mut raw = s.raw();
    raw.roundtrip(&resp(&["AUTH", "alice", "s3cret"]), b"+OK\r\n");
    // A bad file changes nothing; every problem is listed.
    std::fs::write(
        &file,
        "user bob on nopass +nosuchcmd\nbogus line\nuser carol on nopass\nuser carol off\n",
    )
    .unwrap();
    assert_eq!(
        cmd_err(&mut admin, &["ACL", "LOAD"]),
        format!("ERR {f}:1: Error in applying operation '+nosuchcmd': Unknown command or category name in ACL. {f}:2 should start with user keyword followed by the username. WARNING: Duplicate user 'carol' found on line 4. WARNING: ACL errors detected, no change to the previously active ACL rules was performed")
    );
    let users: Vec<String> = redis::cmd("ACL").arg("USERS").query(&mut admin).unwrap();
    assert_eq!(users, ["alice", "default"]);
    // A good file replaces every user; a missing default is the stock one.
    std::fs::write(&file, "user carol on >cpw ~staging:* +@all\n").unwrap();
    ok(&mut admin, &["ACL", "LOAD"]);
    let users: Vec<String> = redis::cmd("ACL").arg("USERS").query(&mut admin).unwrap();
    assert_eq!(users, ["carol", "default"]);
    ok(
        &mut admin,
        &["ACL", "SETUSER", "dave", "on", ">dpw", "~x:*", "+flag.get"],
    );
    ok(&mut admin, &["ACL", "SAVE"]);
    let saved = std::fs::read_to_string(&file).unwrap();
    let list: Vec<String> = redis::cmd("ACL").arg("LIST").query(&mut admin).unwrap();
    assert_eq!(
        saved,
        list.iter().map(|l| format!("{l}\n")).collect::<String>()
    );
    assert!(
        !saved.contains("dpw") && saved.contains("user dave on"),
        "{saved}"
    );
    // Without an aclfile, Redis's error.
    let plain = Server::start(&[]);
    assert!(cmd_err(&mut plain.conn(), &["ACL", "SAVE"])
        .starts_with("ERR This Redis instance is not configured to use an ACL file."));
}

#[test]
fn a_bad_aclfile_stops_start_up_with_one_line() {
    let _g = serial();
    let dir = common::temp_dir("badacl");
    let file = dir.join("users.acl");
    std::fs::write(&file, "user x on +nosuch\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flagstaff"))
        .args(["--port", &common::free_port().to_string(), "--data-dir"])
        .arg(dir.join("data"))
        .arg("--aclfile")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot use aclfile") && err.contains("Error in applying operation '+nosuch'"),
        "{err}"
    );
}

#[test]
fn a_joining_node_logs_in_as_a_flag_admin_user() {
    let _g = serial();
    let first = common::cluster_node(1, None, &["--requirepass", "adminpw"]);
    let mut admin = first.raw();
    admin.roundtrip(&resp(&["AUTH", "adminpw"]), b"+OK\r\n");
    admin.roundtrip(
        &resp(&["ACL", "SETUSER", "joiner", "on", ">jpw", "+@flag-admin"]),
        b"+OK\r\n",
    );
    let second = common::cluster_node(
        2,
        Some(first.port),
        &["--join-user", "joiner", "--join-password", "jpw"],
    );
    // The cluster's users (default with its password) now apply on the new node too.
    eventually(|| {
        let url = format!("redis://default:adminpw@127.0.0.1:{}/", second.port);
        let Ok(mut con) = redis::Client::open(url).unwrap().get_connection() else {
            return false;
        };
        cmd_str(&mut con, &["RAFT.INFO"]).is_ok_and(|i| i.contains("role:follower"))
    });
}
