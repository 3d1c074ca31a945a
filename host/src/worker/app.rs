//! An app: one version of a loaded handler with the limits its requests run under and
//! the admission slots it counts against (its own, and its tenant's). The worker's
//! route table (`routes.rs`) maps requests to apps; `run/on_loop.rs` and
//! `run/on_pool.rs` run them.
//!
//! An app comes either from `serve COMPONENT.wasm` ([`App::from_file`]) or from the
//! registry ([`App::from_registry`], loading the artifact the deploy path compiled).
//! A request holds its `Arc<App>` from start to end, so a deploy that swaps the table
//! lets requests in flight finish on the version they started on.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use wasmtime::Engine;

use crate::config::ServeConfig;
use crate::metrics::recorder::app_load_failed;
use crate::model::app::{ActiveApp, sha256_hex};
use crate::model::compiler::Compiler;
use crate::model::mode::{Mode, ModeChoice};
use crate::model::reuse::Reuse;
use crate::model::tenant::TenantLimits;
use crate::protocol::{AppFiles, FileStamp};
use crate::runtime::component::{self, Handler};
use crate::runtime::outbound::{self, AddressPolicy};
use crate::runtime::sandbox::Limits;
use crate::worker::admission::{Slots, TenantSlots, default_memory_budget};
use crate::worker::run::instances::{Instances, KEPT_PER_WORKER};

/// Everything needed to run one request of an app.
pub struct App {
    /// The app's name in logs and metrics: `tenant/app`, or the component's file
    /// name when serving a single file.
    pub name: Arc<str>,
    /// The tenant's name, in registry mode.
    pub tenant: Option<Arc<str>>,
    /// The version number, in registry mode (0 for a single file).
    pub version: u64,
    pub engine: Engine,
    pub handler: Handler,
    pub limits: Limits,
    /// Wall-clock limit of one request.
    pub timeout: Duration,
    /// This app's requests in flight on this worker, and their limit.
    pub slots: Arc<Slots>,
    /// The tenant's slots, shared by all its apps on this worker.
    pub tenant_slots: Option<Arc<TenantSlots>>,
    /// Instances kept for the next request, when the app reuses them.
    pub instances: Instances,
    /// The compiler its code came from (its engine's).
    pub compiler: Compiler,
}

/// The engines a worker loads deployed apps into: the baseline compiler's, and the
/// optimizing one's when tiers are on. A deployed app runs on the engine of the
/// compiler its artifact is for; the two never share a store or an instance.
#[derive(Clone)]
pub struct Engines {
    pub baseline: (Engine, Compiler),
    pub optimized: Option<(Engine, Compiler)>,
}

impl Engines {
    /// The engine of `compiler`, if this worker runs it.
    pub fn get(&self, compiler: Compiler) -> Option<&Engine> {
        std::iter::once(&self.baseline)
            .chain(&self.optimized)
            .find(|(_, c)| *c == compiler)
            .map(|(engine, _)| engine)
    }
}

/// The server-wide defaults and ceilings an app's settings are resolved against.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub fuel: u64,
    pub max_memory: u64,
    pub timeout: Duration,
    pub allow_outbound: Vec<String>,
    /// The addresses no guest of this worker may reach (the outbound floor).
    pub addresses: Arc<AddressPolicy>,
    pub vars: Vec<(String, String)>,
    pub mode: ModeChoice,
    /// Per worker: requests in flight (`--limit-concurrency`) and pool threads.
    pub limit_concurrency: u64,
    pub threads: u64,
    /// A tenant's share of the worker's capacity when its limits do not say.
    pub tenant_share: f64,
    /// Bytes of guest memory this worker's requests may grow to together.
    pub memory_budget: u64,
    /// That budget as taken by requests in flight and instances kept for reuse.
    pub worker_memory: Arc<Slots>,
    /// Instances kept idle for reuse on this worker, across apps (the engine has
    /// this many instance slots on top of those for requests in flight).
    pub kept_instances: Arc<Slots>,
    /// Workers of the server: a tenant's per-server limits are split among them.
    pub workers: u64,
    /// The reuse contract of the component `serve FILE` serves.
    pub reuse: Reuse,
    /// The compiler of the engine deployed apps are loaded into.
    pub compiler: Compiler,
}

impl Defaults {
    pub fn from_config(config: &ServeConfig, addresses: AddressPolicy) -> Defaults {
        let memory_budget = config.worker_memory_budget.unwrap_or_else(|| {
            // One operator's own component or manifest has no tenant to keep from
            // another: no budget unless the operator sets one.
            if config.component.is_some() || config.manifest.is_some() {
                u64::MAX
            } else {
                default_memory_budget(config.worker_count() as u64)
            }
        });
        Defaults {
            addresses: Arc::new(addresses),
            fuel: config.fuel,
            max_memory: config.max_memory,
            timeout: config.timeout,
            allow_outbound: config
                .allow_outbound
                .iter()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .collect(),
            vars: config.vars.clone(),
            mode: config.mode,
            limit_concurrency: config.limit_concurrency as u64,
            threads: config.threads as u64,
            tenant_share: config.tenant_share,
            memory_budget,
            worker_memory: Arc::new(Slots::new(memory_budget)),
            kept_instances: Arc::new(Slots::new(u64::from(KEPT_PER_WORKER))),
            workers: config.worker_count() as u64,
            // Checked when the configuration was validated.
            reuse: config.reuse.reuse().unwrap_or_default(),
            compiler: config.tiers().0,
        }
    }

    /// The slots a tenant gets on this worker: its per-server limits split among the
    /// workers (rounded up), else its share of the worker's, and never all the pool
    /// threads while there is more than one.
    pub fn tenant_slots(&self, limits: &TenantLimits) -> TenantSlots {
        let share = |total: u64| ((total as f64 * self.tenant_share).floor() as u64).max(1);
        let per_worker = |limit: Option<u64>| limit.map(|l| l.div_ceil(self.workers.max(1)));
        let pool_cap = if self.threads > 1 {
            self.threads - 1
        } else {
            1
        };
        TenantSlots {
            in_flight: Arc::new(Slots::new(
                per_worker(limits.max_in_flight)
                    .unwrap_or_else(|| share(self.limit_concurrency))
                    .min(self.limit_concurrency),
            )),
            pool: Arc::new(Slots::new(
                per_worker(limits.max_pool_threads)
                    .unwrap_or_else(|| share(self.threads))
                    .min(pool_cap),
            )),
            memory: Arc::new(Slots::new(
                per_worker(limits.memory_budget)
                    .unwrap_or_else(|| share(self.memory_budget))
                    .min(self.memory_budget),
            )),
        }
    }
}

impl App {
    /// Loads, checks, links and once instantiates the component a single-file `serve`
    /// names, compiled by `engine` (whose compiler is `compiler`). Blocks (reads and
    /// compiles): call it before the loop runs.
    pub fn from_file(
        engine: &Engine,
        compiler: Compiler,
        path: &Path,
        defaults: &Defaults,
    ) -> anyhow::Result<App> {
        let handler = component::load(engine, path, defaults.mode)?;
        App::from_handler(engine, compiler, path, handler, defaults)
    }

    /// The app of a single-file `serve` from its already compiled `handler`: checked
    /// by one instantiation. Blocks: call it off the loop.
    pub fn from_handler(
        engine: &Engine,
        compiler: Compiler,
        path: &Path,
        handler: Handler,
        defaults: &Defaults,
    ) -> anyhow::Result<App> {
        tracing::info!(
            component = %path.display(),
            export = %handler.export,
            export_is_async = handler.export_is_async,
            mode = %handler.mode,
            %compiler,
            "loaded component"
        );
        let name: Arc<str> = path
            .file_stem()
            .map_or_else(|| "app".into(), |s| s.to_string_lossy().into());
        let limits = Limits {
            fuel: defaults.fuel,
            max_memory: usize::try_from(defaults.max_memory).unwrap_or(usize::MAX),
            allow_outbound: defaults.allow_outbound.clone().into(),
            addresses: defaults.addresses.clone(),
            vars: Arc::new(defaults.vars.iter().cloned().collect()),
        };
        component::try_instantiate(engine, &handler, &limits)
            .with_context(|| format!("{} cannot serve requests", path.display()))?;
        Ok(App {
            name,
            tenant: None,
            version: 0,
            engine: engine.clone(),
            handler,
            limits,
            timeout: defaults.timeout,
            slots: Arc::new(Slots::new(u64::MAX)),
            tenant_slots: None,
            instances: Instances::new(
                defaults.reuse,
                defaults.kept_instances.clone(),
                vec![defaults.worker_memory.clone()],
            ),
            compiler,
        })
    }

    /// Loads a deployed version from its compiled artifact, which the master compiled
    /// in a bounded child and checked (or an app of `--manifest`, the operator's own
    /// file, by compiling it as `serve FILE` does). A worker never compiles a deployed
    /// version: an artifact missing,
    /// corrupt (its hash is not the recorded one) or not loadable fails the load,
    /// with a log line and `wasmloop_app_load_failures_total`, and the master rebuilds
    /// it for the next table. Blocks: call it off the loop.
    pub fn from_registry(
        engines: &Engines,
        entry: &ActiveApp,
        files: &AppFiles,
        defaults: &Defaults,
        tenant_slots: Arc<TenantSlots>,
    ) -> anyhow::Result<App> {
        let settings = &entry.version.settings;
        let name: Arc<str> = format!("{}/{}", entry.tenant, entry.app).into();
        let choice = settings.mode_choice();
        let (engine, compiler) = if files.local {
            (&engines.baseline.0, engines.baseline.1)
        } else {
            let engine = engines.get(files.compiler).with_context(|| {
                format!(
                    "its artifact is for {}, which this worker does not run",
                    files.compiler
                )
            })?;
            (engine, files.compiler)
        };
        let handler = if files.local {
            component::load(engine, &files.component, choice)?
        } else {
            let compiled = load_artifact(engine, files).inspect_err(|_| app_load_failed(&name))?;
            component::prepare(engine, &compiled, choice)?
        };
        let tenant = &entry.tenant_limits;
        let capped = |app: Option<u64>, tenant: Option<u64>, server: u64| {
            app.unwrap_or(server)
                .min(tenant.unwrap_or(u64::MAX))
                .min(server)
        };
        let mut vars: Vec<(String, String)> = defaults.vars.clone();
        vars.extend(settings.vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        let limits = Limits {
            fuel: capped(settings.fuel, tenant.fuel, defaults.fuel),
            max_memory: usize::try_from(capped(
                settings.max_memory,
                tenant.max_memory,
                defaults.max_memory,
            ))
            .unwrap_or(usize::MAX),
            // The operator's list is the ceiling: an app's list only narrows it.
            allow_outbound: outbound::narrow(&settings.allow_outbound, &defaults.allow_outbound)
                .into(),
            addresses: defaults.addresses.clone(),
            vars: Arc::new(vars.into_iter().collect()),
        };
        let timeout_ms = capped(
            settings.timeout_ms,
            tenant.timeout_ms,
            defaults.timeout.as_millis() as u64,
        );
        let kept_memory = tenant_slots.memory.clone();
        anyhow::Ok(App {
            name,
            tenant: Some(entry.tenant.as_str().into()),
            version: entry.version.number,
            engine: engine.clone(),
            handler,
            limits,
            timeout: Duration::from_millis(timeout_ms),
            slots: Arc::new(Slots::new(settings.max_in_flight.unwrap_or(u64::MAX))),
            tenant_slots: Some(tenant_slots),
            instances: Instances::new(
                settings.reuse,
                defaults.kept_instances.clone(),
                vec![defaults.worker_memory.clone(), kept_memory],
            ),
            compiler,
        })
        .inspect(|app| {
            tracing::info!(
                app = %app.name, version = app.version, export = %app.handler.export,
                mode = %app.handler.mode, compiler = %app.compiler, "loaded app"
            );
        })
        .context("failed to load a deployed app")
    }

    pub fn mode(&self) -> Mode {
        self.handler.mode
    }
}

/// The compiled artifact of a table entry, if it is there and is the one recorded:
/// the very file the master found intact is mapped as it is (the page cache holds
/// one copy for every worker); any other is read and hashed first.
#[expect(clippy::disallowed_methods, reason = "runs on a blocking thread")]
fn load_artifact(
    engine: &Engine,
    files: &AppFiles,
) -> anyhow::Result<wasmtime::component::Component> {
    let Some(artifact) = &files.artifact else {
        anyhow::bail!(
            "this node has no compiled artifact of it (the master failed to compile it; see its log)"
        );
    };
    let path = &artifact.path;
    let unreadable = || format!("its compiled artifact {} is unreadable", path.display());
    let meta = std::fs::metadata(path).with_context(unreadable)?;
    if artifact.verified == Some(FileStamp::of(&meta)) {
        return component::deserialize_file(engine, path);
    }
    let bytes = std::fs::read(path).with_context(unreadable)?;
    anyhow::ensure!(
        sha256_hex(&bytes) == artifact.sha256,
        "its compiled artifact {} is corrupt (not the recorded hash)",
        path.display()
    );
    component::deserialize(engine, &bytes)
}
