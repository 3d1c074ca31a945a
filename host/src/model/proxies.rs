//! Which peers may name the client in forwarding headers: `--proxy-headers` and
//! `--forwarded-allow-ips` (IPs, CIDR ranges, `unix` for peers on a unix-socket
//! listener, or `*`), parsed once. What a trusted proxy's headers mean is
//! `worker/proxy.rs`'s business.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::Invalid;

/// The proxies a worker trusts; the default trusts nobody.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    any: bool,
    /// Peers on a unix-socket listener (which have no IP address).
    unix: bool,
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// From `--proxy-headers` (`enabled`) and `--forwarded-allow-ips` (a
    /// comma-separated list of IPs, CIDR ranges, `unix`, or `*`). The list is checked
    /// even when forwarding headers are off, so a typo is caught before it matters.
    pub fn parse(enabled: bool, allow: &str) -> Result<TrustedProxies, Invalid> {
        let mut trusted = TrustedProxies::default();
        for item in allow.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "*" {
                trusted.any = true;
            } else if item == "unix" {
                trusted.unix = true;
            } else if let Ok(net) = item.parse::<IpNet>() {
                trusted.nets.push(net);
            } else if let Ok(ip) = item.parse::<IpAddr>() {
                trusted.nets.push(IpNet::from(ip));
            } else {
                return Err(Invalid(format!(
                    "--forwarded-allow-ips: {item:?} is not an IP address, a CIDR range, \
                     `unix` or *"
                )));
            }
        }
        Ok(if enabled {
            trusted
        } else {
            TrustedProxies::default()
        })
    }

    /// Whether a peer at `ip` is a trusted proxy (an IPv4-mapped IPv6 address counts
    /// as its IPv4 one).
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.any || self.nets.iter().any(|net| net.contains(&ip))
    }

    /// Whether a peer is a trusted proxy: one at `Some(ip)`, or `None` for one on a
    /// unix-socket listener.
    pub fn trusts_peer(&self, peer: Option<IpAddr>) -> bool {
        match peer {
            Some(ip) => self.trusts(ip),
            None => self.any || self.unix,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_and_typos_are_refused() {
        let t = TrustedProxies::parse(true, " 127.0.0.1, 10.0.0.0/8 ,::1").unwrap();
        assert!(t.trusts("10.200.0.1".parse().unwrap()));
        assert!(t.trusts("::ffff:127.0.0.1".parse().unwrap()));
        assert!(t.trusts("::1".parse().unwrap()));
        assert!(!t.trusts("192.0.2.1".parse().unwrap()));
        assert!(
            TrustedProxies::parse(true, "*")
                .unwrap()
                .trusts("192.0.2.1".parse().unwrap())
        );
        assert!(TrustedProxies::parse(true, "").unwrap() == TrustedProxies::default());
        assert!(!t.trusts_peer(None), "a unix peer only when listed");
        assert!(
            TrustedProxies::parse(true, "unix")
                .unwrap()
                .trusts_peer(None)
        );
        assert!(TrustedProxies::parse(true, "*").unwrap().trusts_peer(None));
        assert!(
            !TrustedProxies::parse(false, "unix")
                .unwrap()
                .trusts_peer(None)
        );
        let off = TrustedProxies::parse(false, "*").unwrap();
        assert!(!off.trusts("127.0.0.1".parse().unwrap()));
        for bad in ["localhost", "10.0.0.0/33", "1.2.3", "*;"] {
            let err = TrustedProxies::parse(true, bad).unwrap_err();
            assert!(err.0.contains("--forwarded-allow-ips"), "{bad}: {err}");
            assert!(TrustedProxies::parse(false, bad).is_err(), "{bad}");
        }
    }
}
