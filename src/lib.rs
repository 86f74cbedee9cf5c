//! flagstaff: a feature-flag and remote-config daemon that speaks the Redis
//! protocol. See DESIGN.md for how the parts fit; `flag` is the pure domain
//! library, everything else serves it over RESP.

#![warn(missing_docs)]

pub mod analytics;
pub mod auth;
pub mod backup;
#[cfg(feature = "chaos")]
pub mod chaos;
pub mod clock;
pub mod command;
pub mod config;
pub mod flag;
#[doc(hidden)]
pub mod fuzzing;
pub mod glob;
pub mod http;
pub mod metrics;
#[cfg(feature = "planted-bugs")]
pub mod planted;
#[cfg(feature = "power-cut")]
pub mod power_cut;
pub mod protocol;
pub mod pubsub;
pub mod raft;
pub mod server;
pub mod store;
