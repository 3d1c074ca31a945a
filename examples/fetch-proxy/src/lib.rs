//! `fetch-proxy`: an `async fn` handler that forwards each request's path to an
//! upstream server with an outbound call it awaits, on the host's loop. The upstream
//! comes from the configuration variable `UPSTREAM`; the host only lets the call out
//! if the operator allowed that host.
//!
//! Build and serve (with some server listening on 127.0.0.1:9000):
//!
//! ```sh
//! cargo build --manifest-path examples/Cargo.toml --target wasm32-wasip2 --release -p fetch-proxy
//! cargo run --release -p wasmloop -- serve examples/target/wasm32-wasip2/release/fetch_proxy.wasm \
//!     --var UPSTREAM=http://127.0.0.1:9000 --allow-outbound 127.0.0.1:9000 \
//!     --allow-outbound-net 127.0.0.0/8
//! curl http://127.0.0.1:8080/some/path
//! ```

use wasmloop_sdk::{Body, Error, Request, Response, StatusCode, config, fetch, handler, info};

#[handler]
async fn proxy(req: Request) -> Result<Response, Error> {
    let upstream = config::get("UPSTREAM").ok_or_else(|| {
        Error::internal("set the UPSTREAM variable: --var UPSTREAM=http://host:port")
    })?;
    let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let url = format!("{}{path}", upstream.trim_end_matches('/'));
    let outbound = Request::get(&url).body(Body::empty())?;
    match fetch(outbound).await {
        Ok(response) => {
            info!("{url} answered {}", response.status());
            Ok(response)
        }
        Err(e) => Err(Error::new(StatusCode::BAD_GATEWAY, e.to_string())),
    }
}
