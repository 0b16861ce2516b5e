//! Network access control: who may connect (CIDR allow-list, decided before any byte is read),
//! the bind-exposure warning, TLS set-up from PEM files, and the transport (plain TCP or TLS)
//! a session talks over. Never reads or writes protocol messages and never logs secrets.

pub mod allow;
pub mod secret;
pub mod tls;
pub mod transport;
