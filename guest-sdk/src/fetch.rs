//! Outbound HTTP: [`fetch()`] for `async fn` handlers (wasi:http 0.3's client, awaited
//! on the host's loop) and [`fetch_sync`] for plain `fn` handlers (wasi:http 0.2's
//! outgoing handler, blocking a pool thread). The host sends a request only to hosts
//! the operator allowed (`--allow-outbound`); any other gets a [`FetchError`] for which
//! [`FetchError::is_denied`] is true, and nothing leaves the machine.

use std::fmt;

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

/// Why a [`fetch()`] failed.
#[derive(Debug, Clone)]
pub struct FetchError {
    target: String,
    message: String,
    denied: bool,
}

impl FetchError {
    pub(crate) fn new(target: &str, message: String, denied: bool) -> Self {
        Self {
            target: target.to_string(),
            message,
            denied,
        }
    }

    /// Whether the host refused to send the request: its host is not one the
    /// operator allowed with `--allow-outbound`. Nothing was sent.
    pub fn is_denied(&self) -> bool {
        self.denied
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.denied {
            write!(
                f,
                "fetch {} refused by the host ({}): it only sends requests to the hosts its operator allowed",
                self.target, self.message
            )
        } else {
            write!(f, "fetch {} failed: {}", self.target, self.message)
        }
    }
}

impl std::error::Error for FetchError {}
