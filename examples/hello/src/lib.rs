//! `hello`: a plain `fn` handler. The SDK exports it as a wasi:http 0.2 handler, so
//! wasmloop runs it on its thread pool, under the fuel limit.
//!
//! Build and serve:
//!
//! ```sh
//! cargo build --manifest-path examples/Cargo.toml --target wasm32-wasip2 --release -p hello
//! cargo run --release -p wasmloop -- serve examples/target/wasm32-wasip2/release/hello.wasm
//! curl http://127.0.0.1:8080/
//! ```

use wasmloop_sdk::{Request, handler};

#[handler]
fn hello(_req: Request) -> &'static str {
    "Hello, world!\n"
}
