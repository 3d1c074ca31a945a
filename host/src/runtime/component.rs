//! Loading a component: check that it is one, find its wasi:http handler export,
//! decide where it runs, and link it against what the host provides.
//!
//! The mode comes from the type of the export, not its name: a `handle` that is a
//! component-model `async func` (wasi:http 0.3 `handler`) runs on the loop, a sync one
//! (wasi:http 0.2 `incoming-handler`) on the pool. Everything that can be wrong with a
//! file is found here, at start-up, with a message that says what it is; a deploy
//! also instantiates it once ([`try_instantiate`]) to find one that cannot start.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use wasmtime::Engine;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime_wasi_http::{p2, p3};

use crate::model::mode::{Mode, ModeChoice};
use crate::runtime::error::RequestError;
use crate::runtime::sandbox::{Limits, Sandbox};

/// A linked, ready-to-instantiate handler, in the calling convention its mode needs.
pub enum HandlerPre {
    /// wasi:http 0.3 `handler.handle`, an async func, driven by `run_concurrent`.
    Service(p3::bindings::ServicePre<Sandbox>),
    /// wasi:http 0.2 `incoming-handler.handle` called with async entry points (loop).
    ProxyAsync(p2::bindings::ProxyPre<Sandbox>),
    /// wasi:http 0.2 `incoming-handler.handle` called synchronously (pool).
    ProxySync(p2::bindings::sync::ProxyPre<Sandbox>),
}

/// A component that passed every check, with the decision of where it runs.
pub struct Handler {
    /// The export the requests go to, e.g. `wasi:http/handler@0.3.0`.
    pub export: String,
    /// Whether that export's `handle` is an async func.
    pub export_is_async: bool,
    pub mode: Mode,
    pub pre: HandlerPre,
}

/// Which wasi:http world an export belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    /// `wasi:http/incoming-handler@0.2.x`
    P2,
    /// `wasi:http/handler@0.3.x`
    P3,
}

fn flavor_of(export: &str) -> Option<Flavor> {
    if export.starts_with("wasi:http/incoming-handler@0.2.") {
        Some(Flavor::P2)
    } else if export.starts_with("wasi:http/handler@0.3.") {
        Some(Flavor::P3)
    } else {
        None
    }
}

/// Reads, checks, compiles and links the component at `path`.
#[expect(clippy::disallowed_methods, reason = "start-up, before the loop runs")]
pub fn load(engine: &Engine, path: &Path, choice: ModeChoice) -> anyhow::Result<Handler> {
    let bytes =
        std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
    load_bytes(engine, &bytes, choice).with_context(|| format!("cannot serve {}", path.display()))
}

/// Checks, compiles and links a component given as bytes.
pub fn load_bytes(engine: &Engine, bytes: &[u8], choice: ModeChoice) -> anyhow::Result<Handler> {
    check_is_component(bytes)?;
    let component = Component::new(engine, bytes)
        .map_err(anyhow::Error::from)
        .context("the component failed to validate or compile")?;
    prepare(engine, &component, choice)
}

/// Loads an artifact `wasmloop compile` wrote (`Component::serialize`).
///
/// The caller must pass bytes that this program serialized: the deploy path writes
/// artifacts into the data directory and records their SHA-256 in the registry, and
/// the worker checks that hash before it calls this. Wasmtime itself refuses
/// artifacts from another Wasmtime version or engine configuration.
#[allow(
    unsafe_code,
    reason = "the one place artifacts are deserialized; see above"
)]
pub fn deserialize(engine: &Engine, artifact: &[u8]) -> anyhow::Result<Component> {
    // SAFETY: `artifact` was produced by `Component::serialize` in `wasmloop compile`
    // and its hash matched the one recorded when it was written (see the doc comment).
    unsafe { Component::deserialize(engine, artifact) }
        .map_err(anyhow::Error::from)
        .context("failed to load the compiled artifact")
}

/// Maps an artifact file `wasmloop compile` wrote, as [`deserialize`] loads its bytes.
///
/// The caller must pass a file whose contents were checked against the recorded
/// hash, unchanged since (the worker compares the inode, size and modification time
/// the master saw when it hashed it). Files in the data directory are only ever
/// replaced by a rename, never written in place.
#[allow(
    unsafe_code,
    reason = "the one place artifact files are mapped; see above"
)]
pub fn deserialize_file(engine: &Engine, artifact: &Path) -> anyhow::Result<Component> {
    // SAFETY: the file was written by `wasmloop compile` and found intact by the
    // master, and is the same file since (see the doc comment).
    unsafe { Component::deserialize_file(engine, artifact) }
        .map_err(anyhow::Error::from)
        .with_context(|| {
            format!(
                "failed to load the compiled artifact {}",
                artifact.display()
            )
        })
}

/// The bytes `Component::serialize` returns, without copying them (a copy of a
/// large component's image is tens of megabytes made byte by byte): its compiled
/// image, as `wasmloop compile` writes it.
#[allow(
    unsafe_code,
    reason = "reads the component's own image in place; see the comment"
)]
pub fn image(component: &Component) -> &[u8] {
    let range = component.image_range();
    // SAFETY: `image_range` is the component's code memory, which Wasmtime keeps
    // mapped and readable while the component lives (`serialize` reads exactly these
    // bytes); the slice borrows `component`.
    unsafe { std::slice::from_raw_parts(range.start, range.end.offset_from_unsigned(range.start)) }
}

/// Classifies a compiled component and links it for its mode.
pub fn prepare(
    engine: &Engine,
    component: &Component,
    choice: ModeChoice,
) -> anyhow::Result<Handler> {
    let component = component.clone();
    let (export, export_is_async) = find_handler_export(engine, &component)?;
    let flavor = flavor_of(&export).expect("find_handler_export returns wasi:http exports only");
    let mode = match choice {
        ModeChoice::Auto if export_is_async => Mode::Loop,
        ModeChoice::Auto => Mode::Pool,
        ModeChoice::Loop => Mode::Loop,
        ModeChoice::Pool => Mode::Pool,
    };

    let pre = match (flavor, mode) {
        (Flavor::P3, Mode::Loop) => {
            let linker = async_linker(engine)?;
            let instance = instantiate_pre(&linker, engine, &component)?;
            HandlerPre::Service(
                p3::bindings::ServicePre::new(instance)
                    .map_err(anyhow::Error::from)
                    .context("failed to bind the handler export")?,
            )
        }
        (Flavor::P3, Mode::Pool) => bail!(
            "`{export}` exports an async `handle` (wasi:http 0.3), which runs on the event loop; \
             it cannot run on the pool (use --mode auto or --mode loop)"
        ),
        (Flavor::P2, Mode::Loop) => {
            let linker = async_linker(engine)?;
            let instance = instantiate_pre(&linker, engine, &component)?;
            HandlerPre::ProxyAsync(
                p2::bindings::ProxyPre::new(instance)
                    .map_err(anyhow::Error::from)
                    .context("failed to bind the handler export")?,
            )
        }
        (Flavor::P2, Mode::Pool) => {
            let mut linker = Linker::new(engine);
            // Sync WASI: only ever called from pool threads, which are not runtime threads.
            #[expect(clippy::disallowed_methods, reason = "the pool's linker")]
            wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
            p2::add_only_http_to_linker_sync(&mut linker)?;
            wasmtime_wasi_config::add_to_linker(&mut linker, Sandbox::config)?;
            crate::runtime::sandbox::bound_blocking_calls(&mut linker)?;
            let instance = instantiate_pre(&linker, engine, &component)?;
            HandlerPre::ProxySync(
                p2::bindings::sync::ProxyPre::new(instance)
                    .map_err(anyhow::Error::from)
                    .context("failed to bind the handler export")?,
            )
        }
    };
    Ok(Handler {
        export,
        export_is_async,
        mode,
        pre,
    })
}

/// Instantiates a prepared handler once, in a fresh store under `limits`, and drops
/// it: a component that traps, runs out of fuel or memory while it starts (a start
/// function, a static initializer) fails here, at deploy time, instead of on every
/// request. No handler is called. Blocks: for `wasmloop compile`, never the loop.
pub fn try_instantiate(engine: &Engine, handler: &Handler, limits: &Limits) -> anyhow::Result<()> {
    let app: Arc<str> = "deploy-check".into();
    let mut store = Sandbox::store(engine, limits, &app, "deploy-check")?;
    // Fuel bounds the work, and the caller's timeout (the compiler's, or the worker's
    // start-up) the wall-clock time: no epoch deadline. The engine's epoch may already
    // be ticking (a worker's optimized tier loads while it serves): the deadline is a
    // delta added to it, so far from u64::MAX.
    store.set_epoch_deadline(u64::MAX / 2);
    let started = match &handler.pre {
        HandlerPre::ProxySync(pre) => pre.instantiate(&mut store).map(drop),
        HandlerPre::ProxyAsync(pre) => in_runtime(pre.instantiate_async(&mut store)).map(drop),
        HandlerPre::Service(pre) => in_runtime(pre.instantiate_async(&mut store)).map(drop),
    };
    started.map_err(|e| {
        let cause = RequestError::from_guest(e, store.data().memory_refused(), false);
        anyhow::anyhow!("the component fails while it is instantiated, before any request: {cause}")
    })
}

/// Drives an async instantiation on a current-thread runtime of its own; async WASI
/// host functions a start function may call need one.
fn in_runtime<T>(future: impl Future<Output = wasmtime::Result<T>>) -> wasmtime::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(future)
}

/// The linker for stores driven by async entry points: WASI 0.2 (what Rust's std
/// imports) and 0.3, wasi:http 0.2 and 0.3.
fn async_linker(engine: &Engine) -> anyhow::Result<Linker<Sandbox>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi::p3::add_to_linker(&mut linker)?;
    p2::add_only_http_to_linker_async(&mut linker)?;
    p3::add_to_linker(&mut linker)?;
    wasmtime_wasi_config::add_to_linker(&mut linker, Sandbox::config)?;
    Ok(linker)
}

pub fn check_is_component(bytes: &[u8]) -> anyhow::Result<()> {
    if !bytes.starts_with(b"\0asm") {
        bail!("not a WebAssembly file (it does not start with the `\\0asm` magic bytes)");
    }
    if wasmparser::Parser::is_core_wasm(bytes) {
        bail!(
            "this is a core WebAssembly module, not a component; build for the \
             wasm32-wasip2 target or wrap it with `wasm-tools component new`"
        );
    }
    if !wasmparser::Parser::is_component(bytes) {
        bail!("unsupported WebAssembly binary version or layer (truncated or corrupt header?)");
    }
    Ok(())
}

/// Finds the wasi:http handler export and whether its `handle` is an async func.
fn find_handler_export(engine: &Engine, component: &Component) -> anyhow::Result<(String, bool)> {
    let ty = component.component_type();
    let mut found = None;
    let mut exports = Vec::new();
    for (name, item) in ty.exports(engine) {
        exports.push(name.to_string());
        let (Some(flavor), ComponentItem::ComponentInstance(instance)) =
            (flavor_of(name), &item.ty)
        else {
            continue;
        };
        let handle = instance
            .exports(engine)
            .find_map(|(n, item)| match item.ty {
                ComponentItem::ComponentFunc(f) if n == "handle" => Some(f),
                _ => None,
            });
        let Some(handle) = handle else {
            bail!("`{name}` is exported but has no `handle` function");
        };
        // Prefer wasi:http 0.3 when a component exports both.
        if found.is_none() || flavor == Flavor::P3 {
            found = Some((name.to_string(), handle.async_()));
        }
    }
    found.ok_or_else(|| {
        let listed = if exports.is_empty() {
            "nothing".to_string()
        } else {
            exports.join(", ")
        };
        anyhow::anyhow!(
            "no wasi:http handler export: expected `wasi:http/incoming-handler@0.2.x` or \
             `wasi:http/handler@0.3.0`, found {listed}"
        )
    })
}

/// Links the component, naming every import the host does not provide when it fails.
fn instantiate_pre(
    linker: &Linker<Sandbox>,
    engine: &Engine,
    component: &Component,
) -> anyhow::Result<InstancePre<Sandbox>> {
    linker.instantiate_pre(component).map_err(|err| {
        // `Linker::instance` refuses a name the linker already defines, so a probe on a
        // clone tells provided imports from missing ones.
        let missing: Vec<String> = component
            .component_type()
            .imports(engine)
            .map(|(name, _)| name)
            .filter(|name| linker.clone().instance(name).is_ok())
            .map(|name| format!("`{name}`"))
            .collect();
        if missing.is_empty() {
            anyhow::Error::from(err).context("the component's imports do not match what the host provides")
        } else {
            anyhow::anyhow!(
                "unsupported imports: {}; the host provides WASI 0.2 (cli, clocks, filesystem, io, random, \
                 sockets), WASI 0.3 and wasi:http 0.2.x/0.3.0",
                missing.join(", ")
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_is_what_serialize_returns() {
        let engine = Engine::default();
        let component = Component::new(
            &engine,
            r#"(component (core module (func (export "f") (result i32) i32.const 7)))"#,
        )
        .unwrap();
        let serialized = component.serialize().unwrap();
        assert!(!serialized.is_empty());
        assert_eq!(image(&component), &serialized[..]);
    }
}
