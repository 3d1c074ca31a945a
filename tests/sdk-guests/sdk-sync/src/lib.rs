//! The shared SDK routes (`sdk-shared`) behind a plain `fn` handler, so the host runs
//! them on its pool; plus `GET /fetch?to=HOST:PORT`, a blocking outbound GET of
//! `http://HOST:PORT/upstream` with `fetch_sync` (502 and the error if it fails).

use wasmloop_sdk::{Body, Error, Request, RequestExt, Response, StatusCode, fetch_sync, handler};

#[derive(serde::Deserialize)]
struct To {
    to: String,
}

fn fetch(req: Request) -> Result<Response, Error> {
    let To { to } = req.query()?;
    let outbound = Request::get(format!("http://{to}/upstream")).body(Body::empty())?;
    fetch_sync(outbound).map_err(|e| Error::new(StatusCode::BAD_GATEWAY, e.to_string()))
}

#[handler]
fn handle(req: Request) -> Response {
    sdk_shared::router().get("/fetch", fetch).handle(req)
}
