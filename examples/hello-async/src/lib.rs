//! `hello-async`: an async handler (wasi:http 0.3 `handler`), so wasmloop runs it on
//! the event loop, where a request awaiting I/O costs no thread.
//!
//! Build and serve:
//!
//! ```sh
//! cargo build --manifest-path examples/Cargo.toml --target wasm32-wasip2 --release -p hello-async
//! cargo run --release -p wasmloop -- serve examples/target/wasm32-wasip2/release/hello_async.wasm
//! curl http://127.0.0.1:8080/
//! ```

use wasip3::http::types::{ErrorCode, Fields, Request, Response};
use wasip3::{wit_bindgen, wit_future, wit_stream};

struct Hello;

wasip3::http::service::export!(Hello);

impl wasip3::exports::http::handler::Guest for Hello {
    async fn handle(_request: Request) -> Result<Response, ErrorCode> {
        let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())])
            .map_err(|_| ErrorCode::InternalError(None))?;
        let (mut body_tx, body_rx) = wit_stream::new();
        let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
        let (response, _sent) = Response::new(headers, Some(body_rx), trailers_rx);
        wit_bindgen::spawn(async move {
            body_tx.write_all(b"Hello, world!\n".to_vec()).await;
            drop(trailers_tx);
        });
        Ok(response)
    }
}
