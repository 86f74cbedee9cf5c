//! Replication and durability: openraft with our write-ahead log for the raft
//! log and vote, and the store's sled-backed state machine. A single node is
//! a one-member cluster, so there is one write path and one recovery path.

pub mod broadcast;
pub mod bus;
pub mod frame;
pub mod info;
pub mod liveness;
pub mod log_store;
pub mod membership;
pub mod network;
pub mod node;
pub mod peer;
pub mod persister;
mod recovery;
pub mod state_machine;
pub mod types;
pub mod wal;
pub mod writes;

pub use liveness::Timings;
pub use membership::{MemberChange, MemberError};
pub use node::{NodeSettings, RaftNode, StartError};
pub use peer::{BusTls, Secret};
pub use types::{Member, NodeId, TypeConfig};
pub use wal::FsyncPolicy;
