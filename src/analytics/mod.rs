//! Analytics beside evaluation: per-flag evaluation insight (counters rolled
//! up and kept node-locally, never through raft) and the statistics used to
//! read experiments. Nothing here sits on the evaluation path: the counters
//! live in the compiled flag (`flag::EvalCounters`) and are read from here.

pub mod events;
pub mod insight;
pub mod lab;
pub mod results;
pub mod stats;

pub use insight::{FlagStats, Insight, StaleFlag, Tally};
