//! Outbound HTTP: [`fetch()`] for `async fn` handlers (wasi:http 0.3's client, awaited
//! on the host's loop) and [`fetch_sync`] for plain `fn` handlers (wasi:http 0.2's
//! outgoing handler, blocking a pool thread). The host sends a request only to hosts
//! the operator allowed (`--allow-outbound`); any other gets a [`FetchError`] for which
//! [`FetchError::is_denied`] is true, and nothing leaves the machine.

use crate::error::FetchError;
use crate::{Request, Response};

/// Sends `request` and returns the whole response, from an `async fn` handler.
///
/// The URI must be absolute (`http://host[:port]/path`). Response bodies are read
/// whole. Errors from the network, and hosts the operator did not allow, are a
/// [`FetchError`]; `?` turns one into a `502 Bad Gateway`.
///
/// ```no_run
/// use wasmloop_sdk::{Body, Error, Request, fetch};
///
/// async fn weather() -> Result<String, Error> {
///     let request = Request::get("http://api.example.com/today").body(Body::empty())?;
///     let response = fetch(request).await?;
///     Ok(response.body().as_str().unwrap_or_default().to_string())
/// }
/// ```
pub async fn fetch(request: Request) -> Result<Response, FetchError> {
    crate::wasi_p3::fetch(request).await
}

/// Sends `request` and returns the whole response, from a plain `fn` handler: the
/// same as [`fetch()`], blocking until the response has arrived.
///
/// ```no_run
/// use wasmloop_sdk::{Body, Error, Request, fetch_sync};
///
/// fn weather() -> Result<String, Error> {
///     let request = Request::get("http://api.example.com/today").body(Body::empty())?;
///     let response = fetch_sync(request)?;
///     Ok(response.body().as_str().unwrap_or_default().to_string())
/// }
/// ```
pub fn fetch_sync(request: Request) -> Result<Response, FetchError> {
    crate::wasi_p2::fetch(request)
}
