//! A handler written with a third-party guest library (wstd's `#[http_server]`), not
//! with wasmloop's SDK: the host must serve it like any wasi:http 0.2 component.

use wstd::http::{Body, Request, Response};

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, wstd::http::Error> {
    let path = request.uri().path().to_string();
    Ok(Response::new(format!("hello from wstd at {path}\n").into()))
}
