//! Who the client is when a proxy stands in front, with Uvicorn's flags and meaning:
//! `--proxy-headers` (on by default) trusts `Forwarded` (RFC 7239), or else
//! `X-Forwarded-For` and `X-Forwarded-Proto`, only on connections from an address in
//! `--forwarded-allow-ips` (default `127.0.0.1,unix`; IPs, CIDR ranges, `unix` for
//! connections on a unix-socket listener, or `*`).
//!
//! The client is the last address in the chain that is not a trusted proxy (walking
//! from the peer back towards the client), or the leftmost one when every address is
//! trusted. The guest gets it in `x-real-ip` (set on every request, whatever the
//! client sent; absent for an untrusted peer on a unix socket, which has no address),
//! and the access log as `client` (`unix` for such a peer). From a peer that is not trusted the
//! forwarding headers are removed before the guest sees them, so no client can pose
//! as another to a guest.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use http::header::{FORWARDED, HeaderName, HeaderValue};

use crate::model::proxies::TrustedProxies;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// Where the server is mounted (`--root-path`); only the host sets it.
pub const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
/// The client's address as the host resolved it, for the guest.
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The client of one request, as resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// Its address (an IP, or what a trusted proxy named when that is not one).
    pub address: String,
    /// `https` when a trusted proxy says the client used it.
    pub https: bool,
}

/// The client of a request that came from `peer`, and the headers the guest gets:
/// forwarding headers only from a trusted peer, and `x-real-ip` always.
pub fn resolve(
    trusted: &TrustedProxies,
    peer: Option<SocketAddr>,
    headers: &mut HeaderMap,
) -> Client {
    let client = if trusted.trusts_peer(peer.map(|p| p.ip())) {
        forwarded_client(trusted, peer, headers)
    } else {
        for name in [
            FORWARDED,
            X_FORWARDED_FOR,
            X_FORWARDED_PROTO,
            X_FORWARDED_HOST,
            X_FORWARDED_PREFIX,
        ] {
            headers.remove(name);
        }
        Client {
            address: peer_address(peer),
            https: false,
        }
    };
    if peer.is_none() && client.address == UNIX_PEER {
        headers.remove(X_REAL_IP);
    } else if let Ok(value) = HeaderValue::from_str(&client.address) {
        headers.insert(X_REAL_IP, value);
    } else {
        headers.remove(X_REAL_IP);
    }
    client
}

/// How a peer on a unix-socket listener is named in the log.
const UNIX_PEER: &str = "unix";

fn peer_address(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(
        || UNIX_PEER.to_string(),
        |p| p.ip().to_canonical().to_string(),
    )
}

fn forwarded_client(
    trusted: &TrustedProxies,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Client {
    let (chain, protos) = if headers.contains_key(FORWARDED) {
        forwarded(headers)
    } else {
        let chain = list(headers, &X_FORWARDED_FOR);
        (chain, list(headers, &X_FORWARDED_PROTO))
    };
    // From the peer back towards the client: the first hop not a trusted proxy.
    let address = chain
        .iter()
        .rev()
        .find(|hop| hop.parse::<IpAddr>().map_or(true, |ip| !trusted.trusts(ip)))
        .or(chain.first())
        .cloned()
        .unwrap_or_else(|| peer_address(peer));
    let https = protos
        .last()
        .is_some_and(|p| p.eq_ignore_ascii_case("https") || p.eq_ignore_ascii_case("wss"));
    Client { address, https }
}

/// The comma-separated items of every value of header `name`, in order.
fn list(headers: &HeaderMap, name: &HeaderName) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|item| item.trim().to_string())
        .filter(|item| !item.is_empty())
        .collect()
}

/// The `for=` addresses and `proto=` values of the `Forwarded` header, in order,
/// each without quotes, brackets or port.
fn forwarded(headers: &HeaderMap) -> (Vec<String>, Vec<String>) {
    let (mut chain, mut protos) = (Vec::new(), Vec::new());
    for element in list(headers, &FORWARDED) {
        for pair in element.split(';') {
            let Some((key, value)) = pair.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            match key.trim().to_ascii_lowercase().as_str() {
                "for" => chain.push(strip_port(value)),
                "proto" => protos.push(value.to_string()),
                _ => {}
            }
        }
    }
    (chain, protos)
}

/// `192.0.2.1:4711` -> `192.0.2.1`, `[2001:db8::1]:4711` -> `2001:db8::1`.
fn strip_port(node: &str) -> String {
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest).to_string();
    }
    match node.split_once(':') {
        Some((ip, port)) if !port.contains(':') => ip.to_string(),
        _ => node.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn peer(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().unwrap(), 40000))
    }

    #[test]
    fn a_trusted_proxy_names_the_client_and_others_cannot() {
        let proxies = TrustedProxies::parse(true, "127.0.0.1, 10.0.0.0/8").unwrap();
        // Through two trusted proxies: the hop before them.
        let mut h = headers(&[
            ("x-forwarded-for", "203.0.113.7, 10.1.2.3"),
            ("x-forwarded-proto", "https"),
        ]);
        let client = resolve(&proxies, peer("127.0.0.1"), &mut h);
        assert_eq!(client.address, "203.0.113.7");
        assert!(client.https);
        assert_eq!(h[X_REAL_IP], "203.0.113.7");
        // A client that prepends its own lie: the last untrusted hop wins.
        let mut h = headers(&[("x-forwarded-for", "1.1.1.1, 198.51.100.9")]);
        assert_eq!(
            resolve(&proxies, peer("10.0.0.5"), &mut h).address,
            "198.51.100.9"
        );
        // From an untrusted peer: the headers go, the peer is the client.
        let mut h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("forwarded", "for=1.1.1.1"),
            ("x-real-ip", "1.1.1.1"),
            ("x-forwarded-proto", "https"),
        ]);
        let client = resolve(&proxies, peer("192.0.2.50"), &mut h);
        assert_eq!(client.address, "192.0.2.50");
        assert!(!client.https);
        assert!(!h.contains_key("x-forwarded-for") && !h.contains_key("forwarded"));
        assert_eq!(h[X_REAL_IP], "192.0.2.50");
        // Disabled: the peer, whatever it says.
        let off = TrustedProxies::parse(false, "*").unwrap();
        let mut h = headers(&[("x-forwarded-for", "1.1.1.1")]);
        assert_eq!(
            resolve(&off, peer("127.0.0.1"), &mut h).address,
            "127.0.0.1"
        );
    }

    #[test]
    fn forwarded_wins_and_its_forms_parse() {
        let proxies = TrustedProxies::parse(true, "*").unwrap();
        let mut h = headers(&[
            (
                "forwarded",
                r#"for="[2001:db8::1]:4711";proto=https, for=10.0.0.1"#,
            ),
            ("x-forwarded-for", "9.9.9.9"),
        ]);
        let client = resolve(&proxies, peer("127.0.0.1"), &mut h);
        // Every hop trusted (`*`): the leftmost.
        assert_eq!(client.address, "2001:db8::1");
        assert!(client.https);
        assert_eq!(strip_port("192.0.2.1:80"), "192.0.2.1");
        assert_eq!(strip_port("2001:db8::2"), "2001:db8::2");
        // An IPv4 peer on an IPv6 socket is the same peer.
        let v4 = TrustedProxies::parse(true, "127.0.0.1").unwrap();
        let mut h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(
            resolve(&v4, "[::ffff:127.0.0.1]:4000".parse().ok(), &mut h).address,
            "203.0.113.9"
        );
    }

    #[test]
    fn a_unix_socket_peer_is_trusted_only_when_listed() {
        let listed = TrustedProxies::parse(true, "127.0.0.1,unix").unwrap();
        let mut h = headers(&[
            ("x-forwarded-for", "203.0.113.4"),
            ("x-forwarded-proto", "https"),
        ]);
        let client = resolve(&listed, None, &mut h);
        assert_eq!(client.address, "203.0.113.4");
        assert!(client.https);
        assert_eq!(h[X_REAL_IP], "203.0.113.4");
        // No forwarding header from a trusted unix peer: it is named `unix`, with no
        // address for the guest.
        let mut h = headers(&[("x-real-ip", "1.1.1.1")]);
        assert_eq!(resolve(&listed, None, &mut h).address, "unix");
        assert!(!h.contains_key(X_REAL_IP));
        let unlisted = TrustedProxies::parse(true, "127.0.0.1").unwrap();
        let mut h = headers(&[("x-forwarded-for", "1.1.1.1"), ("x-real-ip", "1.1.1.1")]);
        assert_eq!(resolve(&unlisted, None, &mut h).address, "unix");
        assert!(!h.contains_key("x-forwarded-for") && !h.contains_key(X_REAL_IP));
    }
}
