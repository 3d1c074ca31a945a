//! `wasmloop-sdk`: the crate handler authors will depend on, to write a plain `fn`
//! (runs on the host's thread pool) or an `async fn` (runs on its event loop) with
//! one attribute.
//!
//! It has no API yet. Until it does, write handlers against the `wasip2` crate (sync,
//! wasi:http 0.2) or the `wasip3` crate (async, wasi:http 0.3) as `examples/hello`
//! and `examples/hello-async` do; any component exporting a wasi:http handler is
//! served.
