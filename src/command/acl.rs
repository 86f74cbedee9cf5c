//! `ACL` and its subcommands, the permission check the dispatcher runs, and
//! login (`AUTH`, `HELLO AUTH`) against the ACL users.

use std::sync::LazyLock;

use bytes::Bytes;

use super::ServerState;
use super::{dispatch_sub, parse, table, Action, CommandError, CommandSpec, Ctx, Session};
use crate::auth::{Catalog, Denied, LogContext, LogReason, Selector, User, CATEGORIES};
use crate::protocol::{Protocol, Reply};
use crate::store::{OpOutcome, OpResult, WriteOp, WriteRequest};

use super::PendingWrite;

/// Every command and subcommand of the table, as ACL rules name them.
pub static CATALOG: LazyLock<Catalog> = LazyLock::new(|| {
    let mut c = Catalog::default();
    for spec in table::COMMANDS {
        let id = c.add(spec.name, spec.acl_categories, None);
        for sub in spec.subcommands {
            c.add(sub.name, sub.acl_categories, Some(id));
        }
    }
    c
});

/// Runs the ACL check for a command that needs authentication: the command
/// bit, every key with its read/write intent, every channel. Denials are
/// counted in INFO and logged in `ACL LOG`, and answered with Redis 7.2's
/// NOPERM texts.
pub(crate) fn check(
    session: &mut Session,
    state: &ServerState,
    spec: &'static CommandSpec,
    args: &[Bytes],
) -> Result<(), CommandError> {
    sync_users(state);
    let user = match session.acl_user(&state.users) {
        Some(u) if u.allows_everything() => return Ok(()),
        Some(u) => u.clone(),
        None => {
            // The user was deleted under this connection.
            session.authenticated = false;
            return Err(CommandError::NoAuth);
        }
    };
    let id = CATALOG.id(spec.name).unwrap_or(usize::MAX);
    let Err(denied) = user.check(&spec.acl_request(id, args)) else {
        return Ok(());
    };
    let (reason, object, text) = match denied {
        Denied::Command => (
            LogReason::Command,
            spec.name.to_string(),
            format!(
                "NOPERM User {} has no permissions to run the '{}' command",
                user.name(),
                spec.name
            ),
        ),
        Denied::Key(p) => (
            LogReason::Key,
            lossy(args.get(p)),
            "NOPERM No permissions to access a key".to_string(),
        ),
        Denied::Channel(p) => (
            LogReason::Channel,
            lossy(args.get(p)),
            "NOPERM No permissions to access a channel".to_string(),
        ),
    };
    let context = if session.multi.is_some() {
        LogContext::Multi
    } else {
        LogContext::Toplevel
    };
    session.last_cmd = spec.name;
    deny(
        session,
        state,
        reason,
        context,
        object,
        user.name().to_string(),
    );
    Err(CommandError::Coded(text.into()))
}

fn lossy(b: Option<&Bytes>) -> String {
    b.map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

/// Counts a denial in INFO and records it in `ACL LOG`.
fn deny(
    session: &Session,
    state: &ServerState,
    reason: LogReason,
    context: LogContext,
    object: String,
    username: String,
) {
    let counter = match reason {
        LogReason::Auth => &state.stats.acl_denied_auth,
        LogReason::Command => &state.stats.acl_denied_cmd,
        LogReason::Key => &state.stats.acl_denied_key,
        LogReason::Channel => &state.stats.acl_denied_channel,
    };
    crate::metrics::add(counter, 1);
    session.publish();
    let info = session.client.describe(0);
    state.acl_log.add(
        reason,
        context,
        object,
        username,
        info,
        crate::clock::unix_ms(),
    );
}

/// Counts a failed HTTP login in INFO `acl_access_denied_auth` and records
/// it in `ACL LOG` (reason `auth`, object `http`), as a failed AUTH is.
pub fn deny_http_login(state: &ServerState, username: &str, client_info: String) {
    crate::metrics::add(&state.stats.acl_denied_auth, 1);
    state.acl_log.add(
        LogReason::Auth,
        LogContext::Toplevel,
        "http".to_string(),
        username.to_string(),
        client_info,
        crate::clock::unix_ms(),
    );
}

/// Logs the connection in as `user` if the password matches; a failure is
/// counted and logged (reason `auth`, object the command as typed).
pub(crate) fn login(
    ctx: &mut Ctx<'_>,
    command: &[u8],
    user: &[u8],
    pass: &[u8],
) -> Result<(), CommandError> {
    sync_users(ctx.state);
    let addr = ctx.session.client.addr.ip();
    let result = ctx.state.users.authenticate(user, pass);
    let wait = ctx
        .state
        .auth_backoff
        .settle(&addr, std::time::Instant::now(), result.is_ok());
    if !wait.is_zero() {
        ctx.session.reply_delay = Some(wait);
    }
    match result {
        Ok(u) => {
            ctx.session.authenticated = true;
            ctx.session.user = u.name().to_string();
            ctx.session.acl = None;
            Ok(())
        }
        Err(e) => {
            deny(
                ctx.session,
                ctx.state,
                LogReason::Auth,
                LogContext::Toplevel,
                String::from_utf8_lossy(command).into_owned(),
                String::from_utf8_lossy(user).into_owned(),
            );
            Err(CommandError::Coded(e.to_string().into()))
        }
    }
}

/// Logs a TLS connection in as the ACL user its verified certificate names
/// (`--tls-auth-clients-user CN`): the user must exist and be `on`. Returns
/// whether it did; otherwise the session stays as it was (AUTH still works).
pub fn login_by_certificate(state: &ServerState, session: &mut Session, cn: &str) -> bool {
    sync_users(state);
    match state.users.get(cn) {
        Some(user) if user.enabled() => {
            session.authenticated = true;
            session.user = user.name().to_string();
            session.acl = None;
            true
        }
        _ => false,
    }
}

/// `ACL <subcommand>`.
pub fn acl(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    dispatch_sub(ctx, &table::ACL, args)
}

fn text(b: &Bytes) -> Result<&str, CommandError> {
    std::str::from_utf8(b).map_err(|_| CommandError::Syntax)
}

/// Installs the replicated users when a write changed them, then closes
/// deleted users' connections and subscribers that lost their channels.
/// Cheap when nothing changed: two atomic loads.
#[inline]
pub(crate) fn sync_users(state: &ServerState) {
    if state.store.users_revision() != state.users.synced_revision() {
        sync_users_now(state);
    }
}

fn sync_users_now(state: &ServerState) {
    let view = state.store.view();
    let changed = state.users.sync(&CATALOG, view.users_revision, &view.users);
    drop(view);
    for name in changed {
        if state.users.get(&name).is_none() {
            for c in state.clients.all() {
                if c.user() == name {
                    c.kill.cancel();
                }
            }
        } else {
            disconnect_unauthorised_subscribers(state, &name);
        }
    }
}

fn render_ok(r: OpResult) -> Reply {
    match r {
        Ok(_) => Reply::Ok,
        Err(e) => e.into(),
    }
}

fn render_existed(r: OpResult) -> Reply {
    match r {
        Ok(OpOutcome::Version(n)) => Reply::Integer(n as i64),
        Ok(OpOutcome::Deleted(d)) => Reply::Integer(i64::from(d)),
        Err(e) => e.into(),
    }
}

/// A write of ACL users through raft by the session's user. The first
/// change in a cluster without users also carries this node's `default`
/// (with its `--requirepass` hash), so the replicated set starts complete.
fn users_write(
    ctx: &Ctx<'_>,
    mut users: Vec<(String, Option<String>)>,
    render: fn(OpResult) -> Reply,
) -> Action {
    if ctx.state.store.view().users.is_empty() {
        // The first replicated change carries this node's users (its
        // aclfile, its default user with --requirepass) under it.
        let named: Vec<String> = users.iter().map(|(n, _)| n.clone()).collect();
        let seed = ctx.state.users.snapshot();
        let mut seeded: Vec<(String, Option<String>)> = seed
            .iter()
            .filter(|(n, _)| !named.contains(n))
            .map(|(n, u)| (n.clone(), Some(u.describe())))
            .collect();
        seeded.append(&mut users);
        users = seeded;
    }
    Action::Write(PendingWrite {
        request: WriteRequest::single(
            &ctx.session.user,
            WriteOp::SetUsers {
                users,
                replace_all: false,
            },
        ),
        render,
    })
}

/// `ACL SETUSER username [rule ...]`: the new rules are applied to a copy,
/// and the result (hashes only) is replicated through raft.
pub fn setuser(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    sync_users(ctx.state);
    let name = text(&args[2])?;
    let rules: Vec<&[u8]> = args[3..].iter().map(|a| &a[..]).collect();
    let user = ctx
        .state
        .users
        .build_user(&CATALOG, name, &rules)
        .map_err(|e| CommandError::Coded(e.into()))?;
    Ok(users_write(
        ctx,
        vec![(name.to_string(), Some(user.describe()))],
        render_ok,
    ))
}

/// Closes `name`'s connections that are subscribed to a channel or pattern
/// the user may no longer use, as Redis does after `ACL SETUSER`.
fn disconnect_unauthorised_subscribers(state: &ServerState, name: &str) {
    let Some(user) = state.users.get(name) else {
        return;
    };
    if user.allows_everything() {
        return;
    }
    for c in state.clients.all() {
        if c.user() != name {
            continue;
        }
        let (channels, patterns) = state.hub.subscriptions_of(c.id);
        let revoked = channels.iter().any(|ch| !user.can_use_channel(ch, false))
            || patterns.iter().any(|p| !user.can_use_channel(p, true));
        if revoked {
            c.kill.cancel();
        }
    }
}

/// `ACL DELUSER username [username ...]`: closes the deleted users' connections.
pub fn deluser(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    sync_users(ctx.state);
    let names: Vec<String> = args[2..]
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if names.iter().any(|n| n == "default") {
        return Err(CommandError::err("The 'default' user cannot be removed"));
    }
    let existing: Vec<(String, Option<String>)> = names
        .into_iter()
        .filter(|n| ctx.state.users.get(n).is_some())
        .map(|n| (n, None))
        .collect();
    if existing.is_empty() {
        return Ok(Reply::Integer(0).into());
    }
    Ok(users_write(ctx, existing, render_existed))
}

fn selector_map(sel: &Selector) -> Reply {
    Reply::Map(vec![
        (
            Reply::bulk_static("commands"),
            Reply::bulk(sel.describe_commands()),
        ),
        (Reply::bulk_static("keys"), Reply::bulk(sel.describe_keys())),
        (
            Reply::bulk_static("channels"),
            Reply::bulk(sel.describe_channels()),
        ),
    ])
}

/// `ACL GETUSER username`: Redis's 6-field map, or null.
pub fn getuser(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let Some(u) = std::str::from_utf8(&args[2])
        .ok()
        .and_then(|n| ctx.state.users.get(n))
    else {
        return Ok(Reply::Nil.into());
    };
    let root = u.root();
    Ok(Reply::Map(vec![
        (
            Reply::bulk_static("flags"),
            Reply::Set(u.flags().into_iter().map(Reply::bulk_static).collect()),
        ),
        (
            Reply::bulk_static("passwords"),
            Reply::Array(u.password_hashes().iter().map(Reply::bulk).collect()),
        ),
        (
            Reply::bulk_static("commands"),
            Reply::bulk(root.describe_commands()),
        ),
        (
            Reply::bulk_static("keys"),
            Reply::bulk(root.describe_keys()),
        ),
        (
            Reply::bulk_static("channels"),
            Reply::bulk(root.describe_channels()),
        ),
        (
            Reply::bulk_static("selectors"),
            Reply::Array(u.selectors().iter().map(selector_map).collect()),
        ),
    ])
    .into())
}

/// `ACL LIST`: every user in aclfile form.
pub fn list(ctx: &mut Ctx<'_>, _: &[Bytes]) -> Result<Action, CommandError> {
    let users = ctx.state.users.snapshot();
    Ok(Reply::Array(users.values().map(|u| Reply::bulk(u.describe())).collect()).into())
}

/// `ACL USERS`: every user name.
pub fn users(ctx: &mut Ctx<'_>, _: &[Bytes]) -> Result<Action, CommandError> {
    let users = ctx.state.users.snapshot();
    Ok(Reply::Array(users.keys().map(Reply::bulk).collect()).into())
}

/// `ACL WHOAMI`.
pub fn whoami(ctx: &mut Ctx<'_>, _: &[Bytes]) -> Result<Action, CommandError> {
    Ok(Reply::bulk(&ctx.session.user).into())
}

/// `ACL CAT [category]`: the categories, or a category's commands.
pub fn cat(_: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let Some(name) = args.get(2) else {
        return Ok(Reply::Array(CATEGORIES.iter().map(|c| Reply::bulk_static(c)).collect()).into());
    };
    let name = String::from_utf8_lossy(name);
    let bit = crate::auth::category_bit(&name)
        .ok_or_else(|| CommandError::err(format!("Unknown category '{name}'")))?;
    Ok(Reply::Array(
        CATALOG
            .names_in(bit)
            .into_iter()
            .map(Reply::bulk_static)
            .collect(),
    )
    .into())
}

/// `ACL DRYRUN username command [arg ...]`: `OK`, or why it would be denied.
pub fn dryrun(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let name = String::from_utf8_lossy(&args[2]);
    let user: std::sync::Arc<User> = ctx
        .state
        .users
        .get(&name)
        .ok_or_else(|| CommandError::err(format!("User '{name}' not found")))?;
    let cmd_args = &args[3..];
    let spec = super::resolve(cmd_args).ok_or_else(|| {
        CommandError::err(format!(
            "Command '{}' not found",
            String::from_utf8_lossy(&args[3])
        ))
    })?;
    if !spec.arity_ok(cmd_args.len()) {
        return Err(CommandError::WrongArity(spec.name.to_string()));
    }
    if spec.has_flag("no-auth") {
        return Ok(Reply::Ok.into());
    }
    let id = CATALOG.id(spec.name).unwrap_or(usize::MAX);
    let verdict = match user.check(&spec.acl_request(id, cmd_args)) {
        Ok(()) => return Ok(Reply::Ok.into()),
        Err(Denied::Command) => format!(
            "User {} has no permissions to run the '{}' command",
            user.name(),
            spec.name
        ),
        Err(Denied::Key(p)) => format!(
            "User {} has no permissions to access the '{}' key",
            user.name(),
            lossy(cmd_args.get(p))
        ),
        Err(Denied::Channel(p)) => format!(
            "User {} has no permissions to access the '{}' channel",
            user.name(),
            lossy(cmd_args.get(p))
        ),
    };
    Ok(Reply::bulk(verdict).into())
}

/// `ACL LOG [count | RESET]`.
pub fn log(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let count = match args.get(2) {
        None => 10,
        Some(a) if parse::is(a, "RESET") => {
            ctx.state.acl_log.reset();
            return Ok(Reply::Ok.into());
        }
        Some(a) => parse::int(a)?.max(0) as usize,
    };
    let now = crate::clock::unix_ms();
    let resp3 = ctx.session.proto == Protocol::Resp3;
    let entries = ctx.state.acl_log.recent(count);
    Ok(Reply::Array(
        entries
            .into_iter()
            .map(|e| {
                let age = now.saturating_sub(e.created_ms) as f64 / 1000.0;
                let age = if resp3 {
                    Reply::Double(age)
                } else {
                    Reply::bulk(format!("{age:.3}"))
                };
                Reply::Map(vec![
                    (Reply::bulk_static("count"), Reply::Integer(e.count as i64)),
                    (
                        Reply::bulk_static("reason"),
                        Reply::bulk_static(e.reason.as_str()),
                    ),
                    (
                        Reply::bulk_static("context"),
                        Reply::bulk_static(e.context.as_str()),
                    ),
                    (Reply::bulk_static("object"), Reply::bulk(e.object)),
                    (Reply::bulk_static("username"), Reply::bulk(e.username)),
                    (Reply::bulk_static("age-seconds"), age),
                    (
                        Reply::bulk_static("client-info"),
                        Reply::bulk(e.client_info),
                    ),
                    (
                        Reply::bulk_static("entry-id"),
                        Reply::Integer(e.entry_id as i64),
                    ),
                    (
                        Reply::bulk_static("timestamp-created"),
                        Reply::Integer(e.created_ms as i64),
                    ),
                    (
                        Reply::bulk_static("timestamp-last-updated"),
                        Reply::Integer(e.updated_ms as i64),
                    ),
                ])
            })
            .collect(),
    )
    .into())
}

/// `ACL GENPASS [bits]`: a random password, 256 bits by default, as hex.
pub fn genpass(_: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let bits = match args.get(2) {
        None => 256,
        Some(a) => parse::int(a).ok().filter(|b| (1..=4096).contains(b)).ok_or_else(|| {
            CommandError::err(
                "ACL GENPASS argument must be the number of bits for the output password, a positive number up to 4096",
            )
        })?,
    };
    let chars = (bits as usize).div_ceil(4);
    let mut bytes = vec![0u8; chars.div_ceil(2)];
    rand::Rng::fill(&mut rand::rngs::OsRng, &mut bytes[..]);
    let mut hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    hex.truncate(chars);
    Ok(Reply::bulk(hex).into())
}

/// `ACL LOAD`: replaces every user with the ACL file's, as one raft entry;
/// a bad file changes nothing.
pub fn load(ctx: &mut Ctx<'_>, _: &[Bytes]) -> Result<Action, CommandError> {
    let path = ctx
        .state
        .settings
        .aclfile
        .clone()
        .ok_or_else(not_configured)?;
    let actor = ctx.session.user.clone();
    Ok(Action::Blocking(Box::new(move || {
        let text = std::fs::read_to_string(&path).map_err(|e| {
            CommandError::err(format!(
                "Error loading ACLs, opening file '{}': {e}",
                path.display()
            ))
        })?;
        let users = crate::auth::parse_aclfile(&CATALOG, &path.display().to_string(), &text)
            .map_err(|e| CommandError::Coded(e.into()))?;
        let users = users
            .iter()
            .map(|(n, u)| (n.clone(), Some(u.describe())))
            .collect();
        Ok(Action::Write(PendingWrite {
            request: WriteRequest::single(
                &actor,
                WriteOp::SetUsers {
                    users,
                    replace_all: true,
                },
            ),
            render: render_ok,
        }))
    })))
}

/// `ACL SAVE`: writes the current users to the ACL file (a temporary file,
/// then a rename).
pub fn save(ctx: &mut Ctx<'_>, _: &[Bytes]) -> Result<Action, CommandError> {
    let path = ctx
        .state
        .settings
        .aclfile
        .clone()
        .ok_or_else(not_configured)?;
    sync_users(ctx.state);
    let text = crate::auth::render_aclfile(&ctx.state.users.snapshot());
    let tmp = path.with_extension("tmp");
    Ok(Action::Blocking(Box::new(move || {
        std::fs::write(&tmp, text.as_bytes())
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| {
                tracing::error!(path = %path.display(), "ACL SAVE failed: {e}");
                CommandError::err("There was an error trying to save the ACLs. Please check the server logs for more information")
            })?;
        Ok(Action::Reply(Reply::Ok))
    })))
}

fn not_configured() -> CommandError {
    CommandError::err(
        "This Redis instance is not configured to use an ACL file. You may want to specify users via the ACL SETUSER command and then issue a CONFIG REWRITE (assuming you have a Redis configuration file set) in order to store users in the Redis configuration.",
    )
}

/// `ACL HELP`.
pub fn help(_: &mut Ctx<'_>, _: &[Bytes]) -> Result<Action, CommandError> {
    let lines = [
        "ACL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "CAT [<category>]",
        "    List all commands that belong to <category>, or all command categories",
        "    when no category is specified.",
        "DELUSER <username> [<username> ...]",
        "    Delete a list of users.",
        "DRYRUN <username> <command> [<arg> ...]",
        "    Returns whether the user can execute the given command without executing the command.",
        "GETUSER <username>",
        "    Get the user's details.",
        "GENPASS [<bits>]",
        "    Generate a secure 256-bit user password. The optional `bits` argument can",
        "    be used to specify a different size.",
        "LIST",
        "    Show users details in config file format.",
        "LOAD",
        "    Reload users from the ACL file.",
        "LOG [<count> | RESET]",
        "    Show the ACL log entries.",
        "SAVE",
        "    Save the current config to the ACL file.",
        "SETUSER <username> <attribute> [<attribute> ...]",
        "    Create or modify a user with the specified attributes.",
        "USERS",
        "    List all the registered usernames.",
        "WHOAMI",
        "    Return the current connection username.",
        "HELP",
        "    Print this help.",
    ];
    Ok(Reply::Array(lines.iter().map(|l| Reply::Simple((*l).into())).collect()).into())
}
