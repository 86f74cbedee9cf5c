//! The admin JSON API (`/api/v1/`) through the real binary: success and
//! error shapes of every endpoint, If-Match, login sessions (cookie, CSRF,
//! expiry, logout, deleted users), roles, and the SSE change feed. A small
//! HTTP/1.1 client over a plain TCP socket keeps every byte visible.

mod common;
#[path = "common/http_client.rs"]
mod http_client;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{free_port, serial, Server};
use http_client::Resp;
use serde_json::{json, Value};

const PW: &str = "admin-pw";

fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    http_client::request(port, method, path, headers, body.as_bytes())
}

/// A client of one server: bearer credentials, or a login session.
struct Api {
    port: u16,
    bearer: Option<String>,
    cookie: Option<String>,
    csrf: Option<String>,
}

impl Api {
    fn bearer(port: u16, user: &str, pass: &str) -> Api {
        Api {
            port,
            bearer: Some(format!("Bearer {user}:{pass}")),
            cookie: None,
            csrf: None,
        }
    }

    /// Logs in; panics unless it succeeds.
    fn login(port: u16, user: &str, pass: &str) -> Api {
        let r = request(
            port,
            "POST",
            "/api/v1/login",
            &[("Content-Type", "application/json")],
            &json!({"user": user, "password": pass}).to_string(),
        );
        assert_eq!(r.status, 200, "login: {}", String::from_utf8_lossy(&r.body));
        let set = r
            .header("set-cookie")
            .expect("a session cookie")
            .to_string();
        let cookie = set.split(';').next().unwrap().to_string();
        Api {
            port,
            bearer: None,
            cookie: Some(cookie),
            csrf: r.json()["csrf"].as_str().map(str::to_string),
        }
    }

    fn call(&self, method: &str, path: &str, body: &str, extra: &[(&str, &str)]) -> Resp {
        let mut headers: Vec<(&str, &str)> = vec![("Content-Type", "application/json")];
        if let Some(b) = &self.bearer {
            headers.push(("Authorization", b));
        }
        if let Some(c) = &self.cookie {
            headers.push(("Cookie", c));
        }
        if let Some(t) = &self.csrf {
            headers.push(("X-CSRF-Token", t));
        }
        headers.extend_from_slice(extra);
        request(self.port, method, &format!("/api/v1{path}"), &headers, body)
    }

    fn get(&self, path: &str) -> Resp {
        self.call("GET", path, "", &[])
    }
    fn put(&self, path: &str, body: &str) -> Resp {
        self.call("PUT", path, body, &[])
    }
    fn post(&self, path: &str, body: &str) -> Resp {
        self.call("POST", path, body, &[])
    }
    fn delete(&self, path: &str) -> Resp {
        self.call("DELETE", path, "", &[])
    }
}

fn start(extra: &[&str]) -> (Server, u16) {
    let hp = free_port();
    let hp_s = hp.to_string();
    let mut args = vec!["--http-port", hp_s.as_str(), "--requirepass", PW];
    args.extend_from_slice(extra);
    (Server::start(&args), hp)
}

fn admin_conn(s: &Server) -> redis::Connection {
    let client =
        redis::Client::open(format!("redis://default:{PW}@127.0.0.1:{}/", s.port)).unwrap();
    client.get_connection().unwrap()
}

fn resp_cmd(con: &mut redis::Connection, args: &[&str]) -> redis::Value {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(con).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn checkout() -> Value {
    json!({
        "description": "New checkout",
        "tags": ["payments"],
        "on": true,
        "variations": [{"name": "off", "value": false}, {"name": "on", "value": true}],
        "off_variation": "off",
        "rules": [{"id": "eu", "clauses": [{"attribute": "country", "op": "in", "values": ["DE", "FR"]}],
                   "serve": {"rollout": [{"variation": "on", "weight": 3000}, {"variation": "off", "weight": 7000}]}}],
        "fallthrough": {"variation": "off"}
    })
}

fn add_user(con: &mut redis::Connection, name: &str, pass: &str, roles: &[&str]) {
    let pw = format!(">{pass}");
    let mut args = vec![
        "ACL",
        "SETUSER",
        name,
        "reset",
        "on",
        pw.as_str(),
        "~*",
        "&*",
        "+@connection",
    ];
    args.extend_from_slice(roles);
    resp_cmd(con, &args);
}

#[test]
fn flag_endpoints_answer_json_and_errors_carry_code_and_path() {
    let _g = serial();
    let (_s, hp) = start(&[]);
    let api = Api::bearer(hp, "default", PW);

    // put → get → list
    let r = api.put("/flags/prod:checkout", &checkout().to_string());
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(r.json(), json!({"version": 1}));
    assert_eq!(r.header("etag"), Some("\"1\""));
    let r = api.get("/flags/prod:checkout");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("etag"), Some("\"1\""));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let d = r.json();
    assert_eq!(d["rules"], checkout()["rules"]);
    assert_eq!(d["version"], 1);
    assert_eq!(d["updated_by"], "default");
    api.put("/flags/staging:other", &json!({"on": false, "variations": [{"name": "a", "value": 1}], "off_variation": "a", "fallthrough": {"variation": "a"}}).to_string());
    let list = api.get("/flags?match=prod:*").json();
    assert_eq!(list["cursor"], "0");
    assert_eq!(list["flags"].as_array().unwrap().len(), 1);
    assert_eq!(list["flags"][0]["key"], "prod:checkout");
    assert_eq!(list["flags"][0]["on"], true);
    assert_eq!(list["flags"][0]["tags"], json!(["payments"]));
    let tagged = api.get("/flags?tag=payments").json();
    assert_eq!(tagged["flags"].as_array().unwrap().len(), 1);
    assert_eq!(api.get("/flags?tag=none").json()["flags"], json!([]));
    assert_eq!(api.get("/flags?count=x").status, 400);

    // validation errors name the field
    let mut bad = checkout();
    bad["rules"][0]["clauses"][0]["op"] = json!("eqq");
    let r = api.put("/flags/prod:checkout", &bad.to_string());
    assert_eq!(r.status, 400);
    let e = r.json();
    assert_eq!(e["code"], "INVALID");
    assert_eq!(e["path"], "rules[0].clauses[0].op");
    assert!(e["error"].as_str().unwrap().contains("eqq"), "{e}");
    let r = api.put("/flags/prod:checkout", "{not json");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "INVALID");

    // toggle (the kill switch), history, rollback
    let r = api.post(
        "/flags/prod:checkout/toggle",
        r#"{"on": false, "reason": "incident 42"}"#,
    );
    assert_eq!(r.json(), json!({"version": 2}));
    assert_eq!(api.post("/flags/prod:checkout/toggle", "{}").status, 400);
    assert_eq!(api.post("/flags/prod:checkout/toggle", "[1]").status, 400);
    let h = api.get("/flags/prod:checkout/history?count=10").json();
    assert_eq!(h[0]["event"], "toggle");
    assert_eq!(h[0]["reason"], "incident 42");
    assert_eq!(h[0]["actor"], "default");
    assert_eq!(h[0]["before"]["on"], true);
    assert_eq!(h[0]["after"]["on"], false);
    assert_eq!(h[1]["event"], "set");
    assert_eq!(
        api.get("/flags/prod:checkout/history?count=1")
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let r = api.post(
        "/flags/prod:checkout/rollback",
        r#"{"version": 1, "reason": "undo"}"#,
    );
    assert_eq!(r.json(), json!({"version": 3}));
    assert_eq!(api.get("/flags/prod:checkout").json()["on"], true);
    assert_eq!(
        api.post("/flags/prod:checkout/rollback", r#"{}"#).status,
        400
    );

    // evaluate ("try it")
    let r = api.post(
        "/flags/prod:checkout/evaluate",
        r#"{"key": "u1", "country": "US"}"#,
    );
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["value"], false);
    assert_eq!(v["variation"], "off");
    assert_eq!(v["reason"], "FALLTHROUGH");
    assert_eq!(v["version"], 3);
    let v = api
        .post(
            "/flags/prod:checkout/evaluate",
            r#"{"key": "u1", "country": "DE"}"#,
        )
        .json();
    assert_eq!(v["reason"], "RULE_MATCH");
    assert_eq!(v["rule_id"], "eu");
    let v = api.post("/flags/prod:nope/evaluate", "").json();
    assert_eq!(v["error"], "FLAG_NOT_FOUND");

    // missing things are 404, unknown commands 501
    let r = api.get("/flags/prod:nope");
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].as_str().unwrap().contains("no such flag"));
    assert_eq!(
        api.post("/flags/prod:nope/toggle", r#"{"on": true}"#)
            .status,
        404
    );
    assert_eq!(api.delete("/flags/prod:nope").status, 404);
    assert_eq!(api.get("/nothing-here").status, 404);
    // stats: the totals, and with buckets the series FLAG.STATS BUCKETS gives
    // (the evaluations above fall in the current hour's bucket)
    let totals = api.get("/flags/prod:checkout/stats").json();
    assert!(totals["evaluations"].as_i64().unwrap() >= 2, "{totals}");
    assert!(totals.get("series").is_none(), "{totals}");
    let r = api.get("/flags/prod:checkout/stats?buckets=3600");
    assert_eq!(r.status, 200);
    let v = r.json();
    let series = v["series"].as_array().unwrap_or_else(|| panic!("{v}"));
    assert_eq!(series.len(), 1, "{v}");
    assert_eq!(series[0]["by_variation"], v["by_variation"], "{v}");
    assert_eq!(series[0]["evaluations"], v["evaluations"], "{v}");
    assert_eq!(series[0]["start"].as_i64().unwrap() % 3_600_000, 0, "{v}");
    let r = api.get("/flags/prod:checkout/stats?buckets=90");
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"],
        "ERR BUCKETS must be a whole number of hours in seconds (3600, 86400, ...) up to a year"
    );

    // segments, and a reference that blocks a delete (409)
    let r = api.put("/segments/prod:beta", r#"{"included": ["u1"]}"#);
    assert_eq!(r.json(), json!({"version": 1}));
    assert_eq!(api.get("/segments").json(), json!(["prod:beta"]));
    assert_eq!(
        api.get("/segments/prod:beta").json()["included"],
        json!(["u1"])
    );
    let mut with_segment = checkout();
    with_segment["rules"][0]["clauses"] = json!([{"op": "in_segment", "values": ["prod:beta"]}]);
    assert_eq!(
        api.put("/flags/prod:checkout", &with_segment.to_string())
            .status,
        200
    );
    let r = api.delete("/segments/prod:beta");
    assert_eq!(r.status, 409, "{:?}", r.json());
    assert_eq!(api.get("/segments/prod:none").status, 404);

    // delete
    assert_eq!(
        api.delete("/flags/prod:checkout?reason=cleanup").json(),
        json!({"deleted": true})
    );
    assert_eq!(api.get("/flags/prod:checkout").status, 404);
    assert_eq!(
        api.delete("/segments/prod:beta").json(),
        json!({"deleted": true})
    );

    // cluster status
    let c = api.get("/cluster").json();
    assert_eq!(c["role"], "leader");
    assert_eq!(c["members"], "1");

    // users (admin)
    let r = api.put(
        "/users/viewer",
        r#"{"rules": ["on", ">v-pw", "~*", "+@flag-read"]}"#,
    );
    assert_eq!(r.json(), json!({"ok": true}));
    let users = api.get("/users").json();
    let viewer = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "viewer")
        .unwrap();
    assert!(viewer.get("passwords").is_none(), "no hashes over HTTP");
    assert!(viewer["commands"].as_str().unwrap().contains("+@flag-read"));
    let r = api.put("/users/viewer", r#"{"rules": ["bogus-rule"]}"#);
    assert_eq!(r.status, 400);
    assert_eq!(api.delete("/users/viewer").json(), json!({"deleted": true}));
    assert_eq!(api.delete("/users/viewer").status, 404);

    // experiments: the commands' own answers (501 until they exist)
    let r = api.get("/experiments");
    assert!(r.status == 200 || r.status == 501, "{}", r.status);
}

#[test]
fn if_match_carries_the_version_and_a_stale_one_is_refused_with_412() {
    let _g = serial();
    let (_s, hp) = start(&[]);
    let api = Api::bearer(hp, "default", PW);
    let def = checkout().to_string();
    assert_eq!(api.put("/flags/prod:f", &def).status, 200);
    let r = api.call("PUT", "/flags/prod:f", &def, &[("If-Match", "\"1\"")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("etag"), Some("\"2\""));
    let r = api.call("PUT", "/flags/prod:f", &def, &[("If-Match", "\"1\"")]);
    assert_eq!(r.status, 412);
    let e = r.json();
    assert_eq!(e["code"], "CONFLICT");
    assert!(e["error"].as_str().unwrap().contains("version 2"), "{e}");
    assert_eq!(
        api.get("/flags/prod:f").json()["version"],
        2,
        "the refused write changed nothing"
    );
    let r = api.call("PUT", "/flags/prod:f", &def, &[("If-Match", "seven")]);
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("If-Match"));
}

#[test]
fn a_login_session_acts_as_its_user_and_writes_need_the_csrf_token() {
    let _g = serial();
    let (s, hp) = start(&[]);
    let mut con = admin_conn(&s);
    add_user(
        &mut con,
        "pm",
        "pm-pw",
        &["+@flag-read", "+@flag-eval", "+@flag-write"],
    );

    let login = |body: &str| {
        request(
            hp,
            "POST",
            "/api/v1/login",
            &[("Content-Type", "application/json")],
            body,
        )
    };
    let r = request(
        hp,
        "POST",
        "/api/v1/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        r#"{"user": "pm", "password": "pm-pw"}"#,
    );
    assert_eq!(r.status, 415, "a cross-site form cannot log a browser in");
    assert!(r.header("set-cookie").is_none());
    let r = login(r#"{"user": "pm", "password": "wrong"}"#);
    assert_eq!(r.status, 401);
    assert!(r.header("set-cookie").is_none());
    let r = login(r#"{"user": "pm"}"#);
    assert_eq!(r.status, 400);
    let r = login(r#"{"user": "pm", "password": "pm-pw"}"#);
    let cookie = r.header("set-cookie").unwrap();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(cookie.contains("Path=/"), "{cookie}");

    let pm = Api::login(hp, "pm", "pm-pw");
    let me = pm.get("/session").json();
    assert_eq!(me["user"], "pm");
    assert_eq!(me["csrf"], json!(pm.csrf));
    assert_eq!(me["can"]["write"], true);
    assert_eq!(me["can"]["admin"], false);

    // A write with the cookie but without the token (a forged cross-site form) is refused.
    let mut forged = Api {
        csrf: None,
        ..Api::login(hp, "pm", "pm-pw")
    };
    forged.cookie.clone_from(&pm.cookie);
    let r = forged.put("/flags/prod:f", &checkout().to_string());
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["code"], "CSRF");
    let r = forged.call(
        "PUT",
        "/flags/prod:f",
        &checkout().to_string(),
        &[("X-CSRF-Token", "0000")],
    );
    assert_eq!(r.status, 403);
    assert_eq!(
        forged.get("/flags/prod:f").status,
        404,
        "reads need no token, and nothing was written"
    );

    // With the token the write goes through, and the user is the actor.
    assert_eq!(pm.put("/flags/prod:f", &checkout().to_string()).status, 200);
    assert_eq!(
        pm.post("/flags/prod:f/toggle", r#"{"on": false, "reason": "kill"}"#)
            .status,
        200
    );
    let h = pm.get("/flags/prod:f/history").json();
    assert_eq!(h[0]["actor"], "pm");
    assert_eq!(h[0]["reason"], "kill");
    let resp_history = resp_cmd(&mut con, &["FLAG.HISTORY", "prod:f", "COUNT", "1"]);
    assert!(
        format!("{resp_history:?}").contains("pm"),
        "{resp_history:?}"
    );

    // Admin-only endpoints give the RESP command's NOPERM as 403.
    let r = pm.get("/users");
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["code"], "NOPERM");
    assert_eq!(pm.get("/cluster").status, 403);

    // No credential at all: 401.
    let anon = Api {
        port: hp,
        bearer: None,
        cookie: None,
        csrf: None,
    };
    let r = anon.get("/flags");
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
}

#[test]
fn a_viewer_may_read_and_a_forged_write_is_refused_with_403() {
    let _g = serial();
    let (s, hp) = start(&[]);
    let mut con = admin_conn(&s);
    add_user(&mut con, "viewer", "v-pw", &["+@flag-read", "+@flag-eval"]);
    resp_cmd(&mut con, &["FLAG.SET", "prod:f", &checkout().to_string()]);
    let viewer = Api::login(hp, "viewer", "v-pw");
    let me = viewer.get("/session").json();
    assert_eq!(me["can"]["read"], true);
    assert_eq!(me["can"]["write"], false);
    assert_eq!(viewer.get("/flags/prod:f").status, 200);
    // A valid session and CSRF token, but the role does not allow writes.
    for r in [
        viewer.put("/flags/prod:f", &checkout().to_string()),
        viewer.post("/flags/prod:f/toggle", r#"{"on": false, "reason": "x"}"#),
        viewer.post("/flags/prod:f/rollback", r#"{"version": 1}"#),
        viewer.delete("/flags/prod:f"),
    ] {
        assert_eq!(r.status, 403);
        let e = r.json();
        assert_eq!(e["code"], "NOPERM");
        assert!(e["error"].as_str().unwrap().contains("viewer"), "{e}");
    }
    assert_eq!(viewer.get("/flags/prod:f").json()["version"], 1);
}

#[test]
fn the_session_cookie_is_refused_after_logout_and_after_acl_deluser() {
    let _g = serial();
    let (s, hp) = start(&[]);
    let mut con = admin_conn(&s);
    add_user(
        &mut con,
        "pm",
        "pm-pw",
        &["+@flag-read", "+@flag-eval", "+@flag-write"],
    );

    let pm = Api::login(hp, "pm", "pm-pw");
    assert_eq!(pm.get("/flags").status, 200);
    let r = pm.post("/logout", "");
    assert_eq!(r.status, 200);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    let r = pm.get("/flags");
    assert_eq!(r.status, 401);
    assert!(r.json()["error"].as_str().unwrap().contains("session"));

    let pm = Api::login(hp, "pm", "pm-pw");
    assert_eq!(pm.get("/flags").status, 200);
    resp_cmd(&mut con, &["ACL", "DELUSER", "pm"]);
    let r = pm.get("/flags");
    assert_eq!(r.status, 401);
    assert!(r.json()["error"].as_str().unwrap().contains("deleted"));
    // Recreating a user of that name does not revive the old session.
    add_user(&mut con, "pm", "pm-pw", &["+@flag-read"]);
    assert_eq!(pm.get("/flags").status, 401);

    let pm = Api::login(hp, "pm", "pm-pw");
    resp_cmd(&mut con, &["ACL", "SETUSER", "pm", "off"]);
    assert_eq!(
        pm.get("/flags").status,
        401,
        "a disabled user's session ends"
    );
}

/// Sessions are node-local by decision (docs/decisions.md): another node
/// refuses the cookie with a clear 401 (behind a load balancer: sticky
/// sessions), bearer credentials work on any node, and the replicated ACL
/// ends a session whichever node deleted the user.
#[test]
fn a_session_belongs_to_its_node_but_its_user_to_the_cluster() {
    let _g = serial();
    let (hp1, hp2) = (free_port().to_string(), free_port().to_string());
    let first = common::cluster_node(1, None, &["--requirepass", PW, "--http-port", &hp1]);
    let second = common::cluster_node(
        2,
        Some(first.port),
        &[
            "--requirepass",
            PW,
            "--join-user",
            "default",
            "--join-password",
            PW,
            "--http-port",
            &hp2,
        ],
    );
    let (hp1, hp2): (u16, u16) = (hp1.parse().unwrap(), hp2.parse().unwrap());
    common::eventually(Duration::from_secs(30), || {
        let url = format!("redis://default:{PW}@127.0.0.1:{}/", second.port);
        let mut con = redis::Client::open(url).ok()?.get_connection().ok()?;
        let info = common::cmd_str(&mut con, &["RAFT.INFO"]).ok()?;
        info.contains("role:follower").then_some(())
    });
    let mut con = admin_conn(&first);
    add_user(
        &mut con,
        "pm",
        "pm-pw",
        &["+@flag-read", "+@flag-eval", "+@flag-write"],
    );
    // Bearer credentials work on any node once the user has replicated.
    let bearer = Api::bearer(hp2, "pm", "pm-pw");
    common::eventually(Duration::from_secs(30), || {
        (bearer.get("/flags").status == 200).then_some(())
    });

    let pm = Api::login(hp2, "pm", "pm-pw");
    assert_eq!(pm.get("/flags").status, 200);
    let elsewhere = Api {
        port: hp1,
        bearer: None,
        cookie: pm.cookie.clone(),
        csrf: pm.csrf.clone(),
    };
    let r = elsewhere.get("/flags");
    assert_eq!(r.status, 401, "another node does not know the session");
    assert!(
        r.json()["error"].as_str().unwrap().contains("session"),
        "{:?}",
        r.json()
    );
    assert_eq!(pm.get("/flags").status, 200, "its own node still does");

    // The user deleted on node 1 ends the session on node 2.
    resp_cmd(&mut con, &["ACL", "DELUSER", "pm"]);
    common::eventually(Duration::from_secs(30), || {
        (pm.get("/flags").status == 401).then_some(())
    });
}

#[test]
fn a_session_expires_after_session_ttl_without_requests() {
    let _g = serial();
    let (_s, hp) = start(&["--session-ttl", "1"]);
    let api = Api::login(hp, "default", PW);
    assert_eq!(api.get("/flags").status, 200);
    std::thread::sleep(Duration::from_millis(2500));
    let r = api.get("/flags");
    assert_eq!(r.status, 401);
    assert!(r.json()["error"].as_str().unwrap().contains("expired"));
}

/// Reads an SSE response until `n` change events arrived (or 20 s passed).
fn read_events(stream: &mut TcpStream, n: usize) -> Vec<Value> {
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&raw).into_owned();
        let events: Vec<Value> = text
            .split("\n\n")
            .filter(|block| block.contains("event: change"))
            .filter_map(|block| block.lines().find_map(|l| l.strip_prefix("data: ")))
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect();
        if events.len() >= n || Instant::now() > deadline {
            return events;
        }
        match stream.read(&mut buf) {
            Ok(0) => return events,
            Ok(k) => raw.extend_from_slice(&buf[..k]),
            Err(_) => {}
        }
    }
}

fn open_feed(port: u16, auth: &str, last_id: Option<&str>) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut req = format!(
        "GET /api/v1/changes HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {auth}\r\nAccept: text/event-stream\r\n"
    );
    if let Some(id) = last_id {
        req.push_str(&format!("Last-Event-ID: {id}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s
}

#[test]
fn the_change_feed_is_server_sent_events_resumable_with_last_event_id() {
    let _g = serial();
    let (s, hp) = start(&[]);
    let mut con = admin_conn(&s);
    let auth = format!("default:{PW}");
    let def = checkout().to_string();

    // Live: a feed opened now sees the writes that follow.
    let mut live = open_feed(hp, &auth, None);
    std::thread::sleep(Duration::from_millis(300));
    resp_cmd(&mut con, &["FLAG.SET", "prod:a", &def]);
    resp_cmd(&mut con, &["FLAG.TOGGLE", "prod:a", "OFF", "REASON", "r"]);
    let events = read_events(&mut live, 2);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["event"], "set");
    assert_eq!(events[0]["key"], "prod:a");
    assert_eq!(events[0]["actor"], "default");
    assert_eq!(events[0]["definition"]["on"], true);
    assert_eq!(events[1]["event"], "toggle");
    assert_eq!(events[1]["definition"]["on"], false);
    let first_id = events[0]["id"].as_str().unwrap().to_string();
    drop(live);

    // Missed while away: more writes, then resume after the first event.
    resp_cmd(&mut con, &["FLAG.SET", "prod:b", &def]);
    let mut resumed = open_feed(hp, &auth, Some(&first_id));
    let events = read_events(&mut resumed, 2);
    let keys: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["key"].as_str().unwrap().into(),
                e["event"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        vec![
            ("prod:a".into(), "toggle".into()),
            ("prod:b".into(), "set".into())
        ],
        "exactly the entries after {first_id}"
    );

    // A bad id is a 400, a viewer of prod only sees prod.
    let r = request(
        hp,
        "GET",
        "/api/v1/changes",
        &[
            ("Authorization", &format!("Bearer {auth}")),
            ("Last-Event-ID", "x"),
        ],
        "",
    );
    assert_eq!(r.status, 400);
    add_user(&mut con, "prodview", "p-pw", &["+@flag-read"]);
    resp_cmd(
        &mut con,
        &["ACL", "SETUSER", "prodview", "resetkeys", "~prod:*"],
    );
    let mut scoped = open_feed(hp, "prodview:p-pw", Some("0-0"));
    resp_cmd(&mut con, &["FLAG.SET", "staging:x", &def]);
    resp_cmd(&mut con, &["FLAG.SET", "prod:c", &def]);
    let events = read_events(&mut scoped, 4);
    assert!(
        events
            .iter()
            .all(|e| e["key"].as_str().unwrap().starts_with("prod:")),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e["key"] == "prod:c"), "{events:?}");
}

fn login_status(port: u16, user: &str, pass: &str) -> (u16, Duration) {
    let started = Instant::now();
    let r = request(
        port,
        "POST",
        "/api/v1/login",
        &[("Content-Type", "application/json")],
        &json!({"user": user, "password": pass}).to_string(),
    );
    (r.status, started.elapsed())
}

#[test]
fn failed_logins_back_off_per_user_as_well_as_per_address_and_land_in_acl_log() {
    let _g = serial();
    let (s, hp) = start(&[]);
    let mut con = admin_conn(&s);
    add_user(&mut con, "pm", "pm-pw", &["+@flag-read"]);
    add_user(&mut con, "other", "other-pw", &["+@flag-read"]);
    for _ in 0..10 {
        assert_eq!(login_status(hp, "pm", "guess").0, 401);
    }
    // A success from this address clears the address's record (as RESP AUTH
    // does); pm's own record stays, so the next guess at pm still waits.
    assert_eq!(login_status(hp, "other", "other-pw").0, 200);
    let (status, took) = login_status(hp, "pm", "guess");
    assert_eq!(status, 401);
    assert!(
        took >= Duration::from_millis(100),
        "a guess at a user in backoff waits its turn (took {took:?})"
    );
    // The right password still logs in (after its turn), and clears the record.
    assert_eq!(login_status(hp, "pm", "pm-pw").0, 200);
    let log = resp_cmd(&mut con, &["ACL", "LOG", "1"]);
    let text = format!("{log:?}");
    assert!(text.contains("auth") && text.contains("pm"), "{text}");
}

#[test]
fn wrong_bearer_passwords_on_the_api_back_off_and_land_in_acl_log_as_auth_does() {
    let _g = serial();
    let (s, hp) = start(&[]);
    let mut con = admin_conn(&s);
    add_user(&mut con, "pm", "pm-pw", &["+@flag-read"]);
    let get_flags = |token: &str| {
        let started = Instant::now();
        let auth = format!("Bearer {token}");
        let r = request(hp, "GET", "/api/v1/flags", &[("Authorization", &auth)], "");
        (r.status, started.elapsed())
    };
    assert_eq!(get_flags("pm:pm-pw").0, 200);
    for _ in 0..10 {
        assert_eq!(get_flags("pm:guess").0, 401);
    }
    let (status, took) = get_flags("pm:guess");
    assert_eq!(status, 401);
    assert!(
        took >= Duration::from_millis(100),
        "a guess from an address in backoff waits its turn, as AUTH does (took {took:?})"
    );
    // The right password still works (after its turn).
    assert_eq!(get_flags("pm:pm-pw").0, 200);
    let info = match resp_cmd(&mut con, &["INFO", "stats"]) {
        redis::Value::BulkString(b) => String::from_utf8(b).unwrap(),
        redis::Value::VerbatimString { text, .. } => text,
        other => panic!("INFO: {other:?}"),
    };
    assert!(
        info.contains("acl_access_denied_auth:11"),
        "every wrong password is counted: {info}"
    );
    let log = format!("{:?}", resp_cmd(&mut con, &["ACL", "LOG", "1"]));
    assert!(
        log.contains("pm") && log.contains("auth") && log.contains("GET /api/v1/flags"),
        "{log}"
    );
}

#[test]
fn the_console_is_served_from_the_binary_with_a_strict_content_security_policy() {
    let _g = serial();
    let (_s, hp) = start(&[]);
    let page = request(hp, "GET", "/", &[], "");
    assert_eq!(page.status, 200, "no login needed to get the login page");
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let html = String::from_utf8_lossy(&page.body).into_owned();
    assert!(html.contains(r#"src="/console/app.js""#), "{html}");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no CDN"
    );
    for (file, kind) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("editor.js", "text/javascript; charset=utf-8"),
        ("api.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
    ] {
        let r = request(hp, "GET", &format!("/console/{file}"), &[], "");
        assert_eq!(r.status, 200, "{file}");
        assert_eq!(r.header("content-type"), Some(kind), "{file}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        let text = String::from_utf8_lossy(&r.body).into_owned();
        assert!(
            !text.contains("https://") && !text.contains("http://cdn"),
            "{file} loads nothing from elsewhere"
        );
    }
    assert_eq!(request(hp, "GET", "/console/nope.js", &[], "").status, 404);
}
