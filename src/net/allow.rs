//! The connection allow-list: CIDR rules parsed at start-up, matched against each peer
//! address before the server reads or writes a byte. IPv4-mapped IPv6 peers (what a dual-stack
//! socket reports for IPv4 clients) match IPv4 rules. Also decides whether the bind address
//! deserves an exposure warning. Pure code: never touches sockets.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AllowError {
    #[error("{0:?} is not an IP address or CIDR (examples: 192.168.1.0/24, 10.0.0.7, fd00::/8)")]
    BadAddress(String),
    #[error("{rule:?}: prefix length must be 0..={max}")]
    BadPrefix { rule: String, max: u8 },
}

/// One rule: an address and how many leading bits must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// True when `ip` lies inside this network.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                same_prefix(u32::from(net).into(), u32::from(ip).into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                same_prefix(u128::from(net), u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

/// Whether the top `prefix` bits of two `width`-bit numbers agree.
fn same_prefix(a: u128, b: u128, width: u32, prefix: u8) -> bool {
    let prefix = u32::from(prefix).min(width);
    if prefix == 0 {
        return true;
    }
    let shift = width - prefix;
    (a >> shift) == (b >> shift)
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is the IPv4 client it stands for.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

impl FromStr for Cidr {
    type Err = AllowError;

    /// `a.b.c.d/n`, `v6::addr/n`, or a bare address (one host). A mapped IPv6 network
    /// (`::ffff:10.0.0.0/104`) becomes the IPv4 network it denotes.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rule = s.trim();
        let bad = || AllowError::BadAddress(rule.to_string());
        let (addr_text, prefix_text) = match rule.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (rule, None),
        };
        let addr: IpAddr = addr_text.trim().parse().map_err(|_| bad())?;
        let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) => {
                let p = p.trim();
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                match p.parse::<u8>() {
                    Ok(n) if n <= max => n,
                    _ => {
                        return Err(AllowError::BadPrefix {
                            rule: rule.to_string(),
                            max,
                        })
                    }
                }
            }
        };
        if let IpAddr::V6(v6) = addr {
            if let (Some(v4), true) = (v6.to_ipv4_mapped(), prefix >= 96) {
                return Ok(Cidr {
                    addr: IpAddr::V4(v4),
                    prefix: prefix - 96,
                });
            }
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Who may connect. Empty means everyone who can reach the bind address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AllowList {
    rules: Vec<Cidr>,
}

impl AllowList {
    /// Parses every rule; the first bad one is the error.
    pub(crate) fn parse<S: AsRef<str>>(rules: &[S]) -> Result<AllowList, AllowError> {
        let rules = rules
            .iter()
            .map(|r| r.as_ref().parse())
            .collect::<Result<Vec<Cidr>, _>>()?;
        Ok(AllowList { rules })
    }

    /// True when no rule is configured (every peer is let in).
    pub(crate) fn is_open(&self) -> bool {
        self.rules.is_empty()
    }

    pub(crate) fn permits(&self, peer: IpAddr) -> bool {
        self.is_open() || self.rules.iter().any(|r| r.contains(peer))
    }

    pub(crate) fn rules(&self) -> &[Cidr] {
        &self.rules
    }
}

/// The warning to log for a bind address, if any: a non-loopback address with no allow-list
/// serves anyone who can route to it.
pub(crate) fn exposure_warning(bind: IpAddr, allow: &AllowList) -> Option<String> {
    if canonical(bind).is_loopback() || !allow.is_open() {
        return None;
    }
    let what = if bind.is_unspecified() {
        "every network interface".to_string()
    } else {
        bind.to_string()
    };
    Some(format!(
        "listening on {what} with no allow-list: anyone who can reach this port can use the \
         server; set --allow CIDR,... (and --token, --tls-cert/--tls-key), or bind 127.0.0.1"
    ))
}

/// The warning to log when a token is sent in clear text over the network: a non-loopback
/// bind with a token but without TLS lets anyone on the path read the token and the images.
pub(crate) fn cleartext_warning(bind: IpAddr, tls: bool, token: bool) -> Option<String> {
    if canonical(bind).is_loopback() || tls || !token {
        return None;
    }
    Some(
        "the token and all traffic cross the network in clear text; add --tls-cert and \
         --tls-key"
            .to_string(),
    )
}

/// Loopback for both families, mapped addresses included.
pub(crate) fn is_loopback(ip: IpAddr) -> bool {
    canonical(ip).is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_networks_match_by_prefix() {
        let l = AllowList::parse(&["192.168.1.0/24", "10.0.0.7"]).unwrap();
        assert!(l.permits(ip("192.168.1.1")));
        assert!(l.permits(ip("192.168.1.255")));
        assert!(!l.permits(ip("192.168.2.1")));
        assert!(l.permits(ip("10.0.0.7")));
        assert!(!l.permits(ip("10.0.0.8")));
        assert!(!l.permits(ip("127.0.0.1")));
    }

    #[test]
    fn mapped_ipv6_peers_match_ipv4_rules() {
        let l = AllowList::parse(&["192.168.1.0/24"]).unwrap();
        assert!(l.permits(ip("::ffff:192.168.1.20")));
        assert!(!l.permits(ip("::ffff:192.168.9.20")));
        // A rule written in mapped form is the IPv4 network it denotes.
        let m = AllowList::parse(&["::ffff:10.0.0.0/104"]).unwrap();
        assert!(m.permits(ip("10.1.2.3")));
        assert!(m.permits(ip("::ffff:10.200.0.1")));
        assert!(!m.permits(ip("11.0.0.1")));
    }

    #[test]
    fn ipv6_networks_and_families_stay_apart() {
        let l = AllowList::parse(&["fd00::/8", "::1"]).unwrap();
        assert!(l.permits(ip("fd12:3456::1")));
        assert!(!l.permits(ip("fe80::1")));
        assert!(l.permits(ip("::1")));
        assert!(!l.permits(ip("127.0.0.1")));
        let v4 = AllowList::parse(&["0.0.0.0/0"]).unwrap();
        assert!(v4.permits(ip("8.8.8.8")));
        assert!(!v4.permits(ip("2001:db8::1")));
    }

    #[test]
    fn empty_list_is_open_and_zero_prefix_matches_all() {
        assert!(AllowList::default().permits(ip("203.0.113.9")));
        let all6 = AllowList::parse(&["::/0"]).unwrap();
        assert!(all6.permits(ip("2001:db8::1")));
    }

    #[test]
    fn bad_rules_are_refused_with_the_rule_named() {
        for bad in [
            "",
            "192.168.1.0/33",
            "192.168.1/24",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "fd00::/129",
            "example.com",
            "1.2.3.4/8/8",
        ] {
            let e = AllowList::parse(&[bad]).unwrap_err().to_string();
            assert!(e.contains(bad.trim()), "{bad}: {e}");
        }
        assert_eq!(
            " 10.0.0.0/8 ".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
    }

    #[test]
    fn cleartext_warning_only_for_a_token_without_tls_beyond_loopback() {
        assert!(cleartext_warning(ip("0.0.0.0"), false, true).is_some());
        assert!(cleartext_warning(ip("0.0.0.0"), true, true).is_none());
        assert!(cleartext_warning(ip("0.0.0.0"), false, false).is_none());
        assert!(cleartext_warning(ip("127.0.0.1"), false, true).is_none());
        assert!(cleartext_warning(ip("::ffff:127.0.0.1"), false, true).is_none());
    }

    #[test]
    fn exposure_warning_only_for_open_non_loopback_binds() {
        let open = AllowList::default();
        let lan = AllowList::parse(&["192.168.0.0/16"]).unwrap();
        assert!(exposure_warning(ip("127.0.0.1"), &open).is_none());
        assert!(exposure_warning(ip("::1"), &open).is_none());
        assert!(exposure_warning(ip("0.0.0.0"), &lan).is_none());
        let w = exposure_warning(ip("0.0.0.0"), &open).unwrap();
        assert!(
            w.contains("every network interface") && w.contains("--allow"),
            "{w}"
        );
        assert!(exposure_warning(ip("192.168.1.5"), &open)
            .unwrap()
            .contains("192.168.1.5"));
        assert!(exposure_warning(ip("::"), &open).is_some());
    }
}
