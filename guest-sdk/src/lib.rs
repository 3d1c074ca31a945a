//! Write wasmloop HTTP handlers in Rust. A plain `fn` runs on the host's thread pool;
//! an `async fn` runs on its event loop. One attribute decides which:
//!
//! ```no_run
//! use wasmloop_sdk::{Request, handler};
//!
//! /// A plain `fn`: exported as a wasi:http 0.2 handler, so the host runs it on a pool
//! /// thread under a fuel budget. Right for code that computes or blocks.
//! #[handler]
//! fn hello(_req: Request) -> &'static str {
//!     "Hello, world!\n"
//! }
//! ```
//!
//! ```no_run
//! use std::time::Duration;
//! use wasmloop_sdk::{Request, handler, sleep};
//!
//! /// An `async fn`: exported as a wasi:http 0.3 handler, so the host runs it on the
//! /// event loop, where a request that waits holds no thread. The host preempts it if it
//! /// computes too long without awaiting, so it cannot stall its neighbours.
//! #[handler]
//! async fn hello(_req: Request) -> &'static str {
//!     sleep(Duration::from_millis(10)).await;
//!     "Hello, world!\n"
//! }
//! ```
//!
//! A component has one handler. Build it for `wasm32-wasip2` as a `cdylib` and serve
//! it with `wasmloop serve target/wasm32-wasip2/release/NAME.wasm`;
//! `wasmloop new NAME [--async]` writes a crate set up that way.
//!
//! # What is in the box
//!
//! | you want | use |
//! |---|---|
//! | the request | [`Request`] (`http::Request<Body>`), the whole body already read |
//! | body as text or JSON, query, path parameters | [`RequestExt`]: `req.text()`, `req.json::<T>()`, `req.query::<T>()`, `req.param("id")` |
//! | a response | anything [`IntoResponse`]: text, bytes, [`Json`], [`Html`], a [`StatusCode`], `(StatusCode, body)`, `(StatusCode, [headers], body)`, a [`Response`] |
//! | errors as responses | return `Result<T, `[`Error`]`>`; `?` on any error is a 500, [`Error::bad_request`] and friends say what the client did wrong |
//! | routes | [`Router`]: `/users/{id}`, 404 and 405 by default |
//! | big responses | [`Body::from_chunks`] (both styles), [`Body::from_stream`] (`async fn`) |
//! | outbound HTTP | [`fetch()`] in an `async fn`, [`fetch_sync`] in a plain `fn`; only to hosts the operator allowed |
//! | configuration | [`config::get`]`("KEY")`: the host's `--var KEY=VALUE` |
//! | logging | [`info!`], [`warn!`], [`error!`], [`debug!`]: the host logs each line with the request id |
//! | timers | [`sleep`] in an `async fn`; `std::thread::sleep` in a plain `fn` |
//!
//! # Which style?
//!
//! Use `async fn` when a request mostly waits (timers, outbound calls): thousands of
//! them share one thread. Use `fn` when it computes or calls blocking code: each
//! request has a pool thread to itself, bounded by the host's `--threads`, and a fuel
//! budget ends one that runs too long. Either way the host enforces a memory limit and
//! a deadline.

mod body;
pub mod config;
mod convert;
mod error;
mod fetch;
mod json;
mod log;
mod request;
mod response;
mod router;
mod time;
mod wasi_p2;
mod wasi_p3;

pub use body::Body;
pub use error::{Error, FetchError};
pub use fetch::{fetch, fetch_sync};
pub use http::{self, HeaderMap, Method, StatusCode, Uri, header};
pub use json::Json;
pub use request::{Params, RequestExt};
pub use response::{Html, IntoResponse};
pub use router::{Handler, Router};
pub use time::sleep;

/// Exports a function as the component's HTTP handler.
///
/// On `fn(Request) -> impl IntoResponse` it exports the wasi:http 0.2
/// `incoming-handler` (the host runs it on its thread pool); on
/// `async fn(Request) -> impl IntoResponse` it exports the wasi:http 0.3 `handler`
/// (the host runs it on its event loop). The function stays callable as written.
/// Use it once per component.
///
/// ```no_run
/// use wasmloop_sdk::{Error, Json, Request, RequestExt, handler};
///
/// #[derive(serde::Deserialize, serde::Serialize)]
/// struct Sum {
///     a: i64,
///     b: i64,
/// }
///
/// #[handler]
/// fn add(req: Request) -> Result<Json<i64>, Error> {
///     let Sum { a, b } = req.json()?;
///     Ok(Json(a + b))
/// }
/// ```
pub use wasmloop_sdk_macros::handler;

/// The request a handler receives: the `http` crate's request with a [`Body`].
pub type Request<B = Body> = http::Request<B>;

/// The response a handler builds: the `http` crate's response with a [`Body`].
pub type Response<B = Body> = http::Response<B>;

/// What the `#[handler]` expansion and the logging macros call. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use wasip2;
    pub use wasip3;

    pub use crate::wasi_p2::serve as serve_sync;
    pub use crate::wasi_p3::serve as serve_async;

    /// Turns a handler's return value into its response.
    pub fn into_response<R: crate::IntoResponse>(response: R) -> crate::Response {
        response.into_response()
    }

    /// Writes one log line at `level`.
    pub fn log(level: &str, message: std::fmt::Arguments<'_>) {
        crate::log::write(level, message)
    }
}
