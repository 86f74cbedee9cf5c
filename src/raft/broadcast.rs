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
use super::peer::{PeerClient, Secret};
use super::types::{NodeId, TypeConfig};
use crate::metrics::{add, ClusterStats};

/// Messages queued for one peer before new ones are dropped.
const PEER_QUEUE: usize = 10_000;
/// Messages sent in one bus request.
const BATCH: usize = 512;

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

async fn send_to_peer(mut client: PeerClient, mut rx: mpsc::Receiver<(Bytes, Bytes)>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let mut parts: Vec<&[u8]> = Vec::with_capacity(1 + batch.len() * 2);
        parts.push(PUBLISH);
        for (channel, message) in &batch {
            parts.push(channel);
            parts.push(message);
        }
        if let Err(e) = client.call(&parts, Duration::from_secs(2)).await {
            tracing::debug!(peer = client.addr(), error = %e, "pub/sub messages to peer lost");
        }
        batch.clear();
    }
}
