//! Carries messages a client PUBLISHes on this node to every other member,
//! so subscribers anywhere receive them. Like Redis Cluster's pub/sub this is
//! at most once: a peer that is down or far behind misses messages (a
//! bounded queue per peer) rather than slowing the publisher.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use openraft::Raft;
use tokio::sync::mpsc;

use super::bus::PUBLISH;
use super::frame::{message_bytes, MAX_MESSAGE_BYTES, MAX_PARTS, MAX_PART_BYTES};
use super::peer::{CallError, PeerClient, Secret};
use super::types::{NodeId, TypeConfig};
use crate::metrics::{add, ClusterStats};

/// Messages queued for one peer before new ones are dropped.
const PEER_QUEUE: usize = 10_000;
/// Messages sent in one bus request: as many channel/message pairs as fit
/// beside the verb in one bus message.
const BATCH: usize = (MAX_PARTS - 1) / 2;

/// A peer's bus address and the queue of messages for it.
type PeerQueue = (String, mpsc::Sender<(Bytes, Bytes)>);

/// The per-peer senders.
pub struct Broadcaster {
    raft: Raft<TypeConfig>,
    secret: Secret,
    peers: Mutex<HashMap<NodeId, PeerQueue>>,
    stats: Arc<ClusterStats>,
}

impl std::fmt::Debug for Broadcaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Broadcaster")
    }
}

impl Broadcaster {
    /// A broadcaster for the members `raft` knows.
    pub fn new(raft: Raft<TypeConfig>, secret: Secret, stats: Arc<ClusterStats>) -> Self {
        Broadcaster {
            raft,
            secret,
            peers: Mutex::new(HashMap::new()),
            stats,
        }
    }

    /// Queues `message` on `channel` for every other member.
    pub fn publish(&self, channel: &Bytes, message: &Bytes) {
        let targets: Vec<(NodeId, String)> = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            m.membership_config
                .membership()
                .nodes()
                .filter(|(id, node)| **id != m.id && !node.cluster_addr.is_empty())
                .map(|(id, node)| (*id, node.cluster_addr.clone()))
                .collect()
        };
        let Ok(mut peers) = self.peers.lock() else {
            return;
        };
        for (id, addr) in targets {
            let stale = peers
                .get(&id)
                .is_none_or(|(a, tx)| *a != addr || tx.is_closed());
            if stale {
                let (tx, rx) = mpsc::channel(PEER_QUEUE);
                tokio::spawn(send_to_peer(
                    PeerClient::new(&addr, self.secret.clone()),
                    rx,
                    self.stats.clone(),
                ));
                peers.insert(id, (addr, tx));
            }
            if let Some((_, tx)) = peers.get(&id) {
                if tx.try_send((channel.clone(), message.clone())).is_err() {
                    add(&self.stats.peer_messages_dropped, 1);
                    tracing::debug!(node = id, "pub/sub queue to peer full; message dropped");
                }
            }
        }
    }
}

async fn send_to_peer(
    mut client: PeerClient,
    mut rx: mpsc::Receiver<(Bytes, Bytes)>,
    stats: Arc<ClusterStats>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let mut rest = &batch[..];
        while !rest.is_empty() {
            let (sent, parts) = next_message(rest);
            rest = &rest[sent..];
            if parts.len() == 1 {
                // One message too large for any bus message: it cannot be carried.
                add(&stats.peer_messages_dropped, sent as u64);
                tracing::warn!(
                    peer = client.addr(),
                    "pub/sub message larger than a bus message; dropped"
                );
                continue;
            }
            match client.call(&parts, Duration::from_secs(2)).await {
                Ok(_) => {}
                Err(e @ CallError::Refused(_)) => {
                    add(&stats.peer_messages_dropped, sent as u64);
                    tracing::warn!(peer = client.addr(), messages = sent, error = %e, "peer refused pub/sub messages");
                }
                Err(e) => {
                    // The peer is down or slow: at most once, as documented.
                    add(&stats.peer_messages_dropped, sent as u64);
                    tracing::debug!(peer = client.addr(), messages = sent, error = %e, "pub/sub messages to peer lost");
                }
            }
        }
        batch.clear();
    }
}

/// The longest prefix of `queued` that fits one bus message (at least one
/// message is consumed): how many it takes and the message's parts. Only the
/// verb is returned when the first message alone does not fit.
fn next_message(queued: &[(Bytes, Bytes)]) -> (usize, Vec<&[u8]>) {
    let mut parts: Vec<&[u8]> = Vec::with_capacity(1 + queued.len().min(BATCH) * 2);
    parts.push(PUBLISH);
    let mut bytes = message_bytes([PUBLISH]);
    for (i, (channel, message)) in queued.iter().enumerate() {
        let more = message_bytes([&channel[..], &message[..]]);
        let fits = parts.len() + 2 <= MAX_PARTS
            && bytes + more <= MAX_MESSAGE_BYTES
            && channel.len().max(message.len()) <= MAX_PART_BYTES;
        if !fits {
            return (i.max(1), parts);
        }
        bytes += more;
        parts.push(channel);
        parts.push(message);
    }
    (queued.len(), parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_batch_fits_one_bus_message() {
        let queued: Vec<(Bytes, Bytes)> = (0..BATCH * 3)
            .map(|i| (Bytes::from_static(b"ch"), Bytes::from(i.to_string())))
            .collect();
        let (sent, parts) = next_message(&queued);
        assert_eq!(sent, BATCH);
        assert!(parts.len() <= MAX_PARTS);
    }
}
