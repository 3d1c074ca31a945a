//! A worker's event loop: accept connections on an already-bound listener, serve
//! HTTP/1.1 and HTTP/2 with hyper on the current thread, and stop gracefully.
//!
//! The caller owns the listener and the shutdown signal (the supervisor hands both to
//! its workers). Everything here runs on one thread inside a `LocalSet`; guests that
//! run on the loop are spawned onto the same set. Connection hygiene lives here too:
//! the head size and header-read timeouts (hyper's), and an idle timeout for
//! keep-alive connections with no request in flight.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::uri::Authority;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::body::WithGuard;
use crate::http::Server;

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

/// Serves `listener` until `shutdown` resolves, then drains: stops accepting, lets
/// requests in flight finish within `graceful_timeout`, and returns. Must run inside
/// a `LocalSet`.
pub async fn serve(
    listener: TcpListener,
    server: Rc<Server>,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) {
    let local = match listener.local_addr() {
        Ok(addr) => Authority::try_from(addr.to_string())
            .unwrap_or_else(|_| Authority::from_static("localhost")),
        Err(_) => Authority::from_static("localhost"),
    };
    let builder = Rc::new(http_builder(&limits));
    let stopping = CancellationToken::new();
    let connections = TaskTracker::new();

    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        connections.spawn_local(serve_connection(
            stream,
            server.clone(),
            builder.clone(),
            local.clone(),
            limits.timeout_keep_alive,
            stopping.clone(),
        ));
    }

    drop(listener);
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

fn http_builder(limits: &ConnLimits) -> auto::Builder<LocalExec> {
    let mut builder = auto::Builder::new(LocalExec);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.timeout_header_read)
        .max_buf_size(limits.max_header_size)
        .max_headers(limits.max_headers)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_size).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);
    builder
}

async fn serve_connection(
    stream: TcpStream,
    server: Rc<Server>,
    builder: Rc<auto::Builder<LocalExec>>,
    local: Authority,
    keep_alive: Duration,
    stopping: CancellationToken,
) {
    let activity = Rc::new(Activity {
        last: Cell::new(Instant::now()),
        requests: Cell::new(0),
    });
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
    });
    let service = {
        let activity = activity.clone();
        service_fn(move |req| {
            let server = server.clone();
            let local = local.clone();
            let open = OpenRequest::enter(&activity);
            async move {
                let response = server.handle(req, local).await?;
                Ok::<_, std::convert::Infallible>(response.map(|b| WithGuard::new(b, open)))
            }
        })
    };
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        let idle_at = activity.last.get() + keep_alive;
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = stopping.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = tokio::time::sleep_until(idle_at.into()), if !closing => {
                if activity.requests.get() == 0 && activity.last.get().elapsed() >= keep_alive {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// Runs hyper's background tasks (HTTP/2 streams) on the current loop.
#[derive(Clone, Copy, Debug)]
struct LocalExec;

impl<F: Future + 'static> hyper::rt::Executor<F> for LocalExec {
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

/// When a connection last moved bytes, and how many of its requests are open.
struct Activity {
    last: Cell<Instant>,
    requests: Cell<usize>,
}

/// A request whose response body has not finished yet.
struct OpenRequest(Rc<Activity>);

impl OpenRequest {
    fn enter(activity: &Rc<Activity>) -> OpenRequest {
        activity.requests.set(activity.requests.get() + 1);
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
struct Tracked {
    inner: TcpStream,
    activity: Rc<Activity>,
}

impl AsyncRead for Tracked {
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

impl AsyncWrite for Tracked {
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
