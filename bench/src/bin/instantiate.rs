//! Per-request setup cost: a fresh store (fuel, limits, WASI) plus instantiation from
//! the pooling allocator, the work wasmloop does before a guest sees a request.
//!
//! `instantiate COMPONENT.wasm [ITERATIONS]` prints the mean and median in µs.

use std::time::{Duration, Instant};

use wasmloop::model::compiler::Compiler;
use wasmloop::model::mode::ModeChoice;
use wasmloop::runtime::component::{self, HandlerPre};
use wasmloop::runtime::engine::{self, EngineSizing};
use wasmloop::runtime::sandbox::{Limits, Sandbox};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: instantiate COMPONENT.wasm [ITERATIONS]"))?;
    let iterations: usize = args
        .next()
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(20_000);
    let engine = engine::build(
        EngineSizing {
            loop_slots: 64,
            pool_slots: 64,
            kept_slots: 0,
            max_memory: 128 << 20,
        },
        Compiler::Cranelift,
    )?;
    let handler = component::load(&engine, path.as_ref(), ModeChoice::Auto)?;
    let limits = Limits {
        fuel: 1_000_000_000,
        max_memory: 128 << 20,
        allow_outbound: Vec::new().into(),
        addresses: Default::default(),
        vars: Default::default(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    let mut samples = Vec::with_capacity(iterations);
    let app: std::sync::Arc<str> = "bench".into();
    for i in 0..iterations + iterations / 10 {
        let start = Instant::now();
        let mut store = Sandbox::store(&engine, &limits, &app, "bench")?;
        // No epoch ticker runs here: a deadline far away keeps start functions running.
        store.set_epoch_deadline(u64::MAX / 2);
        match &handler.pre {
            HandlerPre::ProxySync(pre) => {
                pre.instantiate(&mut store)?;
            }
            HandlerPre::ProxyAsync(pre) => {
                runtime.block_on(pre.instantiate_async(&mut store))?;
            }
            HandlerPre::Service(pre) => {
                runtime.block_on(pre.instantiate_async(&mut store))?;
            }
        }
        // Tearing the instance down is part of every request's cost too.
        drop(store);
        // The first tenth warms the pool's slots up and is not counted.
        if i >= iterations / 10 {
            samples.push(start.elapsed());
        }
    }
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    let median = samples[samples.len() / 2];
    println!(
        "{path}: mode={} iterations={iterations} mean={:.1}us median={:.1}us",
        handler.mode,
        mean.as_secs_f64() * 1e6,
        median.as_secs_f64() * 1e6
    );
    Ok(())
}
