//! The shared SDK routes (`sdk-shared`) behind an `async fn` handler, so the host runs
//! them on its loop; plus `GET /fetch?to=HOST:PORT`, an awaited outbound GET of
//! `http://HOST:PORT/upstream` with `fetch` (502 and the error if it fails).

use wasmloop_sdk::{Body, Error, Request, RequestExt, Response, StatusCode, fetch, handler};

#[derive(serde::Deserialize)]
struct To {
    to: String,
}

async fn fetch_route(req: Request) -> Result<Response, Error> {
    let To { to } = req.query()?;
    let outbound = Request::get(format!("http://{to}/upstream")).body(Body::empty())?;
    fetch(outbound)
        .await
        .map_err(|e| Error::new(StatusCode::BAD_GATEWAY, e.to_string()))
}

#[handler]
async fn handle(req: Request) -> Response {
    sdk_shared::router()
        .get("/fetch", fetch_route)
        .handle_async(req)
        .await
}
