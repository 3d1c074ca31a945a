//! What the admin API works with, and how a change reaches the workers: the
//! registry, the data directory, the admin token, the compile limits, and the sender
//! the master handed over for route tables. [`DeployContext::publish`] turns what the
//! registry holds into a table (fetching and compiling what this node lacks) and
//! waits until every worker serves it; [`DeployContext::sync`] does so when another
//! node changed a shared registry.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use http::StatusCode;
use subtle::ConstantTimeEq as _;
use tokio::sync::{mpsc, watch};

use crate::config::ServeConfig;
use crate::deploy::compile::{self, CompileCache, CompileLimits, Compiled, DataDir, DeployError};
use crate::deploy::queue::CompileQueue;
use crate::deploy::reply::{Refused, refuse, unauthorized};
use crate::model::app::{ActiveApp, Version, sha256_hex};
use crate::model::compiler::Compiler;
use crate::model::mode::ModeChoice;
use crate::model::quota::Quotas;
use crate::model::tenant::Tenant;
use crate::protocol::{AppFiles, Artifact, FileStamp, TableEntry, TableMessage};
use crate::registry::postgres::PostgresRegistry;
use crate::registry::{Registry, RegistryError, SqliteRegistry};
use crate::runtime::compile_cache::CacheStats;
use crate::runtime::engine;

/// How long a deploy's answer waits for every worker to serve it.
const APPLY_WAIT: Duration = Duration::from_secs(5);

/// An optimized tier that went live (component hash, compile ms, what the compile
/// took from the compile cache) or failed to compile.
pub(crate) type OptimizedEvent = (String, Result<(u64, CacheStats), String>);

/// What the API needs: the registry, the data directory, the admin token, and the
/// master to publish tables through.
pub struct DeployContext {
    pub(crate) registry: Arc<dyn Registry>,
    pub(crate) data: DataDir,
    admin_token: String,
    pub(crate) engine_key: String,
    pub(crate) max_upload: u64,
    /// The operator's `--allow-outbound`: the most an app may ask for.
    pub(crate) outbound_ceiling: Vec<String>,
    pub(crate) compile: CompileLimits,
    /// The optimizing tier's compiler and engine key, when deploys are tiered
    /// (`--compiler auto`): `compile` is then the baseline tier's.
    pub(crate) optimized: Option<(Compiler, String)>,
    /// Components whose optimized artifact is being compiled.
    optimizing: std::sync::Mutex<std::collections::HashSet<String>>,
    /// One background (optimized-tier) compile at a time.
    optimizations: tokio::sync::Semaphore,
    /// Each optimized tier that went live (component hash, compile ms) or failed.
    pub(crate) optimized_events: tokio::sync::broadcast::Sender<OptimizedEvent>,
    /// Worker processes of this node.
    pub(crate) workers: usize,
    /// The node's compile cache, unless turned off.
    pub(crate) compile_cache: Option<CompileCache>,
    /// Turns to run a compile child.
    pub(crate) compiles: CompileQueue,
    /// Every tenant's quotas unless the admin overrides them.
    pub(crate) quotas: Quotas,
    tables: mpsc::UnboundedSender<TableMessage>,
    applied: watch::Receiver<u64>,
    generation: std::sync::atomic::AtomicU64,
    /// One change at a time: two deploys must not publish tables out of order.
    pub(crate) publishing: tokio::sync::Mutex<()>,
    /// Artifacts found intact: path -> the file that was hashed (or written).
    verified: std::sync::Mutex<HashMap<PathBuf, FileStamp>>,
    /// What the last published table held, to tell whether a re-read changed it.
    published: std::sync::Mutex<Option<Vec<ActiveApp>>>,
}

impl DeployContext {
    /// Opens the data directory and its registry, and settles the admin token. A
    /// shared registry that is down is waited for (it says so in the log). Blocks.
    pub fn open(
        config: &ServeConfig,
        tables: mpsc::UnboundedSender<TableMessage>,
        applied: watch::Receiver<u64>,
    ) -> anyhow::Result<DeployContext> {
        let data = DataDir::new(config.data_dir.clone());
        data.prepare()?;
        let registry: Arc<dyn Registry> = match &config.registry {
            None => Arc::new(SqliteRegistry::open(&config.data_dir)?),
            Some(url) => Arc::new(PostgresRegistry::open_waiting(url, || {
                SqliteRegistry::open(&config.data_dir)
            })?),
        };
        let admin_token = admin_token(config)?;
        let (compiler, optimized) = config.tiers();
        let key = |compiler| -> anyhow::Result<String> {
            Ok(engine::compatibility_key(
                &engine::build_for_compile(compiler, None)?,
                compiler,
            ))
        };
        let engine_key = key(compiler)?;
        let optimized = optimized
            .map(|compiler| anyhow::Ok((compiler, key(compiler)?)))
            .transpose()?;
        Ok(DeployContext {
            registry,
            data,
            admin_token,
            engine_key,
            max_upload: config.max_upload,
            outbound_ceiling: config
                .allow_outbound
                .iter()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .collect(),
            compile: CompileLimits {
                timeout: config.compile_timeout,
                max_memory: config.compile_max_memory,
                guest_fuel: config.fuel,
                guest_max_memory: config.max_memory,
                compiler,
                low_priority: false,
            },
            optimized,
            optimizing: Default::default(),
            optimizations: tokio::sync::Semaphore::new(1),
            optimized_events: tokio::sync::broadcast::channel(64).0,
            workers: config.worker_count(),
            compile_cache: (config.compile_cache_size > 0).then(|| CompileCache {
                dir: config.data_dir.join("compile-cache"),
                max_bytes: config.compile_cache_size,
            }),
            quotas: config.default_quotas(),
            compiles: CompileQueue::new(
                config
                    .compile_concurrency
                    .unwrap_or_else(CompileQueue::default_concurrency),
                config.compile_queue,
                config.compile_queue_timeout,
            ),
            tables,
            applied,
            generation: std::sync::atomic::AtomicU64::new(1),
            publishing: tokio::sync::Mutex::new(()),
            published: std::sync::Mutex::new(None),
            verified: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Whether other nodes change the registry too.
    pub fn shared(&self) -> bool {
        self.registry.shared()
    }

    /// Reads what is active and makes sure this node has each app's component and a
    /// compiled artifact: a component another node deployed is fetched from the
    /// shared registry (and its hash checked), an artifact missing for this node's
    /// engine is compiled in a bounded child, as a deploy would. An app whose
    /// component a shared registry could not hand over fails the whole load (the
    /// caller keeps its old table); one that does not compile is left to its worker,
    /// which reports why it fails to load.
    pub async fn load(self: &Arc<Self>, generation: u64) -> anyhow::Result<TableMessage> {
        let me = self.clone();
        let active = tokio::task::spawn_blocking(move || me.registry.active())
            .await
            .context("the registry task failed")?
            .map_err(anyhow::Error::from)?;
        // A node that joins with many apps compiles them a core's worth at a time.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let versions: Vec<_> = active.iter().map(|a| a.version.clone()).collect();
        let artifacts: Vec<_> = futures_util::stream::iter(versions)
            .map(|version| {
                let me = self.clone();
                async move { me.prepare(&version).await }
            })
            .buffered(cores)
            .collect()
            .await;
        let mut apps = Vec::new();
        for (active, artifact) in active.iter().zip(artifacts) {
            let artifact = match artifact {
                Ok(artifact) => artifact,
                // Publishing a table whose component this node could not fetch would
                // make its workers drop the app: keep the old table and retry.
                Err(e)
                    if self.registry.shared()
                        && !tokio::fs::try_exists(self.data.component(&active.version.sha256))
                            .await
                            .unwrap_or(false) =>
                {
                    return Err(e.context(format!(
                        "app {}/{} version {} is not on this node yet",
                        active.tenant, active.app, active.version.number
                    )));
                }
                Err(e) => {
                    tracing::error!(app = %active.app, version = active.version.number, "failed to prepare the app on this node: {e:#}");
                    None
                }
            };
            let compiler = artifact.as_ref().map_or(self.compile.compiler, |a| a.2);
            let artifact = artifact.map(|(path, sha256, _)| Artifact {
                verified: self
                    .verified
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&path)
                    .copied(),
                path,
                sha256,
            });
            apps.push(TableEntry {
                files: AppFiles {
                    component: self.data.component(&active.version.sha256),
                    artifact,
                    compiler,
                    local: false,
                },
                active: active.clone(),
            });
        }
        *self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(active);
        Ok(TableMessage { generation, apps })
    }

    /// The artifact of `version` for this node (its path, recorded hash and
    /// compiler), fetching the component and compiling it first when needed: the
    /// optimized tier's when it is there, else the baseline's (compiled now if
    /// missing, the optimized one then compiled in the background).
    async fn prepare(
        self: &Arc<Self>,
        version: &Version,
    ) -> anyhow::Result<Option<(PathBuf, String, Compiler)>> {
        let sha = version.sha256.clone();
        let component = self.data.component(&sha);
        let tiers: Vec<(Compiler, String)> = self
            .optimized
            .iter()
            .cloned()
            .chain(std::iter::once((
                self.compile.compiler,
                self.engine_key.clone(),
            )))
            .collect();
        let me = self.clone();
        let (lookup_sha, lookup_component) = (sha.clone(), component.clone());
        let found = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            if !lookup_component.exists() {
                let bytes = me.registry.component(&lookup_sha)?.with_context(|| {
                    format!("component {lookup_sha} is neither on this node nor in the registry")
                })?;
                anyhow::ensure!(
                    sha256_hex(&bytes) == lookup_sha,
                    "the registry's copy of component {lookup_sha} does not match its hash"
                );
                compile::write_durably(&lookup_component, &bytes)?;
            }
            for (compiler, key) in tiers {
                let path = me.data.artifact(&lookup_sha, &key);
                if let Some(hash) = me.registry.artifact(&lookup_sha, &key)?
                    && me.artifact_intact(&path, &hash)
                {
                    return Ok(Some((path, hash, compiler)));
                }
            }
            Ok(None)
        })
        .await??;
        let found = match found {
            Some(found) => found,
            None => self.compile_for_node(version, false).await?.0,
        };
        if self.optimized.as_ref().is_some_and(|(c, _)| *c != found.2) {
            self.optimize_later(version);
        }
        Ok(Some(found))
    }

    /// Compiles with the baseline tier's compiler (`compile` runs one compile child
    /// with the limits it is given), or with the optimizing one alone when the
    /// baseline compiler cannot compile the component (Winch lacks relaxed SIMD, tail
    /// calls, GC...). Any other refusal stands. Returns the report and the tier
    /// (compiler, engine key) it is for.
    pub(crate) async fn compile_baseline<F, Fut>(
        &self,
        compile: F,
    ) -> Result<(Compiled, (Compiler, String)), DeployError>
    where
        F: Fn(CompileLimits) -> Fut,
        Fut: Future<Output = Result<Compiled, DeployError>>,
    {
        let baseline = (self.compile.compiler, self.engine_key.clone());
        match (compile(self.compile).await, &self.optimized) {
            (Ok(compiled), _) => Ok((compiled, baseline)),
            (Err(DeployError::Uncompilable(reason)), Some(optimized)) => {
                tracing::warn!(
                    %reason,
                    "the baseline compiler cannot compile this upload; compiling it with \
                     {} alone",
                    optimized.0
                );
                let limits = CompileLimits {
                    compiler: optimized.0,
                    ..self.compile
                };
                Ok((compile(limits).await?, optimized.clone()))
            }
            (Err(e), _) => Err(e),
        }
    }

    /// Compiles `version` for this node in a bounded child, moves the artifact into
    /// place and records it: the baseline tier (see
    /// [`DeployContext::compile_baseline`]), or in the `background` the optimized
    /// tier, at the lowest CPU priority, one at a time, taking no turn from deploys.
    async fn compile_for_node(
        self: &Arc<Self>,
        version: &Version,
        background: bool,
    ) -> anyhow::Result<((PathBuf, String, Compiler), CacheStats)> {
        let sha = version.sha256.clone();
        let component = self.data.component(&sha);
        let mode = ModeChoice::from(version.mode);
        let tmp = self.data.temp_files(&["artifact"]);
        let _turn = match background {
            false => Some(self.compiles.node_turn().await?),
            true => None,
        };
        let _background_turn = match background {
            true => Some(self.optimizations.acquire().await?),
            false => None,
        };
        let started = std::time::Instant::now();
        let compile = |limits| {
            compile::compile(
                &component,
                tmp.path(0),
                mode,
                limits,
                self.compile_cache.as_ref(),
            )
        };
        let compiled = match (&self.optimized, background) {
            (Some(optimized), true) => {
                let limits = CompileLimits {
                    compiler: optimized.0,
                    low_priority: true,
                    ..self.compile
                };
                compile(limits).await.map(|c| (c, optimized.clone()))
            }
            _ => self.compile_baseline(compile).await,
        };
        let (compiled, (compiler, key)) = compiled.map_err(|e| anyhow::anyhow!("{e}"))?;
        let artifact = self.data.artifact(&sha, &key);
        let me = self.clone();
        let (artifact_path, artifact_sha, key) = (
            artifact.clone(),
            compiled.artifact_sha256.clone(),
            key.clone(),
        );
        let tmp_path = tmp.path(0).to_path_buf();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            std::fs::rename(&tmp_path, &artifact_path)
                .context("failed to move the artifact into place")?;
            me.registry.put_artifact(&sha, &key, &artifact_sha)?;
            me.written_intact(&artifact_path);
            Ok(())
        })
        .await??;
        tracing::info!(
            sha256 = %version.sha256, %compiler, compile_ms = started.elapsed().as_millis() as u64,
            cache_hits = compiled.cache.hits, cache_lookups = compiled.cache.lookups,
            "compiled a component for this node"
        );
        Ok((
            (artifact, compiled.artifact_sha256, compiler),
            compiled.cache,
        ))
    }

    /// Compiles the optimized tier of `version` in the background, once, and then
    /// publishes the table again: workers load the optimized artifact for new
    /// requests (those in flight finish on the baseline one).
    fn optimize_later(self: &Arc<Self>, version: &Version) {
        let Some((compiler, _)) = self.optimized.clone() else {
            return;
        };
        if !self
            .optimizing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(version.sha256.clone())
        {
            return;
        }
        let (me, version) = (self.clone(), version.clone());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let compiled = me.compile_for_node(&version, true).await;
            me.optimizing
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&version.sha256);
            let event = match compiled {
                Ok((_, cache)) => {
                    let _one_at_a_time = me.publishing.lock().await;
                    let live = me.publish_change().await;
                    let compile_ms = started.elapsed().as_millis() as u64;
                    tracing::info!(
                        sha256 = %version.sha256, %compiler, compile_ms,
                        cache_hits = cache.hits, cache_lookups = cache.lookups,
                        workers_updated = live, "optimized tier live: new requests run on it"
                    );
                    Ok((compile_ms, cache))
                }
                Err(e) => {
                    tracing::warn!(
                        sha256 = %version.sha256,
                        "the optimized tier failed to compile; the baseline tier goes on \
                         serving: {e:#}"
                    );
                    Err(format!("{e:#}"))
                }
            };
            let _ = me.optimized_events.send((version.sha256.clone(), event));
        });
    }

    /// Notes an artifact this node just moved into place as intact: the compile child
    /// hashed the bytes it wrote, and that hash is the one recorded. Publishing it
    /// then does not read and hash it again. Blocks.
    pub(crate) fn written_intact(&self, path: &std::path::Path) {
        if let Ok(meta) = std::fs::metadata(path) {
            self.verified
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(path.to_path_buf(), FileStamp::of(&meta));
        }
    }

    /// Whether the artifact at `path` is there and has the recorded `hash`. Hashed
    /// once per file version (its size and modification time), so a publish does
    /// not read every artifact again; a corrupt one is logged and rebuilt by the
    /// caller, in a compile child as a deploy would. Blocks.
    #[expect(clippy::disallowed_methods, reason = "runs on a blocking thread")]
    fn artifact_intact(&self, path: &std::path::Path, hash: &str) -> bool {
        let Ok(meta) = std::fs::metadata(path) else {
            return false;
        };
        let stamp = FileStamp::of(&meta);
        let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if verified.get(path) == Some(&stamp) {
            return true;
        }
        let intact = std::fs::read(path).is_ok_and(|bytes| sha256_hex(&bytes) == hash);
        if intact {
            verified.insert(path.to_path_buf(), stamp);
        } else {
            verified.remove(path);
            tracing::warn!(path = %path.display(), "cached artifact is corrupt; rebuilding it in a compile child");
        }
        intact
    }

    /// Removes what no version refers to any more: the registry's records (and a
    /// shared registry's bytes), then this node's component and artifact files.
    /// Safe against a deploy of the same bytes at the same moment: the caller holds
    /// `publishing`, under which a deploy moves its files into place and records
    /// them, and a deploy in progress keeps its files in `tmp/`, which this leaves
    /// alone. Failures are logged; what is left is swept the next time.
    pub(crate) async fn collect_garbage(self: &Arc<Self>) {
        let me = self.clone();
        let swept = tokio::task::spawn_blocking(move || me.sweep_files()).await;
        match swept {
            Ok(Ok(0)) => {}
            Ok(Ok(files)) => tracing::info!(
                files,
                "removed components and artifacts no version refers to"
            ),
            Ok(Err(e)) => tracing::warn!("clean-up of unreferenced components deferred: {e:#}"),
            Err(e) => tracing::warn!("clean-up of unreferenced components failed: {e}"),
        }
    }

    /// [`DeployContext::collect_garbage`]'s blocking part; returns the files removed.
    fn sweep_files(&self) -> anyhow::Result<usize> {
        let referenced: std::collections::HashSet<String> =
            self.registry.collect_garbage()?.into_iter().collect();
        let mut removed = 0;
        for (dir, sha_of) in [
            (
                "components",
                (|name: &str| name.strip_suffix(".wasm")) as fn(&str) -> Option<&str>,
            ),
            ("artifacts", |name: &str| {
                name.strip_suffix(".cwasm")?.split('-').next()
            }),
        ] {
            for entry in std::fs::read_dir(self.data.root.join(dir))?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                // Partial files of a write in progress start with a dot: not ours.
                let Some(sha) = sha_of(&name).filter(|_| !name.starts_with('.')) else {
                    continue;
                };
                if !referenced.contains(sha) && std::fs::remove_file(entry.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        self.verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|path, _| path.exists());
        Ok(removed)
    }

    /// Publishes a change the caller just recorded: whether every worker serves it
    /// within a few seconds. The change is recorded whatever happens here; a table
    /// that cannot be published is logged, and workers catch up with the next one.
    /// The caller holds `publishing`.
    pub(crate) async fn publish_change(self: &Arc<Self>) -> bool {
        self.publish().await.unwrap_or_else(|e| {
            tracing::error!("failed to publish the route table: {e:#}");
            false
        })
    }

    /// Publishes the registry's current state and waits until every worker serves it;
    /// returns whether they all did in time. The caller holds `publishing`.
    async fn publish(self: &Arc<Self>) -> anyhow::Result<bool> {
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        let table = self.load(generation).await?;
        self.tables
            .send(table)
            .map_err(|_| anyhow::anyhow!("the master is stopping"))?;
        let mut applied = self.applied.clone();
        let done = tokio::time::timeout(APPLY_WAIT, applied.wait_for(|g| *g >= generation)).await;
        Ok(matches!(done, Ok(Ok(_))))
    }

    /// Re-reads a shared registry and publishes it if what is active changed since
    /// the last table (another node deployed, rolled back or deleted).
    pub async fn sync(self: &Arc<Self>) -> Result<(), RegistryError> {
        let _one_at_a_time = self.publishing.lock().await;
        let me = self.clone();
        let active = tokio::task::spawn_blocking(move || me.registry.active())
            .await
            .map_err(|e| RegistryError::Storage(e.into()))??;
        let unchanged = self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            == Some(&active);
        if unchanged {
            return Ok(());
        }
        tracing::info!(
            apps = active.len(),
            "the shared registry changed; publishing it"
        );
        self.publish().await.map_err(RegistryError::Storage)?;
        // Another node deleted or pruned: its components may be unreferenced here too.
        self.collect_garbage().await;
        Ok(())
    }

    pub(crate) async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&dyn Registry) -> Result<T, RegistryError> + Send + 'static,
    ) -> Result<T, Refused> {
        let registry = self.registry.clone();
        match tokio::task::spawn_blocking(move || f(registry.as_ref())).await {
            Ok(result) => Ok(result?),
            Err(e) => Err(refuse(StatusCode::INTERNAL_SERVER_ERROR, e)),
        }
    }

    /// Whether `token` is the admin token (compared in constant time).
    pub fn is_admin_token(&self, token: &str) -> bool {
        bool::from(token.as_bytes().ct_eq(self.admin_token.as_bytes()))
    }

    /// Lets the admin token through, and refuses anything else.
    pub(crate) fn admin(&self, token: Option<String>) -> Result<(), Refused> {
        match token {
            Some(t) if self.is_admin_token(&t) => Ok(()),
            Some(_) => Err(Refused::new(unauthorized(
                "this call needs the admin token, and the token sent is not it \
                 (a tenant token manages its own apps, not tenants or hosts)",
            ))),
            None => Err(Refused::new(unauthorized(
                "this call needs the admin token: send `Authorization: Bearer TOKEN` \
                 (`wasmloop --token`, or WASMLOOP_TOKEN)",
            ))),
        }
    }

    /// The tenant whose token this is; a 401 that says what is wrong otherwise.
    pub async fn tenant(self: &Arc<Self>, token: Option<String>) -> Result<Tenant, Refused> {
        let Some(token) = token else {
            return Err(Refused::new(unauthorized(
                "this call needs a tenant token: send `Authorization: Bearer TOKEN` \
                 (`wasmloop --token`, or WASMLOOP_TOKEN; `wasmloop tenant create` prints one)",
            )));
        };
        if self.is_admin_token(&token) {
            return Err(Refused::new(unauthorized(
                "this call needs a tenant token, and the admin token was sent: the admin \
                 token manages tenants and hosts; apps belong to a tenant, so use the \
                 token `wasmloop tenant create` printed for it",
            )));
        }
        match self.blocking(move |r| r.authenticate(&token)).await? {
            Some(tenant) => Ok(tenant),
            None => Err(Refused::new(unauthorized(
                "this call needs a tenant token, and the token sent is no tenant's \
                 (mistyped, or its tenant was deleted)",
            ))),
        }
    }
}

/// The admin token the operator configured: `--admin-token-file`, else
/// `WASMLOOP_ADMIN_TOKEN`; `None` when neither is set.
pub fn configured_admin_token(config: &ServeConfig) -> anyhow::Result<Option<String>> {
    if let Some(path) = &config.admin_token_file {
        return token_from_file(path).map(Some);
    }
    if let Ok(token) = std::env::var("WASMLOOP_ADMIN_TOKEN") {
        anyhow::ensure!(
            token.len() >= 16,
            "WASMLOOP_ADMIN_TOKEN is shorter than 16 characters"
        );
        return Ok(Some(token));
    }
    Ok(None)
}

/// The first line of a token file, which only its owner may read.
#[expect(clippy::disallowed_methods, reason = "start-up, before the loop runs")]
fn token_from_file(path: &std::path::Path) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("failed to read the admin token from {}", path.display()))?
        .permissions()
        .mode();
    // As ssh does with keys: a secret others can read is no longer a secret.
    anyhow::ensure!(
        mode & 0o077 == 0,
        "the admin token file {} can be read by other users (mode {:o}); make it private with `chmod 600 {}`",
        path.display(),
        mode & 0o777,
        path.display()
    );
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read the admin token from {}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    anyhow::ensure!(
        token.len() >= 16,
        "the admin token in {} is shorter than 16 characters",
        path.display()
    );
    Ok(token)
}

/// The admin token: the configured one, else the one in `DATA_DIR/admin-token`,
/// generated (mode 0600) on first start.
fn admin_token(config: &ServeConfig) -> anyhow::Result<String> {
    if let Some(token) = configured_admin_token(config)? {
        return Ok(token);
    }
    let path = config.data_dir.join("admin-token");
    if path.exists() {
        return token_from_file(&path);
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let token = format!("wla_{}", hex::encode(secret));
    // Created 0600 (write_durably), never readable by anyone else for a moment.
    compile::write_durably(&path, format!("{token}\n").as_bytes())?;
    tracing::info!(path = %path.display(), "generated the admin token");
    Ok(token)
}
