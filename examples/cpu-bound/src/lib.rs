//! `cpu-bound`: a plain `fn` handler that computes: it counts the primes below `n`.
//! Code like this belongs on the host's pool: each request has a thread to itself, so
//! it cannot delay requests on the loop, and the fuel limit (`--fuel`) ends one that
//! computes too long with `503 cpu_limit`.
//!
//! Build and serve:
//!
//! ```sh
//! cargo build --manifest-path examples/Cargo.toml --target wasm32-wasip2 --release -p cpu-bound
//! cargo run --release -p wasmloop -- serve examples/target/wasm32-wasip2/release/cpu_bound.wasm
//! curl 'http://127.0.0.1:8080/primes?below=100000'
//! curl 'http://127.0.0.1:8080/primes?below=2000000000'   # out of fuel: 503 cpu_limit
//! ```

use serde_json::json;
use wasmloop_sdk::{Error, Json, Request, RequestExt, handler};

#[derive(serde::Deserialize)]
struct Query {
    below: u64,
}

/// Trial division: deliberately plain, so the work grows with `below`.
fn count_primes(below: u64) -> u64 {
    (2..below)
        .filter(|&n| (2..).take_while(|d| d * d <= n).all(|d| n % d != 0))
        .count() as u64
}

#[handler]
fn primes(req: Request) -> Result<Json<serde_json::Value>, Error> {
    let Query { below } = req.query()?;
    Ok(Json(
        json!({ "below": below, "primes": count_primes(below) }),
    ))
}
