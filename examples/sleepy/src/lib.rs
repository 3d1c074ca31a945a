//! `sleepy`: an `async fn` handler that waits on a timer before it answers. While it
//! waits it holds no thread: one worker keeps thousands of these in flight on its one
//! loop thread, where a plain `fn` would hold a pool thread each.
//!
//! Build and serve:
//!
//! ```sh
//! cargo build --manifest-path examples/Cargo.toml --target wasm32-wasip2 --release -p sleepy
//! cargo run --release -p wasmloop -- serve examples/target/wasm32-wasip2/release/sleepy.wasm
//! curl 'http://127.0.0.1:8080/?ms=250'
//! ```

use std::time::Duration;

use wasmloop_sdk::{Error, Request, RequestExt, handler, sleep};

#[derive(serde::Deserialize)]
struct Query {
    #[serde(default = "default_ms")]
    ms: u64,
}

fn default_ms() -> u64 {
    100
}

#[handler]
async fn sleepy(req: Request) -> Result<String, Error> {
    let Query { ms } = req.query()?;
    if ms > 60_000 {
        return Err(Error::bad_request("ms must be at most 60000"));
    }
    sleep(Duration::from_millis(ms)).await;
    Ok(format!("slept {ms} ms\n"))
}
