//! An app: a loaded handler with the engine it was compiled for and the limits its
//! requests run under. The server routes requests to it; `loop_exec` and `pool` run
//! them. (Tenants and versions of apps arrive with the deploy path.)

use wasmtime::Engine;

use crate::component::{Handler, Mode};
use crate::sandbox::Limits;

/// Everything needed to run one request of an app.
pub struct App {
    pub engine: Engine,
    pub handler: Handler,
    pub limits: Limits,
}

impl App {
    pub fn mode(&self) -> Mode {
        self.handler.mode
    }
}
