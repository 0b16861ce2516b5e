//! Network access control: who may connect (CIDR allow-list, decided before any byte is read),
//! the bind-exposure warning, TLS set-up from PEM files, and the transport (plain TCP or TLS)
//! a session talks over, and who may ask for the one disk write (`convert`). Never reads or writes protocol messages and never logs secrets.

pub mod allow;
pub mod convert_gate;
pub mod secret;
pub mod tls;
pub mod transport;
