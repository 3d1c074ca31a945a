//! A worker process and its event loop: accept connections on an already-bound
//! listener, serve HTTP/1.1 and HTTP/2 with hyper on the current thread, report to
//! the master, and stop gracefully.
//!
//! The caller owns the listener and the shutdown signal (the supervisor hands both to
//! its workers). Everything here runs on one thread inside a `LocalSet`; guests that
//! run on the loop are spawned onto the same set. Connection hygiene lives here too:
//! the head size and header-read timeouts (hyper's), and an idle timeout for
//! keep-alive connections with no request in flight.

pub mod app;
pub mod body;
pub mod front_door;
pub mod routes;
pub mod run;

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use http::uri::Authority;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use std::collections::HashMap;

use crate::config::ServeConfig;
use crate::metrics::Recorder;
use crate::model::mode::Mode;
use crate::protocol::{Report, TableMessage, parse_table};
use crate::runtime::engine::{self, EngineSizing, EpochTicker};
use crate::telemetry;
use crate::worker::app::{App, Defaults};
use crate::worker::body::WithGuard;
use crate::worker::front_door::{FrontDoor, Server};
use crate::worker::routes::{RouteTable, TenantMap};
use crate::worker::run::on_pool::Pool;

/// Runs one worker process, as started by the master: loads the component, serves
/// the inherited listener, reports to the master on stdout from the event loop, and
/// stops on TERM/INT (drain), QUIT (at once) or when the master is gone (drain).
pub fn run_process(config: ServeConfig) -> anyhow::Result<()> {
    config.validate()?;
    let _log = telemetry::init(&config.log_level, config.log_format)?;
    let listener = listenfd::ListenFd::from_env()
        .take_tcp_listener(0)
        .context("failed to take the inherited listener")?
        .context("no listener inherited: workers are started by `wasmloop serve`")?;
    listener
        .set_nonblocking(true)
        .context("failed to make the listener non-blocking")?;

    let engine = engine::build(EngineSizing {
        loop_slots: u32::try_from(config.limit_concurrency).unwrap_or(u32::MAX),
        pool_slots: u32::try_from(config.threads).unwrap_or(u32::MAX),
        max_memory: usize::try_from(config.max_memory).context("--max-memory does not fit")?,
    })?;
    let defaults = Defaults::from_config(&config);
    let mut tenants = TenantMap::new();
    let (table, needs_pool) = match &config.component {
        Some(path) => {
            let app = Arc::new(App::from_file(&engine, path, &defaults)?);
            let needs_pool = app.mode() == Mode::Pool;
            (RouteTable::single(app), needs_pool)
        }
        None => {
            // The master writes the current table as the first line, before anything else.
            let message = read_first_table()?;
            let table = routes::build(&engine, &message, &defaults, &HashMap::new(), &mut tenants);
            (table, true)
        }
    };
    let recorder = Arc::new(Recorder::default());
    let pool = match needs_pool {
        true => Some(Pool::start(
            config.threads,
            config.pool_queue,
            config
                .pool_nice
                .unwrap_or(if config.component.is_some() { 0 } else { 19 }),
            recorder.clone(),
        )?),
        false => None,
    };
    let _ticker = EpochTicker::start(engine.clone(), config.epoch_interval)?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the event loop")?;
    let local = tokio::task::LocalSet::new();
    let pool = local.block_on(&runtime, async {
        let listener =
            TcpListener::from_std(listener).context("failed to register the listener")?;
        let front = FrontDoor {
            max_body: config.max_body,
            limit_concurrency: config.limit_concurrency,
        };
        let server = match config.max_requests {
            0 => Server::new(table, pool, front, recorder),
            n => Server::with_quota(
                table,
                pool,
                front,
                recorder,
                n + jitter(config.max_requests_jitter),
            ),
        };
        let limits = ConnLimits {
            max_header_size: usize::try_from(config.max_header_size).unwrap_or(usize::MAX),
            max_headers: config.max_headers,
            timeout_keep_alive: config.timeout_keep_alive,
            timeout_header_read: config.timeout_header_read,
            graceful_timeout: config.graceful_timeout,
        };
        let master_gone = CancellationToken::new();
        let (applied_tx, applied_rx) = tokio::sync::mpsc::unbounded_channel();
        let reporter = tokio::task::spawn_local(report_to_master(
            server.clone(),
            config.timeout_worker_healthcheck / 5,
            master_gone.clone(),
            applied_rx,
        ));
        let tables = match config.component {
            Some(_) => None,
            None => Some(tokio::task::spawn_local(follow_tables(
                server.clone(),
                engine.clone(),
                defaults.clone(),
                tenants,
                applied_tx,
            ))),
        };
        let lag_probe = tokio::task::spawn_local(probe_loop_lag(server.clone()));
        serve(listener, server.clone(), limits, stop_signal(master_gone)).await;
        reporter.abort();
        lag_probe.abort();
        if let Some(tables) = tables {
            tables.abort();
        }
        anyhow::Ok(server.take_pool())
    })?;
    drop(local);
    // Tokio's stdin reader is a blocking thread stuck in `read` until the master
    // closes the pipe; a plain drop of the runtime would wait for it forever.
    runtime.shutdown_background();
    if let Some(pool) = pool
        && !pool.shutdown(Instant::now() + Duration::from_secs(1))
    {
        tracing::warn!("a pool thread is still busy; exiting without it");
    }
    Ok(())
}

/// Writes `ready`, then a heartbeat every `interval` and `retire` once the quota is
/// reached, from this task on the loop: a loop that stops turning stops the
/// heartbeats, and the master sees it. A failed write means the master is gone.
async fn report_to_master(
    server: Rc<Server>,
    interval: Duration,
    master_gone: CancellationToken,
    mut applied: tokio::sync::mpsc::UnboundedReceiver<u64>,
) {
    use tokio::io::AsyncWriteExt as _;
    let mut out = tokio::io::stdout();
    let mut beat = tokio::time::interval(interval);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut metrics = tokio::time::interval(METRICS_INTERVAL);
    metrics.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retired = false;
    let mut report = Report::Ready;
    loop {
        if out.write_all(report.line().as_bytes()).await.is_err() || out.flush().await.is_err() {
            tracing::warn!("the master is gone; stopping");
            master_gone.cancel();
            return;
        }
        report = tokio::select! {
            _ = beat.tick() => Report::Beat { served: server.served() },
            _ = metrics.tick() => Report::Metrics(Box::new(server.snapshot())),
            Some(generation) = applied.recv() => Report::Applied(generation),
            () = server.quota_reached(), if !retired => {
                retired = true;
                Report::Retire
            }
        };
    }
}

/// Resolves when the worker should drain: TERM, INT, or the master went away. QUIT
/// exits the process at once.
/// Reads the master's first table line from stdin (start-up, before the loop runs).
fn read_first_table() -> anyhow::Result<TableMessage> {
    use std::io::BufRead as _;
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("failed to read the route table from the master")?;
    parse_table(&line).context("the master's first line is not a route table")
}

/// Applies every table the master sends on stdin: loads new apps on a blocking
/// thread, swaps the table in, and tells the master which generation it serves.
async fn follow_tables(
    server: Rc<Server>,
    engine: wasmtime::Engine,
    defaults: Defaults,
    tenants: TenantMap,
    applied: tokio::sync::mpsc::UnboundedSender<u64>,
) {
    use tokio::io::AsyncBufReadExt as _;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut tenants = Some(tenants);
    let _ = applied.send(server.table().generation);
    while let Ok(Some(line)) = lines.next_line().await {
        let Some(message) = parse_table(&line) else {
            tracing::warn!("ignoring a line from the master that is not a route table");
            continue;
        };
        let previous = server.table().apps.clone();
        let (engine, defaults) = (engine.clone(), defaults.clone());
        let mut map = tenants.take().unwrap_or_default();
        let built = tokio::task::spawn_blocking(move || {
            let table = routes::build(&engine, &message, &defaults, &previous, &mut map);
            (table, map)
        })
        .await;
        match built {
            Ok((table, map)) => {
                tenants = Some(map);
                let generation = table.generation;
                server.set_table(table);
                tracing::info!(generation, "route table applied");
                let _ = applied.send(generation);
            }
            Err(e) => tracing::error!("failed to build a route table: {e}"),
        }
    }
}

/// How often a worker sends its metrics to the master.
const METRICS_INTERVAL: Duration = Duration::from_secs(1);
/// How often the loop-lag probe asks to be woken.
const LAG_PROBE: Duration = Duration::from_millis(10);

/// Measures how late the loop wakes a timer: the delay every task on this worker
/// sees when something holds the loop thread.
async fn probe_loop_lag(server: Rc<Server>) {
    let mut due = Instant::now() + LAG_PROBE;
    loop {
        tokio::time::sleep_until(due.into()).await;
        let now = Instant::now();
        server.loop_lag(now.saturating_duration_since(due));
        due = now + LAG_PROBE;
    }
}

async fn stop_signal(master_gone: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::quit()),
    ) else {
        tracing::error!("cannot listen for signals; the worker stops only when the master goes");
        master_gone.cancelled().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = int.recv() => tracing::info!("SIGINT: draining"),
        () = master_gone.cancelled() => {}
        _ = quit.recv() => {
            tracing::info!("SIGQUIT: exiting now");
            std::process::exit(0);
        }
    }
}

/// A random number in `0..=max`, different in every worker.
fn jitter(max: u64) -> u64 {
    use std::hash::{BuildHasher as _, RandomState};
    match max {
        0 => 0,
        max => RandomState::new().hash_one(std::process::id()) % (max + 1),
    }
}

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

/// The HTTP/1.1 and HTTP/2 settings every connection is served with (the fuzz target
/// `front_door` serves its input with them too). Its connections must run inside a
/// `LocalSet`: they are spawned with `spawn_local`.
pub fn http_builder(limits: &ConnLimits) -> auto::Builder<LocalExec> {
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
        served: Cell::new(0),
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
    let accepted = Instant::now();
    let mut closing = false;
    let mut stop_requested = false;
    loop {
        let idle_at = activity.last.get() + keep_alive;
        tokio::select! {
            result = conn.as_mut() => {
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
            () = tokio::time::sleep(Duration::from_millis(5)), if stop_requested && !closing => {
                let fresh = activity.served.get() == 0 && activity.requests.get() == 0;
                if !fresh || accepted.elapsed() >= FIRST_REQUEST_GRACE {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
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
pub struct LocalExec;

impl<F: Future + 'static> hyper::rt::Executor<F> for LocalExec {
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
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
