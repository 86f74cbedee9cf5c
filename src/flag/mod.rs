//! The flag domain as a pure library: definitions in, evaluations out.
//!
//! Nothing here touches the network, the disk or an async runtime, so the
//! benches and fuzzers use it directly. A definition is parsed and checked
//! ([`parse_flag`], [`validate`]), compiled once into an evaluation form
//! ([`compile`]), and then evaluated many times ([`eval`]) against a
//! [`Context`] scanned from the request's JSON without building a tree.

pub mod allocation;
pub mod bucket;
pub mod compile;
pub mod context;
pub mod counters;
pub mod eval;
pub mod experiment;
pub mod graph;
pub mod key;
pub mod limits;
pub mod model;
pub mod openfeature;
pub mod validate;

pub use allocation::{Allocation, Allocations};
pub use compile::{compile_flag, compile_segment, CompiledFlag, CompiledSegment};
pub use context::{Context, ContextError};
pub use counters::EvalCounters;
pub use eval::{evaluate, Evaluation, FlagSource, Reason};
pub use model::{FlagDef, SegmentDef};
pub use openfeature::{openfeature_reason, split_by_targeting_key};
pub use validate::{parse_flag, parse_segment, Invalid};

#[cfg(test)]
mod tests;
