//! Where a guest's outbound HTTP requests may go, and sending them there.
//!
//! Two rules, checked in order, and a request goes out only when both allow it:
//!
//! - **The ceiling**: the host must be on the app's list, which is itself narrowed to
//!   the operator's `--allow-outbound` ([`narrow`]; a deploy that names a host outside
//!   it is refused before, [`covers`]).
//! - **The floor**: whatever the lists say, the address actually connected to must not
//!   be loopback, private, link-local (the cloud metadata address among them),
//!   unique-local, multicast, unspecified or otherwise reserved, nor one of this
//!   server's own listeners, unless the operator opened that range with
//!   `--allow-outbound-net` ([`AddressPolicy`]). The check runs on the addresses DNS
//!   returned, and the connection is made to the address that passed, so a name that
//!   resolves to 127.0.0.1, an IPv4-mapped IPv6 address or a numeric form such as
//!   `2130706433` gets no further than `127.0.0.1` would.
//!
//! A refused request fails inside the guest with wasi:http's `HTTP-request-denied`,
//! before any packet is sent. [`send`] is wasmtime-wasi-http's `default_send_request`
//! with the resolution and the connection made here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Scheme;
use http::{Request, Response};
use http_body::Body;
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error, RequestOptions};

/// The address rules of one worker, shared by all its apps.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    /// Ranges the operator opened although the floor would refuse them.
    pub opened: Vec<IpNet>,
    /// This server's listeners. An unspecified address (`0.0.0.0`, `::`) stands for
    /// every address in `local`.
    pub own: Vec<SocketAddr>,
    /// The machine's own interface addresses.
    pub local: Vec<IpAddr>,
}

impl AddressPolicy {
    /// Why a connection to `addr` is refused, or `None` when it may go.
    pub fn refusal(&self, addr: SocketAddr) -> Option<&'static str> {
        let ip = canonical(addr.ip());
        if self.is_own_listener(ip, addr.port()) {
            return Some("own_listener");
        }
        let reason = special(ip)?;
        if self.opened.iter().any(|net| net.contains(&ip)) {
            return None;
        }
        Some(reason)
    }

    fn is_own_listener(&self, ip: IpAddr, port: u16) -> bool {
        self.own.iter().any(|listener| {
            listener.port() == port
                && (canonical(listener.ip()) == ip
                    || (listener.ip().is_unspecified()
                        && (self.local.contains(&ip) || ip.is_loopback())))
        })
    }
}

/// An IPv4 address carried inside IPv6 (mapped `::ffff:a.b.c.d`, the deprecated
/// compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`) is judged as the IPv4 address
/// it reaches.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            let embedded = Ipv4Addr::from(((s[6] as u32) << 16) | s[7] as u32);
            let compatible = s[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified();
            let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
            if compatible || nat64 {
                IpAddr::V4(embedded)
            } else {
                ip
            }
        }
        v4 => v4,
    }
}

/// The kind of address the floor refuses, or `None` for an ordinary public one.
fn special(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match () {
        () if ip.is_unspecified() || a == 0 => "unspecified",
        () if ip.is_loopback() => "loopback",
        () if ip.is_private() => "private",
        () if ip.is_link_local() => "link_local",
        () if ip.is_multicast() => "multicast",
        () if ip.is_broadcast() => "broadcast",
        // Shared address space (carrier-grade NAT), IETF protocol assignments,
        // benchmarking, documentation and the reserved 240/4.
        () if a == 100 && (64..128).contains(&b) => "private",
        () if a == 192 && b == 0 && c == 0 => "reserved",
        () if a == 198 && (b == 18 || b == 19) => "reserved",
        () if ip.is_documentation() || a >= 240 => "reserved",
        () => return None,
    })
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    Some(match () {
        () if ip.is_unspecified() => "unspecified",
        () if ip.is_loopback() => "loopback",
        () if ip.is_multicast() => "multicast",
        () if first & 0xfe00 == 0xfc00 => "unique_local",
        () if first & 0xffc0 == 0xfe80 => "link_local",
        () if first & 0xffc0 == 0xfec0 => "private", // deprecated site-local
        () if first == 0x2001 && ip.segments()[1] == 0xdb8 => "reserved",
        () => return None,
    })
}

/// Whether the operator's list `ceiling` allows everything `entry` (`HOST` or
/// `HOST:PORT`) asks for.
pub fn covers(ceiling: &[String], entry: &str) -> bool {
    let (host, port) = split_entry(entry);
    ceiling.iter().any(|allowed| {
        let (allowed_host, allowed_port) = split_entry(allowed);
        allowed_host.eq_ignore_ascii_case(host) && (allowed_port.is_none() || allowed_port == port)
    })
}

/// The entries of an app's list that the operator's ceiling covers.
pub fn narrow(app: &[String], ceiling: &[String]) -> Vec<String> {
    app.iter()
        .filter(|entry| covers(ceiling, entry))
        .cloned()
        .collect()
}

/// `host:port` as host and port; a bare host (or a bracketed IPv6 address) has none.
fn split_entry(entry: &str) -> (&str, Option<u16>) {
    let entry = entry.trim();
    match entry.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !host.ends_with(':') => match port.parse() {
            Ok(port) => (host, Some(port)),
            Err(_) => (entry, None),
        },
        _ => (entry, None),
    }
}

/// Whether a list (`host` or `host:port` entries) lets a request to `uri` through.
pub fn listed(allow: &[String], uri: &http::Uri) -> bool {
    let Some(authority) = uri.authority() else {
        return false;
    };
    let host = authority.host();
    let port = authority.port_u16().unwrap_or(default_port(uri));
    allow.iter().any(|entry| {
        let (allowed_host, allowed_port) = split_entry(entry);
        allowed_host.eq_ignore_ascii_case(host) && allowed_port.is_none_or(|p| p == port)
    })
}

fn default_port(uri: &http::Uri) -> u16 {
    if uri.scheme() == Some(&Scheme::HTTPS) {
        443
    } else {
        80
    }
}

/// Why a request was not sent.
#[derive(Debug)]
pub struct Denied {
    /// `loopback`, `private`, `link_local`, `own_listener`, ...
    pub reason: &'static str,
    /// The address that was refused.
    pub addr: SocketAddr,
}

fn dns_error() -> Error {
    Error::DnsError {
        rcode: None,
        info_code: None,
    }
}

trait Stream: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}
impl<T> Stream for T where T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}

/// What [`send`] hands back: the response, and the connection's remaining work.
pub type Sent = (
    Response<ResponseBody>,
    Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>,
);

/// How long an outbound request's steps may take when the guest sets no timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The guest's timeouts for an outbound request, each capped at `left` (what is left
/// of the request's deadline; at least a millisecond): no step of an outbound request
/// outlives the request that made it, whatever the guest asks for.
pub fn cap_timeouts(options: Option<RequestOptions>, left: Duration) -> RequestOptions {
    let left = left.max(Duration::from_millis(1));
    let options = options.unwrap_or_default();
    let cap = |asked: Option<Duration>| Some(asked.unwrap_or(DEFAULT_TIMEOUT).min(left));
    RequestOptions {
        connect_timeout: cap(options.connect_timeout),
        first_byte_timeout: cap(options.first_byte_timeout),
        between_bytes_timeout: cap(options.between_bytes_timeout),
    }
}

/// Resolves the request's host, refuses it (`Err(Ok(Denied))`) unless an address
/// passes `policy`, connects to that address and sends the request over HTTP/1.1
/// (TLS for https).
pub async fn send(
    mut req: Request<impl Body<Data = Bytes, Error = Error> + Send + 'static>,
    options: Option<RequestOptions>,
    policy: Arc<AddressPolicy>,
) -> Result<Sent, Result<Denied, Error>> {
    let uri = req.uri().clone();
    let authority = uri.authority().ok_or(Err(Error::HttpRequestUriInvalid))?;
    let use_tls = uri.scheme() == Some(&Scheme::HTTPS);
    let port = authority.port_u16().unwrap_or(default_port(&uri));
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let timeout = |pick: fn(&RequestOptions) -> Option<Duration>| {
        options.as_ref().and_then(pick).unwrap_or(DEFAULT_TIMEOUT)
    };
    let connect_timeout = timeout(|o| o.connect_timeout);
    let first_byte_timeout = timeout(|o| o.first_byte_timeout);
    let between_bytes_timeout = timeout(|o| o.between_bytes_timeout);

    let connect = async {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|_| Err(dns_error()))?
            .collect();
        let mut refused = None;
        let mut last_error = None;
        for addr in addrs {
            if let Some(reason) = policy.refusal(addr) {
                refused.get_or_insert(Denied { reason, addr });
                continue;
            }
            match TcpStream::connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last_error = Some(e),
            }
        }
        Err(match (last_error, refused) {
            (Some(e), _) => Err(Error::Connect(e)),
            (None, Some(denied)) => Ok(denied),
            (None, None) => Err(dns_error()),
        })
    };
    let stream = tokio::time::timeout(connect_timeout, connect)
        .await
        .map_err(|_| Err(Error::ConnectionTimeout))??;
    let stream: Box<dyn Stream> = if use_tls {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = match host.parse::<IpAddr>() {
            Ok(ip) => rustls::pki_types::ServerName::from(ip),
            Err(_) => rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|_| Err(Error::HttpRequestUriInvalid))?,
        };
        let tls = connector
            .connect(name, stream)
            .await
            .map_err(|e| Err(Error::Tls(e)))?;
        Box::new(tls)
    } else {
        Box::new(stream)
    };
    let (mut sender, conn) = tokio::time::timeout(
        connect_timeout,
        hyper::client::conn::http1::Builder::new().handshake(hyper_util::rt::TokioIo::new(stream)),
    )
    .await
    .map_err(|_| Err(Error::ConnectionTimeout))?
    .map_err(|e| Err(Error::from(e)))?;

    // The request carries scheme and authority, which only a proxy should see.
    *req.uri_mut() = http::Uri::builder()
        .path_and_query(uri.path_and_query().map_or("/", |p| p.as_str()))
        .build()
        .map_err(|_| Err(Error::HttpRequestUriInvalid))?;
    let mut conn = Box::pin(conn);
    let send = async {
        let res = tokio::time::timeout(first_byte_timeout, sender.send_request(req))
            .await
            .map_err(|_| Error::ConnectionReadTimeout)?
            .map_err(Error::from)?;
        // Tokio panics on an interval of zero.
        let between = between_bytes_timeout.max(Duration::from_nanos(1));
        let mut timeout = tokio::time::interval(between);
        timeout.reset();
        Ok::<_, Error>(res.map(|incoming| ResponseBody { incoming, timeout }))
    };
    // Drive the connection while waiting for the response.
    tokio::pin!(send);
    let mut conn_done = false;
    let res = std::future::poll_fn(|cx| {
        if let Poll::Ready(res) = send.as_mut().poll(cx) {
            return Poll::Ready(res);
        }
        if conn_done {
            return Poll::Pending;
        }
        match ready!(conn.as_mut().poll(cx)) {
            Ok(()) => {
                conn_done = true;
                send.as_mut().poll(cx)
            }
            Err(e) => Poll::Ready(Err(Error::from(e))),
        }
    })
    .await
    .map_err(Err)?;
    let rest: Pin<Box<dyn Future<Output = Result<(), Error>> + Send>> = if conn_done {
        Box::pin(async { Ok(()) })
    } else {
        Box::pin(async move {
            conn.await.map_err(|e| {
                if e.is_timeout() {
                    Error::HttpResponseTimeout
                } else {
                    Error::from(e)
                }
            })
        })
    };
    Ok((res, rest))
}

/// A response body that fails when the upstream goes quiet for longer than the
/// request's between-bytes timeout.
pub struct ResponseBody {
    incoming: hyper::body::Incoming,
    timeout: tokio::time::Interval,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(e))) if e.is_timeout() => {
                Poll::Ready(Some(Err(Error::HttpResponseTimeout)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::from(e)))),
            Poll::Ready(Some(Ok(frame))) => {
                self.timeout.reset();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                ready!(self.timeout.poll_tick(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.incoming.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn outbound_timeouts_never_outlive_the_request() {
        let second = Duration::from_secs(1);
        let ten_minutes = Some(Duration::from_secs(600));
        let asked = RequestOptions {
            connect_timeout: ten_minutes,
            first_byte_timeout: Some(Duration::from_millis(200)),
            between_bytes_timeout: None,
        };
        let capped = cap_timeouts(Some(asked), second);
        assert_eq!(capped.connect_timeout, Some(second));
        assert_eq!(capped.first_byte_timeout, Some(Duration::from_millis(200)));
        assert_eq!(capped.between_bytes_timeout, Some(second));
        let none = cap_timeouts(None, Duration::ZERO);
        assert_eq!(none.connect_timeout, Some(Duration::from_millis(1)));
    }

    #[test]
    fn the_floor_refuses_every_special_range_in_every_spelling() {
        let policy = AddressPolicy::default();
        for (text, reason) in [
            ("127.0.0.1:80", "loopback"),
            ("127.1.2.3:80", "loopback"),
            ("[::1]:80", "loopback"),
            ("[::ffff:127.0.0.1]:80", "loopback"),
            ("[::127.0.0.1]:80", "loopback"),
            ("[64:ff9b::7f00:1]:80", "loopback"),
            ("0.0.0.0:80", "unspecified"),
            ("[::]:80", "unspecified"),
            ("10.1.2.3:80", "private"),
            ("172.16.0.1:80", "private"),
            ("192.168.1.1:80", "private"),
            ("100.64.0.1:80", "private"),
            ("169.254.169.254:80", "link_local"),
            ("[::ffff:169.254.169.254]:80", "link_local"),
            ("[fe80::1]:80", "link_local"),
            ("[fd00::1]:80", "unique_local"),
            ("224.0.0.1:80", "multicast"),
            ("[ff02::1]:80", "multicast"),
            ("255.255.255.255:80", "broadcast"),
            ("240.0.0.1:80", "reserved"),
        ] {
            assert_eq!(policy.refusal(addr(text)), Some(reason), "{text}");
        }
        for public in ["93.184.215.14:443", "[2606:4700::1111]:443", "8.8.8.8:53"] {
            assert_eq!(policy.refusal(addr(public)), None, "{public}");
        }
    }

    #[test]
    fn an_opened_range_passes_and_own_listeners_never_do() {
        let policy = AddressPolicy {
            opened: vec![
                "127.0.0.0/8".parse().unwrap(),
                "10.0.0.0/8".parse().unwrap(),
            ],
            own: vec![addr("0.0.0.0:80"), addr("127.0.0.1:443")],
            local: vec!["203.0.113.7".parse().unwrap()],
        };
        assert_eq!(policy.refusal(addr("127.0.0.1:81")), None);
        assert_eq!(policy.refusal(addr("[::ffff:10.0.0.5]:80")), None);
        assert_eq!(policy.refusal(addr("192.168.0.1:80")), Some("private"));
        assert_eq!(policy.refusal(addr("127.0.0.1:443")), Some("own_listener"));
        assert_eq!(policy.refusal(addr("127.0.0.1:80")), Some("own_listener"));
        assert_eq!(policy.refusal(addr("203.0.113.7:80")), Some("own_listener"));
        assert_eq!(policy.refusal(addr("203.0.113.7:81")), Some("reserved"));
    }

    #[test]
    fn an_app_list_only_narrows_the_operators() {
        let ceiling = vec!["api.example.com".to_string(), "db.example.com:5432".into()];
        assert!(covers(&ceiling, "api.example.com"));
        assert!(covers(&ceiling, "API.example.com:443"));
        assert!(covers(&ceiling, "db.example.com:5432"));
        assert!(!covers(&ceiling, "db.example.com"));
        assert!(!covers(&ceiling, "db.example.com:22"));
        assert!(!covers(&ceiling, "127.0.0.1:443"));
        assert!(!covers(&[], "api.example.com"));
        assert_eq!(
            narrow(
                &["api.example.com".into(), "169.254.169.254".into()],
                &ceiling
            ),
            vec!["api.example.com".to_string()]
        );
    }

    #[test]
    fn lists_match_host_and_port() {
        let uri: http::Uri = "http://upstream.test:8081/".parse().unwrap();
        assert!(listed(&["upstream.test:8081".into()], &uri));
        assert!(!listed(&["upstream.test:9000".into()], &uri));
        assert!(listed(&["upstream.test".into()], &uri));
        let https: http::Uri = "https://api.example.com/".parse().unwrap();
        assert!(listed(&["api.example.com:443".into()], &https));
        assert!(!listed(&["api.example.com:80".into()], &https));
        assert!(!listed(&[], &https));
        let api: http::Uri = "http://api.example.com/x".parse().unwrap();
        assert!(listed(&["API.example.com".into()], &api));
        assert!(!listed(&["example.com".into()], &api));
    }
}
