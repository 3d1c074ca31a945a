//! {{name}}: a wasmloop handler written as a plain `fn`. wasmloop runs it on its
//! thread pool: each request has a thread to itself, under a fuel (CPU) budget, a
//! memory limit and a deadline. Right for code that computes or calls blocking APIs.
//!
//! ```sh
//! cargo build --release
//! wasmloop serve target/wasm32-wasip2/release/{{wasm}}.wasm
//! curl http://127.0.0.1:8080/hello/world
//! ```

use serde::Serialize;
use wasmloop_sdk::{Json, Request, RequestExt, Response, Router, handler};

#[derive(Serialize)]
struct Greeting {
    greeting: String,
}

fn greet(req: Request) -> Json<Greeting> {
    let name = req.param("name").unwrap_or("world");
    Json(Greeting {
        greeting: format!("Hello, {name}!"),
    })
}

#[handler]
fn handle(req: Request) -> Response {
    Router::new()
        .get("/", |_req: Request| "Hello from {{name}}!\n")
        .get("/hello/{name}", greet)
        .handle(req)
}
