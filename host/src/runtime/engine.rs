//! The Wasmtime `Engine` a worker uses for both execution modes (one per compiler:
//! Winch, the baseline compiler that compiles several times faster, and Cranelift,
//! the optimizing one; their code never mixes), and the epoch ticker that drives
//! preemption and deadlines.
//!
//! Fuel is on for every store (the CPU budget), epoch interruption is on for every
//! store (loop guests yield at each tick, pool guests trap at their deadline), and the
//! pooling allocator keeps per-request instantiation in the microseconds. Its slots are
//! sized from the worker's concurrency so that the limit an operator sets is the limit
//! that applies, not an allocator error.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;

pub use crate::model::compiler::Compiler;
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Strategy,
};

/// How many requests the engine must be able to hold at once.
#[derive(Debug, Clone, Copy)]
pub struct EngineSizing {
    /// Requests in flight on the loop (each holds one fiber stack while it runs).
    pub loop_slots: u32,
    /// Requests running on pool threads.
    pub pool_slots: u32,
    /// Instances kept idle for reuse, on top of the requests in flight.
    pub kept_slots: u32,
    /// Largest linear memory one instance may have.
    pub max_memory: usize,
}

/// Builds the engine: fuel, epochs, component-model async, pooling allocator, code
/// from `compiler`.
pub fn build(sizing: EngineSizing, compiler: Compiler) -> anyhow::Result<Engine> {
    let instances = sizing.loop_slots + sizing.pool_slots + sizing.kept_slots;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(instances)
        // A component built by a language toolchain holds a few core instances,
        // memories and tables (the adapter, libc, the program).
        .total_core_instances(instances.saturating_mul(4))
        .total_memories(instances.saturating_mul(2))
        .total_tables(instances.saturating_mul(4))
        .max_memories_per_component(4)
        .max_tables_per_component(8)
        // A store keeps its fiber when its call ends: an instance kept for reuse
        // holds one too.
        .total_stacks((sizing.loop_slots + sizing.kept_slots).max(1))
        // One page more than the limit, so the store's own limiter, which names the
        // error `memory_limit`, is the one that refuses first.
        .max_memory_size(sizing.max_memory + 65536)
        // Reset a small guest's memory with memset and keep its pages, rather than
        // madvise them away and fault them back in on the next request: per-request
        // instances make this the hot path (measured in docs/benchmarks.md). Memory
        // past the first MiB (a memory bomb's) is still given back at once.
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(64 << 10)
        .pagemap_scan(Enabled::Auto);

    let mut config = base_config(compiler);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
        .map_err(anyhow::Error::from)
        .context("failed to configure the WebAssembly engine")
}

/// What every engine of one compiler shares, and all that decides how code is
/// compiled: an artifact compiled by one engine built on it loads into any other.
fn base_config(compiler: Compiler) -> Config {
    let mut config = Config::new();
    config
        .strategy(match compiler {
            Compiler::Cranelift => Strategy::Cranelift,
            Compiler::Winch => Strategy::Winch,
        })
        .wasm_component_model_async(true)
        .consume_fuel(true)
        .epoch_interruption(true);
    if compiler == Compiler::Winch {
        // Winch compiles the functions; Cranelift still compiles the trampolines
        // between host and guest, one per function a table or an export can reach
        // (tens of thousands in CPython), and its optimizer was a fifth of a baseline
        // compile's CPU. The baseline tier is about compiling fast: no optimizer.
        config.cranelift_opt_level(wasmtime::OptLevel::None);
    }
    config
}

/// An engine that compiles and never instantiates: for `wasmloop compile`, whose
/// artifacts the workers' pooling engines of the same compiler load. With `cache`,
/// Cranelift reuses the functions it compiled before (the cache changes no code, so
/// the artifact loads into engines without it).
pub fn build_for_compile(
    compiler: Compiler,
    cache: Option<Arc<dyn wasmtime::CacheStore>>,
) -> anyhow::Result<Engine> {
    let mut config = base_config(compiler);
    if let (Compiler::Cranelift, Some(cache)) = (compiler, cache) {
        config.enable_incremental_compilation(cache)?;
    }
    Engine::new(&config)
        .map_err(anyhow::Error::from)
        .context("failed to configure the WebAssembly engine")
}

/// Names the engine settings an artifact was compiled for; part of its cache key.
pub fn compatibility_key(engine: &Engine, compiler: Compiler) -> String {
    use std::hash::{Hash as _, Hasher as _};
    // SipHash with fixed keys: the same settings give the same key in every process.
    #[expect(deprecated, reason = "a stable hash across processes is the point")]
    let mut hasher = std::hash::SipHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    // The compiler is named too, whether or not Wasmtime's hash covers it: one
    // compiler's artifact must never be taken for the other's.
    match compiler {
        Compiler::Winch => format!("{:016x}-winch", hasher.finish()),
        Compiler::Cranelift => format!("{:016x}", hasher.finish()),
    }
}

/// Advances the engines' epochs on a plain OS thread (never a runtime thread, so a busy
/// loop cannot delay the tick that makes its guest yield). Stops when dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engines: Vec<Engine>, interval: Duration) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("wasmloop-epoch".into())
            .spawn(move || {
                #[expect(clippy::disallowed_methods, reason = "the ticker's own OS thread")]
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(interval);
                    for engine in &engines {
                        engine.increment_epoch();
                    }
                }
            })
            .context("failed to start the epoch ticker thread")?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
