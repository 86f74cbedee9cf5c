//! Per-connection state that commands read and change.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc::UnboundedReceiver;

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
    /// Bytes of every queued argument.
    pub queued_bytes: usize,
    /// A queue-time error happened: `EXEC` must answer `EXECABORT`.
    pub aborted: bool,
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
}

impl Session {
    /// A new session; `authenticated` is true when no password is required.
    pub fn new(client: Arc<ClientHandle>, authenticated: bool) -> Self {
        Session {
            client,
            proto: Protocol::Resp2,
            authenticated,
            user: "default".to_string(),
            multi: None,
            watched: Vec::new(),
            channels: HashSet::new(),
            patterns: HashSet::new(),
            mail: None,
        }
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
        self.multi = None;
        self.watched.clear();
        self.client.set_name(None);
        self.channels.clear();
        self.patterns.clear();
    }
}
