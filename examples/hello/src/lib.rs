//! `hello`: a sync handler (wasi:http 0.2 `incoming-handler`), so wasmloop runs it on
//! its thread pool under the fuel limit.
//!
//! Build and serve:
//!
//! ```sh
//! cargo build --manifest-path examples/Cargo.toml --target wasm32-wasip2 --release -p hello
//! cargo run --release -p wasmloop -- serve examples/target/wasm32-wasip2/release/hello.wasm
//! curl http://127.0.0.1:8080/
//! ```

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Hello;

wasip2::http::proxy::export!(Hello);

impl Guest for Hello {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())])
            .expect("static headers are valid");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("a new response has a body");
        ResponseOutparam::set(out, Ok(response));
        let stream = body.write().expect("a new body has a stream");
        stream
            .blocking_write_and_flush(b"Hello, world!\n")
            .expect("the client is still there");
        drop(stream);
        OutgoingBody::finish(body, None).expect("the body is complete");
    }
}
