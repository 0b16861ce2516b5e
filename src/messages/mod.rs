//! Typed actor messages, grouped by the actor that handles them. Wire types never double as
//! actor messages: sessions translate between the two. Never does I/O.

pub mod listener;
pub mod registry;
pub mod session;
pub mod shutdown;
pub mod worker;

/// Identifies one client connection for its whole life.
pub type SessionId = u64;
