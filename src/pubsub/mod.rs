//! Redis pub/sub: channels, glob patterns, and a bounded mailbox per
//! subscriber. Publishing never blocks: a subscriber whose undelivered
//! bytes pass the hard limit, or stay above the soft limit for the soft
//! period, is disconnected and counted — never silently skipped (Redis's
//! `client-output-buffer-limit pubsub` semantics).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A message delivered to a subscriber.
#[derive(Debug, Clone)]
pub struct Message {
    /// The pattern that matched, for `pmessage`.
    pub pattern: Option<Bytes>,
    /// The channel published to.
    pub channel: Bytes,
    /// The payload.
    pub payload: Bytes,
}

impl Message {
    /// Bytes this message holds in a mailbox.
    pub fn size(&self) -> usize {
        self.channel.len() + self.payload.len() + self.pattern.as_ref().map_or(0, |p| p.len()) + 32
    }
}

/// Output-buffer limits for subscribers.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Disconnect at once above this many undelivered bytes (0: no limit).
    pub hard: usize,
    /// Disconnect when above this for `soft_for` (0: no limit).
    pub soft: usize,
    /// How long a subscriber may stay above the soft limit.
    pub soft_for: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            hard: 32 * 1024 * 1024,
            soft: 8 * 1024 * 1024,
            soft_for: Duration::from_secs(60),
        }
    }
}

/// One subscriber's mailbox, shared by the hub and its connection.
#[derive(Debug)]
pub struct Mailbox {
    tx: mpsc::UnboundedSender<Message>,
    /// Undelivered bytes.
    pending: AtomicUsize,
    /// Undelivered messages.
    pending_messages: AtomicUsize,
    /// When `pending` first went above the soft limit (0: it is not).
    over_soft_since_ms: AtomicU64,
    /// Cancelled when the subscriber is cut off.
    kill: CancellationToken,
    started: Instant,
}

impl Mailbox {
    /// A mailbox and its receiving end; `kill` closes the connection.
    pub fn new(kill: CancellationToken) -> (Arc<Mailbox>, mpsc::UnboundedReceiver<Message>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mb = Mailbox {
            tx,
            pending: AtomicUsize::new(0),
            pending_messages: AtomicUsize::new(0),
            over_soft_since_ms: AtomicU64::new(0),
            kill,
            started: Instant::now(),
        };
        (Arc::new(mb), rx)
    }

    /// Marks `messages` messages of `bytes` in all as delivered (written to the socket).
    pub fn delivered(&self, bytes: usize, messages: usize) {
        self.pending.fetch_sub(
            bytes.min(self.pending.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        self.pending_messages.fetch_sub(
            messages.min(self.pending_messages.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
    }

    /// Undelivered messages.
    pub fn pending_messages(&self) -> usize {
        self.pending_messages.load(Ordering::Relaxed)
    }

    /// Undelivered bytes.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Queues a message unless the limits say to cut the subscriber off.
    /// Returns false when the subscriber was (or already is) cut off.
    fn offer(&self, msg: Message, limits: &Limits) -> bool {
        if self.kill.is_cancelled() {
            return false;
        }
        let size = msg.size();
        let pending = self.pending.fetch_add(size, Ordering::Relaxed) + size;
        if limits.hard > 0 && pending > limits.hard {
            self.kill.cancel();
            return false;
        }
        if limits.soft > 0 && pending > limits.soft {
            let now = self.started.elapsed().as_millis() as u64 + 1;
            let since = match self.over_soft_since_ms.compare_exchange(
                0,
                now,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => now,
                Err(t) => t,
            };
            if now.saturating_sub(since) > limits.soft_for.as_millis() as u64 {
                self.kill.cancel();
                return false;
            }
        } else {
            self.over_soft_since_ms.store(0, Ordering::Relaxed);
        }
        self.pending_messages.fetch_add(1, Ordering::Relaxed);
        self.tx.send(msg).is_ok()
    }
}

#[derive(Default)]
struct Registry {
    channels: HashMap<Bytes, BTreeMap<u64, Arc<Mailbox>>>,
    patterns: BTreeMap<Bytes, BTreeMap<u64, Arc<Mailbox>>>,
}

/// All subscriptions of the node.
#[derive(Default)]
pub struct Hub {
    registry: Mutex<Registry>,
    limits: Mutex<Limits>,
    /// Subscribers cut off for exceeding their output buffer.
    pub disconnected: AtomicU64,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hub")
    }
}

impl Hub {
    /// The channels and patterns client `id` is subscribed to.
    pub fn subscriptions_of(&self, id: u64) -> (Vec<Bytes>, Vec<Bytes>) {
        let reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let channels = reg
            .channels
            .iter()
            .filter(|(_, subs)| subs.contains_key(&id))
            .map(|(c, _)| c.clone())
            .collect();
        let patterns = reg
            .patterns
            .iter()
            .filter(|(_, subs)| subs.contains_key(&id))
            .map(|(p, _)| p.clone())
            .collect();
        (channels, patterns)
    }

    /// A hub with these output-buffer limits.
    pub fn new(limits: Limits) -> Self {
        Hub {
            limits: Mutex::new(limits),
            ..Hub::default()
        }
    }

    fn reg(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribes client `id` to `channel`; returns whether it was new.
    pub fn subscribe(&self, id: u64, mailbox: &Arc<Mailbox>, channel: &Bytes) -> bool {
        self.reg()
            .channels
            .entry(channel.clone())
            .or_default()
            .insert(id, mailbox.clone())
            .is_none()
    }

    /// Unsubscribes client `id` from `channel`; returns whether it was subscribed.
    pub fn unsubscribe(&self, id: u64, channel: &Bytes) -> bool {
        let mut reg = self.reg();
        let Some(subs) = reg.channels.get_mut(channel) else {
            return false;
        };
        let was = subs.remove(&id).is_some();
        if subs.is_empty() {
            reg.channels.remove(channel);
        }
        was
    }

    /// Subscribes client `id` to `pattern`; returns whether it was new.
    pub fn psubscribe(&self, id: u64, mailbox: &Arc<Mailbox>, pattern: &Bytes) -> bool {
        self.reg()
            .patterns
            .entry(pattern.clone())
            .or_default()
            .insert(id, mailbox.clone())
            .is_none()
    }

    /// Unsubscribes client `id` from `pattern`.
    pub fn punsubscribe(&self, id: u64, pattern: &Bytes) -> bool {
        let mut reg = self.reg();
        let Some(subs) = reg.patterns.get_mut(pattern) else {
            return false;
        };
        let was = subs.remove(&id).is_some();
        if subs.is_empty() {
            reg.patterns.remove(pattern);
        }
        was
    }

    /// Delivers `payload` on `channel` to every subscriber and matching
    /// pattern subscriber; returns how many received it.
    pub fn publish(&self, channel: &Bytes, payload: &Bytes) -> usize {
        let limits = *self.limits.lock().unwrap_or_else(|p| p.into_inner());
        let mut targets: Vec<(Arc<Mailbox>, Option<Bytes>)> = Vec::new();
        {
            let reg = self.reg();
            if let Some(subs) = reg.channels.get(channel) {
                targets.extend(subs.values().map(|m| (m.clone(), None)));
            }
            for (pattern, subs) in &reg.patterns {
                if crate::glob::matches(pattern, channel, false) {
                    targets.extend(subs.values().map(|m| (m.clone(), Some(pattern.clone()))));
                }
            }
        }
        let mut delivered = 0;
        for (mb, pattern) in targets {
            let msg = Message {
                pattern,
                channel: channel.clone(),
                payload: payload.clone(),
            };
            if mb.offer(msg, &limits) {
                delivered += 1;
            } else if mb.kill.is_cancelled() {
                // Counted once: the first refusal cancels the token.
                if mb.over_soft_since_ms.swap(u64::MAX, Ordering::Relaxed) != u64::MAX {
                    self.disconnected.fetch_add(1, Ordering::Relaxed);
                    tracing::info!("pub/sub subscriber disconnected: output buffer over its limit");
                }
            }
        }
        delivered
    }

    /// Channels with at least one subscriber, optionally matching `pattern`.
    pub fn channels(&self, pattern: Option<&[u8]>) -> Vec<Bytes> {
        let mut out: Vec<Bytes> = self
            .reg()
            .channels
            .keys()
            .filter(|c| pattern.is_none_or(|p| crate::glob::matches(p, c, false)))
            .cloned()
            .collect();
        out.sort();
        out
    }

    /// Subscribers of `channel` (patterns not counted, as Redis).
    pub fn numsub(&self, channel: &[u8]) -> usize {
        self.reg().channels.get(channel).map_or(0, |s| s.len())
    }

    /// Distinct patterns subscribed to.
    pub fn numpat(&self) -> usize {
        self.reg().patterns.len()
    }

    /// Removes client `id` from every channel and pattern in these sets.
    pub fn forget(&self, id: u64, channels: &HashSet<Bytes>, patterns: &HashSet<Bytes>) {
        for c in channels {
            self.unsubscribe(id, c);
        }
        for p in patterns {
            self.punsubscribe(id, p);
        }
    }

    /// Clients subscribed to anything.
    pub fn subscriber_count(&self) -> usize {
        let reg = self.reg();
        let mut ids: HashSet<u64> = HashSet::new();
        for subs in reg.channels.values().chain(reg.patterns.values()) {
            ids.extend(subs.keys());
        }
        ids.len()
    }
}
