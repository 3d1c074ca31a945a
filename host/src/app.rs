//! An app: a loaded handler with the engine it was compiled for and the limits its
//! requests run under. The server routes requests to it; `loop_exec` and `pool` run
//! them. (Tenants and versions of apps arrive with the deploy path.)

use anyhow::Context as _;
use wasmtime::Engine;

use crate::component::{self, Handler, Mode};
use crate::config::ServeConfig;
use crate::engine::{self, EngineSizing};
use crate::sandbox::Limits;

/// Everything needed to run one request of an app.
pub struct App {
    /// The app's name in logs and metrics: the component's file name, for now.
    pub name: std::sync::Arc<str>,
    pub engine: Engine,
    pub handler: Handler,
    pub limits: Limits,
}

impl App {
    /// Builds the engine from the configuration and loads, checks and links the
    /// component it names. Blocks (reads and compiles): call it before the loop runs.
    pub fn load(config: &ServeConfig) -> anyhow::Result<App> {
        let max_memory =
            usize::try_from(config.max_memory).context("--max-memory does not fit in memory")?;
        let engine = engine::build(EngineSizing {
            loop_slots: u32::try_from(config.limit_concurrency).unwrap_or(u32::MAX),
            pool_slots: u32::try_from(config.threads).unwrap_or(u32::MAX),
            max_memory,
        })?;
        let handler = component::load(&engine, &config.component, config.mode)?;
        tracing::info!(
            component = %config.component.display(),
            export = %handler.export,
            export_async = handler.export_is_async,
            mode = %handler.mode,
            "loaded component"
        );
        let allow_outbound: Vec<String> = config
            .allow_outbound
            .iter()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .collect();
        let limits = Limits {
            fuel: config.fuel,
            max_memory,
            allow_outbound: allow_outbound.into(),
            vars: std::sync::Arc::new(config.vars.iter().cloned().collect()),
        };
        let name = config
            .component
            .file_stem()
            .map_or_else(|| "app".into(), |s| s.to_string_lossy().into());
        Ok(App {
            name,
            engine,
            handler,
            limits,
        })
    }

    pub fn mode(&self) -> Mode {
        self.handler.mode
    }
}
