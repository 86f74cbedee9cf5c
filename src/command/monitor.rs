//! `MONITOR`: every command a client runs, shown to the monitoring
//! connections as one line each, in Redis's format:
//! `+1339518083.107412 [0 127.0.0.1:60866] "keys" "*"`.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::spec::Redact;
use super::{Action, CommandError, CommandSpec, Ctx, ServerState, Session};

/// What a redacted argument is shown as.
const REDACTED: &str = "\"(redacted)\"";

/// `MONITOR`: `+OK`, then one line per command run by any client.
pub fn monitor(_: &mut Ctx<'_>, _: &[Bytes]) -> Result<Action, CommandError> {
    Ok(Action::Monitor)
}

/// Shows one command to every monitor (the caller checked that there is one
/// and that the command is not an admin command, which Redis never shows).
pub fn feed(session: &Session, state: &ServerState, spec: &CommandSpec, args: &[Bytes]) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut line = format!(
        "+{}.{:06} [0 {}]",
        now.as_secs(),
        now.subsec_micros(),
        session.client.addr
    );
    for (i, arg) in args.iter().enumerate() {
        line.push(' ');
        if hidden(spec.redact, args, i) {
            line.push_str(REDACTED);
        } else {
            quote(arg, &mut line);
        }
    }
    line.push_str("\r\n");
    state.monitors.feed(Bytes::from(line));
}

/// Whether argument `i` carries a secret the command's redaction hides.
fn hidden(redact: Redact, args: &[Bytes], i: usize) -> bool {
    match redact {
        Redact::Nothing => false,
        Redact::Arguments => i > 0,
        // `HELLO 3 AUTH user pass`: the two values after AUTH.
        Redact::HelloAuth => args
            .iter()
            .take(i)
            .rposition(|a| a.eq_ignore_ascii_case(b"AUTH"))
            .is_some_and(|at| at >= 2 && i - at <= 2),
    }
}

/// Appends `arg` in double quotes, escaped as Redis's `sdscatrepr` does.
fn quote(arg: &[u8], out: &mut String) {
    out.push('"');
    for &b in arg {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x07 => out.push_str("\\a"),
            0x08 => out.push_str("\\b"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                use std::fmt::Write as _;
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_as_redis_sdscatrepr() {
        let mut s = String::new();
        quote(b"a\"b\\c\n\x01\xff ", &mut s);
        assert_eq!(s, r#""a\"b\\c\n\x01\xff ""#);
    }

    #[test]
    fn hello_redacts_only_the_auth_pair() {
        let args: Vec<Bytes> = ["hello", "3", "AUTH", "u", "p", "SETNAME", "n"]
            .iter()
            .map(|s| Bytes::from_static(s.as_bytes()))
            .collect();
        let shown: Vec<bool> = (0..args.len())
            .map(|i| hidden(Redact::HelloAuth, &args, i))
            .collect();
        assert_eq!(shown, [false, false, false, true, true, false, false]);
    }
}
