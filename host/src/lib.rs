//! wasmloop: a host for WebAssembly HTTP handlers with Uvicorn's process model and a
//! sandbox around every request.
//!
//! [`supervisor`] is the master process: it binds the socket and runs worker
//! processes that inherit it. A request's path through a worker, in order:
//!
//! - [`worker`]: a worker process and its event loop; accepts connections on the
//!   inherited listener, serves HTTP/1.1 and HTTP/2 with hyper, reports to the master.
//! - [`routes`]: which app a request's host and path select.
//! - [`http`]: the front door; request id, admission control, body limit, the wait
//!   for the response head under the deadline, error responses, the access log.
//! - [`loop_exec`]: runs async (wasi:http 0.3) handlers on the loop, preempted at
//!   every epoch tick.
//! - [`pool`]: runs sync (wasi:http 0.2) handlers on a bounded pool of OS threads.
//! - [`sandbox`]: what one request's store holds and the limits set on it;
//!   [`guest_output`]: the guest's stdout and stderr, logged with the request id.
//! - [`outcome`]: what a run hands back: the head, then how it ended.
//! - [`error`]: why a request failed, and the status code for it.
//!
//! Deploys (registry mode): [`api`] (the admin API the master serves), [`deploy`]
//! (checking, compiling and storing an upload), [`registry`] (tenants, apps, versions
//! in SQLite), [`pg_registry`] (the same in PostgreSQL, shared by several nodes),
//! [`follow`] (keeping a node in step with a shared registry), [`client`] (the CLI's
//! side of the API), [`manifest`] (`wasmloop.toml`).
//!
//! Observability: [`metrics`] (what workers count and how the master merges it),
//! [`admin`] (the master's admin listener: `/metrics`, `/doctor`), [`doctor`] (naming
//! the bottleneck from a minute of metrics).
//!
//! And around them: [`config`] (flags and environment), [`engine`] (the Wasmtime
//! engine and its epoch ticker), [`component`] (loading and classifying a
//! component), [`app`] (a loaded handler with its limits), [`body`] (request and
//! response bodies), [`telemetry`] (logs), [`template`] (`wasmloop new`).

pub mod admin;
pub mod api;
pub mod app;
pub mod body;
pub mod client;
pub mod component;
pub mod config;
pub mod deploy;
pub mod doctor;
pub mod engine;
pub mod error;
pub mod follow;
pub mod guest_output;
pub mod http;
pub mod loop_exec;
pub mod manifest;
pub mod metrics;
pub mod outcome;
pub mod pg_registry;
pub mod pool;
pub mod registry;
pub mod routes;
pub mod sandbox;
pub mod supervisor;
pub mod telemetry;
pub mod template;
pub mod worker;
