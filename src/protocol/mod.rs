//! The RunAI wire protocol as pure code: packet framing, message assembly, the Python-style
//! JSON writer, request parsing, lenient option reading, validation and the reply builders.
//! Never imports actix or candle and never does I/O: everything here is unit-testable.

pub mod assembler;
/// Packet framing lives in the model-free `runai-wire` crate, shared with `runai relay`.
pub use runai_wire::framing as codec;
pub(crate) mod error;
pub(crate) mod json;
pub(crate) mod lenient;
pub mod prompt_fields;
pub mod request;
pub mod responses;
pub(crate) mod sampling;
pub mod validate;

/// Packet size of the Krita plugin and the protocol's default.
pub const DEFAULT_PACKET_SIZE: usize = 1024;

/// The version this server reports in `versions` and `pong`.
pub(crate) const RUNAI_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Serializes a reply in Python style and frames it: the bytes a session writes, packet by
/// packet.
pub fn frame_json(value: &serde_json::Value, packet_size: usize) -> Vec<u8> {
    codec::frame_message(json::to_python_json(value).as_bytes(), packet_size)
}
