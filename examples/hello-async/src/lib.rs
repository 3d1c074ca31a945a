//! `hello-async`: an `async fn` handler. The SDK exports it as a wasi:http 0.3
//! handler, so wasmloop runs it on the event loop, where a request awaiting I/O costs
//! no thread.
//!
//! Build and serve:
//!
//! ```sh
//! cargo build --manifest-path examples/Cargo.toml --target wasm32-wasip2 --release -p hello-async
//! cargo run --release -p wasmloop -- serve examples/target/wasm32-wasip2/release/hello_async.wasm
//! curl http://127.0.0.1:8080/
//! ```

use wasmloop_sdk::{Request, handler};

#[handler]
async fn hello(_req: Request) -> &'static str {
    "Hello, world!\n"
}
