//! The admin API under `/v1` (registry mode): tenants, apps, versions, deploys and
//! rollbacks, as JSON over HTTP with bearer tokens. The admin token manages tenants; a
//! tenant's token manages that tenant's apps and nothing else. An app of another
//! tenant is answered as if it did not exist (404), so tokens cannot probe names.
//!
//! A deploy is checked, compiled (`deploy.rs`), stored and recorded before it is
//! answered, then published to the workers; the answer waits (up to a few seconds)
//! until every worker serves the new table. Registry calls run on blocking threads.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::StreamExt as _;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq as _;
use tokio::sync::{mpsc, watch};

use crate::config::ServeConfig;
use crate::deploy::compile::{self, CompileLimits, DataDir, DeployError};
use crate::model::app::{ActiveApp, AppSettings, Version, sha256_hex};
use crate::model::mode::ModeChoice;
use crate::model::route::{check_route, parse_route};
use crate::model::tenant::{Tenant, TenantLimits, check_name};
use crate::model::text::{parse_key_value, parse_size};
use crate::protocol::{AppFiles, TableEntry, TableMessage};
use crate::registry::postgres::PostgresRegistry;
use crate::registry::{NewVersion, Registry, RegistryError, SqliteRegistry};
use crate::runtime::engine;

/// How long a deploy's answer waits for every worker to serve it.
const APPLY_WAIT: Duration = Duration::from_secs(5);

/// What the API needs: the registry, the data directory, the admin token, and the
/// master to publish tables through.
pub struct DeployContext {
    registry: Arc<dyn Registry>,
    data: DataDir,
    admin_token: String,
    engine_key: String,
    max_upload: u64,
    compile: CompileLimits,
    tables: mpsc::UnboundedSender<TableMessage>,
    applied: watch::Receiver<u64>,
    generation: std::sync::atomic::AtomicU64,
    /// One change at a time: two deploys must not publish tables out of order.
    publishing: tokio::sync::Mutex<()>,
    /// What the last published table held, to tell whether a re-read changed it.
    published: std::sync::Mutex<Option<Vec<ActiveApp>>>,
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: serde_json::Value) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Reply {
    reply(status, json!({ "error": message.to_string() }))
}

fn registry_error(e: RegistryError) -> Reply {
    match e {
        RegistryError::NotFound(what) => error(StatusCode::NOT_FOUND, format!("{what} not found")),
        RegistryError::Conflict(message) => error(StatusCode::CONFLICT, message),
        RegistryError::Invalid(message) => error(StatusCode::BAD_REQUEST, message),
        RegistryError::Unavailable(message) => {
            tracing::warn!("registry: {message}");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the registry is unreachable; nothing was changed, try again later (apps already deployed keep serving)",
            )
        }
        RegistryError::Storage(e) => {
            tracing::error!("registry: {e:#}");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the registry failed; see the server log",
            )
        }
    }
}

fn deploy_error(e: DeployError) -> Reply {
    let status = match &e {
        DeployError::Invalid(_) => StatusCode::BAD_REQUEST,
        DeployError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        DeployError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
        DeployError::Storage(e) => {
            // The log gets the whole chain; the tenant the cause, not the server's paths.
            tracing::error!("deploy: {e:#}");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "the server could not store the upload ({}); nothing was stored or changed",
                    e.root_cause()
                ),
            );
        }
    };
    error(status, e)
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
        let engine_key = engine::compatibility_key(&engine::build_for_compile()?);
        Ok(DeployContext {
            registry,
            data,
            admin_token,
            engine_key,
            max_upload: config.max_upload,
            compile: CompileLimits {
                timeout: config.compile_timeout,
                max_memory: config.compile_max_memory,
                guest_fuel: config.fuel,
                guest_max_memory: config.max_memory,
            },
            tables,
            applied,
            generation: std::sync::atomic::AtomicU64::new(1),
            publishing: tokio::sync::Mutex::new(()),
            published: std::sync::Mutex::new(None),
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
            apps.push(TableEntry {
                files: AppFiles {
                    component: self.data.component(&active.version.sha256),
                    artifact,
                },
                active: active.clone(),
            });
        }
        *self
            .published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(active);
        Ok(TableMessage { generation, apps })
    }

    /// The artifact of `version` for this node (its path and recorded hash),
    /// fetching the component and compiling it first when needed.
    async fn prepare(
        self: &Arc<Self>,
        version: &Version,
    ) -> anyhow::Result<Option<(PathBuf, String)>> {
        let sha = version.sha256.clone();
        let component = self.data.component(&sha);
        let artifact = self.data.artifact(&sha, &self.engine_key);
        let me = self.clone();
        let (lookup_sha, lookup_component, lookup_artifact) =
            (sha.clone(), component.clone(), artifact.clone());
        let recorded = tokio::task::spawn_blocking(move || -> anyhow::Result<Option<String>> {
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
            let recorded = me.registry.artifact(&lookup_sha, &me.engine_key)?;
            Ok(recorded.filter(|_| lookup_artifact.exists()))
        })
        .await??;
        if let Some(hash) = recorded {
            return Ok(Some((artifact, hash)));
        }
        let mode = ModeChoice::from(version.mode);
        let tmp = self.data.temp_path("artifact");
        let started = std::time::Instant::now();
        let compiled = match compile::compile(&component, &tmp, mode, self.compile).await {
            Ok(compiled) => compiled,
            Err(e) => {
                remove_quietly(vec![tmp]).await;
                return Err(anyhow::anyhow!("{e}"));
            }
        };
        let me = self.clone();
        let (artifact_path, artifact_sha) = (artifact.clone(), compiled.artifact_sha256.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            std::fs::rename(&tmp, &artifact_path)
                .context("failed to move the artifact into place")?;
            me.registry
                .put_artifact(&sha, &me.engine_key, &artifact_sha)?;
            Ok(())
        })
        .await??;
        tracing::info!(sha256 = %version.sha256, compile_ms = started.elapsed().as_millis() as u64, "compiled a component for this node");
        Ok(Some((artifact, compiled.artifact_sha256)))
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
            .is_ok_and(|published| published.as_ref() == Some(&active));
        if unchanged {
            return Ok(());
        }
        tracing::info!(
            apps = active.len(),
            "the shared registry changed; publishing it"
        );
        self.publish().await.map_err(RegistryError::Storage)?;
        Ok(())
    }

    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&dyn Registry) -> Result<T, RegistryError> + Send + 'static,
    ) -> Result<T, Reply> {
        let registry = self.registry.clone();
        match tokio::task::spawn_blocking(move || f(registry.as_ref())).await {
            Ok(result) => result.map_err(registry_error),
            Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e)),
        }
    }

    fn is_admin(&self, token: &str) -> bool {
        bool::from(token.as_bytes().ct_eq(self.admin_token.as_bytes()))
    }

    async fn tenant(self: &Arc<Self>, token: Option<String>) -> Result<Tenant, Reply> {
        let Some(token) = token else {
            return Err(unauthorized());
        };
        match self.blocking(move |r| r.authenticate(&token)).await? {
            Some(tenant) => Ok(tenant),
            None => Err(unauthorized()),
        }
    }
}

fn no_content() -> Reply {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

fn unauthorized() -> Reply {
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "missing or invalid token: send `Authorization: Bearer TOKEN`",
    );
    response.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer"),
    );
    response
}

/// The admin token: `--admin-token-file`, else `WASMLOOP_ADMIN_TOKEN`, else the one in
/// `DATA_DIR/admin-token`, generated (mode 0600) on first start.
#[expect(clippy::disallowed_methods, reason = "start-up, before the loop runs")]
fn admin_token(config: &ServeConfig) -> anyhow::Result<String> {
    let from_file = |path: &std::path::Path| -> anyhow::Result<String> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read the admin token from {}", path.display()))?;
        let token = text.lines().next().unwrap_or("").trim().to_string();
        anyhow::ensure!(
            token.len() >= 16,
            "the admin token in {} is shorter than 16 characters",
            path.display()
        );
        Ok(token)
    };
    if let Some(path) = &config.admin_token_file {
        return from_file(path);
    }
    if let Ok(token) = std::env::var("WASMLOOP_ADMIN_TOKEN") {
        anyhow::ensure!(
            token.len() >= 16,
            "WASMLOOP_ADMIN_TOKEN is shorter than 16 characters"
        );
        return Ok(token);
    }
    let path = config.data_dir.join("admin-token");
    if path.exists() {
        return from_file(&path);
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let token = format!("wla_{}", hex::encode(secret));
    compile::write_durably(&path, format!("{token}\n").as_bytes())?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    tracing::info!(path = %path.display(), "generated the admin token");
    Ok(token)
}

fn bearer(req: &Request<Incoming>) -> Option<String> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim().to_string())
}

/// Answers `/v1/...`; `None` when the path is not the API's.
pub async fn handle(req: Request<Incoming>, ctx: &Arc<DeployContext>) -> Option<Reply> {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if segments.first() != Some(&"v1") {
        return None;
    }
    let method = req.method().clone();
    let token = bearer(&req);
    let reply = match (method.clone(), &segments[1..]) {
        (Method::GET, ["openapi.json"]) => {
            let mut response = reply(StatusCode::OK, serde_json::Value::Null);
            *response.body_mut() = Full::new(Bytes::from_static(OPENAPI.as_bytes()));
            response
        }
        (Method::POST, ["tenants"]) => create_tenant(req, token, ctx).await,
        (Method::GET, ["tenants"]) => list_tenants(token, ctx).await,
        (Method::DELETE, ["tenants", name]) => delete_tenant(name.to_string(), token, ctx).await,
        (Method::GET, ["apps"]) => list_apps(token, ctx).await,
        (Method::GET, ["apps", app, "versions"]) => {
            list_versions(app.to_string(), token, ctx).await
        }
        (Method::POST, ["apps", app, "versions"]) => deploy(req, app.to_string(), token, ctx).await,
        (Method::POST, ["apps", app, "activate"]) => {
            activate(req, app.to_string(), token, ctx).await
        }
        (Method::DELETE, ["apps", app]) => delete_app(app.to_string(), token, ctx).await,
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {method} {path}; see GET /v1/openapi.json"),
        ),
    };
    Some(reply)
}

async fn read_json<T: for<'de> Deserialize<'de>>(req: Request<Incoming>) -> Result<T, Reply> {
    let body = Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
        .map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("failed to read the body: {e}"),
            )
        })?
        .to_bytes();
    let body = if body.is_empty() {
        Bytes::from_static(b"{}")
    } else {
        body
    };
    serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    name: String,
    #[serde(default)]
    limits: TenantLimits,
}

async fn create_tenant(
    req: Request<Incoming>,
    token: Option<String>,
    ctx: &Arc<DeployContext>,
) -> Reply {
    if !token.is_some_and(|t| ctx.is_admin(&t)) {
        return unauthorized();
    }
    let new: NewTenant = match read_json(req).await {
        Ok(new) => new,
        Err(reply) => return reply,
    };
    match ctx
        .blocking(move |r| r.create_tenant(&new.name, &new.limits))
        .await
    {
        Ok((tenant, token)) => reply(
            StatusCode::CREATED,
            json!({ "tenant": tenant, "token": token, "note": "the token is shown once; keep it" }),
        ),
        Err(reply) => reply,
    }
}

async fn list_tenants(token: Option<String>, ctx: &Arc<DeployContext>) -> Reply {
    if !token.is_some_and(|t| ctx.is_admin(&t)) {
        return unauthorized();
    }
    match ctx.blocking(|r| r.tenants()).await {
        Ok(tenants) => reply(StatusCode::OK, json!({ "tenants": tenants })),
        Err(reply) => reply,
    }
}

async fn delete_tenant(name: String, token: Option<String>, ctx: &Arc<DeployContext>) -> Reply {
    if !token.is_some_and(|t| ctx.is_admin(&t)) {
        return unauthorized();
    }
    let _one_at_a_time = ctx.publishing.lock().await;
    if let Err(reply) = ctx.blocking(move |r| r.delete_tenant(&name)).await {
        return reply;
    }
    let _ = ctx.publish().await;
    no_content()
}

async fn list_apps(token: Option<String>, ctx: &Arc<DeployContext>) -> Reply {
    let tenant = match ctx.tenant(token).await {
        Ok(tenant) => tenant,
        Err(reply) => return reply,
    };
    match ctx.blocking(move |r| r.apps(&tenant)).await {
        Ok(apps) => reply(StatusCode::OK, json!({ "apps": apps })),
        Err(reply) => reply,
    }
}

async fn list_versions(app: String, token: Option<String>, ctx: &Arc<DeployContext>) -> Reply {
    let tenant = match ctx.tenant(token).await {
        Ok(tenant) => tenant,
        Err(reply) => return reply,
    };
    match ctx.blocking(move |r| r.versions(&tenant, &app)).await {
        Ok(versions) => reply(StatusCode::OK, json!({ "versions": versions })),
        Err(reply) => reply,
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Activate {
    version: Option<u64>,
}

async fn activate(
    req: Request<Incoming>,
    app: String,
    token: Option<String>,
    ctx: &Arc<DeployContext>,
) -> Reply {
    let tenant = match ctx.tenant(token).await {
        Ok(tenant) => tenant,
        Err(reply) => return reply,
    };
    let wanted: Activate = match read_json(req).await {
        Ok(wanted) => wanted,
        Err(reply) => return reply,
    };
    let _one_at_a_time = ctx.publishing.lock().await;
    let result = ctx
        .blocking(move |r| {
            let number = match wanted.version {
                Some(number) => number,
                None => {
                    let versions = r.versions(&tenant, &app)?;
                    let active = versions.iter().find(|v| v.active).map_or(0, |v| v.number);
                    versions
                        .iter()
                        .rev()
                        .find(|v| v.number < active)
                        .map(|v| v.number)
                        .ok_or_else(|| {
                            RegistryError::Invalid(format!(
                                "{app:?} has no version before {active} to roll back to"
                            ))
                        })?
                }
            };
            r.activate(&tenant, &app, number)
        })
        .await;
    match result {
        Ok(version) => {
            let applied = ctx.publish().await.unwrap_or(false);
            reply(
                StatusCode::OK,
                json!({ "version": version, "workers_updated": applied }),
            )
        }
        Err(reply) => reply,
    }
}

async fn delete_app(app: String, token: Option<String>, ctx: &Arc<DeployContext>) -> Reply {
    let tenant = match ctx.tenant(token).await {
        Ok(tenant) => tenant,
        Err(reply) => return reply,
    };
    let _one_at_a_time = ctx.publishing.lock().await;
    if let Err(reply) = ctx.blocking(move |r| r.delete_app(&tenant, &app)).await {
        return reply;
    }
    let _ = ctx.publish().await;
    no_content()
}

/// Settings of a deploy as query parameters: `route=/prefix` or `route=host/prefix`
/// (repeatable), `var=KEY=VALUE` (repeatable), `allow_outbound=HOST[:PORT]`
/// (repeatable), `mode`, `fuel`, `max_memory`, `timeout_ms`, `max_in_flight`.
fn settings_from_query(query: &str) -> Result<AppSettings, String> {
    let mut settings = AppSettings::default();
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query).map_err(|e| format!("invalid query string: {e}"))?;
    let number = |key: &str, value: &str| -> Result<u64, String> {
        parse_size(value).map_err(|e| format!("{key}: {e}"))
    };
    for (key, value) in pairs {
        match key.as_str() {
            "route" => settings.routes.push(parse_route(&value)),
            "var" => {
                let (k, v) = parse_key_value(&value).map_err(|e| format!("var: {e}"))?;
                settings.vars.insert(k, v);
            }
            "allow_outbound" => settings.allow_outbound.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(String::from),
            ),
            "mode" => settings.mode = Some(value.parse()?),
            "fuel" => settings.fuel = Some(number(&key, &value)?),
            "max_memory" => settings.max_memory = Some(number(&key, &value)?),
            "timeout_ms" => settings.timeout_ms = Some(number(&key, &value)?),
            "max_in_flight" => settings.max_in_flight = Some(number(&key, &value)?),
            other => return Err(format!("unknown deploy setting {other:?}")),
        }
    }
    Ok(settings)
}

/// The upload and its settings, from a raw body or a multipart form.
async fn read_upload(req: Request<Incoming>, max: u64) -> Result<(Bytes, AppSettings), Reply> {
    if let Some(len) = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && len > max
    {
        return Err(deploy_error(DeployError::TooLarge(max)));
    }
    let query_settings = settings_from_query(req.uri().query().unwrap_or(""))
        .map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    let boundary = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok());
    let too_large = || deploy_error(DeployError::TooLarge(max));
    let Some(boundary) = boundary else {
        let body = Limited::new(req.into_body(), max as usize)
            .collect()
            .await
            .map_err(|_| too_large())?
            .to_bytes();
        return Ok((body, query_settings));
    };
    // Multipart: a `component` file part and an optional `settings` JSON part.
    let stream = http_body_util::BodyStream::new(req.into_body()).filter_map_data();
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(max + 64 * 1024)
            .per_field(max),
    );
    let mut form = multer::Multipart::with_constraints(stream, boundary, constraints);
    let (mut component, mut settings) = (None, query_settings);
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(
                multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. },
            ) => {
                return Err(too_large());
            }
            Err(e) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("invalid multipart body: {e}"),
                ));
            }
        };
        match field.name() {
            Some("component") => {
                component = Some(field.bytes().await.map_err(|_| too_large())?);
            }
            Some("settings") => {
                let text = field
                    .bytes()
                    .await
                    .map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
                settings = serde_json::from_slice(&text).map_err(|e| {
                    error(StatusCode::BAD_REQUEST, format!("invalid settings: {e}"))
                })?;
            }
            other => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "unexpected form field {other:?}; send `component` and optionally `settings`"
                    ),
                ));
            }
        }
    }
    let component = component
        .ok_or_else(|| error(StatusCode::BAD_REQUEST, "the form has no `component` file"))?;
    Ok((component, settings))
}

/// Turns a body stream of frames into one of data chunks, for multer.
trait FilterMapData {
    fn filter_map_data(
        self,
    ) -> impl futures_util::Stream<Item = Result<Bytes, hyper::Error>> + Send;
}

impl FilterMapData for http_body_util::BodyStream<Incoming> {
    fn filter_map_data(
        self,
    ) -> impl futures_util::Stream<Item = Result<Bytes, hyper::Error>> + Send {
        use futures_util::StreamExt as _;
        self.filter_map(|frame| async move {
            match frame {
                Ok(frame) => frame.into_data().ok().map(Ok),
                Err(e) => Some(Err(e)),
            }
        })
    }
}

#[derive(Serialize)]
struct Deployed {
    app: String,
    version: Version,
    compile_ms: u64,
    workers_updated: bool,
}

async fn deploy(
    req: Request<Incoming>,
    app: String,
    token: Option<String>,
    ctx: &Arc<DeployContext>,
) -> Reply {
    let tenant = match ctx.tenant(token).await {
        Ok(tenant) => tenant,
        Err(reply) => return reply,
    };
    if let Err(e) = check_name("app", &app) {
        return registry_error(e.into());
    }
    let (bytes, settings) = match read_upload(req, ctx.max_upload).await {
        Ok(upload) => upload,
        Err(reply) => return reply,
    };
    for route in &settings.routes {
        if let Err(e) = check_route(route) {
            return registry_error(e.into());
        }
    }
    if settings.routes.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "give the app at least one route (route=/prefix or route=host/prefix)",
        );
    }
    let mode = settings.mode_choice();
    if let Err(e) = crate::runtime::component::check_is_component(&bytes) {
        return deploy_error(DeployError::Invalid(format!("{e:#}")));
    }

    // Compile from a temporary copy; only a component that compiled moves into place.
    let sha = sha256_hex(&bytes);
    let upload = ctx.data.temp_path("upload");
    let artifact_tmp = ctx.data.temp_path("artifact");
    let (upload_path, bytes_len, to_write) = (upload.clone(), bytes.len() as u64, bytes.clone());
    let write =
        tokio::task::spawn_blocking(move || compile::write_durably(&upload_path, &to_write)).await;
    if let Err(reply) = flatten(write).map_err(|e| deploy_error(DeployError::Storage(e))) {
        return reply;
    }
    let started = std::time::Instant::now();
    let compiled = compile::compile(&upload, &artifact_tmp, mode, ctx.compile).await;
    let compile_ms = started.elapsed().as_millis() as u64;
    let compiled = match compiled {
        Ok(compiled) => compiled,
        Err(e) => {
            remove_quietly(vec![upload, artifact_tmp]).await;
            return deploy_error(e);
        }
    };

    let _one_at_a_time = ctx.publishing.lock().await;
    let (component_path, artifact_path) = (
        ctx.data.component(&sha),
        ctx.data.artifact(&sha, &ctx.engine_key),
    );
    let new = NewVersion {
        sha256: sha.clone(),
        size: bytes_len,
        export: compiled.export.clone(),
        mode: compiled.mode,
        settings,
        bytes: bytes.clone(),
    };
    let (engine_key, artifact_sha) = (ctx.engine_key.clone(), compiled.artifact_sha256.clone());
    let (tenant_for_call, app_for_call) = (tenant.clone(), app.clone());
    let recorded = ctx
        .blocking(move |r| {
            // Files first, then the records that point at them: a crash in between
            // leaves an unreferenced file, never a record without its file.
            std::fs::rename(&upload, &component_path)
                .and_then(|()| std::fs::rename(&artifact_tmp, &artifact_path))
                .map_err(|e| {
                    RegistryError::Storage(
                        anyhow::Error::from(e).context("failed to move the upload into place"),
                    )
                })?;
            r.put_artifact(&sha, &engine_key, &artifact_sha)?;
            match r.add_version(&tenant_for_call, &app_for_call, new) {
                Ok(version) => Ok(version),
                Err(e) => {
                    // Refused (a route conflict): leave no trace unless another
                    // version uses the same bytes.
                    if !r.referenced_components()?.contains(&sha) {
                        let _ = std::fs::remove_file(&component_path);
                        let _ = std::fs::remove_file(&artifact_path);
                    }
                    Err(e)
                }
            }
        })
        .await;
    let version = match recorded {
        Ok(version) => version,
        Err(reply) => return reply,
    };
    let workers_updated = match ctx.publish().await {
        Ok(done) => done,
        Err(e) => {
            tracing::error!("failed to publish the route table: {e:#}");
            false
        }
    };
    tracing::info!(tenant = %tenant.name, app = %app, version = version.number, compile_ms, "deployed");
    reply(
        StatusCode::CREATED,
        serde_json::to_value(Deployed {
            app,
            version,
            compile_ms,
            workers_updated,
        })
        .unwrap_or_default(),
    )
}

fn flatten<T>(joined: Result<anyhow::Result<T>, tokio::task::JoinError>) -> anyhow::Result<T> {
    joined.map_err(anyhow::Error::from)?
}

async fn remove_quietly(paths: Vec<PathBuf>) {
    let _ = tokio::task::spawn_blocking(move || {
        for path in paths {
            let _ = std::fs::remove_file(path);
        }
    })
    .await;
}

/// The OpenAPI description of this API, served at `/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_settings_parse_and_refuse_unknown_keys() {
        let s =
            settings_from_query("route=/a&route=h.example/b&var=K%3DV&var=X=1&fuel=1000&mode=loop")
                .unwrap();
        assert_eq!(s.routes.len(), 2);
        assert_eq!(s.vars["K"], "V");
        assert_eq!(s.vars["X"], "1");
        assert_eq!((s.fuel, s.mode), (Some(1000), Some(ModeChoice::Loop)));
        assert!(settings_from_query("colour=blue").is_err());
        assert!(serde_json::from_str::<serde_json::Value>(OPENAPI).is_ok());
    }
}
