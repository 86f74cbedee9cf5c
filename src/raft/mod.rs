//! Replication and durability: openraft with our write-ahead log for the raft
//! log and vote, and the store's sled-backed state machine. A single node is
//! a one-member cluster, so there is one write path and one recovery path.

pub mod log_store;
pub mod network;
pub mod node;
pub mod persister;
pub mod state_machine;
pub mod types;
pub mod wal;

pub use node::{NodeSettings, RaftNode, StartError};
pub use types::{Member, NodeId, TypeConfig};
pub use wal::FsyncPolicy;
