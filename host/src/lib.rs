//! wasmloop: a host for WebAssembly HTTP handlers with Uvicorn's process model and a
//! sandbox around every request.
//!
//! Each folder is one process or one stage, and imports point one way; the rules are
//! in docs/architecture.md and `host/tests/architecture.rs` holds them. In the order a
//! request meets them:
//!
//! - [`command`]: the command line; `main.rs` hands over to a process or a client.
//! - [`master`]: the master process binds the socket and supervises the workers
//!   ([`master::supervisor`]); its admin listener ([`master::admin`]) serves probes,
//!   metrics, the doctor and the deploy API.
//! - [`worker`]: one worker process and its event loop. [`worker::accept`] takes the
//!   connection, [`worker::front_door`] routes ([`worker::routes`]), admits
//!   ([`worker::admission`]) and dispatches the request to [`worker::run::on_loop`] or
//!   [`worker::run::on_pool`], waits for the head and answers;
//!   [`worker::access_log`] writes the line once the guest's store is gone.
//! - [`runtime`]: Wasmtime only: the engine, loading and classifying a component, a
//!   request's sandbox, why a guest run ended.
//! - [`protocol`]: what the master and a worker say to each other.
//!
//! The control plane: [`deploy`] (the admin API, uploads, the compile child,
//! publishing tables) and [`registry`] (tenants, apps and versions in SQLite or
//! PostgreSQL, and following a shared one). Around them: [`model`] (the types every
//! part shares), [`config`] (flags and their validation), [`metrics`] (counted by
//! workers, merged by the master), [`doctor`] (naming the bottleneck), [`cli`] (the
//! client commands, `wasmloop new`, `wasmloop doctor`), [`tls`] (the listeners' TLS)
//! and [`telemetry`] (logs).

pub mod cli;
pub mod command;
pub mod config;
pub mod deploy;
pub mod doctor;
pub mod master;
pub mod metrics;
pub mod model;
pub mod protocol;
pub mod registry;
pub mod runtime;
pub mod telemetry;
pub mod tls;
pub mod worker;
