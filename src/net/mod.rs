//! Network access control: who may connect (CIDR allow-list, decided before any byte is read),
//! the bind-exposure warning, TLS set-up from PEM files, and the transport (plain TCP or TLS)
//! a session talks over, and who may ask for the one disk write (`convert`). Never reads or
//! writes protocol messages and never logs secrets.

pub(crate) mod allow;
pub(crate) mod convert_gate;
/// The shared token type lives in `runai-wire` too (the relay sends it).
pub use runai_wire::secret;
/// TLS set-up lives in the model-free `runai-wire` crate, shared with `runai relay`.
pub use runai_wire::tls;
pub(crate) mod transport;
