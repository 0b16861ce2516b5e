//! Typed actor messages, grouped by the actor that handles them. Wire types never double as
//! actor messages: sessions translate between the two. Never does I/O.

pub(crate) mod listener;
pub(crate) mod registry;
pub(crate) mod session;
pub(crate) mod shutdown;
pub(crate) mod worker;

/// Identifies one client connection for its whole life.
pub(crate) type SessionId = u64;
