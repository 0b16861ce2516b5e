//! runai's wire layer, free of model code so that it builds small: packet framing, the
//! aligned packet writer that keeps the Krita plugin's `recv(1024)` reader in step, TLS
//! set-up, the shared token type, and the relay a painter runs on their own machine
//! (`runai relay`, or the standalone `runai-relay` binary). The `runai` server uses all of
//! it; nothing here knows actix, candle or the request format.

#![warn(clippy::undocumented_unsafe_blocks)]

pub mod aligned;
pub mod framing;
pub mod relay;
pub mod secret;
pub mod tls;
