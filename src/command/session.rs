//! Per-connection state that commands read and change.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc::{Receiver, UnboundedReceiver};

use super::clients::ClientHandle;
use super::CommandError;
use crate::protocol::Protocol;
use crate::pubsub::{Mailbox, Message};

/// Most commands one `MULTI` block may queue. Redis bounds a transaction
/// only by client memory; a fixed cap here keeps one client from holding
/// gigabytes of queued requests (their bytes are capped separately by the
/// query-buffer limit).
pub const MAX_QUEUED_COMMANDS: usize = 100_000;

/// A `MULTI` block being queued.
#[derive(Debug, Default)]
pub struct MultiState {
    /// Queued requests, in order.
    pub queued: Vec<Vec<Bytes>>,
    /// Bytes of the queued arguments (bounded; `multi-mem` in `CLIENT LIST`).
    pub queued_bytes: usize,
    /// A queue-time error happened: `EXEC` must answer `EXECABORT`.
    pub aborted: bool,
}

/// Whether replies are sent, as `CLIENT REPLY` sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplyMode {
    /// Every command is answered.
    #[default]
    On,
    /// No command is answered until `CLIENT REPLY ON`.
    Off,
    /// `CLIENT REPLY SKIP` just ran: neither it nor the next command is answered.
    SkipNext,
    /// This command is not answered; the one after it is.
    Skip,
}

impl MultiState {
    /// Queues a request unless the block would pass [`MAX_QUEUED_COMMANDS`]
    /// or `max_bytes`; a refused request aborts the block, as any queue-time
    /// error does.
    pub fn queue(&mut self, args: &[Bytes], max_bytes: usize) -> Result<(), CommandError> {
        let bytes: usize = args.iter().map(|a| a.len()).sum();
        let why = if self.queued.len() >= MAX_QUEUED_COMMANDS {
            Some(format!(
                "MULTI queue is full: at most {MAX_QUEUED_COMMANDS} commands in a transaction"
            ))
        } else if self.queued_bytes + bytes > max_bytes {
            Some(format!(
                "MULTI queue is full: the queued commands would pass client-query-buffer-limit ({max_bytes} bytes)"
            ))
        } else {
            None
        };
        if let Some(why) = why {
            self.aborted = true;
            return Err(CommandError::err(why));
        }
        self.queued_bytes += bytes;
        self.queued.push(args.to_vec());
        Ok(())
    }
}

/// One connection's session.
#[derive(Debug)]
pub struct Session {
    /// The connection's entry in the client registry.
    pub client: Arc<ClientHandle>,
    /// The negotiated protocol.
    pub proto: Protocol,
    /// Whether the connection may run commands that need authentication.
    pub authenticated: bool,
    /// The user the connection acts as; recorded as the actor of its writes.
    pub user: String,
    /// That user's ACL entry and the users generation it was read at.
    pub acl: Option<(u64, Arc<crate::auth::User>)>,
    /// How long the reply to this login attempt waits (the AUTH backoff).
    pub reply_delay: Option<std::time::Duration>,
    /// The open `MULTI` block, if any.
    pub multi: Option<MultiState>,
    /// Keys watched with `WATCH`, with the revision at which each last changed.
    pub watched: Vec<(String, u64)>,
    /// Subscribed channels.
    pub channels: HashSet<Bytes>,
    /// Subscribed patterns.
    pub patterns: HashSet<Bytes>,
    /// The pub/sub mailbox, created at the first subscription.
    pub mail: Option<(Arc<Mailbox>, UnboundedReceiver<Message>)>,
    /// The `MONITOR` feed, once the connection asked for it.
    pub monitor: Option<Receiver<Bytes>>,
    /// `CLIENT REPLY` mode.
    pub reply_mode: ReplyMode,
    /// Full name of the command being run, or the last one (`client|list`).
    pub last_cmd: &'static str,
    /// Calls of fast commands not yet added to the server's counters
    /// (flushed at the end of each read batch).
    pub tally: crate::metrics::Tally,
}

impl Session {
    /// A new session; `authenticated` is true when no password is required.
    pub fn new(client: Arc<ClientHandle>, authenticated: bool) -> Self {
        Session {
            client,
            proto: Protocol::Resp2,
            authenticated,
            user: "default".to_string(),
            acl: None,
            reply_delay: None,
            multi: None,
            watched: Vec::new(),
            channels: HashSet::new(),
            patterns: HashSet::new(),
            mail: None,
            monitor: None,
            reply_mode: ReplyMode::On,
            last_cmd: "",
            tally: crate::metrics::Tally::default(),
        }
    }

    /// Publishes what `CLIENT LIST` shows of this session to its registry
    /// entry, and records activity. Called once per batch of requests (and by
    /// `CLIENT LIST/INFO` for the caller itself), so the hot path takes the
    /// entry's lock once per read, not per command.
    pub fn publish(&self) {
        let resp = if self.proto == Protocol::Resp3 { 3 } else { 2 };
        self.client.update(|l| {
            l.last_cmd = self.last_cmd;
            l.resp = resp;
            if l.user != self.user {
                l.user.clone_from(&self.user);
            }
            l.sub = self.channels.len();
            l.psub = self.patterns.len();
            l.multi = self.multi.as_ref().map(|m| m.queued.len());
            l.multi_mem = self.multi.as_ref().map_or(0, |m| m.queued_bytes);
            l.monitor = self.monitor.is_some();
            if l.mailbox.is_none() {
                l.mailbox = self.mail.as_ref().map(|(m, _)| m.clone());
            }
        });
        self.client.touch();
    }

    /// The connection's ACL user, re-read when users changed; `None` if the
    /// user was deleted.
    #[inline]
    pub fn acl_user(&mut self, users: &crate::auth::Users) -> Option<&Arc<crate::auth::User>> {
        let generation = users.generation();
        if self.acl.as_ref().map(|a| a.0) != Some(generation) {
            self.acl = users.get(&self.user).map(|u| (generation, u));
        }
        self.acl.as_ref().map(|a| &a.1)
    }

    /// Channels plus patterns subscribed (the count Redis reports).
    pub fn subscriptions(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }

    /// Back to the state of a new connection, as `RESET` does.
    pub fn reset(&mut self, authenticated: bool) {
        self.proto = Protocol::Resp2;
        self.authenticated = authenticated;
        self.user = "default".to_string();
        self.acl = None;
        self.multi = None;
        self.watched.clear();
        self.client.set_name(None);
        self.channels.clear();
        self.patterns.clear();
        self.monitor = None;
        self.reply_mode = ReplyMode::On;
    }
}
