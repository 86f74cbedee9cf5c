//! Incremental request decoder: RESP multibulk arrays of bulk strings, as
//! clients send them, and inline commands, as telnet and redis-cli's `--pipe`
//! send them. It keeps its place between reads, so a request that arrives one
//! byte at a time is never re-parsed from its start.

use bytes::{Buf, Bytes, BytesMut};
use redis_protocol::resp2::types::FrameKind;

/// The longest count line or inline request accepted (Redis: 64 KiB).
const MAX_LINE: usize = 64 * 1024;

/// Limits that bound what one request may make the server hold.
#[derive(Debug, Clone)]
pub struct DecoderLimits {
    /// Largest bulk string accepted (Redis `proto-max-bulk-len`).
    pub max_bulk_len: usize,
    /// Most arguments in one request.
    pub max_multibulk_len: usize,
    /// Most bytes one request may occupy while it is being received.
    pub query_buffer_limit: usize,
}

impl Default for DecoderLimits {
    fn default() -> Self {
        DecoderLimits {
            max_bulk_len: 512 * 1024 * 1024,
            max_multibulk_len: 1024 * 1024,
            query_buffer_limit: 1024 * 1024 * 1024,
        }
    }
}

/// Limits that apply before a client authenticates when a password is set,
/// as Redis does, so an anonymous peer cannot make the server buffer much.
const UNAUTH_MAX_MULTIBULK: usize = 10;
const UNAUTH_MAX_BULK: usize = 16 * 1024;

/// A malformed request. The connection replies with it and then closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ERR Protocol error: {0}")]
pub struct DecodeError(pub String);

fn protocol(msg: impl Into<String>) -> DecodeError {
    DecodeError(msg.into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between requests.
    Idle,
    /// Inside a multibulk request, expecting a `$len` line.
    BulkHeader { remaining: usize },
    /// Inside a multibulk request, expecting `len` bytes and CRLF.
    BulkBody { remaining: usize, len: usize },
}

/// Decodes requests out of a connection's read buffer.
#[derive(Debug)]
pub struct RequestDecoder {
    state: State,
    args: Vec<Bytes>,
    /// Bytes of the request in progress already taken out of the buffer.
    consumed: usize,
    spare: Vec<Vec<Bytes>>,
}

impl Default for RequestDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        RequestDecoder {
            state: State::Idle,
            args: Vec::new(),
            consumed: 0,
            spare: Vec::new(),
        }
    }

    /// Returns an argument vector for reuse, so steady traffic allocates none.
    pub fn recycle(&mut self, mut args: Vec<Bytes>) {
        if self.spare.len() < 4 && args.capacity() <= 64 {
            args.clear();
            self.spare.push(args);
        }
    }

    /// Bytes of the request in progress already taken out of the buffer; with
    /// what is still buffered, the query buffer as `CLIENT LIST` counts it.
    pub fn taken(&self) -> usize {
        self.consumed
    }

    /// Bytes the request in progress needs before it can complete (a hint for
    /// how much to read; never more than one bulk's worth).
    pub fn wanted(&self, buffered: usize) -> usize {
        match self.state {
            State::BulkBody { len, .. } => (len + 2).saturating_sub(buffered),
            _ => 0,
        }
    }

    /// Takes the next complete request out of `buf`. `Ok(None)` means more bytes
    /// are needed; what was already parsed is kept.
    pub fn decode(
        &mut self,
        buf: &mut BytesMut,
        limits: &DecoderLimits,
        authenticated: bool,
    ) -> Result<Option<Vec<Bytes>>, DecodeError> {
        loop {
            match self.state {
                State::Idle => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    if buf[0] != FrameKind::Array.to_byte() {
                        match self.decode_inline(buf)? {
                            Some(Some(args)) => return Ok(Some(args)),
                            Some(None) => continue,
                            None => return Ok(None),
                        }
                    }
                    let Some(line) = line_len(buf, "too big mbulk count string")? else {
                        return Ok(None);
                    };
                    let max = if authenticated {
                        limits.max_multibulk_len
                    } else {
                        UNAUTH_MAX_MULTIBULK
                    };
                    let n = parse_int(&buf[1..line])
                        .filter(|&n| n <= max as i64)
                        .ok_or_else(|| protocol("invalid multibulk length"))?;
                    buf.advance(line + 2);
                    if n <= 0 {
                        continue;
                    }
                    self.args = self.spare.pop().unwrap_or_default();
                    self.args.reserve((n as usize).min(1024));
                    self.consumed = line + 2;
                    self.state = State::BulkHeader {
                        remaining: n as usize,
                    };
                }
                State::BulkHeader { remaining } => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    if buf[0] != FrameKind::BulkString.to_byte() {
                        return Err(protocol(format!(
                            "expected '$', got '{}'",
                            char::from(buf[0])
                        )));
                    }
                    let Some(line) = line_len(buf, "too big bulk count string")? else {
                        return Ok(None);
                    };
                    let max = if authenticated {
                        limits.max_bulk_len
                    } else {
                        UNAUTH_MAX_BULK
                    };
                    let len = parse_int(&buf[1..line])
                        .filter(|&n| n >= 0 && n <= max as i64)
                        .ok_or_else(|| protocol("invalid bulk length"))?;
                    buf.advance(line + 2);
                    self.consumed += line + 2;
                    self.state = State::BulkBody {
                        remaining,
                        len: len as usize,
                    };
                }
                State::BulkBody { remaining, len } => {
                    if self.consumed + buf.len() > limits.query_buffer_limit {
                        return Err(protocol("query buffer limit exceeded"));
                    }
                    if buf.len() < len + 2 {
                        return Ok(None);
                    }
                    if &buf[len..len + 2] != b"\r\n" {
                        return Err(protocol("expected CRLF after bulk string data"));
                    }
                    let arg = buf.split_to(len).freeze();
                    buf.advance(2);
                    self.consumed += len + 2;
                    self.args.push(arg);
                    if remaining == 1 {
                        self.state = State::Idle;
                        self.consumed = 0;
                        return Ok(Some(std::mem::take(&mut self.args)));
                    }
                    self.state = State::BulkHeader {
                        remaining: remaining - 1,
                    };
                }
            }
        }
    }

    /// `None`: incomplete; `Some(None)`: an empty line was skipped.
    #[allow(clippy::option_option)]
    fn decode_inline(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<Option<Vec<Bytes>>>, DecodeError> {
        let Some(pos) = memchr::memchr(b'\n', buf) else {
            if buf.len() > MAX_LINE {
                return Err(protocol("too big inline request"));
            }
            return Ok(None);
        };
        let line = buf.split_to(pos + 1);
        let text = line[..pos].strip_suffix(b"\r").unwrap_or(&line[..pos]);
        let mut args = self.spare.pop().unwrap_or_default();
        split_inline(text, &mut args)?;
        if args.is_empty() {
            self.recycle(args);
            return Ok(Some(None));
        }
        Ok(Some(Some(args)))
    }
}

/// The length (without its CRLF) of the CRLF-terminated line `buf` starts
/// with, or `None` if the line is not complete yet. Nothing is split off:
/// the caller parses the line in place and advances past it.
fn line_len(buf: &BytesMut, too_big: &str) -> Result<Option<usize>, DecodeError> {
    let window = &buf[..buf.len().min(MAX_LINE + 2)];
    let Some(pos) = memchr::memchr(b'\n', window) else {
        if buf.len() > MAX_LINE {
            return Err(protocol(too_big));
        }
        return Ok(None);
    };
    if pos == 0 || buf[pos - 1] != b'\r' {
        return Err(protocol(if buf[0] == b'*' {
            "invalid multibulk length"
        } else {
            "invalid bulk length"
        }));
    }
    Ok(Some(pos - 1))
}

fn parse_int(digits: &[u8]) -> Option<i64> {
    let (neg, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0i64, |acc, &d| acc * 10 + i64::from(d - b'0'));
    Some(if neg { -n } else { n })
}

/// Splits an inline request into arguments with Redis's quoting rules:
/// double quotes with `\n \r \t \b \a \\ \" \xHH` escapes, single quotes with
/// `\'`, and a closing quote that must be followed by a space or the end.
fn split_inline(line: &[u8], args: &mut Vec<Bytes>) -> Result<(), DecodeError> {
    let unbalanced = || protocol("unbalanced quotes in request");
    let mut i = 0;
    loop {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == line.len() {
            return Ok(());
        }
        let mut arg = Vec::new();
        match line[i] {
            b'"' => {
                i += 1;
                loop {
                    let Some(&c) = line.get(i) else {
                        return Err(unbalanced());
                    };
                    if c == b'\\'
                        && i + 3 < line.len()
                        && line[i + 1] == b'x'
                        && line[i + 2].is_ascii_hexdigit()
                        && line[i + 3].is_ascii_hexdigit()
                    {
                        let hex = std::str::from_utf8(&line[i + 2..i + 4]).unwrap_or("0");
                        arg.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                        i += 4;
                    } else if c == b'\\' && i + 1 < line.len() {
                        arg.push(match line[i + 1] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 8,
                            b'a' => 7,
                            other => other,
                        });
                        i += 2;
                    } else if c == b'"' {
                        if line.get(i + 1).is_some_and(|c| !c.is_ascii_whitespace()) {
                            return Err(unbalanced());
                        }
                        i += 1;
                        break;
                    } else {
                        arg.push(c);
                        i += 1;
                    }
                }
            }
            b'\'' => {
                i += 1;
                loop {
                    let Some(&c) = line.get(i) else {
                        return Err(unbalanced());
                    };
                    if c == b'\\' && line.get(i + 1) == Some(&b'\'') {
                        arg.push(b'\'');
                        i += 2;
                    } else if c == b'\'' {
                        if line.get(i + 1).is_some_and(|c| !c.is_ascii_whitespace()) {
                            return Err(unbalanced());
                        }
                        i += 1;
                        break;
                    } else {
                        arg.push(c);
                        i += 1;
                    }
                }
            }
            _ => {
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    arg.push(line[i]);
                    i += 1;
                }
            }
        }
        args.push(Bytes::from(arg));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<Vec<Vec<Bytes>>, DecodeError> {
        let mut dec = RequestDecoder::new();
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(args) = dec.decode(&mut buf, &DecoderLimits::default(), true)? {
            out.push(args);
        }
        Ok(out)
    }

    #[test]
    fn multibulk_and_inline_requests_decode_to_arguments() {
        let reqs =
            decode_all(b"*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\nPING\r\n\r\nset \"a b\" 'c\\'d'\r\n")
                .unwrap();
        assert_eq!(reqs.len(), 3);
        assert_eq!(reqs[0], vec![Bytes::from("ECHO"), Bytes::from("hi")]);
        assert_eq!(reqs[1], vec![Bytes::from("PING")]);
        assert_eq!(
            reqs[2],
            vec![Bytes::from("set"), Bytes::from("a b"), Bytes::from("c'd")]
        );
    }

    #[test]
    fn a_request_fed_one_byte_at_a_time_decodes_once() {
        let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n";
        let mut dec = RequestDecoder::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &b in input.iter() {
            buf.extend_from_slice(&[b]);
            if let Some(args) = dec
                .decode(&mut buf, &DecoderLimits::default(), true)
                .unwrap()
            {
                got.push(args);
            }
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0][2], Bytes::from("value"));
    }

    #[test]
    fn malformed_frames_give_redis_protocol_errors() {
        let err = |input: &[u8]| decode_all(input).unwrap_err().to_string();
        assert_eq!(
            err(b"*x\r\n"),
            "ERR Protocol error: invalid multibulk length"
        );
        assert_eq!(
            err(b"*1\r\n:5\r\n"),
            "ERR Protocol error: expected '$', got ':'"
        );
        assert_eq!(
            err(b"*1\r\n$-3\r\n"),
            "ERR Protocol error: invalid bulk length"
        );
        assert_eq!(
            err(b"*1\r\n$abc\r\n"),
            "ERR Protocol error: invalid bulk length"
        );
        assert_eq!(
            err(b"*1\r\n$999999999999\r\n"),
            "ERR Protocol error: invalid bulk length"
        );
        assert_eq!(
            err(b"*1\r\n$2\r\nabXY"),
            "ERR Protocol error: expected CRLF after bulk string data"
        );
        assert_eq!(
            err(b"\"unclosed\r\n"),
            "ERR Protocol error: unbalanced quotes in request"
        );
    }

    #[test]
    fn a_huge_declared_bulk_allocates_nothing_up_front() {
        let mut dec = RequestDecoder::new();
        let mut buf = BytesMut::from(&b"*1\r\n$536870912\r\nabc"[..]);
        assert!(dec
            .decode(&mut buf, &DecoderLimits::default(), true)
            .unwrap()
            .is_none());
        assert!(buf.capacity() < 1024);
        assert_eq!(dec.wanted(buf.len()), 536870912 + 2 - 3);
    }

    #[test]
    fn unauthenticated_clients_get_small_limits() {
        let mut dec = RequestDecoder::new();
        let mut buf = BytesMut::from(&b"*100\r\n"[..]);
        assert!(dec
            .decode(&mut buf, &DecoderLimits::default(), false)
            .is_err());
    }

    #[test]
    fn empty_and_negative_multibulk_are_skipped() {
        assert_eq!(decode_all(b"*0\r\n*-1\r\nPING\r\n").unwrap().len(), 1);
    }
}
