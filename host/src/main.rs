//! The `wasmloop` binary: arguments, then configuration, then a serving worker; and
//! the exit code. Exit 0 after a clean stop, 1 when start-up fails (the reason is
//! printed), 2 for bad arguments.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;
use wasmloop::app::App;
use wasmloop::component::{self, Mode};
use wasmloop::config::{Cli, Command, ServeConfig};
use wasmloop::engine::{self, EngineSizing, EpochTicker};
use wasmloop::http::{FrontDoor, Server};
use wasmloop::pool::Pool;
use wasmloop::sandbox::Limits;
use wasmloop::{telemetry, worker};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(config) => serve(*config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: ServeConfig) -> anyhow::Result<()> {
    config.validate()?;
    let _log = telemetry::init(&config.log_level, config.log_format)?;

    let max_memory =
        usize::try_from(config.max_memory).context("--max-memory does not fit in memory")?;
    let engine = engine::build(EngineSizing {
        loop_slots: u32::try_from(config.limit_concurrency).unwrap_or(u32::MAX),
        pool_slots: u32::try_from(config.threads).unwrap_or(u32::MAX),
        max_memory,
    })?;
    let handler = component::load(&engine, &config.component, config.mode)?;
    tracing::info!(
        component = %config.component.display(),
        export = %handler.export,
        export_async = handler.export_is_async,
        mode = %handler.mode,
        "loaded component"
    );
    let mode = handler.mode;
    let app = Arc::new(App {
        engine: engine.clone(),
        handler,
        limits: Limits {
            fuel: config.fuel,
            max_memory,
            allow_outbound: Arc::from(Vec::new()),
        },
    });
    let pool = match mode {
        Mode::Pool => Some(Pool::start(config.threads, config.pool_queue)?),
        Mode::Loop => None,
    };
    let _ticker = EpochTicker::start(engine, config.epoch_interval)?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the event loop")?;
    let local = tokio::task::LocalSet::new();
    let pool = local.block_on(&runtime, async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("failed to listen on {}", config.listen))?;
        let addr = listener
            .local_addr()
            .context("failed to read the bound address")?;
        eprintln!("listening on http://{addr}");
        let front = FrontDoor {
            max_body: config.max_body,
            limit_concurrency: config.limit_concurrency,
            timeout: config.timeout,
        };
        let server = Server::new(app, pool, front);
        let limits = worker::ConnLimits {
            max_header_size: usize::try_from(config.max_header_size).unwrap_or(usize::MAX),
            max_headers: config.max_headers,
            timeout_keep_alive: config.timeout_keep_alive,
            timeout_header_read: config.timeout_header_read,
            graceful_timeout: config.graceful_timeout,
        };
        worker::serve(listener, server.clone(), limits, shutdown_signal()).await;
        anyhow::Ok(server.take_pool())
    })?;
    // Loop tasks still holding the server are gone with the LocalSet.
    drop(local);
    if let Some(pool) = pool {
        // Requests on the pool were answered while the loop drained; what is left is
        // a job still unwinding, which gets a moment more.
        if !pool.shutdown(std::time::Instant::now() + std::time::Duration::from_secs(1)) {
            tracing::warn!("a pool thread is still busy; exiting without it");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT (ctrl-c).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; only ctrl-c stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
