//! The reply value every handler returns and its encoding. Handlers never write
//! bytes; the connection encodes their replies in the protocol it negotiated.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};
use redis_protocol::resp3::types::FrameKind;

/// The protocol a connection speaks, chosen with `HELLO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// RESP2: the default until a client sends `HELLO 3`.
    Resp2,
    /// RESP3: maps, sets, booleans, doubles, nulls and push frames.
    Resp3,
}

/// A reply to one command, independent of the wire protocol.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+OK`.
    Ok,
    /// A simple status string (`+PONG`, `+QUEUED`).
    Simple(Cow<'static, str>),
    /// An error; the text starts with its code (`ERR ...`, `NOAUTH ...`).
    Error(Cow<'static, str>),
    /// An integer.
    Integer(i64),
    /// A binary-safe string.
    Bulk(Bytes),
    /// The null bulk string (RESP3 null).
    Nil,
    /// The null array, as EXEC replies when a watched key changed (RESP3 null).
    NilArray,
    /// An array.
    Array(Vec<Reply>),
    /// A map (RESP3); a flat key/value array in RESP2.
    Map(Vec<(Reply, Reply)>),
    /// A set (RESP3); an array in RESP2.
    Set(Vec<Reply>),
    /// A boolean (RESP3); the integer 1 or 0 in RESP2.
    Bool(bool),
    /// A double (RESP3); a bulk string in RESP2.
    Double(f64),
    /// Text for humans (RESP3 verbatim `txt`); a bulk string in RESP2.
    Verbatim(Bytes),
    /// An out-of-band push (RESP3); an array in RESP2.
    Push(Vec<Reply>),
    /// Several replies to one command, written one after another (as
    /// SUBSCRIBE confirms each channel).
    Sequence(Vec<Reply>),
}

impl Reply {
    /// A bulk reply holding a copy of `s`.
    pub fn bulk(s: impl AsRef<[u8]>) -> Reply {
        Reply::Bulk(Bytes::copy_from_slice(s.as_ref()))
    }

    /// A bulk reply for a static string, without copying.
    pub fn bulk_static(s: &'static str) -> Reply {
        Reply::Bulk(Bytes::from_static(s.as_bytes()))
    }

    /// An error reply; `text` starts with the error code.
    pub fn error(text: impl Into<Cow<'static, str>>) -> Reply {
        Reply::Error(text.into())
    }

    /// Whether this reply is an error.
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// Appends this reply's encoding in `proto` to `out`.
    pub fn encode(&self, proto: Protocol, out: &mut BytesMut) {
        match self {
            Reply::Ok => out.extend_from_slice(b"+OK\r\n"),
            Reply::Simple(s) => simple(out, FrameKind::SimpleString, s.as_bytes()),
            Reply::Error(s) => simple(out, FrameKind::SimpleError, s.as_bytes()),
            Reply::Integer(n) => header(out, FrameKind::Number, *n),
            Reply::Bulk(b) => bulk(out, b),
            Reply::Nil => match proto {
                Protocol::Resp2 => out.extend_from_slice(b"$-1\r\n"),
                Protocol::Resp3 => out.extend_from_slice(b"_\r\n"),
            },
            Reply::NilArray => match proto {
                Protocol::Resp2 => out.extend_from_slice(b"*-1\r\n"),
                Protocol::Resp3 => out.extend_from_slice(b"_\r\n"),
            },
            Reply::Array(items) => {
                encode_array_header(items.len(), out);
                items.iter().for_each(|r| r.encode(proto, out));
            }
            Reply::Set(items) => {
                let kind = match proto {
                    Protocol::Resp2 => FrameKind::Array,
                    Protocol::Resp3 => FrameKind::Set,
                };
                header(out, kind, items.len() as i64);
                items.iter().for_each(|r| r.encode(proto, out));
            }
            Reply::Push(items) => {
                let kind = match proto {
                    Protocol::Resp2 => FrameKind::Array,
                    Protocol::Resp3 => FrameKind::Push,
                };
                header(out, kind, items.len() as i64);
                items.iter().for_each(|r| r.encode(proto, out));
            }
            Reply::Map(pairs) => {
                encode_map_header(pairs.len(), proto, out);
                for (k, v) in pairs {
                    k.encode(proto, out);
                    v.encode(proto, out);
                }
            }
            Reply::Bool(b) => match proto {
                Protocol::Resp2 => header(out, FrameKind::Number, i64::from(*b)),
                Protocol::Resp3 => out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
            },
            Reply::Double(d) => {
                let text = format_double(*d);
                match proto {
                    Protocol::Resp2 => bulk(out, text.as_bytes()),
                    Protocol::Resp3 => simple(out, FrameKind::Double, text.as_bytes()),
                }
            }
            Reply::Sequence(items) => items.iter().for_each(|r| r.encode(proto, out)),
            Reply::Verbatim(b) => match proto {
                Protocol::Resp2 => bulk(out, b),
                Protocol::Resp3 => {
                    header(out, FrameKind::VerbatimString, b.len() as i64 + 4);
                    out.extend_from_slice(b"txt:");
                    out.extend_from_slice(b);
                    out.extend_from_slice(b"\r\n");
                }
            },
        }
    }
}

/// Appends the header of an array of `len` items whose encodings follow
/// separately (a reply written in pages).
pub fn encode_array_header(len: usize, out: &mut BytesMut) {
    header(out, FrameKind::Array, len as i64);
}

/// Appends the header of a map of `len` pairs whose encodings follow
/// separately (a flat array of `2 × len` items in RESP2).
pub fn encode_map_header(len: usize, proto: Protocol, out: &mut BytesMut) {
    match proto {
        Protocol::Resp2 => header(out, FrameKind::Array, 2 * len as i64),
        Protocol::Resp3 => header(out, FrameKind::Map, len as i64),
    }
}

impl From<Bytes> for Reply {
    fn from(b: Bytes) -> Self {
        Reply::Bulk(b)
    }
}

fn format_double(d: f64) -> String {
    if d.is_infinite() {
        if d > 0.0 { "inf" } else { "-inf" }.to_string()
    } else if d.is_nan() {
        "nan".to_string()
    } else {
        let mut buf = ryu::Buffer::new();
        buf.format_finite(d).trim_end_matches(".0").to_string()
    }
}

fn simple(out: &mut BytesMut, kind: FrameKind, text: &[u8]) {
    out.reserve(text.len() + 3);
    out.put_u8(kind.to_byte());
    // A simple string cannot carry CR or LF; replace them so one bad message can
    // never break framing.
    out.extend(
        text.iter()
            .map(|&c| if c == b'\r' || c == b'\n' { b' ' } else { c }),
    );
    out.extend_from_slice(b"\r\n");
}

fn header(out: &mut BytesMut, kind: FrameKind, n: i64) {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(n);
    out.reserve(digits.len() + 3);
    out.put_u8(kind.to_byte());
    out.extend_from_slice(digits.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn bulk(out: &mut BytesMut, data: &[u8]) {
    header(out, FrameKind::BlobString, data.len() as i64);
    out.reserve(data.len() + 2);
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(r: Reply, p: Protocol) -> String {
        let mut out = BytesMut::new();
        r.encode(p, &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn map_is_flat_array_in_resp2_and_map_in_resp3() {
        let m = Reply::Map(vec![(Reply::bulk("a"), Reply::Integer(1))]);
        assert_eq!(enc(m.clone(), Protocol::Resp2), "*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(enc(m, Protocol::Resp3), "%1\r\n$1\r\na\r\n:1\r\n");
    }

    #[test]
    fn nulls_booleans_and_doubles_follow_the_protocol() {
        assert_eq!(enc(Reply::Nil, Protocol::Resp2), "$-1\r\n");
        assert_eq!(enc(Reply::NilArray, Protocol::Resp2), "*-1\r\n");
        assert_eq!(enc(Reply::Nil, Protocol::Resp3), "_\r\n");
        assert_eq!(enc(Reply::Bool(true), Protocol::Resp2), ":1\r\n");
        assert_eq!(enc(Reply::Bool(false), Protocol::Resp3), "#f\r\n");
        assert_eq!(enc(Reply::Double(1.5), Protocol::Resp3), ",1.5\r\n");
        assert_eq!(enc(Reply::Double(2.0), Protocol::Resp2), "$1\r\n2\r\n");
    }

    #[test]
    fn error_text_never_breaks_framing() {
        assert_eq!(
            enc(Reply::error("ERR a\r\nb"), Protocol::Resp2),
            "-ERR a  b\r\n"
        );
    }
}
