//! SUBSCRIBE, UNSUBSCRIBE, PSUBSCRIBE, PUNSUBSCRIBE, PUBLISH, PUBSUB.

use bytes::Bytes;

use super::{dispatch_sub, table, Action, CommandError, Ctx};
use crate::protocol::Reply;
use crate::pubsub::Mailbox;

/// Channel prefixes flagstaff publishes change events on; clients may not.
pub const RESERVED_PREFIXES: [&str; 2] = ["flag:", "segment:"];

fn confirmation(kind: &'static str, name: Option<&Bytes>, count: usize) -> Reply {
    Reply::Push(vec![
        Reply::bulk_static(kind),
        name.map_or(Reply::Nil, |n| Reply::Bulk(n.clone())),
        Reply::Integer(count as i64),
    ])
}

fn mailbox(ctx: &mut Ctx<'_>) -> std::sync::Arc<Mailbox> {
    if ctx.session.mail.is_none() {
        ctx.session.mail = Some(Mailbox::new(ctx.session.client.kill.clone()));
    }
    match &ctx.session.mail {
        Some((mb, _)) => mb.clone(),
        None => unreachable!("mailbox was just created"),
    }
}

/// Channels or patterns: the two kinds of subscription.
#[derive(Clone, Copy)]
enum Kind {
    Channel,
    Pattern,
}

impl Kind {
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Kind::Channel => ("subscribe", "unsubscribe"),
            Kind::Pattern => ("psubscribe", "punsubscribe"),
        }
    }
}

fn add(ctx: &mut Ctx<'_>, args: &[Bytes], kind: Kind) -> Result<Action, CommandError> {
    let mb = mailbox(ctx);
    let id = ctx.session.client.id;
    let mut replies = Vec::new();
    for name in &args[1..] {
        let name = Bytes::copy_from_slice(name);
        match kind {
            Kind::Channel => {
                ctx.state.hub.subscribe(id, &mb, &name);
                ctx.session.channels.insert(name.clone());
            }
            Kind::Pattern => {
                ctx.state.hub.psubscribe(id, &mb, &name);
                ctx.session.patterns.insert(name.clone());
            }
        }
        replies.push(confirmation(
            kind.names().0,
            Some(&name),
            ctx.session.subscriptions(),
        ));
    }
    Ok(Reply::Sequence(replies).into())
}

fn remove(ctx: &mut Ctx<'_>, args: &[Bytes], kind: Kind) -> Result<Action, CommandError> {
    let id = ctx.session.client.id;
    let mut names: Vec<Bytes> = args[1..]
        .iter()
        .map(|a| Bytes::copy_from_slice(a))
        .collect();
    if names.is_empty() {
        let current = match kind {
            Kind::Channel => &ctx.session.channels,
            Kind::Pattern => &ctx.session.patterns,
        };
        names = current.iter().cloned().collect();
        names.sort();
    }
    let verb = kind.names().1;
    if names.is_empty() {
        return Ok(confirmation(verb, None, ctx.session.subscriptions()).into());
    }
    let mut replies = Vec::new();
    for name in names {
        match kind {
            Kind::Channel => {
                ctx.state.hub.unsubscribe(id, &name);
                ctx.session.channels.remove(&name);
            }
            Kind::Pattern => {
                ctx.state.hub.punsubscribe(id, &name);
                ctx.session.patterns.remove(&name);
            }
        }
        replies.push(confirmation(verb, Some(&name), ctx.session.subscriptions()));
    }
    Ok(Reply::Sequence(replies).into())
}

/// `SUBSCRIBE channel [channel ...]`.
pub fn subscribe(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    add(ctx, args, Kind::Channel)
}

/// `PSUBSCRIBE pattern [pattern ...]`.
pub fn psubscribe(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    add(ctx, args, Kind::Pattern)
}

/// `UNSUBSCRIBE [channel ...]`: all channels when none are named.
pub fn unsubscribe(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    remove(ctx, args, Kind::Channel)
}

/// `PUNSUBSCRIBE [pattern ...]`: all patterns when none are named.
pub fn punsubscribe(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    remove(ctx, args, Kind::Pattern)
}

/// `PUBLISH channel message`: the number of subscribers that received it.
pub fn publish(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    if RESERVED_PREFIXES
        .iter()
        .any(|p| args[1].starts_with(p.as_bytes()))
    {
        return Err(CommandError::err(format!(
            "channel '{}' is reserved: flagstaff publishes flag and segment changes on flag:* and segment:*",
            String::from_utf8_lossy(&args[1])
        )));
    }
    let channel = Bytes::copy_from_slice(&args[1]);
    let payload = Bytes::copy_from_slice(&args[2]);
    if let Some(node) = ctx.state.raft.get() {
        node.publish_to_peers(&channel, &payload);
    }
    // As in Redis Cluster, the count is of this node's receivers.
    Ok(Reply::Integer(ctx.state.hub.publish(&channel, &payload) as i64).into())
}

/// `PUBSUB <subcommand>`.
pub fn pubsub(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    dispatch_sub(ctx, &table::PUBSUB, args)
}

/// `PUBSUB CHANNELS [pattern]`.
pub fn pubsub_channels(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    if args.len() > 3 {
        return Err(CommandError::WrongArity("pubsub|channels".into()));
    }
    let channels = ctx.state.hub.channels(args.get(2).map(|p| &p[..]));
    Ok(Reply::Array(channels.into_iter().map(Reply::Bulk).collect()).into())
}

/// `PUBSUB NUMSUB [channel ...]`: channel, count, channel, count, ...
pub fn pubsub_numsub(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let mut out = Vec::new();
    for ch in &args[2..] {
        out.push(Reply::Bulk(ch.clone()));
        out.push(Reply::Integer(ctx.state.hub.numsub(ch) as i64));
    }
    Ok(Reply::Array(out).into())
}

/// `PUBSUB NUMPAT`.
pub fn pubsub_numpat(ctx: &mut Ctx<'_>, _: &[Bytes]) -> Result<Action, CommandError> {
    Ok(Reply::Integer(ctx.state.hub.numpat() as i64).into())
}

/// `PUBSUB HELP`.
pub fn pubsub_help(_: &mut Ctx<'_>, _: &[Bytes]) -> Result<Action, CommandError> {
    Ok(super::connection::help_reply("PUBSUB", &table::PUBSUB))
}

/// The RESP2 subscribed-state refusal, worded as Redis.
pub fn subscribed_refusal(name: &str) -> CommandError {
    CommandError::err(format!(
        "Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
    ))
}
