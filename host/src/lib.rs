//! wasmloop: a host for WebAssembly HTTP handlers with Uvicorn's process model and a
//! sandbox around every request.
//!
//! Each folder is one process or one stage, and imports point one way (the rules, and
//! the test that holds them, are in docs/architecture.md).

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
pub mod worker;
