//! Accepting connections on the worker's loop: hyper serves HTTP/1.1 and HTTP/2 on the
//! current thread, every connection's requests go to the front door, and connection
//! hygiene lives here: the head size and header-read timeouts (hyper's), an idle
//! timeout for keep-alive connections with no request in flight, the drain on a
//! graceful stop, and TLS when the operator gives a certificate.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::uri::Authority;
use hyper::service::service_fn;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::worker::body::WithGuard;
use crate::worker::front_door::{Peer, Server};
use crate::worker::http::{Http, detach_head};

/// Connection settings of a worker.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Largest request head, in bytes (431 past it).
    pub max_header_size: usize,
    /// Most header fields in one request (431 past it).
    pub max_headers: usize,
    /// How long a connection with no request in flight stays open without traffic.
    pub timeout_keep_alive: Duration,
    /// How long a client may take to send a request head.
    pub timeout_header_read: Duration,
    /// How long a graceful stop waits for requests in flight.
    pub graceful_timeout: Duration,
}

/// How long a draining worker waits for the first request of a connection it
/// accepted just before the stop.
const FIRST_REQUEST_GRACE: Duration = Duration::from_millis(500);

/// How long an idle connection told to close, with nothing in flight and no bytes
/// moving, may take to close.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// A listener as inherited from the master, before the loop runs.
pub enum Inherited {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

/// A public listener on the loop: TCP, or a unix domain socket.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// Registers an inherited (non-blocking) listener with the loop.
    pub fn from_std(listener: Inherited) -> io::Result<Listener> {
        Ok(match listener {
            Inherited::Tcp(l) => Listener::Tcp(TcpListener::from_std(l)?),
            Inherited::Unix(l) => Listener::Unix(UnixListener::from_std(l)?),
        })
    }

    /// The authority a request without one is taken to name.
    fn authority(&self) -> Authority {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .ok()
                .and_then(|addr| Authority::try_from(addr.to_string()).ok())
                .unwrap_or_else(|| Authority::from_static("localhost")),
            Listener::Unix(_) => Authority::from_static("localhost"),
        }
    }
}

/// What every accept loop of a worker shares.
struct Accepting {
    server: Rc<Server>,
    http: Rc<Http>,
    tls: Option<TlsAcceptor>,
    limits: ConnLimits,
    /// Cancelled when the worker drains: connections finish what they have.
    stopping: CancellationToken,
    connections: TaskTracker,
}

/// Serves every listener until `shutdown` resolves, then drains: stops accepting,
/// lets requests in flight finish within `graceful_timeout`, and returns. Must run
/// inside a `LocalSet`.
pub async fn serve(
    listeners: Vec<Listener>,
    server: Rc<Server>,
    limits: ConnLimits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let accepting = Rc::new(Accepting {
        server: server.clone(),
        http: Rc::new(Http::new(
            limits.max_header_size,
            limits.max_headers,
            limits.timeout_header_read,
        )),
        tls,
        limits: limits.clone(),
        stopping: CancellationToken::new(),
        connections: TaskTracker::new(),
    });
    let stop_accepting = CancellationToken::new();
    let loops: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            tokio::task::spawn_local(accept_loop(
                listener,
                accepting.clone(),
                stop_accepting.clone(),
            ))
        })
        .collect();
    shutdown.await;
    stop_accepting.cancel();
    for accept in loops {
        // Each loop returns at once when told; its listener closes with it.
        let _ = accept.await;
    }
    let Accepting {
        stopping,
        connections,
        ..
    } = &*accepting;
    let open = connections.len();
    tracing::info!(
        connections = open,
        in_flight = server.in_flight(),
        "stopping: draining requests in flight"
    );
    stopping.cancel();
    connections.close();
    if tokio::time::timeout(limits.graceful_timeout, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            in_flight = server.in_flight(),
            "graceful timeout passed; closing what is left"
        );
    }
}

/// Accepts connections on one listener until `stop` is cancelled.
async fn accept_loop(listener: Listener, accepting: Rc<Accepting>, stop: CancellationToken) {
    let local = listener.authority();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = accept(&listener) => accepted,
        };
        match accepted {
            Ok(Stream::Tcp(stream, peer)) => {
                let _ = stream.set_nodelay(true);
                accepting.spawn(stream, local.clone(), Some(peer));
            }
            // A peer on a unix socket has no address.
            Ok(Stream::Unix(stream)) => accepting.spawn(stream, local.clone(), None),
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// An accepted connection, with the peer's address when it has one.
enum Stream {
    Tcp(TcpStream, std::net::SocketAddr),
    Unix(UnixStream),
}

async fn accept(listener: &Listener) -> io::Result<Stream> {
    match listener {
        Listener::Tcp(l) => l.accept().await.map(|(s, peer)| Stream::Tcp(s, peer)),
        Listener::Unix(l) => l.accept().await.map(|(s, _)| Stream::Unix(s)),
    }
}

impl Accepting {
    /// Serves one accepted connection (after its TLS handshake, if any) in its own task.
    fn spawn<S>(&self, stream: S, local: Authority, peer: Option<std::net::SocketAddr>)
    where
        S: AsyncRead + AsyncWrite + Unpin + 'static,
    {
        let connection = Connection {
            server: self.server.clone(),
            http: self.http.clone(),
            local,
            peer,
            tls: self.tls.is_some(),
            keep_alive: self.limits.timeout_keep_alive,
            head_timeout: self.limits.timeout_header_read,
            stopping: self.stopping.clone(),
        };
        match &self.tls {
            None => {
                self.connections
                    .spawn_local(serve_connection(stream, connection));
            }
            Some(acceptor) => {
                let (acceptor, handshake) = (acceptor.clone(), self.limits.timeout_header_read);
                self.connections.spawn_local(async move {
                    // A handshake that does not finish in time is a slow head.
                    match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => serve_connection(stream, connection).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

/// What serving one connection needs from the accept loop.
struct Connection {
    server: Rc<Server>,
    http: Rc<Http>,
    local: Authority,
    /// The client's address; none on a unix socket.
    peer: Option<std::net::SocketAddr>,
    /// Whether the connection is TLS: the guest sees `https`.
    tls: bool,
    keep_alive: Duration,
    /// How long the first bytes may take (the header-read timeout).
    head_timeout: Duration,
    stopping: CancellationToken,
}

async fn serve_connection<S>(stream: S, connection: Connection)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let Connection {
        server,
        http,
        local,
        peer,
        tls,
        keep_alive,
        head_timeout,
        stopping,
    } = connection;
    let activity = Rc::new(Activity {
        last: Cell::new(Instant::now()),
        requests: Cell::new(0),
        served: Cell::new(0),
    });
    let io = Tracked {
        inner: stream,
        activity: activity.clone(),
    };
    let service = {
        let activity = activity.clone();
        service_fn(move |mut req| {
            // Now, before hyper reads again: see `detach_head`.
            detach_head(&mut req);
            let server = server.clone();
            let local = local.clone();
            let open = OpenRequest::enter(&activity);
            async move {
                // Boxed: hyper keeps room for one request's future in every HTTP/1.1
                // connection, idle or not, and the front door's is about 2 KiB.
                let handle = Box::pin(server.handle(req, local, Peer { addr: peer, tls }));
                let response = handle.await?;
                Ok::<_, std::convert::Infallible>(response.map(|b| WithGuard::new(b, open)))
            }
        })
    };
    let mut conn = http.serve(io, service);
    let accepted = Instant::now();
    // When the connection was told to close.
    let mut closing: Option<Instant> = None;
    let mut stop_requested = false;
    loop {
        let idle_at = activity.last.get() + keep_alive;
        tokio::select! {
            result = &mut conn => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = stopping.cancelled(), if !stop_requested => stop_requested = true,
            // Draining: a connection accepted just before the stop may not have sent
            // (or hyper not yet read) its first request; closing it now would fail a
            // request the client already sent. It gets FIRST_REQUEST_GRACE for that;
            // anything with a request in flight finishes it first (hyper's graceful
            // shutdown), idle keep-alive connections close at once.
            () = tokio::time::sleep(Duration::from_millis(5)), if stop_requested && closing.is_none() => {
                let fresh = activity.served.get() == 0 && activity.requests.get() == 0;
                if !fresh || accepted.elapsed() >= FIRST_REQUEST_GRACE {
                    conn.graceful_shutdown();
                    closing = Some(Instant::now());
                }
            }
            // hyper times the head of an HTTP/1.1 request; the first bytes, which
            // tell the protocol, are timed here.
            () = tokio::time::sleep_until((accepted + head_timeout).into()), if conn.is_detecting() => {
                tracing::debug!("no protocol within the header-read timeout");
                return;
            }
            // Closing takes the client's part in HTTP/2 (the GOAWAY waits for the
            // answer to a PING); an idle connection whose client never answers is
            // dropped once nothing is in flight and no bytes have moved for
            // CLOSE_GRACE, instead of holding its connection for good. A drain leaves
            // its connections to the graceful timeout: a slow reader may still be
            // taking a response that its guest has finished.
            () = tokio::time::sleep_until((closing.unwrap_or(accepted) + CLOSE_GRACE).into()), if closing.is_some() && !stop_requested => {
                if activity.requests.get() == 0 && activity.last.get().elapsed() >= CLOSE_GRACE {
                    tracing::debug!("the client did not close in time; dropping the connection");
                    return;
                }
                closing = Some(Instant::now());
            }
            () = tokio::time::sleep_until(idle_at.into()), if closing.is_none() => {
                if activity.requests.get() == 0 && activity.last.get().elapsed() >= keep_alive {
                    conn.graceful_shutdown();
                    closing = Some(Instant::now());
                }
            }
        }
    }
}

/// When a connection last moved bytes, how many of its requests are open, and how
/// many it has had.
struct Activity {
    last: Cell<Instant>,
    requests: Cell<usize>,
    served: Cell<u64>,
}

/// A request whose response body has not finished yet.
struct OpenRequest(Rc<Activity>);

impl OpenRequest {
    fn enter(activity: &Rc<Activity>) -> OpenRequest {
        activity.requests.set(activity.requests.get() + 1);
        activity.served.set(activity.served.get() + 1);
        OpenRequest(activity.clone())
    }
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.0.requests.set(self.0.requests.get() - 1);
        self.0.last.set(Instant::now());
    }
}

/// A stream that notes the time of every read and write that moved bytes.
struct Tracked<S> {
    inner: S,
    activity: Rc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.last.set(Instant::now());
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.last.set(Instant::now());
        }
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.last.set(Instant::now());
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
