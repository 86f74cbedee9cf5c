//! The HTTP port through the real binary: OFREP, /metrics, /livez, /readyz,
//! auth, CORS, rate limit and bad input. A small HTTP/1.1 client over a
//! plain TCP socket keeps every byte visible.

mod common;
#[path = "common/http_client.rs"]
mod http_client;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{cmd_err, free_port, serial, temp_dir, Reap, Server};
use http_client::{parse, request, Resp};
use serde_json::{json, Value};

fn post(port: u16, path: &str, body: &str) -> Resp {
    request(
        port,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

fn get(port: u16, path: &str) -> Resp {
    request(port, "GET", path, &[], b"")
}

const CHECKOUT: &str = r#"{
  "on": true,
  "variations": [{"name": "off", "value": false}, {"name": "on", "value": true}],
  "off_variation": "off",
  "targets": [{"variation": "on", "keys": ["vip"]}],
  "rules": [
    {"id": "pro", "clauses": [{"attribute": "plan", "op": "eq", "values": ["pro"]}],
     "serve": {"variation": "on"}},
    {"id": "beta", "clauses": [{"attribute": "plan", "op": "eq", "values": ["beta"]}],
     "serve": {"rollout": [{"variation": "on", "weight": 5000}, {"variation": "off", "weight": 5000}]}}
  ],
  "fallthrough": {"variation": "off"}
}"#;

/// Flags of every value type and every OpenFeature reason.
fn flag_set() -> Vec<(&'static str, String)> {
    let fixed = |values: Value| {
        json!({"on": true, "variations": [{"name": "a", "value": values[0]}, {"name": "b", "value": values[1]}],
               "off_variation": "a", "fallthrough": {"variation": "b"}})
        .to_string()
    };
    vec![
        ("prod:checkout", CHECKOUT.to_string()),
        ("prod:banner", fixed(json!(["hidden", "shown"]))),
        ("prod:limit", fixed(json!([10, 25]))),
        ("prod:ratio", fixed(json!([0.5, 1.0]))),
        ("prod:theme", fixed(json!([{"c": "red"}, {"c": "blue", "n": [1, 2]}]))),
        (
            "prod:killed",
            json!({"on": false, "variations": [{"name": "off", "value": false}, {"name": "on", "value": true}],
                   "off_variation": "off", "fallthrough": {"variation": "on"}})
            .to_string(),
        ),
        (
            "prod:split",
            json!({"on": true, "variations": [{"name": "x", "value": "x"}, {"name": "y", "value": "y"}],
                   "off_variation": "x",
                   "fallthrough": {"rollout": [{"variation": "x", "weight": 5000}, {"variation": "y", "weight": 5000}]}})
            .to_string(),
        ),
        ("staging:banner", fixed(json!(["s1", "s2"]))),
    ]
}

fn load(s: &Server) {
    let mut con = s.conn();
    for (key, def) in flag_set() {
        let _: i64 = redis::cmd("FLAG.SET")
            .arg(key)
            .arg(def)
            .query(&mut con)
            .unwrap();
    }
}

fn start(extra: &[&str]) -> (Server, u16) {
    let hp = free_port();
    let hp_s = hp.to_string();
    let mut args = vec!["--http-port", &hp_s];
    args.extend_from_slice(extra);
    let s = Server::start(&args);
    (s, hp)
}

const FLAG: &str = "/ofrep/v1/evaluate/flags/";

#[test]
fn ofrep_single_flag_answers_have_the_spec_shape_and_reason() {
    let _g = serial();
    let (s, hp) = start(&[]);
    load(&s);
    let ok = |key: &str, ctx: &str| {
        let r = post(
            hp,
            &format!("{FLAG}{key}"),
            &format!(r#"{{"context":{ctx}}}"#),
        );
        assert_eq!(r.status, 200, "{key}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(r
            .header("etag")
            .is_some_and(|t| t.starts_with('"') && t.ends_with('"')));
        let v = r.json();
        let decoded = key.replace("%3A", ":");
        assert_eq!(v["key"], decoded.as_str());
        let md = v["metadata"].as_object().unwrap();
        assert!(
            md.values().all(|m| !m.is_object() && !m.is_array()),
            "{md:?}"
        );
        assert!(md["version"].is_u64() && md["revision"].is_u64() && md["stale"].is_boolean());
        (v, String::from_utf8(r.body).unwrap())
    };
    let (v, _) = ok("prod:checkout", r#"{"targetingKey":"vip"}"#);
    assert_eq!(
        (
            v["value"].clone(),
            v["variant"].clone(),
            v["reason"].clone()
        ),
        (json!(true), json!("on"), json!("TARGETING_MATCH"))
    );
    let (v, _) = ok("prod:checkout", r#"{"targetingKey":"u1","plan":"pro"}"#);
    assert_eq!(v["reason"], "TARGETING_MATCH");
    assert_eq!(v["metadata"]["rule_id"], "pro");
    let (v, _) = ok("prod:checkout", r#"{"targetingKey":"u1","plan":"beta"}"#);
    assert_eq!(v["reason"], "SPLIT");
    assert_eq!(v["metadata"]["rule_id"], "beta");
    let (v, _) = ok("prod:checkout", r#"{"targetingKey":"u1"}"#);
    assert_eq!(
        (v["value"].clone(), v["reason"].clone()),
        (json!(false), json!("DEFAULT"))
    );
    // No targeting key at all is a valid context.
    let (v, _) = ok("prod:checkout", "{}");
    assert_eq!(v["reason"], "DEFAULT");
    let (v, _) = ok("prod:banner", "{}");
    assert_eq!(
        (
            v["value"].clone(),
            v["variant"].clone(),
            v["reason"].clone()
        ),
        (json!("shown"), json!("b"), json!("STATIC"))
    );
    let (v, text) = ok("prod:limit", "{}");
    assert_eq!(v["value"], 25);
    assert!(
        text.contains(r#""value":25,"#),
        "an integer stays an integer: {text}"
    );
    let (_, text) = ok("prod:ratio", "{}");
    assert!(
        text.contains(r#""value":1.0,"#),
        "a float keeps its decimal point: {text}"
    );
    let (v, _) = ok("prod:theme", "{}");
    assert_eq!(v["value"], json!({"c": "blue", "n": [1, 2]}));
    let (v, _) = ok("prod:killed", r#"{"targetingKey":"u1"}"#);
    assert_eq!(
        (
            v["value"].clone(),
            v["variant"].clone(),
            v["reason"].clone()
        ),
        (json!(false), json!("off"), json!("DISABLED"))
    );
    let (v, _) = ok("prod:split", r#"{"targetingKey":"u1"}"#);
    assert_eq!(v["reason"], "SPLIT");
    // Percent-encoded keys are decoded (as the JS provider sends them).
    let (v, _) = ok("prod%3Abanner", "{}");
    assert_eq!(v["key"], "prod:banner");
}

#[test]
fn ofrep_errors_have_status_key_and_error_code() {
    let _g = serial();
    let (s, hp) = start(&[]);
    load(&s);
    let fail = |path: &str, body: &[u8], status: u16, code: &str| {
        let r = request(
            hp,
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body,
        );
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"));
        let v = r.json();
        assert_eq!(v["errorCode"], code, "{v}");
        assert!(
            v["errorDetails"].as_str().is_some_and(|d| !d.is_empty()),
            "{v}"
        );
        v
    };
    let v = fail(
        &format!("{FLAG}prod:ghost"),
        b"{\"context\":{}}",
        404,
        "FLAG_NOT_FOUND",
    );
    assert_eq!(v["key"], "prod:ghost");
    let v = fail(
        &format!("{FLAG}prod:banner"),
        b"{\"context\":",
        400,
        "PARSE_ERROR",
    );
    assert_eq!(v["key"], "prod:banner");
    fail(&format!("{FLAG}prod:banner"), b"[1,2]", 400, "PARSE_ERROR");
    let v = fail(
        &format!("{FLAG}prod:banner"),
        b"{\"context\":[1]}",
        400,
        "INVALID_CONTEXT",
    );
    assert_eq!(v["key"], "prod:banner");
    fail(
        &format!("{FLAG}prod:banner"),
        b"{\"context\":\"x\"}",
        400,
        "INVALID_CONTEXT",
    );
    // As FLAG.DETAIL: a malformed context is named even when the flag is missing.
    fail(
        &format!("{FLAG}prod:ghost"),
        b"{\"context\":[1]}",
        400,
        "INVALID_CONTEXT",
    );
    // 10,000-deep nesting: refused, not a stack overflow.
    let deep = format!(
        "{{\"context\":{{\"a\":{}{}}}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    fail(
        &format!("{FLAG}prod:banner"),
        deep.as_bytes(),
        400,
        "INVALID_CONTEXT",
    );
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    fail(
        &format!("{FLAG}prod:banner"),
        deep.as_bytes(),
        400,
        "PARSE_ERROR",
    );
    // Invalid UTF-8 in the key once decoded.
    let v = fail(&format!("{FLAG}prod%FF%FE"), b"{}", 400, "PARSE_ERROR");
    assert!(v["key"].is_string());
    // Over the body limit: 413, and the server goes on.
    let big = vec![b' '; 10 * 1024 * 1024];
    let r = request(hp, "POST", &format!("{FLAG}prod:banner"), &[], &big);
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["key"], "prod:banner");
    // Bulk failures have no key.
    let r = post(hp, "/ofrep/v1/evaluate/flags", "{\"context\":5}");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errorCode"], "INVALID_CONTEXT");
    assert_eq!(get(hp, "/nowhere").status, 404);
    let r = post(hp, &format!("{FLAG}prod:banner"), "{\"context\":{}}");
    assert_eq!(r.status, 200, "still serving");
}

#[test]
fn ofrep_bulk_etag_round_trip() {
    let _g = serial();
    let (s, hp) = start(&[]);
    load(&s);
    let bulk = "/ofrep/v1/evaluate/flags";
    let ctx = r#"{"context":{"targetingKey":"u1","plan":"pro"}}"#;
    let r = post(hp, bulk, ctx);
    assert_eq!(r.status, 200, "{}", r.text());
    let tag = r.header("etag").unwrap().to_string();
    let flags = r.json()["flags"].as_array().unwrap().clone();
    let keys: Vec<&str> = flags.iter().map(|f| f["key"].as_str().unwrap()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert_eq!(keys.len(), flag_set().len());
    assert!(flags
        .iter()
        .all(|f| f["reason"].is_string() && f["variant"].is_string()));
    let with = |t: &str, body: &str| {
        request(
            hp,
            "POST",
            bulk,
            &[("Content-Type", "application/json"), ("If-None-Match", t)],
            body.as_bytes(),
        )
    };
    let r = with(&tag, ctx);
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(tag.as_str()));
    assert_eq!(with(&format!("W/{tag}"), ctx).status, 304);
    let other = with(&tag, r#"{"context":{"targetingKey":"u2"}}"#);
    assert_eq!(other.status, 200);
    assert_ne!(other.header("etag"), Some(tag.as_str()));
    let mut con = s.conn();
    let _: i64 = redis::cmd("FLAG.TOGGLE")
        .arg("prod:banner")
        .arg("OFF")
        .query(&mut con)
        .unwrap();
    let changed = with(&tag, ctx);
    assert_eq!(changed.status, 200);
    let new_tag = changed.header("etag").unwrap().to_string();
    assert_ne!(new_tag, tag);
    assert_eq!(with(&new_tag, ctx).status, 304);
    // A flag reading $now can change its answer without a new revision: its
    // tag moves with the clock, so a client is never kept on a stale answer.
    let timed = json!({"on": true, "variations": [{"name": "a", "value": 1}, {"name": "b", "value": 2}],
        "off_variation": "a",
        "rules": [{"clauses": [{"attribute": "$now", "op": "after", "values": ["2020-01-01T00:00:00Z"]}],
                   "serve": {"variation": "b"}}],
        "fallthrough": {"variation": "a"}});
    let _: i64 = redis::cmd("FLAG.SET")
        .arg("prod:timed")
        .arg(timed.to_string())
        .query(&mut con)
        .unwrap();
    let first = post(hp, bulk, ctx).header("etag").unwrap().to_string();
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        with(&first, ctx).status,
        200,
        "a $now flag's tag moves with the clock"
    );
    // The single-flag endpoint has tags too.
    let one = post(hp, &format!("{FLAG}prod:limit"), ctx);
    let t = one.header("etag").unwrap().to_string();
    let again = request(
        hp,
        "POST",
        &format!("{FLAG}prod:limit"),
        &[("If-None-Match", &t)],
        ctx.as_bytes(),
    );
    assert_eq!(again.status, 304);
}

/// Tiny deterministic PRNG.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

#[test]
fn ofrep_split_by_targeting_key_without_one_is_targeting_key_missing() {
    let _g = serial();
    let (s, hp) = start(&[]);
    load(&s);
    let mut con = s.conn();
    let by_org = json!({"on": true, "variations": [{"name": "x", "value": 1}, {"name": "y", "value": 2}],
        "off_variation": "x",
        "fallthrough": {"rollout": [{"variation": "x", "weight": 5000}, {"variation": "y", "weight": 5000}],
                        "bucket_by": "org"}});
    let _: i64 = redis::cmd("FLAG.SET")
        .arg("prod:by-org")
        .arg(by_org.to_string())
        .query(&mut con)
        .unwrap();
    let eval = |key: &str, ctx: &str| {
        post(
            hp,
            &format!("{FLAG}{key}"),
            &format!(r#"{{"context":{ctx}}}"#),
        )
    };
    // A fallthrough rollout by targeting key, and a rule's rollout, with no key.
    for (key, ctx) in [
        ("prod:split", "{}"),
        ("prod:checkout", r#"{"plan":"beta"}"#),
    ] {
        let r = eval(key, ctx);
        assert_eq!(r.status, 400, "{key} {ctx}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"));
        let v = r.json();
        assert_eq!(v["key"], key);
        assert_eq!(v["errorCode"], "TARGETING_KEY_MISSING");
        assert!(v["errorDetails"].as_str().unwrap().contains("targetingKey"));
        assert!(r.header("etag").is_none());
    }
    // With a key, or where the key is not what splits, it is an answer.
    assert_eq!(
        eval("prod:split", r#"{"targetingKey":"u1"}"#).json()["reason"],
        "SPLIT"
    );
    assert_eq!(eval("prod:checkout", "{}").json()["reason"], "DEFAULT");
    assert_eq!(eval("prod:checkout", r#"{"plan":"pro"}"#).status, 200);
    let r = eval("prod:by-org", r#"{"org":"acme"}"#);
    assert_eq!(
        (r.status, r.json()["reason"].clone()),
        (200, json!("SPLIT"))
    );
    // In bulk, the flag that needs the key reports it; the others answer.
    let bulk = post(hp, "/ofrep/v1/evaluate/flags", r#"{"context":{}}"#);
    assert_eq!(bulk.status, 200);
    let flags = bulk.json()["flags"].as_array().unwrap().clone();
    let of = |key: &str| flags.iter().find(|f| f["key"] == key).unwrap().clone();
    assert_eq!(of("prod:split")["errorCode"], "TARGETING_KEY_MISSING");
    assert_eq!(of("prod:banner")["reason"], "STATIC");
    // RESP keeps answering: FLAG.DETAIL has no such error.
    let v: Option<String> = redis::cmd("FLAG.EVAL")
        .arg("prod:split")
        .query(&mut con)
        .unwrap();
    assert!(v.is_some());
}

#[test]
fn http_and_resp_agree_for_a_thousand_random_contexts() {
    let _g = serial();
    let (s, hp) = start(&[]);
    load(&s);
    let mut con = s.conn_proto(true);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let keys: Vec<&str> = flag_set().iter().map(|(k, _)| *k).collect();
    // One keep-alive connection for the HTTP side.
    let mut stream = TcpStream::connect(("127.0.0.1", hp)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reasons = std::collections::BTreeSet::new();
    for i in 0..1000 {
        let key = rng.pick(&keys);
        let user = format!("user-{}", rng.next() % 500);
        let plan = rng.pick(&["pro", "beta", "free", ""]);
        let ctx_resp = json!({"key": if user.ends_with('7') { "vip".to_string() } else { user.clone() }, "plan": plan});
        let ctx_http = json!({"targetingKey": ctx_resp["key"], "plan": plan});
        let detail: redis::Value = redis::cmd("FLAG.DETAIL")
            .arg(key)
            .arg(ctx_resp.to_string())
            .query(&mut con)
            .unwrap();
        let redis::Value::Map(pairs) = detail else {
            panic!("{detail:?}")
        };
        let field = |name: &str| -> String {
            match &pairs
                .iter()
                .find(|(k, _)| *k == redis::Value::BulkString(name.into()))
                .unwrap()
                .1
            {
                redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                redis::Value::Int(n) => n.to_string(),
                redis::Value::Boolean(b) => b.to_string(),
                redis::Value::Nil => "nil".into(),
                other => format!("{other:?}"),
            }
        };
        let body = json!({"context": ctx_http}).to_string();
        let req = format!(
            "POST {FLAG}{key} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(req.as_bytes()).unwrap();
        let r = read_one(&mut stream);
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        let resp_value: Value = serde_json::from_str(&field("value")).unwrap();
        assert_eq!(v["value"], resp_value, "#{i} {key} {ctx_resp}");
        assert_eq!(v["variant"], field("variation"), "#{i} {key} {ctx_resp}");
        assert_eq!(
            v["reason"],
            field("openfeature_reason"),
            "#{i} {key} {ctx_resp}"
        );
        assert_eq!(v["metadata"]["version"].to_string(), field("version"));
        assert_eq!(v["metadata"]["revision"].to_string(), field("revision"));
        if field("rule_id") != "nil" {
            assert_eq!(v["metadata"]["rule_id"], field("rule_id"));
        }
        reasons.insert(field("openfeature_reason"));
    }
    let all: std::collections::BTreeSet<String> =
        ["DEFAULT", "DISABLED", "SPLIT", "STATIC", "TARGETING_MATCH"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    assert_eq!(reasons, all, "the contexts reach every reason");
}

/// Reads one Content-Length response from a keep-alive connection.
fn read_one(s: &mut TcpStream) -> Resp {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if raw.len() >= end + 4 + len {
                return parse(&raw[..end + 4 + len]);
            }
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed");
        raw.extend_from_slice(&buf[..n]);
    }
}

/// A server with the password `s3cret`, the flag `prod:banner` set, and an
/// authenticated RESP connection to it.
fn start_protected_with_banner() -> (Server, u16, redis::Connection) {
    let (s, hp) = start(&["--requirepass", "s3cret"]);
    let mut con = redis::Client::open(format!("redis://:s3cret@127.0.0.1:{}/", s.port))
        .unwrap()
        .get_connection()
        .unwrap();
    let _: i64 = redis::cmd("FLAG.SET")
        .arg("prod:banner")
        .arg(&flag_set()[1].1)
        .query(&mut con)
        .unwrap();
    (s, hp, con)
}

#[test]
fn auth_uses_requirepass_and_probes_need_none() {
    let _g = serial();
    let (_s, hp, _con) = start_protected_with_banner();
    let path = format!("{FLAG}prod:banner");
    let body = b"{\"context\":{}}";
    let call = |h: &[(&str, &str)]| request(hp, "POST", &path, h, body);
    let r = call(&[]);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["key"], "prod:banner");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(call(&[("Authorization", "Bearer wrong")]).status, 401);
    assert_eq!(
        call(&[("Authorization", "Bearer alice:s3cret")]).status,
        401
    );
    assert_eq!(call(&[("Authorization", "Bearer s3cret")]).status, 200);
    assert_eq!(
        call(&[("Authorization", "Bearer default:s3cret")]).status,
        200
    );
    assert_eq!(call(&[("X-API-Key", "default:s3cret")]).status, 200);
    let bulk = request(hp, "POST", "/ofrep/v1/evaluate/flags", &[], body);
    assert_eq!(bulk.status, 401);
    assert!(bulk.json().get("key").is_none());
    assert_eq!(get(hp, "/livez").status, 200);
    assert_eq!(get(hp, "/readyz").status, 200);
    assert_eq!(
        get(hp, "/metrics").status,
        200,
        "/metrics needs no credentials by default"
    );
}

#[test]
fn metrics_auth_yes_protects_metrics() {
    let _g = serial();
    let (_s, hp) = start(&["--requirepass", "pw", "--metrics-auth", "yes"]);
    assert_eq!(get(hp, "/metrics").status, 401);
    let r = request(
        hp,
        "GET",
        "/metrics",
        &[("Authorization", "Bearer pw")],
        b"",
    );
    assert_eq!(r.status, 200);
}

#[test]
fn rate_limit_answers_429_with_retry_after() {
    let _g = serial();
    let (s, hp) = start(&["--http-rate-limit", "2"]);
    load(&s);
    let statuses: Vec<Resp> = (0..5)
        .map(|_| post(hp, &format!("{FLAG}prod:banner"), "{}"))
        .collect();
    let limited = statuses
        .iter()
        .find(|r| r.status == 429)
        .expect("a 429 within 5 quick calls");
    assert!(limited
        .header("retry-after")
        .is_some_and(|v| v.parse::<u64>().is_ok_and(|n| n >= 1)));
    assert_eq!(limited.json()["key"], "prod:banner");
    assert_eq!(get(hp, "/livez").status, 200, "probes are never limited");
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(post(hp, &format!("{FLAG}prod:banner"), "{}").status, 200);
}

#[test]
fn cors_preflight_only_for_listed_origins() {
    let _g = serial();
    let (_s, hp) = start(&["--http-cors-origins", "https://app.example"]);
    let pre = |origin: &str| {
        request(
            hp,
            "OPTIONS",
            "/ofrep/v1/evaluate/flags",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "content-type"),
            ],
            b"",
        )
    };
    let ok = pre("https://app.example");
    assert_eq!(ok.status, 204);
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert!(ok
        .header("access-control-allow-methods")
        .unwrap()
        .contains("POST"));
    assert!(ok
        .header("access-control-allow-headers")
        .unwrap()
        .contains("content-type"));
    let no = pre("https://evil.example");
    assert!(no.header("access-control-allow-origin").is_none());
    let r = request(
        hp,
        "POST",
        "/ofrep/v1/evaluate/flags",
        &[("Origin", "https://app.example")],
        b"{}",
    );
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert!(r
        .header("access-control-expose-headers")
        .unwrap()
        .contains("ETag"));
    let r = request(
        hp,
        "POST",
        "/ofrep/v1/evaluate/flags",
        &[("Origin", "https://evil.example")],
        b"{}",
    );
    assert!(r.header("access-control-allow-origin").is_none());
}

/// Checks every line of an OpenMetrics text exposition; returns the samples.
fn parse_exposition(text: &str) -> Vec<(String, f64)> {
    assert!(text.ends_with("# EOF\n"), "ends with # EOF");
    let mut samples = Vec::new();
    for line in text.lines() {
        if line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap();
            assert!(["HELP", "TYPE", "UNIT"].contains(&kind), "{line}");
            let name = parts.next().unwrap();
            assert!(name.starts_with("flagstaff_"), "{line}");
            if kind == "TYPE" {
                let t = parts.next().unwrap();
                assert!(
                    ["counter", "gauge", "info", "histogram", "unknown"].contains(&t),
                    "{line}"
                );
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(name.starts_with("flagstaff_"), "{line}");
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "{line}");
            let labels = &series[name_end + 1..series.len() - 1];
            for pair in labels.split(',') {
                let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("{line}"));
                assert!(
                    k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "{line}"
                );
                assert!(v.starts_with('"') && v.ends_with('"'), "{line}");
            }
        }
        let v: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
        samples.push((series.to_string(), v));
    }
    samples
}

#[test]
fn metrics_parse_line_by_line_and_counters_move() {
    let _g = serial();
    let (s, hp) = start(&[]);
    let scrape = || {
        let r = get(hp, "/metrics");
        assert_eq!(r.status, 200);
        assert!(r
            .header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text"));
        parse_exposition(&r.text())
    };
    let value = |samples: &[(String, f64)], name: &str| {
        samples
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no {name}"))
            .1
    };
    let before = scrape();
    assert_eq!(value(&before, "flagstaff_up"), 1.0);
    assert!(before
        .iter()
        .any(|(n, _)| n.starts_with("flagstaff_build_info{version=")));
    assert_eq!(value(&before, "flagstaff_raft_is_leader"), 1.0);
    load(&s);
    let mut con = s.conn();
    for _ in 0..5 {
        let _: Option<String> = redis::cmd("FLAG.EVAL")
            .arg("prod:banner")
            .query(&mut con)
            .unwrap();
    }
    post(hp, &format!("{FLAG}prod:banner"), "{}");
    let after = scrape();
    for (name, at_least) in [
        (
            "flagstaff_commands_processed_total",
            5.0 + flag_set().len() as f64,
        ),
        ("flagstaff_flag_evaluations_total", 6.0),
    ] {
        assert!(
            value(&after, name) - value(&before, name) >= at_least,
            "{name} moved by at least {at_least}"
        );
    }
    assert_eq!(value(&after, "flagstaff_flags"), flag_set().len() as f64);
    // prod:banner is a fixed fallthrough; evaluated 5 times over RESP and once over HTTP.
    let fallthrough = "flagstaff_flag_evaluation_reasons_total{reason=\"FALLTHROUGH\"}";
    assert!(value(&after, fallthrough) - value(&before, fallthrough) >= 6.0);
    assert!(
        value(&after, "flagstaff_raft_last_applied_index")
            > value(&before, "flagstaff_raft_last_applied_index")
    );
    assert!(
        value(
            &after,
            "flagstaff_http_requests_total{endpoint=\"ofrep_flag\",code=\"2xx\"}"
        ) >= 1.0
    );
}

/// One `INFO` field (`name:value`) as a number.
fn info_field(info: &str, name: &str) -> f64 {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("INFO has no {name}"))
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("INFO {name} is not a number"))
}

/// One `key=value` of an INFO line such as `cmdstat_flag.eval:calls=5,usec=...`.
fn info_subfield(info: &str, line: &str, key: &str) -> f64 {
    let fields = info
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{line}:")))
        .unwrap_or_else(|| panic!("INFO has no {line}"));
    fields
        .split(',')
        .find_map(|f| f.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{line} has no {key}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn metrics_count_commands_errors_denials_and_storage_as_info_does() {
    let _g = serial();
    let (s, hp) = start(&["--snapshot-every", "5"]);
    let scrape = || parse_exposition(&get(hp, "/metrics").text());
    let value = |samples: &[(String, f64)], name: &str| {
        samples
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0.0, |(_, v)| *v)
    };
    let before = scrape();
    load(&s);
    let mut con = s.conn();
    for _ in 0..5 {
        let _: Option<String> = redis::cmd("FLAG.EVAL")
            .arg("prod:banner")
            .query(&mut con)
            .unwrap();
    }
    // A wrong arity is refused before running; a missing key is an error reply.
    assert!(redis::cmd("FLAG.EVAL").query::<()>(&mut con).is_err());
    assert!(redis::cmd("NOSUCHCOMMAND").query::<()>(&mut con).is_err());
    assert!(redis::cmd("AUTH")
        .arg("nobody")
        .arg("wrong")
        .query::<()>(&mut con)
        .is_err());
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("app")
        .arg("on")
        .arg(">apppw")
        .arg("~prod:*")
        .arg("+@flag-eval")
        .query(&mut con)
        .unwrap();
    let mut app = s.conn();
    let _: () = redis::cmd("AUTH")
        .arg("app")
        .arg("apppw")
        .query(&mut app)
        .unwrap();
    assert!(cmd_err(&mut app, &["FLAG.DEL", "prod:banner"]).starts_with("NOPERM"));
    assert!(cmd_err(&mut app, &["FLAG.EVAL", "staging:x"]).starts_with("NOPERM"));
    // Snapshots are built in the background after the write that asks for
    // one: wait (bounded) until one is counted before comparing.
    let after = common::eventually(Duration::from_secs(30), || {
        let now = scrape();
        (value(&now, "flagstaff_snapshots_total") > value(&before, "flagstaff_snapshots_total"))
            .then_some(now)
    });
    let moved = |name: &str| value(&after, name) - value(&before, name);
    let writes = flag_set().len() as f64;
    for (name, at_least) in [
        ("flagstaff_commands_total{cmd=\"flag.eval\"}", 5.0),
        ("flagstaff_commands_total{cmd=\"flag.set\"}", writes),
        ("flagstaff_commands_total{cmd=\"acl|setuser\"}", 1.0),
        (
            "flagstaff_commands_rejected_calls_total{cmd=\"flag.eval\"}",
            2.0,
        ),
        (
            "flagstaff_commands_rejected_calls_total{cmd=\"flag.del\"}",
            1.0,
        ),
        ("flagstaff_errors_total{kind=\"ERR\"}", 2.0),
        ("flagstaff_errors_total{kind=\"WRONGPASS\"}", 1.0),
        ("flagstaff_errors_total{kind=\"NOPERM\"}", 2.0),
        ("flagstaff_acl_denied_total{reason=\"auth\"}", 1.0),
        ("flagstaff_acl_denied_total{reason=\"cmd\"}", 1.0),
        ("flagstaff_acl_denied_total{reason=\"key\"}", 1.0),
        (
            "flagstaff_flag_evaluation_reasons_total{reason=\"FALLTHROUGH\"}",
            5.0,
        ),
        ("flagstaff_writes_applied_total", writes),
        ("flagstaff_command_duration_seconds_count", 5.0 + writes),
        ("flagstaff_wal_fsync_duration_seconds_count", 1.0),
        ("flagstaff_wal_batch_records_count", 1.0),
        ("flagstaff_wal_batch_records_sum", writes),
        ("flagstaff_snapshots_total", 1.0),
        ("flagstaff_snapshot_duration_seconds_count", 1.0),
        // Compaction trims the stream behind snapshots: some entries remain.
        ("flagstaff_stream_length", 1.0),
    ] {
        assert!(
            moved(name) >= at_least,
            "{name} moved by {} < {at_least}",
            moved(name)
        );
    }
    assert!(
        value(
            &after,
            "flagstaff_commands_duration_seconds_total{cmd=\"flag.eval\"}"
        ) > 0.0
    );
    assert!(value(&after, "flagstaff_command_duration_seconds_sum") > 0.0);
    assert!(after
        .iter()
        .any(|(n, _)| n == "flagstaff_command_duration_seconds_bucket{le=\"+Inf\"}"));
    assert!(after
        .iter()
        .any(|(n, _)| n == "flagstaff_pubsub_disconnections_total"));
    // One source, two renderings: INFO reads the same counters.
    let info: String = redis::cmd("INFO")
        .arg("everything")
        .query(&mut con)
        .unwrap();
    let fresh = scrape();
    for (line, key, metric) in [
        (
            "cmdstat_flag.eval",
            "calls",
            "flagstaff_commands_total{cmd=\"flag.eval\"}",
        ),
        (
            "cmdstat_flag.eval",
            "rejected_calls",
            "flagstaff_commands_rejected_calls_total{cmd=\"flag.eval\"}",
        ),
        (
            "errorstat_NOPERM",
            "count",
            "flagstaff_errors_total{kind=\"NOPERM\"}",
        ),
        (
            "errorstat_WRONGPASS",
            "count",
            "flagstaff_errors_total{kind=\"WRONGPASS\"}",
        ),
    ] {
        assert_eq!(
            info_subfield(&info, line, key),
            value(&after, metric),
            "{line} {key}"
        );
    }
    for (field, metric) in [
        ("writes_applied", "flagstaff_writes_applied_total"),
        (
            "acl_access_denied_auth",
            "flagstaff_acl_denied_total{reason=\"auth\"}",
        ),
        (
            "acl_access_denied_key",
            "flagstaff_acl_denied_total{reason=\"key\"}",
        ),
        (
            "evaluations_fallthrough",
            "flagstaff_flag_evaluation_reasons_total{reason=\"FALLTHROUGH\"}",
        ),
        ("snapshots", "flagstaff_snapshots_total"),
        ("wal_fsyncs", "flagstaff_wal_fsync_duration_seconds_count"),
    ] {
        // Storage counters may move in the background (a snapshot, its
        // log purge) between the two reads: INFO's value lies between the
        // scrape before it and the one after it.
        let info_value = info_field(&info, field);
        assert!(
            value(&after, metric) <= info_value && info_value <= value(&fresh, metric),
            "{field}: INFO {info_value}, /metrics {} then {}",
            value(&after, metric),
            value(&fresh, metric)
        );
    }
    // commandstats is long: plain INFO leaves it out, as Redis does.
    let plain: String = redis::cmd("INFO").query(&mut con).unwrap();
    assert!(!plain.contains("cmdstat_") && plain.contains("errorstat_NOPERM"));
}

#[test]
fn http_login_failures_share_the_resp_backoff_and_count_in_info_and_acl_log() {
    let _g = serial();
    let (s, hp) = start(&["--requirepass", "right"]);
    let mut admin = s.conn();
    let _: () = redis::cmd("AUTH").arg("right").query(&mut admin).unwrap();
    // 5 free failures, then penalties of 10, 20, 40, 80 and 160 ms, over
    // both credential headers and both endpoints that check them.
    for i in 0..10 {
        let wrong = format!("default:guess{i}");
        let r = match i % 3 {
            0 => request(
                hp,
                "POST",
                &format!("{FLAG}prod:x"),
                &[("X-API-Key", &wrong)],
                b"{}",
            ),
            1 => request(
                hp,
                "POST",
                "/ofrep/v1/evaluate/flags",
                &[("Authorization", &format!("Bearer {wrong}"))],
                b"{}",
            ),
            _ => request(
                hp,
                "POST",
                &format!("{FLAG}prod:x"),
                &[("Authorization", &format!("Bearer {wrong}"))],
                b"{}",
            ),
        };
        assert_eq!(r.status, 401, "{}", r.text());
    }
    let info: String = redis::cmd("INFO").arg("stats").query(&mut admin).unwrap();
    assert_eq!(info_field(&info, "acl_access_denied_auth"), 10.0);
    // One aggregated ACL LOG entry, as for AUTH.
    let log: Vec<std::collections::HashMap<String, redis::Value>> =
        redis::cmd("ACL").arg("LOG").query(&mut admin).unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
    let field = |name: &str| log[0][name].clone();
    assert_eq!(field("count"), redis::Value::Int(10));
    assert_eq!(field("reason"), redis::Value::BulkString(b"auth".to_vec()));
    assert_eq!(field("object"), redis::Value::BulkString(b"http".to_vec()));
    assert_eq!(
        field("username"),
        redis::Value::BulkString(b"default".to_vec())
    );
    let redis::Value::BulkString(info) = field("client-info") else {
        panic!("{log:?}")
    };
    assert!(
        String::from_utf8_lossy(&info).contains("http=/ofrep/"),
        "{log:?}"
    );
    // The same address is in backoff for RESP now: its next wrong AUTH waits
    // the next penalty (320 ms).
    let mut guesser = s.raw();
    let started = Instant::now();
    guesser.roundtrip(
        &common::resp(&["AUTH", "wrong"]),
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "a RESP failure after 10 HTTP ones was answered in {:?}",
        started.elapsed()
    );
    // The right password still works over HTTP (after its turn).
    let r = request(
        hp,
        "POST",
        &format!("{FLAG}prod:x"),
        &[("X-API-Key", "default:right")],
        b"{}",
    );
    assert_eq!(r.status, 404, "{}", r.text());
}

#[test]
fn livez_and_readyz_answer_like_kubernetes() {
    let _g = serial();
    let (_s, hp) = start(&[]);
    let l = get(hp, "/livez");
    assert_eq!((l.status, l.text().as_str()), (200, "ok"));
    assert_eq!(get(hp, "/healthz").status, 200);
    let r = get(hp, "/readyz?verbose");
    assert_eq!(r.status, 200);
    let text = r.text();
    for check in ["shutdown", "loaded", "leader", "applied"] {
        assert!(text.contains(&format!("[+]{check} ok\n")), "{text}");
    }
    assert!(text.ends_with("readyz check passed\n"), "{text}");
}

fn wait_status(port: u16, path: &str, status: u16, limit: Duration) -> Resp {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            );
            let mut raw = Vec::new();
            let _ = s.read_to_end(&mut raw);
            if raw.windows(4).any(|w| w == b"\r\n\r\n") {
                let r = parse(&raw);
                if r.status == status {
                    return r;
                }
                assert!(
                    Instant::now() < deadline,
                    "{path} stayed {} : {}",
                    r.status,
                    r.text()
                );
            }
        }
        assert!(Instant::now() < deadline, "{path} never answered {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn readyz_is_503_while_loading_and_on_a_cut_off_follower() {
    let _g = serial();
    let secret = "readyz-secret";
    let (p1, p2) = (free_port(), free_port());
    let (h2, bus1, bus2) = (free_port(), free_port(), free_port());
    // Node 2 asks to join node 1, which is not up yet: it stays loading.
    let dir2 = temp_dir("ready2");
    let child = Command::new(env!("CARGO_BIN_EXE_flagstaff"))
        .args([
            "--port",
            &p2.to_string(),
            "--http-port",
            &h2.to_string(),
            "--node-id",
            "2",
        ])
        .args([
            "--cluster-port",
            &bus2.to_string(),
            "--cluster-secret",
            secret,
        ])
        .args([
            "--join",
            &format!("127.0.0.1:{p1}"),
            "--log-level",
            "error",
            "--data-dir",
        ])
        .arg(&dir2)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _node2 = Reap(child);
    let loading = wait_status(h2, "/readyz", 503, Duration::from_secs(30));
    assert!(
        loading.text().contains("[-]loaded failed"),
        "{}",
        loading.text()
    );
    assert_eq!(
        wait_status(h2, "/livez", 200, Duration::from_secs(5)).text(),
        "ok"
    );
    // Node 1 comes up: node 2 joins, catches up and is ready.
    let node1_args = [
        "--node-id",
        "1",
        "--cluster-port",
        &bus1.to_string(),
        "--cluster-secret",
        secret,
    ];
    let mut node1 = Server::start_on(p1, temp_dir("ready1"), &node1_args, &[]);
    wait_status(h2, "/readyz", 200, Duration::from_secs(60));
    // Node 1 dies: node 2 (one of two voters) has no leader and is not ready,
    // while /livez still says the process is fine.
    node1.kill9();
    let cut = wait_status(h2, "/readyz", 503, Duration::from_secs(30));
    assert!(cut.text().contains("[-]leader failed"), "{}", cut.text());
    assert_eq!(
        wait_status(h2, "/livez", 200, Duration::from_secs(5)).status,
        200
    );
    node1.restart();
    wait_status(h2, "/readyz", 200, Duration::from_secs(60));
}

#[test]
fn an_http_port_that_cannot_be_bound_stops_start_up_with_one_line() {
    let _g = serial();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hp = taken.local_addr().unwrap().port();
    let out = Command::new(env!("CARGO_BIN_EXE_flagstaff"))
        .args([
            "--port",
            &free_port().to_string(),
            "--http-port",
            &hp.to_string(),
            "--log-level",
            "off",
            "--data-dir",
        ])
        .arg(temp_dir("bindfail"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{hp}")),
        "{err}"
    );
    // A default past 65535 is named, like the cluster port's.
    let out = Command::new(env!("CARGO_BIN_EXE_flagstaff"))
        .args(["--port", "65000", "--data-dir"])
        .arg(temp_dir("highport"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid setting http-port") && err.contains("66000"),
        "{err}"
    );
    // The default is the RESP port + 1000, and 0 turns HTTP off.
    let port = loop {
        let p = free_port();
        if p < 64000 && std::net::TcpListener::bind(("127.0.0.1", p + 1000)).is_ok() {
            break p;
        }
    };
    let child = Command::new(env!("CARGO_BIN_EXE_flagstaff"))
        .args([
            "--port",
            &port.to_string(),
            "--log-level",
            "error",
            "--data-dir",
        ])
        .arg(temp_dir("default"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _default = Reap(child);
    assert_eq!(
        wait_status(port + 1000, "/livez", 200, Duration::from_secs(30)).text(),
        "ok"
    );
    drop(_default);
    let off = Server::start(&["--http-port", "0"]);
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", off.port + 1000)).is_ok(),
        "--http-port 0 opens no HTTP port"
    );
}

#[test]
fn slowloris_does_not_block_other_requests() {
    let _g = serial();
    let (s, hp) = start(&[]);
    load(&s);
    // Many connections that send half a request and stall.
    let stalled: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut c = TcpStream::connect(("127.0.0.1", hp)).unwrap();
            c.write_all(b"POST /ofrep/v1/evaluate/flags HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            c
        })
        .collect();
    let r = post(hp, &format!("{FLAG}prod:banner"), "{}");
    assert_eq!(r.status, 200);
    // The stalled ones are cut off once the header timeout passes.
    std::thread::sleep(Duration::from_secs(11));
    let mut closed = 0;
    for mut c in stalled {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        if c.read_to_end(&mut buf).is_ok() {
            closed += 1;
        }
    }
    assert_eq!(closed, 50, "every stalled connection was closed");
}

#[test]
fn sigterm_is_not_held_up_by_http_clients() {
    let _g = serial();
    let (mut s, hp) = start(&[]);
    // An idle keep-alive connection and one stalled inside its headers.
    let mut idle = TcpStream::connect(("127.0.0.1", hp)).unwrap();
    idle.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let _ = read_one(&mut idle);
    let mut slow = TcpStream::connect(("127.0.0.1", hp)).unwrap();
    slow.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    s.signal(libc::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(30)).expect("exits");
    assert!(status.success());
    // The default grace is 10 s; a stalled HTTP client gets at most a short drain.
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "took {:?}",
        t.elapsed()
    );
}

/// An ACL user scoped to `~prod:*` reads prod flags over OFREP, is refused
/// staging's (403), and sees only prod flags in bulk: HTTP authenticates
/// against the same users as RESP's AUTH.
#[test]
fn an_acl_user_scoped_to_one_environment_reads_only_it_over_ofrep() {
    let _g = serial();
    let (s, hp) = start(&["--requirepass", "s3cret"]);
    let mut con = redis::Client::open(format!("redis://:s3cret@127.0.0.1:{}/", s.port))
        .unwrap()
        .get_connection()
        .unwrap();
    for (key, def) in flag_set() {
        let _: i64 = redis::cmd("FLAG.SET")
            .arg(key)
            .arg(def)
            .query(&mut con)
            .unwrap();
    }
    let _: String = redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "app",
            "on",
            ">apppw",
            "~prod:*",
            "+@connection",
            "+@flag-eval",
        ])
        .query(&mut con)
        .unwrap();
    let app = [("Authorization", "Bearer app:apppw")];
    let body = b"{\"context\":{\"targetingKey\":\"u1\"}}";
    let prod = request(hp, "POST", &format!("{FLAG}prod:banner"), &app, body);
    assert_eq!(prod.status, 200, "{:?}", prod.json());
    assert_eq!(prod.json()["value"], "shown");
    let staging = request(hp, "POST", &format!("{FLAG}staging:banner"), &app, body);
    assert_eq!(staging.status, 403, "{:?}", staging.json());
    assert_eq!(staging.json()["key"], "staging:banner");
    let wrong = request(
        hp,
        "POST",
        &format!("{FLAG}prod:banner"),
        &[("Authorization", "Bearer app:nope")],
        body,
    );
    assert_eq!(wrong.status, 401);
    let bulk = request(hp, "POST", "/ofrep/v1/evaluate/flags", &app, body);
    assert_eq!(bulk.status, 200);
    let keys: Vec<String> = bulk.json()["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap().to_string())
        .collect();
    assert!(keys.iter().all(|k| k.starts_with("prod:")), "{keys:?}");
    assert!(keys.contains(&"prod:banner".to_string()), "{keys:?}");
    // The same user over RESP is scoped the same way.
    let mut app_con = redis::Client::open(format!("redis://app:apppw@127.0.0.1:{}/", s.port))
        .unwrap()
        .get_connection()
        .unwrap();
    let e = common::cmd_err(&mut app_con, &["FLAG.EVAL", "staging:banner"]);
    assert!(e.starts_with("NOPERM"), "{e}");
}

/// Sends one OFREP evaluation on an open keep-alive connection and reads its answer.
fn evaluate_on(s: &mut TcpStream, key: &str, authorization: &str) -> Resp {
    let body = r#"{"context":{"targetingKey":"u1"}}"#;
    let req = format!(
        "POST {FLAG}{key} HTTP/1.1\r\nHost: x\r\nAuthorization: {authorization}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    read_one(s)
}

/// A connection remembers its last accepted credential, but an ACL change
/// is seen by the very next request on it: a changed password or a deleted
/// user stops the credential at once, and a wrong password is never taken
/// for the remembered one.
#[test]
fn a_credential_stops_working_on_an_open_connection_right_after_an_acl_change() {
    let _g = serial();
    let (_s, hp, mut con) = start_protected_with_banner();
    let acl = |con: &mut redis::Connection, args: &[&str]| {
        let _: redis::Value = redis::cmd("ACL").arg(args).query(con).unwrap();
    };
    acl(
        &mut con,
        &["SETUSER", "app", "on", ">old", "~prod:*", "+@flag-eval"],
    );
    let mut c = TcpStream::connect(("127.0.0.1", hp)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for _ in 0..3 {
        let r = evaluate_on(&mut c, "prod:banner", "Bearer app:old");
        assert_eq!(r.status, 200, "{:?}", r.text());
        assert_eq!(r.json()["value"], "shown");
    }
    let wrong = evaluate_on(&mut c, "prod:banner", "Bearer app:olD");
    assert_eq!(wrong.status, 401, "{:?}", wrong.text());
    assert_eq!(
        evaluate_on(&mut c, "prod:banner", "Bearer app:old").status,
        200
    );

    acl(&mut con, &["SETUSER", "app", "resetpass", ">new"]);
    let r = evaluate_on(&mut c, "prod:banner", "Bearer app:old");
    assert_eq!(r.status, 401, "the old password right after the change");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(
        evaluate_on(&mut c, "prod:banner", "Bearer app:new").status,
        200
    );
    assert_eq!(
        evaluate_on(&mut c, "prod:banner", "Bearer app:new").status,
        200
    );

    // Narrower key patterns take effect at once too.
    acl(&mut con, &["SETUSER", "app", "resetkeys", "~staging:*"]);
    let r = evaluate_on(&mut c, "prod:banner", "Bearer app:new");
    assert_eq!(r.status, 403, "{:?}", r.text());

    acl(&mut con, &["DELUSER", "app"]);
    let r = evaluate_on(&mut c, "prod:banner", "Bearer app:new");
    assert_eq!(r.status, 401, "a deleted user right after ACL DELUSER");
    assert_eq!(
        evaluate_on(&mut c, "prod:banner", "Bearer default:s3cret").status,
        200,
        "the same connection still serves a valid credential"
    );
}
