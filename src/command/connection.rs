//! Connection commands: PING, ECHO, HELLO, AUTH, SELECT, QUIT, RESET, CLIENT.

use bytes::Bytes;

use super::{dispatch_sub, parse, table, Action, CommandError, Ctx};
use crate::protocol::{Protocol, Reply};

/// Version string that clients read as the Redis version we are compatible with.
pub const REDIS_COMPAT_VERSION: &str = "7.2.0";

/// `PING [message]`: `+PONG`, or the message as a bulk string.
pub fn ping(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    if args.len() <= 2 && ctx.session.proto == Protocol::Resp2 && ctx.session.subscriptions() > 0 {
        // In RESP2 subscribed state PING answers like a message, as Redis does.
        let msg = args.get(1).cloned().unwrap_or_default();
        return Ok(Reply::Array(vec![Reply::bulk_static("pong"), Reply::Bulk(msg)]).into());
    }
    match args.len() {
        1 => Ok(Reply::Simple("PONG".into()).into()),
        2 => Ok(Reply::Bulk(args[1].clone()).into()),
        _ => Err(CommandError::WrongArity("ping".into())),
    }
}

/// `ECHO message`: the message.
pub fn echo(_: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    Ok(Reply::Bulk(args[1].clone()).into())
}

/// Checks a password against `--requirepass`; the only user is `default`.
fn authenticate(ctx: &mut Ctx<'_>, user: &[u8], pass: &[u8]) -> Result<(), CommandError> {
    let Some(expected) = ctx.state.settings.requirepass.as_deref() else {
        if user == b"default" {
            ctx.session.authenticated = true;
            return Ok(());
        }
        return Err(wrongpass());
    };
    if user == b"default" && constant_time_eq(expected.as_bytes(), pass) {
        ctx.session.authenticated = true;
        ctx.session.user = "default".into();
        Ok(())
    } else {
        Err(wrongpass())
    }
}

fn wrongpass() -> CommandError {
    CommandError::Coded("WRONGPASS invalid username-password pair or user is disabled.".into())
}

/// Compares secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (ha, hb) = (Sha256::digest(a), Sha256::digest(b));
    ha.iter()
        .zip(hb.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// `AUTH [username] password`.
pub fn auth(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let (user, pass) = match args.len() {
        2 => (&b"default"[..], &args[1][..]),
        3 => (&args[1][..], &args[2][..]),
        _ => return Err(CommandError::Syntax),
    };
    if args.len() == 2 && ctx.state.settings.requirepass.is_none() {
        return Err(CommandError::err(
            "AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        ));
    }
    authenticate(ctx, user, pass)?;
    Ok(Reply::Ok.into())
}

/// `HELLO [protover [AUTH username password] [SETNAME clientname]]`:
/// switches protocol and answers with the server's properties.
pub fn hello(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let mut proto = ctx.session.proto;
    let mut rest = &args[1..];
    if let Some(ver) = rest.first() {
        let v = parse::int(ver)
            .map_err(|_| CommandError::err("Protocol version is not an integer or out of range"))?;
        proto = match v {
            2 => Protocol::Resp2,
            3 => Protocol::Resp3,
            _ => {
                return Err(CommandError::Coded(
                    "NOPROTO unsupported protocol version".into(),
                ))
            }
        };
        rest = &rest[1..];
    }
    let mut auth = None;
    let mut name = None;
    while let Some(opt) = rest.first() {
        if parse::is(opt, "AUTH") && rest.len() >= 3 {
            auth = Some((&rest[1], &rest[2]));
            rest = &rest[3..];
        } else if parse::is(opt, "SETNAME") && rest.len() >= 2 {
            name = Some(&rest[1]);
            rest = &rest[2..];
        } else {
            return Err(CommandError::err(format!(
                "Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(opt)
            )));
        }
    }
    if let Some((user, pass)) = auth {
        authenticate(ctx, user, pass)?;
    } else if !ctx.session.authenticated {
        return Err(CommandError::Coded(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time".into(),
        ));
    }
    if let Some(name) = name {
        set_name(ctx, name)?;
    }
    ctx.session.proto = proto;
    let resp = if proto == Protocol::Resp3 { 3 } else { 2 };
    ctx.session.client.update(|l| l.resp = resp);
    Ok(Reply::Map(vec![
        (
            Reply::bulk_static("server"),
            Reply::bulk_static("flagstaff"),
        ),
        (
            Reply::bulk_static("version"),
            Reply::bulk_static(REDIS_COMPAT_VERSION),
        ),
        (Reply::bulk_static("proto"), Reply::Integer(i64::from(resp))),
        (
            Reply::bulk_static("id"),
            Reply::Integer(ctx.session.client.id as i64),
        ),
        (Reply::bulk_static("mode"), Reply::bulk_static("standalone")),
        (Reply::bulk_static("role"), Reply::bulk_static("master")),
        (Reply::bulk_static("modules"), Reply::Array(vec![])),
    ])
    .into())
}

/// `SELECT index`: only database 0 exists.
pub fn select(_: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    match parse::int(&args[1])? {
        0 => Ok(Reply::Ok.into()),
        _ => Err(CommandError::err("DB index is out of range")),
    }
}

/// `QUIT`: `+OK`, then the connection closes.
pub fn quit(_: &mut Ctx<'_>, _: &[Bytes]) -> Result<Action, CommandError> {
    Ok(Action::Close(Reply::Ok))
}

/// `RESET`: back to a fresh connection's state.
pub fn reset(ctx: &mut Ctx<'_>, _: &[Bytes]) -> Result<Action, CommandError> {
    let auth = !ctx.state.requires_auth();
    ctx.state.hub.forget(
        ctx.session.client.id,
        &ctx.session.channels,
        &ctx.session.patterns,
    );
    ctx.session.reset(auth);
    ctx.session.client.update(|l| l.resp = 2);
    Ok(Reply::Simple("RESET".into()).into())
}

/// `CLIENT <subcommand>`.
pub fn client(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    dispatch_sub(ctx, &table::CLIENT, args)
}

/// `CLIENT ID`.
pub fn client_id(ctx: &mut Ctx<'_>, _: &[Bytes]) -> Result<Action, CommandError> {
    Ok(Reply::Integer(ctx.session.client.id as i64).into())
}

fn set_name(ctx: &mut Ctx<'_>, name: &[u8]) -> Result<(), CommandError> {
    if name.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
        return Err(CommandError::err(
            "Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    let name = (!name.is_empty()).then(|| String::from_utf8_lossy(name).into_owned());
    ctx.session.client.set_name(name);
    Ok(())
}

/// `CLIENT SETNAME name`.
pub fn client_setname(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    set_name(ctx, &args[2])?;
    Ok(Reply::Ok.into())
}

/// `CLIENT GETNAME`.
pub fn client_getname(ctx: &mut Ctx<'_>, _: &[Bytes]) -> Result<Action, CommandError> {
    Ok(match ctx.session.client.name() {
        Some(n) => Reply::bulk(n),
        None => Reply::Nil,
    }
    .into())
}

/// `CLIENT SETINFO LIB-NAME|LIB-VER value`.
pub fn client_setinfo(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let value = String::from_utf8_lossy(&args[3]).into_owned();
    if value.chars().any(|c| !('!'..='~').contains(&c)) {
        return Err(CommandError::err(format!(
            "{} cannot contain spaces, newlines or special characters.",
            String::from_utf8_lossy(&args[2]).to_ascii_lowercase()
        )));
    }
    if parse::is(&args[2], "LIB-NAME") {
        ctx.session.client.update(|l| l.lib_name = Some(value));
    } else if parse::is(&args[2], "LIB-VER") {
        ctx.session.client.update(|l| l.lib_ver = Some(value));
    } else {
        return Err(CommandError::err(format!(
            "Unrecognized option '{}'",
            String::from_utf8_lossy(&args[2])
        )));
    }
    Ok(Reply::Ok.into())
}

/// `CLIENT LIST [TYPE normal] [ID id ...]`.
pub fn client_list(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let mut ids: Option<Vec<u64>> = None;
    let mut rest = &args[2..];
    while let Some(opt) = rest.first() {
        if parse::is(opt, "TYPE") && rest.len() >= 2 {
            rest = &rest[2..];
        } else if parse::is(opt, "ID") && rest.len() >= 2 {
            ids = Some(
                rest[1..]
                    .iter()
                    .map(|a| parse::uint(a))
                    .collect::<Result<_, _>>()?,
            );
            rest = &[];
        } else {
            return Err(CommandError::Syntax);
        }
    }
    let mut text = String::new();
    for c in ctx.state.clients.all() {
        if ids.as_ref().is_none_or(|ids| ids.contains(&c.id)) {
            text.push_str(&c.describe());
            text.push('\n');
        }
    }
    Ok(Reply::Verbatim(text.into()).into())
}

/// `CLIENT INFO`: this connection's `CLIENT LIST` line.
pub fn client_info(ctx: &mut Ctx<'_>, _: &[Bytes]) -> Result<Action, CommandError> {
    let line = format!("{}\n", ctx.session.client.describe());
    Ok(Reply::Verbatim(line.into()).into())
}

/// `CLIENT KILL ip:port` or `CLIENT KILL [ID id] [ADDR ip:port] [LADDR ip:port] [SKIPME yes|no]`.
pub fn client_kill(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let me = ctx.session.client.id;
    if args.len() == 3 {
        let addr = String::from_utf8_lossy(&args[2]);
        let victim = ctx
            .state
            .clients
            .all()
            .into_iter()
            .find(|c| c.addr.to_string() == addr);
        return match victim {
            Some(c) => {
                c.kill.cancel();
                Ok(Reply::Ok.into())
            }
            None => Err(CommandError::err("No such client")),
        };
    }
    let mut id = None;
    let mut addr = None;
    let mut laddr = None;
    let mut skipme = true;
    let mut rest = &args[2..];
    while rest.len() >= 2 {
        let value = &rest[1];
        match () {
            _ if parse::is(&rest[0], "ID") => id = Some(parse::uint(value)?),
            _ if parse::is(&rest[0], "ADDR") => {
                addr = Some(String::from_utf8_lossy(value).into_owned())
            }
            _ if parse::is(&rest[0], "LADDR") => {
                laddr = Some(String::from_utf8_lossy(value).into_owned())
            }
            _ if parse::is(&rest[0], "SKIPME") => {
                skipme = if parse::is(value, "yes") {
                    true
                } else if parse::is(value, "no") {
                    false
                } else {
                    return Err(CommandError::Syntax);
                }
            }
            _ if parse::is(&rest[0], "TYPE")
                || parse::is(&rest[0], "USER")
                || parse::is(&rest[0], "MAXAGE") => {}
            _ => return Err(CommandError::Syntax),
        }
        rest = &rest[2..];
    }
    if !rest.is_empty() {
        return Err(CommandError::Syntax);
    }
    let mut killed = 0;
    for c in ctx.state.clients.all() {
        let matches = id.is_none_or(|id| c.id == id)
            && addr.as_ref().is_none_or(|a| c.addr.to_string() == *a)
            && laddr.as_ref().is_none_or(|a| c.laddr.to_string() == *a)
            && !(skipme && c.id == me);
        if matches {
            c.kill.cancel();
            killed += 1;
        }
    }
    Ok(Reply::Integer(killed).into())
}

/// `CLIENT NO-EVICT on|off` and `CLIENT NO-TOUCH on|off`: accepted; flagstaff
/// neither evicts nor tracks access time.
pub fn client_on_off(_: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    if parse::is(&args[2], "on") || parse::is(&args[2], "off") {
        Ok(Reply::Ok.into())
    } else {
        Err(CommandError::Syntax)
    }
}

/// `CLIENT HELP`.
pub fn client_help(_: &mut Ctx<'_>, _: &[Bytes]) -> Result<Action, CommandError> {
    Ok(help_reply("CLIENT", &table::CLIENT))
}

/// A HELP reply listing a container's subcommands.
pub fn help_reply(container: &str, spec: &'static super::CommandSpec) -> Action {
    let mut lines = vec![Reply::Simple(
        format!("{container} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:").into(),
    )];
    for sub in spec.subcommands {
        let short = sub
            .name
            .rsplit('|')
            .next()
            .unwrap_or(sub.name)
            .to_ascii_uppercase();
        lines.push(Reply::Simple(short.into()));
        lines.push(Reply::Simple(format!("    {}", sub.summary).into()));
    }
    Action::Reply(Reply::Array(lines))
}
