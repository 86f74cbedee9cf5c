//! `RAFT.INFO`: the node's raft state as INFO-style `field:value` lines.

use std::fmt::Write;

use openraft::{RaftMetrics, ServerState};

use super::liveness::Liveness;
use super::node::NodeSettings;
use super::types::{Member, NodeId};
use crate::metrics::{get, ClusterStats};

fn role(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Learner => "learner",
        ServerState::Candidate => "candidate",
        ServerState::Shutdown => "shutdown",
    }
}

/// The commit index a leader can vouch for: the highest index a majority of
/// voters hold.
fn leader_commit(m: &RaftMetrics<NodeId, Member>) -> Option<u64> {
    let replication = m.replication.as_ref()?;
    let mut matched: Vec<u64> = m
        .membership_config
        .membership()
        .voter_ids()
        .map(|id| {
            if id == m.id {
                m.last_log_index.unwrap_or(0)
            } else {
                replication
                    .get(&id)
                    .and_then(|l| l.map(|l| l.index))
                    .unwrap_or(0)
            }
        })
        .collect();
    matched.sort_unstable_by(|a, b| b.cmp(a));
    matched.get(matched.len() / 2).copied()
}

fn ms(d: Option<std::time::Duration>) -> String {
    d.map_or_else(|| "-1".to_string(), |d| d.as_millis().to_string())
}

/// Renders the `RAFT.INFO` text.
pub fn render(
    m: &RaftMetrics<NodeId, Member>,
    liveness: &Liveness,
    s: &NodeSettings,
    stats: &ClusterStats,
) -> String {
    let membership = m.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let is_member = membership.get_node(&m.id).is_some();
    let role = match m.state {
        ServerState::Learner if !is_member => "none",
        ServerState::Follower if !voters.contains(&m.id) => "learner",
        other => role(other),
    };
    let applied = m.last_applied.map_or(0, |l| l.index);
    let leader_addr = m
        .current_leader
        .and_then(|l| membership.get_node(&l))
        .map_or("", |n| n.client_addr.as_str());
    let commit = if m.state == ServerState::Leader {
        leader_commit(m).unwrap_or(applied)
    } else {
        liveness.leader_commit().max(applied)
    };
    let stale = liveness.stale(m);
    let mut out = String::with_capacity(1024);
    let _ = write!(
        out,
        "# Raft\r\nnode_id:{}\r\nrole:{role}\r\nterm:{}\r\nleader_id:{}\r\nleader_addr:{leader_addr}\r\n\
         client_addr:{}\r\ncluster_addr:{}\r\ncommit_index:{commit}\r\napplied_index:{applied}\r\n\
         last_log_index:{}\r\nsnapshot_index:{}\r\nstale:{}\r\nstale_reason:{}\r\n\
         last_leader_contact_ms:{}\r\nquorum_ack_ms:{}\r\nheartbeat_ms:{}\r\nelection_timeout_ms:{}\r\n\
         stale_after_ms:{}\r\n",
        m.id,
        m.current_term,
        m.current_leader.map_or_else(|| "-1".to_string(), |l| l.to_string()),
        s.client_addr,
        s.cluster_addr,
        m.last_log_index.unwrap_or(0),
        m.snapshot.map_or(0, |l| l.index),
        u8::from(stale.is_some()),
        stale.unwrap_or_default(),
        ms(liveness.since_leader_contact()),
        if m.state == ServerState::Leader {
            ms(liveness.since_quorum_ack())
        } else {
            "-1".into()
        },
        liveness.timings.heartbeat.as_millis(),
        liveness.timings.election_timeout.as_millis(),
        liveness.timings.stale_after.as_millis(),
    );
    let _ = write!(
        out,
        "\r\n# Stats\r\nwrites_forwarded:{}\r\nwrites_refused:{}\r\nwrites_unknown:{}\r\nbus_peers_refused:{}\r\npeer_messages_dropped:{}\r\n",
        get(&stats.writes_forwarded),
        get(&stats.writes_refused),
        get(&stats.writes_unknown),
        get(&stats.bus_peers_refused),
        get(&stats.peer_messages_dropped),
    );
    let nodes: Vec<(&NodeId, &Member)> = membership.nodes().collect();
    let _ = write!(
        out,
        "\r\n# Members\r\nmembers:{}\r\nvoters:{}\r\nlearners:{}\r\n",
        nodes.len(),
        voters.len(),
        nodes.len() - voters.len()
    );
    let last = m.last_log_index.unwrap_or(0);
    for (id, node) in nodes {
        let kind = if voters.contains(id) {
            "voter"
        } else {
            "learner"
        };
        let (matched, lag) = if *id == m.id {
            (last.to_string(), "0".to_string())
        } else {
            match m.replication.as_ref().map(|r| r.get(id).copied().flatten()) {
                Some(Some(l)) => (
                    l.index.to_string(),
                    last.saturating_sub(l.index).to_string(),
                ),
                Some(None) => ("0".into(), last.to_string()),
                None => ("-1".into(), "-1".into()),
            }
        };
        let _ = write!(
            out,
            "member{id}:id={id},role={kind},leader={},client_addr={},cluster_addr={},match_index={matched},lag={lag}\r\n",
            u8::from(m.current_leader == Some(*id)),
            node.client_addr,
            node.cluster_addr,
        );
    }
    out
}

/// The raft figures `/readyz` and `/metrics` read (the same ones `RAFT.INFO` renders).
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// Current term.
    pub term: u64,
    /// The known leader, if any.
    pub leader: Option<NodeId>,
    /// Whether this node is the leader.
    pub is_leader: bool,
    /// The commit index this node knows of (a leader: what it has applied).
    pub commit: u64,
    /// The last applied index.
    pub applied: u64,
    /// The last log index.
    pub last_log: u64,
    /// Why this node's answers may be out of date, if they may be.
    pub stale: Option<String>,
    /// Entries each other member lags behind this leader's log (empty on followers).
    pub lag: Vec<(NodeId, u64)>,
}

/// Reads [`Status`] from openraft's metrics and the liveness clock.
pub fn status(m: &RaftMetrics<NodeId, Member>, liveness: &Liveness) -> Status {
    let applied = m.last_applied.map_or(0, |l| l.index);
    let is_leader = m.state == ServerState::Leader;
    let last_log = m.last_log_index.unwrap_or(0);
    let lag = m
        .replication
        .as_ref()
        .map(|r| {
            r.iter()
                .filter(|(id, _)| **id != m.id)
                .map(|(id, l)| (*id, last_log.saturating_sub(l.map_or(0, |l| l.index))))
                .collect()
        })
        .unwrap_or_default();
    Status {
        term: m.current_term,
        leader: m.current_leader,
        is_leader,
        commit: if is_leader {
            applied
        } else {
            liveness.leader_commit()
        },
        applied,
        last_log,
        stale: liveness.stale(m),
        lag,
    }
}
