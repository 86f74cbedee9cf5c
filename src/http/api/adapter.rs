//! The one bridge between the JSON API and the RESP commands: [`run`] runs an
//! argv through the command table, the ACL check and the handlers as the
//! caller's user (exactly what a RESP connection logged in as that user
//! gets), and [`respond`] re-encodes the reply as JSON. Every endpoint is
//! argv construction plus these two.

use std::net::SocketAddr;

use axum::body::Body;
use axum::http::{header, HeaderValue, Response, StatusCode};
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::command::{ServerState, Session};
use crate::protocol::{Protocol, Reply};

/// A RESP session for one API request, acting as `user`; its client entry
/// (shown by `CLIENT LIST` while it runs) is removed when it is dropped.
pub struct ApiSession<'a> {
    state: &'a ServerState,
    session: Session,
}

impl<'a> ApiSession<'a> {
    /// Opens a session for `user` at `peer`; `None` when `maxclients` is reached.
    pub fn open(state: &'a ServerState, user: &str, peer: SocketAddr) -> Option<Self> {
        let client = state
            .clients
            .register(peer, peer, -1, state.settings.maxclients)?;
        client.set_name(Some("http-api".into()));
        let mut session = Session::new(client, true);
        session.user = user.to_string();
        session.proto = Protocol::Resp3;
        Some(ApiSession { state, session })
    }

    /// Runs one command (name first) as the session's user.
    pub async fn run(&mut self, args: &[&[u8]]) -> Reply {
        let args: Vec<Bytes> = args.iter().map(|a| Bytes::copy_from_slice(a)).collect();
        crate::command::run_as_value(&mut self.session, self.state, &args).await
    }
}

impl Drop for ApiSession<'_> {
    fn drop(&mut self) {
        self.state.clients.unregister(self.session.client.id);
    }
}

/// How a reply's bulk strings are read.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// Bulk strings are text, except those that hold a JSON object or array.
    Plain,
    /// Like `Plain`, and these map fields hold JSON text of any type (a flag value).
    JsonFields(&'static [&'static str]),
}

/// The reply as JSON: maps become objects, arrays arrays, nil null.
pub fn to_json(reply: Reply, shape: Shape) -> Value {
    match reply {
        Reply::Ok => Value::String("OK".into()),
        Reply::Simple(s) | Reply::Error(s) => Value::String(s.into_owned()),
        Reply::Integer(n) => Value::from(n),
        Reply::Bulk(b) | Reply::Verbatim(b) => bulk_json(&b, false),
        Reply::Nil | Reply::NilArray => Value::Null,
        Reply::Array(items) | Reply::Set(items) | Reply::Push(items) | Reply::Sequence(items) => {
            Value::Array(items.into_iter().map(|r| to_json(r, shape)).collect())
        }
        Reply::Map(pairs) => {
            let mut object = Map::new();
            for (k, v) in pairs {
                let name = match to_json(k, Shape::Plain) {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                let json_text = matches!(shape, Shape::JsonFields(f) if f.contains(&name.as_str()));
                let value = match v {
                    Reply::Bulk(b) if json_text => bulk_json(&b, true),
                    v => to_json(v, shape),
                };
                object.insert(name, value);
            }
            Value::Object(object)
        }
        Reply::Bool(b) => Value::Bool(b),
        Reply::Double(d) => serde_json::Number::from_f64(d).map_or(Value::Null, Value::Number),
    }
}

/// A bulk string as JSON: parsed when it is JSON text (always when `json`,
/// else only an object or array), else a string.
fn bulk_json(b: &[u8], json: bool) -> Value {
    let first = b.iter().find(|c| !c.is_ascii_whitespace());
    if json || matches!(first, Some(b'{') | Some(b'[')) {
        if let Ok(v) = serde_json::from_slice(b) {
            return v;
        }
    }
    Value::String(String::from_utf8_lossy(b).into_owned())
}

/// A JSON response.
pub fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut r = super::super::json(status, body.to_string());
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// An error body `{error, code, path?}` with the status it maps to.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json_response(status, &serde_json::json!({"error": message, "code": code}))
}

/// The HTTP status of a command error, by its Redis code and wording.
pub fn status_of(text: &str) -> StatusCode {
    let code = text.split(' ').next().unwrap_or("");
    match code {
        "NOAUTH" | "WRONGPASS" => StatusCode::UNAUTHORIZED,
        "NOPERM" => StatusCode::FORBIDDEN,
        "INVALID" => StatusCode::BAD_REQUEST,
        // IFVERSION only comes from If-Match: the precondition failed.
        "CONFLICT" => StatusCode::PRECONDITION_FAILED,
        "LOADING" | "CLUSTERDOWN" => StatusCode::SERVICE_UNAVAILABLE,
        "TIMEOUT" => StatusCode::GATEWAY_TIMEOUT,
        _ if text.starts_with("ERR unknown command") => StatusCode::NOT_IMPLEMENTED,
        _ if text.contains("no such") || text.contains("not found") => StatusCode::NOT_FOUND,
        _ if text.contains("is referenced by") => StatusCode::CONFLICT,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// The JSON error for a command's error reply: `{error, code, path?}`, the
/// JSON path of `-INVALID <path>: <why>` split out so a form can point at
/// the field (`error` is then the why).
pub fn command_error(text: &str) -> Response<Body> {
    let (code, rest) = text.split_once(' ').unwrap_or((text, ""));
    let mut body = serde_json::json!({"error": text, "code": code});
    if code == "INVALID" {
        if let Some((path, why)) = rest.split_once(": ") {
            body["path"] = Value::String(path.to_string());
            body["error"] = Value::String(why.to_string());
        }
    }
    let mut r = json_response(status_of(text), &body);
    if r.status() == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

/// The response for a reply: an error reply as [`command_error`], nil as
/// 404 (`what` names the missing thing), anything else as 200 with its JSON.
pub fn respond(reply: Reply, shape: Shape, what: &str) -> Response<Body> {
    match reply {
        Reply::Error(text) => command_error(&text),
        Reply::Nil | Reply::NilArray => {
            error(StatusCode::NOT_FOUND, "ERR", &format!("no such {what}"))
        }
        r => json_response(StatusCode::OK, &to_json(r, shape)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_become_objects_and_json_text_is_embedded() {
        let r = Reply::Map(vec![
            (Reply::bulk("value"), Reply::bulk("\"on\"")),
            (Reply::bulk("key"), Reply::bulk("123")),
            (Reply::bulk("after"), Reply::bulk("{\"on\":true}")),
            (Reply::bulk("stale"), Reply::Bool(false)),
        ]);
        let v = to_json(r, Shape::JsonFields(&["value"]));
        assert_eq!(
            v,
            serde_json::json!({"value": "on", "key": "123", "after": {"on": true}, "stale": false})
        );
    }

    #[test]
    fn errors_map_to_statuses() {
        assert_eq!(
            status_of("NOPERM No permissions to access a key"),
            StatusCode::FORBIDDEN
        );
        assert_eq!(status_of("INVALID rules[0]: bad"), StatusCode::BAD_REQUEST);
        assert_eq!(
            status_of("CONFLICT version is 3"),
            StatusCode::PRECONDITION_FAILED
        );
        assert_eq!(
            status_of("ERR unknown command 'FLAG.STATS', with args beginning with: "),
            StatusCode::NOT_IMPLEMENTED
        );
        assert_eq!(status_of("ERR no such flag 'x'"), StatusCode::NOT_FOUND);
    }
}
