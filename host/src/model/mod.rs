//! What every part of wasmloop shares, and nothing else: tenants, routes, apps and
//! their versions, hosts bound to tenants, the run [`mode::Mode`], the small text
//! forms (sizes, `KEY=VALUE`)
//! and the `wasmloop.toml` manifest. Plain data and the rules that make it valid; no
//! I/O, no Wasmtime, and no import of any other module of the crate.

pub mod app;
pub mod compiler;
pub mod host;
pub mod listen;
pub mod manifest;
pub mod mode;
pub mod proxies;
pub mod quota;
pub mod reuse;
pub mod route;
pub mod tenant;
pub mod text;

/// Input that breaks one of the model's rules; the message says which and how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);
