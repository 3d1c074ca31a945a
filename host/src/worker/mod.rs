//! One worker process, in the order a request meets it: [`accept`] (connections on the
//! inherited listener, hyper, connection limits), [`front_door`] (route, then
//! [`admission`], dispatch, await the head, answer), [`run`] (the shared run context,
//! then [`run::on_loop`] or [`run::on_pool`]), [`body`] (request and response bodies),
//! [`access_log`]. Beside them: [`routes`] (the route table) and [`app`] (a loaded
//! handler with its limits), and [`master_link`] (tables in, reports out).
//!
//! This file wires them together: it loads what to serve, starts the pool and the
//! epoch ticker, and runs everything on one thread inside a `LocalSet`; guests that
//! run on the loop are spawned onto the same set.

pub mod accept;
pub mod access_log;
pub mod admission;
pub mod app;
pub mod body;
pub mod front_door;
pub mod http;
pub mod master_link;
pub mod proxy;
pub mod routes;
pub mod run;
pub mod tier;

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio_util::sync::CancellationToken;

use crate::config::{AdminListen, ServeConfig};
use crate::metrics::recorder::Recorder;
use crate::model::compiler::Compiler;
use crate::model::mode::Mode;
use crate::model::proxies::TrustedProxies;
use crate::protocol;
use crate::runtime::engine::{self, EngineSizing, EpochTicker};
use crate::runtime::outbound::AddressPolicy;
use crate::worker::accept::{ConnLimits, Inherited};
use crate::worker::app::{App, Defaults, Engines};
use crate::worker::front_door::{FrontDoor, Server};
use crate::worker::routes::{RouteTable, TenantMap};
use crate::worker::run::instances;
use crate::worker::run::on_pool::Pool;
use crate::{telemetry, tls};

/// Runs one worker process, as started by the master: loads what to serve, serves
/// the inherited listener, reports to the master on stdout from the event loop, and
/// stops on TERM/INT (drain), QUIT (at once) or when the master is gone (drain).
pub fn run_process(config: ServeConfig) -> anyhow::Result<()> {
    config.validate()?;
    let _log = telemetry::init(&config.log_level, config.log_format, !config.no_access_log)?;
    // Dropped (flushing what is queued) after the loop has stopped.
    let _traces = match config.otlp_traces {
        true => Some(telemetry::traces::init()?),
        false => None,
    };
    let listeners = inherited_listeners()?;

    let sizing = EngineSizing {
        loop_slots: u32::try_from(config.limit_concurrency).unwrap_or(u32::MAX),
        pool_slots: u32::try_from(config.threads).unwrap_or(u32::MAX),
        kept_slots: instances::KEPT_PER_WORKER,
        max_memory: usize::try_from(config.max_memory).context("--max-memory does not fit")?,
    };
    // With tiers, the component is served from the baseline engine first and the
    // optimized engine takes over once its compile is done (tier.rs).
    let (compiler, optimized) = config.tiers();
    let engine = engine::build(sizing, compiler)?;
    let optimized = optimized
        .map(|compiler| anyhow::Ok((engine::build(sizing, compiler)?, compiler)))
        .transpose()?;
    let tcp_addresses = listeners
        .iter()
        .filter_map(|l| match l {
            Inherited::Tcp(l) => l.local_addr().ok(),
            Inherited::Unix(_) => None,
        })
        .collect();
    let addresses = address_policy(&config, tcp_addresses);
    let engines = Engines {
        baseline: (engine.clone(), compiler),
        optimized: optimized.clone(),
    };
    let (served, engine, optimized) = match Served::load(&config, &engines, addresses.clone()) {
        Ok(served) => (served, engine, optimized),
        // The baseline compiler lacks some proposals (relaxed SIMD, tail calls,
        // GC...): such a component is served by the optimizing tier alone.
        Err(baseline) if let Some((engine, compiler)) = optimized => {
            let alone = Engines {
                baseline: (engine.clone(), compiler),
                optimized: None,
            };
            let served = Served::load(&config, &alone, addresses)?;
            tracing::warn!(
                reason = format!("{baseline:#}"),
                "the baseline compiler cannot compile this component; it is served by \
                     {compiler} alone"
            );
            (served, engine, None)
        }
        Err(e) => return Err(e),
    };
    let recorder = Arc::new(Recorder::default());
    let pool = match served.needs_pool {
        true => Some(start_pool(&config, recorder.clone())?),
        false => None,
    };
    let engines = std::iter::once(engine.clone())
        .chain(optimized.as_ref().map(|(engine, _)| engine.clone()))
        .collect();
    let _ticker = EpochTicker::start(engines, config.epoch_interval)?;

    let tls = match config.tls_files() {
        Some((cert, key)) => Some(tls::acceptor(cert, key, tls::PUBLIC_ALPN)?),
        None => None,
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the event loop")?;
    let local = tokio::task::LocalSet::new();
    let pool = local.block_on(&runtime, async {
        let listeners = listeners
            .into_iter()
            .map(accept::Listener::from_std)
            .collect::<std::io::Result<Vec<_>>>()
            .context("failed to register the listeners")?;
        let listening = Listening { listeners, tls };
        anyhow::Ok(
            on_the_loop(
                &config, engine, optimized, served, pool, recorder, listening,
            )
            .await,
        )
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

/// What a worker serves at start: one component, or the master's first table.
struct Served {
    table: RouteTable,
    tenants: TenantMap,
    defaults: Defaults,
    needs_pool: bool,
}

impl Served {
    /// Loads the component, or reads and loads the master's first table (which the
    /// master writes before anything else). Blocks: called before the loop runs.
    fn load(
        config: &ServeConfig,
        engines: &Engines,
        addresses: AddressPolicy,
    ) -> anyhow::Result<Served> {
        let (engine, compiler) = (&engines.baseline.0, engines.baseline.1);
        let defaults = Defaults::from_config(config, addresses);
        let mut tenants = TenantMap::new();
        let (table, needs_pool) = match &config.component {
            Some(path) => {
                let app = Arc::new(App::from_file(engine, compiler, path, &defaults)?);
                let needs_pool = app.mode() == Mode::Pool;
                (RouteTable::single(app), needs_pool)
            }
            None => {
                let message = master_link::read_first_table()?;
                let table =
                    routes::build(engines, &message, &defaults, &HashMap::new(), &mut tenants);
                (table, true)
            }
        };
        Ok(Served {
            table,
            tenants,
            defaults,
            needs_pool,
        })
    }
}

/// The outbound floor of this worker: the ranges the operator opened, and this
/// server's own listeners, which no guest may reach (with the machine's addresses, for
/// a listener on every interface).
fn address_policy(config: &ServeConfig, listeners: Vec<std::net::SocketAddr>) -> AddressPolicy {
    let mut own = protocol::own_listeners();
    own.extend(listeners);
    if let AdminListen::At(admin) = config.admin_listen()
        && admin.port() != 0
    {
        own.push(admin);
    }
    let local = nix::ifaddrs::getifaddrs()
        .map(|addrs| {
            addrs
                .filter_map(|a| a.address)
                .filter_map(|a| {
                    a.as_sockaddr_in()
                        .map(|v4| std::net::IpAddr::V4(v4.ip()))
                        .or_else(|| a.as_sockaddr_in6().map(|v6| std::net::IpAddr::V6(v6.ip())))
                })
                .collect()
        })
        .unwrap_or_else(|e| {
            tracing::warn!("cannot list this machine's addresses: {e}");
            Vec::new()
        });
    AddressPolicy {
        opened: config.allow_outbound_net.clone(),
        own,
        local,
    }
}

/// The inherited listeners, and the TLS they speak if any.
struct Listening {
    listeners: Vec<accept::Listener>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Every listener the master passed (`LISTEN_FDS`): TCP or unix stream sockets,
/// non-blocking.
fn inherited_listeners() -> anyhow::Result<Vec<Inherited>> {
    let mut fds = listenfd::ListenFd::from_env();
    let mut listeners = Vec::new();
    for index in 0..fds.len() {
        let listener = match fds.take_tcp_listener(index) {
            Ok(Some(tcp)) => {
                tcp.set_nonblocking(true)?;
                Inherited::Tcp(tcp)
            }
            Ok(None) => continue,
            Err(_) => {
                let unix = fds
                    .take_unix_listener(index)
                    .with_context(|| format!("inherited listener {index} is neither TCP nor unix"))?
                    .context("an inherited listener was taken twice")?;
                unix.set_nonblocking(true)?;
                Inherited::Unix(unix)
            }
        };
        listeners.push(listener);
    }
    if listeners.is_empty() {
        bail!("no listener inherited: workers are started by `wasmloop serve`");
    }
    Ok(listeners)
}

/// The pool's threads, niced below the loop when tenants share the worker.
fn start_pool(config: &ServeConfig, recorder: Arc<Recorder>) -> anyhow::Result<Pool> {
    let nice = config
        .pool_nice
        .unwrap_or(if config.component.is_some() { 0 } else { 19 });
    Pool::start(config.threads, config.pool_queue, nice, recorder)
}

/// Everything on the loop: the server, the link to the master, the lag probe, and
/// the accept loop until a stop; gives the pool back for an orderly stop.
async fn on_the_loop(
    config: &ServeConfig,
    engine: wasmtime::Engine,
    optimized: Option<(wasmtime::Engine, Compiler)>,
    served: Served,
    pool: Option<Pool>,
    recorder: Arc<Recorder>,
    listening: Listening,
) -> Option<Pool> {
    let Listening { listeners, tls } = listening;
    let front = FrontDoor {
        max_body: config.max_body,
        limit_concurrency: config.limit_concurrency,
        memory: served.defaults.worker_memory.clone(),
        proxies: TrustedProxies::parse(!config.no_proxy_headers, &config.forwarded_allow_ips)
            .unwrap_or_default(),
        keep_request_id: config.keep_request_id,
        log_query: !config.no_access_log_query,
        root_path: (!config.root_path.is_empty()).then(|| config.root_path.clone()),
    };
    let server = match config.max_requests {
        0 => Server::new(served.table, pool, front, recorder),
        n => Server::with_quota(
            served.table,
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
    let served_defaults = served.defaults.clone();
    let master_gone = CancellationToken::new();
    let (applied_tx, applied_rx) = tokio::sync::mpsc::unbounded_channel();
    let reporter = tokio::task::spawn_local(master_link::report_to_master(
        server.clone(),
        config.timeout_worker_healthcheck / 5,
        master_gone.clone(),
        applied_rx,
    ));
    let tables = match config.component {
        Some(_) => None,
        None => Some(tokio::task::spawn_local(master_link::follow_tables(
            server.clone(),
            Engines {
                baseline: (engine, config.tiers().0),
                optimized: optimized.clone(),
            },
            served.defaults,
            served.tenants,
            applied_tx,
        ))),
    };
    let lag_probe = tokio::task::spawn_local(probe_loop_lag(server.clone()));
    let upgrade = match (&config.component, optimized) {
        (Some(path), Some((engine, compiler))) => Some(tokio::task::spawn_local(tier::optimize(
            server.clone(),
            tier::Optimize {
                path: path.clone(),
                engine,
                compiler,
                defaults: served_defaults.clone(),
            },
        ))),
        _ => None,
    };
    accept::serve(
        listeners,
        server.clone(),
        limits,
        tls,
        stop_signal(master_gone),
    )
    .await;
    reporter.abort();
    lag_probe.abort();
    if let Some(upgrade) = upgrade {
        upgrade.abort();
    }
    if let Some(tables) = tables {
        tables.abort();
    }
    server.take_pool()
}

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

/// Resolves when the worker should drain: TERM, INT, or the master went away. QUIT
/// exits the process at once.
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
