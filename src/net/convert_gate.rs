//! Who may ask for `convert`, the one request that writes to the server's disk: a peer on the
//! server machine itself (loopback), or a session that authenticated with the server's token.
//! Pure decision on the peer address; never reads the network or the disk.

use std::net::IpAddr;

use super::allow::is_loopback;

/// Whether a session from `peer` may convert. `token_authenticated` is true only when the
/// server has a token and this session presented it (without a token nobody authenticates).
pub(crate) fn convert_allowed(peer: IpAddr, token_authenticated: bool) -> bool {
    token_authenticated || is_loopback(peer)
}

/// The `unauthorized` message for a refused convert, telling the client what would work.
pub(crate) fn convert_refusal(server_has_token: bool) -> &'static str {
    if server_has_token {
        "convert writes to the server's disk: authenticate with the server's token first"
    } else {
        "convert writes to the server's disk: it is allowed only from the server machine \
         itself (loopback), or from a client that authenticated with a token (--token)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_peers_may_convert_without_a_token() {
        for peer in ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"] {
            assert!(convert_allowed(ip(peer), false), "{peer}");
        }
    }

    #[test]
    fn other_peers_need_the_token() {
        for peer in [
            "192.168.1.20",
            "10.0.0.7",
            "0.0.0.0",
            "fd00::5",
            "::ffff:192.168.1.20",
        ] {
            assert!(!convert_allowed(ip(peer), false), "{peer}");
            assert!(convert_allowed(ip(peer), true), "{peer}");
        }
    }

    #[test]
    fn refusals_say_what_would_work() {
        assert!(convert_refusal(true).contains("token"));
        assert!(convert_refusal(false).contains("loopback"));
    }
}
