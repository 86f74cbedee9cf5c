//! Connection commands: PING, ECHO, HELLO, AUTH, SELECT, QUIT, RESET, CLIENT.

use bytes::Bytes;

use super::clients::{ClientHandle, ClientType};
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

/// `AUTH [username] password`.
pub fn auth(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let (user, pass) = match args.len() {
        2 => (&b"default"[..], &args[1][..]),
        3 => (&args[1][..], &args[2][..]),
        _ => return Err(CommandError::Syntax),
    };
    if args.len() == 2 && ctx.state.default_is_nopass() {
        return Err(CommandError::err(
            "AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        ));
    }
    super::acl::login(ctx, &args[0], user, pass)?;
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
        super::acl::login(ctx, &args[0], user, pass)?;
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
    ctx.state.monitors.remove(ctx.session.client.id);
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

/// `CLIENT LIST [TYPE type] [ID id ...]`.
pub fn client_list(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let mut ids: Option<Vec<u64>> = None;
    let mut kind = None;
    match &args[2..] {
        [] => {}
        [opt, name] if parse::is(opt, "TYPE") => kind = Some(client_type(name)?),
        [opt, rest @ ..] if parse::is(opt, "ID") && !rest.is_empty() => {
            ids = Some(
                rest.iter()
                    .map(|a| parse::uint(a).map_err(|_| CommandError::err("Invalid client ID")))
                    .collect::<Result<_, _>>()?,
            )
        }
        _ => return Err(CommandError::Syntax),
    }
    ctx.session.publish();
    let me = ctx.session.client.id;
    let argv_mem = args.iter().map(|a| a.len()).sum::<usize>();
    let mut text = String::new();
    for c in ctx.state.clients.all() {
        if ids.as_ref().is_some_and(|ids| !ids.contains(&c.id))
            || kind.is_some_and(|k| c.client_type() != k)
        {
            continue;
        }
        text.push_str(&c.describe(if c.id == me { argv_mem } else { 0 }));
        text.push('\n');
    }
    Ok(Reply::Verbatim(text.into()).into())
}

/// A client type name, or Redis's error for an unknown one.
fn client_type(name: &[u8]) -> Result<ClientType, CommandError> {
    ClientType::parse(name).ok_or_else(|| {
        CommandError::err(format!(
            "Unknown client type '{}'",
            String::from_utf8_lossy(name)
        ))
    })
}

/// `CLIENT INFO`: this connection's `CLIENT LIST` line.
pub fn client_info(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    ctx.session.publish();
    let argv_mem = args.iter().map(|a| a.len()).sum::<usize>();
    let line = format!("{}\n", ctx.session.client.describe(argv_mem));
    Ok(Reply::Verbatim(line.into()).into())
}

/// Which clients `CLIENT KILL` closes: every given filter must match.
#[derive(Debug, Default)]
struct KillFilter {
    id: Option<u64>,
    kind: Option<ClientType>,
    user: Option<String>,
    addr: Option<String>,
    laddr: Option<String>,
    max_age: Option<u64>,
    skip_me: bool,
}

impl KillFilter {
    /// Parses `<filter> <value> ...` as Redis 7 does.
    fn parse(mut rest: &[Bytes]) -> Result<KillFilter, CommandError> {
        let mut f = KillFilter {
            skip_me: true,
            ..KillFilter::default()
        };
        while let [opt, value, tail @ ..] = rest {
            let text = || String::from_utf8_lossy(value).into_owned();
            if parse::is(opt, "ID") {
                match parse::int(value) {
                    Ok(id) if id > 0 => f.id = Some(id as u64),
                    _ => return Err(CommandError::err("client-id should be greater than 0")),
                }
            } else if parse::is(opt, "MAXAGE") {
                let age = parse::int(value)
                    .map_err(|_| CommandError::err("maxage is not an integer or out of range"))?;
                if age <= 0 {
                    return Err(CommandError::err("maxage should be greater than 0"));
                }
                f.max_age = Some(age as u64);
            } else if parse::is(opt, "TYPE") {
                f.kind = Some(client_type(value)?);
            } else if parse::is(opt, "ADDR") {
                f.addr = Some(text());
            } else if parse::is(opt, "LADDR") {
                f.laddr = Some(text());
            } else if parse::is(opt, "USER") {
                // `default` is the only user: it exists whether or not a
                // password is set, as in Redis.
                if !value.eq(&b"default"[..]) {
                    return Err(CommandError::err(format!("No such user '{}'", text())));
                }
                f.user = Some(text());
            } else if parse::is(opt, "SKIPME") {
                f.skip_me = if parse::is(value, "yes") {
                    true
                } else if parse::is(value, "no") {
                    false
                } else {
                    return Err(CommandError::Syntax);
                };
            } else {
                return Err(CommandError::Syntax);
            }
            rest = tail;
        }
        if !rest.is_empty() {
            return Err(CommandError::Syntax);
        }
        Ok(f)
    }

    fn matches(&self, c: &ClientHandle, me: u64) -> bool {
        self.addr.as_ref().is_none_or(|a| c.addr.to_string() == *a)
            && self
                .laddr
                .as_ref()
                .is_none_or(|a| c.laddr.to_string() == *a)
            && self.kind.is_none_or(|k| c.client_type() == k)
            && self.id.is_none_or(|id| c.id == id)
            && self.user.as_ref().is_none_or(|u| c.user() == *u)
            && self.max_age.is_none_or(|age| c.age_secs() >= age)
            && !(self.skip_me && c.id == me)
    }
}

/// `CLIENT KILL ip:port` (`+OK`, or an error if no such client), or
/// `CLIENT KILL <filter> <value> ...` with filters `ID`, `TYPE`, `USER`,
/// `ADDR`, `LADDR`, `SKIPME` and `MAXAGE`, all of which must match; replies
/// with the number of clients closed. The caller itself is closed after its
/// reply, and only if `SKIPME no` (or the old form) says so.
pub fn client_kill(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let me = ctx.session.client.id;
    // Its own state may be what a filter asks about (TYPE pubsub).
    ctx.session.publish();
    let old_form = args.len() == 3;
    let filter = if old_form {
        KillFilter {
            addr: Some(String::from_utf8_lossy(&args[2]).into_owned()),
            ..KillFilter::default()
        }
    } else {
        KillFilter::parse(&args[2..])?
    };
    let mut killed = 0;
    for c in ctx.state.clients.all() {
        if filter.matches(&c, me) {
            c.kill.cancel();
            killed += 1;
        }
    }
    if old_form {
        return if killed == 0 {
            Err(CommandError::err("No such client"))
        } else {
            Ok(Reply::Ok.into())
        };
    }
    Ok(Reply::Integer(killed).into())
}

/// `CLIENT REPLY ON|OFF|SKIP`: whether this connection gets replies. `OFF`
/// and `SKIP` are not answered themselves; `SKIP` also silences the next
/// command.
pub fn client_reply(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    use super::session::ReplyMode;
    let mode = &mut ctx.session.reply_mode;
    if parse::is(&args[2], "ON") {
        *mode = ReplyMode::On;
    } else if parse::is(&args[2], "OFF") {
        *mode = ReplyMode::Off;
    } else if parse::is(&args[2], "SKIP") {
        if *mode != ReplyMode::Off {
            *mode = ReplyMode::SkipNext;
        }
    } else {
        return Err(CommandError::Syntax);
    }
    Ok(Reply::Ok.into())
}

/// `CLIENT NO-EVICT on|off` and `CLIENT NO-TOUCH on|off`: recorded (and shown
/// by `CLIENT LIST` as flags `e` and `T`); flagstaff neither evicts clients
/// nor tracks key access time, so they change nothing else.
pub fn client_on_off(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let on = if parse::is(&args[2], "on") {
        true
    } else if parse::is(&args[2], "off") {
        false
    } else {
        return Err(CommandError::Syntax);
    };
    let evict = parse::is(&args[1], "NO-EVICT");
    ctx.session.client.update(|l| {
        if evict {
            l.no_evict = on;
        } else {
            l.no_touch = on;
        }
    });
    Ok(Reply::Ok.into())
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
