//! RESP2/RESP3 framing: an incremental request decoder (multibulk and inline
//! commands) and the one reply encoder every command's reply goes through.

pub mod decoder;
pub mod reply;

pub use decoder::{DecodeError, DecoderLimits, RequestDecoder};
pub use reply::{Protocol, Reply};
