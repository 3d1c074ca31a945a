//! {{name}}: a wasmloop handler written as an `async fn`. wasmloop runs it on its event
//! loop: a request that awaits (a timer, an outbound call) holds no thread, so one
//! worker keeps thousands in flight. The host preempts a handler that computes too
//! long without awaiting, so it cannot stall its neighbours.
//!
//! ```sh
//! cargo build --release
//! wasmloop serve target/wasm32-wasip2/release/{{wasm}}.wasm
//! curl http://127.0.0.1:8080/hello/world
//! ```

use std::time::Duration;

use serde::Serialize;
use wasmloop_sdk::{Json, Request, RequestExt, Response, Router, handler, sleep};

#[derive(Serialize)]
struct Greeting {
    greeting: String,
}

async fn greet(req: Request) -> Json<Greeting> {
    // Waiting costs no thread: other requests run meanwhile.
    sleep(Duration::from_millis(1)).await;
    let name = req.param("name").unwrap_or("world");
    Json(Greeting {
        greeting: format!("Hello, {name}!"),
    })
}

#[handler]
async fn handle(req: Request) -> Response {
    Router::new()
        .get("/", |_req: Request| "Hello from {{name}}!\n")
        .get("/hello/{name}", greet)
        .handle_async(req)
        .await
}
