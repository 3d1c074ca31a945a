//! Tiers for the component a single-file `serve` names (`--compiler auto`): the worker
//! starts serving it compiled by Winch, the baseline compiler, and meanwhile compiles
//! it with Cranelift on threads of the lowest CPU priority (its own thread pool, so
//! the compiler's parallel work stays off the serving threads' priority). When that
//! is done, the optimized app replaces the baseline one in the route table: new
//! requests run on it, requests in flight finish on the baseline engine (each app
//! holds its own engine, so stores and instances never mix the two). If the optimized
//! compile fails, the baseline tier goes on serving, with a log line.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use wasmtime::Engine;

use crate::model::compiler::Compiler;
use crate::runtime::component;
use crate::worker::app::{App, Defaults};
use crate::worker::front_door::Server;
use crate::worker::routes::RouteTable;

/// What the background tier compiles, and into what.
pub struct Optimize {
    /// The component file.
    pub path: PathBuf,
    /// The optimizing engine the result is loaded into.
    pub engine: Engine,
    pub compiler: Compiler,
    pub defaults: Defaults,
}

/// Compiles the optimized tier and swaps it in; logs what happened.
pub async fn optimize(server: Rc<Server>, job: Optimize) {
    let started = Instant::now();
    let Optimize {
        path,
        engine,
        compiler,
        defaults,
    } = job;
    let loaded =
        tokio::task::spawn_blocking(move || compile(&engine, compiler, &path, &defaults)).await;
    let compile_ms = started.elapsed().as_millis() as u64;
    match loaded {
        Ok(Ok(app)) => {
            server.set_table(RouteTable::single(Arc::new(app)));
            tracing::info!(
                %compiler,
                compile_ms,
                "optimized tier live: new requests run on it"
            );
        }
        Ok(Err(e)) => tracing::warn!(
            error = format!("{e:#}"),
            %compiler,
            "the optimized tier failed; the baseline tier goes on serving"
        ),
        Err(e) => tracing::warn!(error = %e, "the optimized tier's compile panicked"),
    }
}

/// Reads, compiles and checks the component on low-priority threads.
#[expect(clippy::disallowed_methods, reason = "runs on a blocking thread")]
fn compile(
    engine: &Engine,
    compiler: Compiler,
    path: &Path,
    defaults: &Defaults,
) -> anyhow::Result<App> {
    let bytes =
        std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("wasmloop-optimize-{i}"))
        // Each thread of the pool, alone: the lowest priority (Linux's nice applies
        // per thread). Requests come first; the tier comes when the CPU is free.
        .start_handler(|_| {
            let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19);
        })
        .build()
        .context("failed to start the compile threads")?;
    // Wasmtime's parallel compilation runs on the pool it is installed in.
    let handler = pool.install(|| component::load_bytes(engine, &bytes, defaults.mode))?;
    App::from_handler(engine, compiler, path, handler, defaults)
}
