//! The admin API under `/v1` (registry mode): tenants, apps, versions, deploys and
//! rollbacks, as JSON over HTTP with bearer tokens. The admin token manages tenants; a
//! tenant's token manages that tenant's apps and nothing else. An app of another
//! tenant is answered as if it did not exist (404), so tokens cannot probe names.
//!
//! A deploy is checked ([`crate::deploy::upload`]), compiled in a bounded child
//! ([`crate::deploy::compile`]), stored and recorded before it is answered, then
//! published to the workers ([`crate::deploy::context`]); the answer waits (up to a
//! few seconds) until every worker serves the new table. Registry calls run on
//! blocking threads. Every handler returns an [`Answer`]: `?` turns a registry,
//! deploy or model error into the refusal the client reads.

use std::sync::Arc;

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::deploy::compile::{self, Compiled, DeployError, TempFiles};
use crate::deploy::context::DeployContext;
use crate::deploy::progress::{self, AdminBody, Progress};
use crate::deploy::reply::{Answer, Refused, Reply, no_content, refuse, reply};
use crate::deploy::upload::read_upload;
use crate::model::app::{AppSettings, Version, sha256_hex};
use crate::model::compiler::Compiler;
use crate::model::quota::Quotas;
use crate::model::route::normalize_route;
use crate::model::tenant::{Tenant, TenantLimits, check_name};
use crate::registry::{NewVersion, RegistryError};
use crate::runtime::compile_cache::CacheStats;
use crate::runtime::outbound;

/// The bearer token of a request, if it sends one.
pub fn bearer(req: &Request<Incoming>) -> Option<String> {
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
    let answer = match (method.clone(), &segments[1..]) {
        (Method::GET, ["openapi.json"]) => {
            let mut response = reply(StatusCode::OK, serde_json::Value::Null);
            *response.body_mut() = Full::new(Bytes::from_static(OPENAPI.as_bytes()));
            Ok(response)
        }
        (Method::POST, ["tenants"]) => create_tenant(req, token, ctx).await,
        (Method::GET, ["tenants"]) => list_tenants(token, ctx).await,
        (Method::DELETE, ["tenants", name]) => delete_tenant(name.to_string(), token, ctx).await,
        (Method::PUT, ["tenants", name, "limits"]) => {
            set_limits(req, name.to_string(), token, ctx).await
        }
        (Method::GET, ["apps"]) => list_apps(token, ctx).await,
        (Method::GET, ["apps", app, "versions"]) => {
            list_versions(app.to_string(), token, ctx).await
        }
        (Method::POST, ["apps", app, "versions"]) => {
            deploy(req, app.to_string(), token, ctx, &Progress::default()).await
        }
        (Method::POST, ["apps", app, "activate"]) => {
            activate(req, app.to_string(), token, ctx).await
        }
        (Method::DELETE, ["apps", app]) => delete_app(app.to_string(), token, ctx).await,
        (Method::GET, ["hosts"]) => list_hosts(token, ctx).await,
        (Method::PUT, ["hosts", pattern]) => bind_host(req, pattern.to_string(), token, ctx).await,
        (Method::DELETE, ["hosts", pattern]) => unbind_host(pattern.to_string(), token, ctx).await,
        _ => Err(refuse(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {method} {path}; see GET /v1/openapi.json"),
        )),
    };
    Some(answer.unwrap_or_else(|Refused(reply)| *reply))
}

async fn read_json<T: for<'de> Deserialize<'de>>(req: Request<Incoming>) -> Result<T, Refused> {
    let body = Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
        .map_err(|e| {
            refuse(
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
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
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
) -> Answer {
    ctx.admin(token)?;
    let new: NewTenant = read_json(req).await?;
    let (tenant, token) = ctx
        .blocking(move |r| r.create_tenant(&new.name, &new.limits))
        .await?;
    Ok(reply(
        StatusCode::CREATED,
        json!({ "tenant": tenant, "token": token, "note": "the token is shown once; keep it" }),
    ))
}

async fn list_tenants(token: Option<String>, ctx: &Arc<DeployContext>) -> Answer {
    ctx.admin(token)?;
    let tenants = ctx.blocking(|r| r.tenants()).await?;
    Ok(reply(StatusCode::OK, json!({ "tenants": tenants })))
}

/// Replaces a tenant's limits and quotas. Quotas hold for the next change; limits
/// reach the workers with the table published here.
async fn set_limits(
    req: Request<Incoming>,
    name: String,
    token: Option<String>,
    ctx: &Arc<DeployContext>,
) -> Answer {
    ctx.admin(token)?;
    let limits: TenantLimits = read_json(req).await?;
    let _one_at_a_time = ctx.publishing.lock().await;
    let tenant = ctx
        .blocking(move |r| r.set_tenant_limits(&name, &limits))
        .await?;
    ctx.publish_change().await;
    Ok(reply(StatusCode::OK, json!({ "tenant": tenant })))
}

async fn delete_tenant(name: String, token: Option<String>, ctx: &Arc<DeployContext>) -> Answer {
    ctx.admin(token)?;
    let _one_at_a_time = ctx.publishing.lock().await;
    ctx.blocking(move |r| r.delete_tenant(&name)).await?;
    ctx.publish_change().await;
    ctx.collect_garbage().await;
    Ok(no_content())
}

async fn list_apps(token: Option<String>, ctx: &Arc<DeployContext>) -> Answer {
    let tenant = ctx.tenant(token).await?;
    let apps = ctx.blocking(move |r| r.apps(&tenant)).await?;
    Ok(reply(StatusCode::OK, json!({ "apps": apps })))
}

async fn list_versions(app: String, token: Option<String>, ctx: &Arc<DeployContext>) -> Answer {
    let tenant = ctx.tenant(token).await?;
    let versions = ctx.blocking(move |r| r.versions(&tenant, &app)).await?;
    Ok(reply(StatusCode::OK, json!({ "versions": versions })))
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
) -> Answer {
    let tenant = ctx.tenant(token).await?;
    let wanted: Activate = read_json(req).await?;
    let _one_at_a_time = ctx.publishing.lock().await;
    let version = ctx
        .blocking(move |r| {
            let number = match wanted.version {
                Some(number) => number,
                None => previous_version(r.versions(&tenant, &app)?, &app)?,
            };
            r.activate(&tenant, &app, number)
        })
        .await?;
    let applied = ctx.publish_change().await;
    Ok(reply(
        StatusCode::OK,
        json!({ "version": version, "workers_updated": applied }),
    ))
}

/// The version before the active one: what a rollback without a number goes to.
fn previous_version(versions: Vec<Version>, app: &str) -> Result<u64, RegistryError> {
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
        })
}

async fn delete_app(app: String, token: Option<String>, ctx: &Arc<DeployContext>) -> Answer {
    let tenant = ctx.tenant(token).await?;
    let _one_at_a_time = ctx.publishing.lock().await;
    ctx.blocking(move |r| r.delete_app(&tenant, &app)).await?;
    ctx.publish_change().await;
    ctx.collect_garbage().await;
    Ok(no_content())
}

async fn list_hosts(token: Option<String>, ctx: &Arc<DeployContext>) -> Answer {
    ctx.admin(token)?;
    let hosts = ctx.blocking(|r| r.host_bindings()).await?;
    Ok(reply(StatusCode::OK, json!({ "hosts": hosts })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Binding {
    tenant: String,
}

/// Binds a host (or `*.domain`) to a tenant: only its routes may name it from then
/// on. Changes nothing that is served, so nothing is published.
async fn bind_host(
    req: Request<Incoming>,
    pattern: String,
    token: Option<String>,
    ctx: &Arc<DeployContext>,
) -> Answer {
    ctx.admin(token)?;
    let binding: Binding = read_json(req).await?;
    let bound = ctx
        .blocking(move |r| r.bind_host(&pattern, &binding.tenant))
        .await?;
    tracing::info!(pattern = %bound.pattern, tenant = %bound.tenant, "host bound");
    Ok(reply(StatusCode::OK, json!(bound)))
}

async fn unbind_host(pattern: String, token: Option<String>, ctx: &Arc<DeployContext>) -> Answer {
    ctx.admin(token)?;
    ctx.blocking(move |r| r.unbind_host(&pattern)).await?;
    Ok(no_content())
}

#[derive(Serialize)]
struct Deployed {
    app: String,
    version: Version,
    compile_ms: u64,
    /// The compiler of the code serving it now.
    compiler: Compiler,
    /// Whether the optimizing compiler is compiling it in the background (it
    /// serves on the baseline tier until then).
    optimizing: bool,
    /// The functions the compile looked up in the node's compile cache, and found.
    compile_cache: CacheStats,
    workers_updated: bool,
}

/// The app a deploy that asks for its steps as they happen is for
/// ([`deploy_with_progress`]); `None` for any other request.
pub fn wants_progress(req: &Request<Incoming>) -> Option<String> {
    let path = req.uri().path().trim_matches('/');
    match path.split('/').collect::<Vec<_>>()[..] {
        ["v1", "apps", app, "versions"]
            if req.method() == Method::POST && progress::wanted(req.headers()) =>
        {
            Some(app.to_string())
        }
        _ => None,
    }
}

/// A deploy of `app` that reports its steps as it goes ([`crate::deploy::progress`]).
pub fn deploy_with_progress(
    req: Request<Incoming>,
    app: String,
    ctx: &Arc<DeployContext>,
) -> Response<AdminBody> {
    let token = bearer(&req);
    let (progress, response) = Progress::streaming();
    let ctx = ctx.clone();
    tokio::spawn(async move {
        // Subscribed before the deploy publishes, so its optimized tier is not missed.
        let mut optimized = ctx.optimized_events.subscribe();
        let answer = deploy(req, app, token, &ctx, &progress).await;
        let reply = answer.unwrap_or_else(|Refused(reply)| *reply);
        let (parts, body) = reply.into_parts();
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let status = parts.status;
        if !status.is_success() {
            let retry_after = parts
                .headers
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            progress.step(json!({
                "step": "failed", "status": status.as_u16(), "error": body["error"],
                "retry_after": retry_after,
            }));
            return;
        }
        let sha = body["version"]["sha256"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let waits = body["optimizing"] == serde_json::Value::Bool(true);
        progress.step(json!({ "step": "done", "status": status.as_u16(), "deployed": body }));
        if !waits {
            return;
        }
        let wait = ctx.compile.timeout + std::time::Duration::from_secs(30);
        let event = tokio::time::timeout(wait, async {
            loop {
                match optimized.recv().await {
                    Ok((done, event)) if done == sha => return Some(event),
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
                if !progress.streaming_to_client() {
                    return None;
                }
            }
        })
        .await;
        match event {
            Ok(Some(Ok((compile_ms, cache)))) => progress.step(json!({
                "step": "optimized", "compiler": "cranelift", "ms": compile_ms, "cache": cache,
            })),
            Ok(Some(Err(error))) => {
                progress.step(json!({ "step": "optimize_failed", "error": error }))
            }
            _ => {}
        }
    });
    response
}

/// A deploy: check the upload, compile it in a bounded child, record the version,
/// publish it; each step reported to `progress`.
async fn deploy(
    req: Request<Incoming>,
    app: String,
    token: Option<String>,
    ctx: &Arc<DeployContext>,
    progress: &Progress,
) -> Answer {
    let tenant = ctx.tenant(token).await?;
    check_name("app", &app)?;
    let (bytes, mut settings) = read_upload(req, ctx.max_upload).await?;
    progress.step(json!({ "step": "received", "bytes": bytes.len() }));
    settings.routes = settings
        .routes
        .iter()
        .map(normalize_route)
        .collect::<Result<_, _>>()?;
    check_settings(&settings, &ctx.outbound_ceiling)?;
    let quotas = Quotas::resolve(&tenant.limits, &ctx.quotas);
    quotas.check_deploy(&settings, bytes.len() as u64)?;
    crate::runtime::component::check_is_component(&bytes)
        .map_err(|e| DeployError::Invalid(format!("{e:#}")))?;
    let started = std::time::Instant::now();
    let upload = compile_upload(ctx, &tenant.name, &bytes, &settings).await?;
    let compile_ms = started.elapsed().as_millis() as u64;
    let compile_cache = upload.compiled.cache;
    let compiler = upload.tier.0;
    let optimizing = ctx.optimized.as_ref().is_some_and(|(c, _)| *c != compiler);
    progress.step(json!({
        "step": "compiled", "compiler": compiler, "ms": compile_ms, "cache": compile_cache,
    }));
    let _one_at_a_time = ctx.publishing.lock().await;
    let version = record(ctx, &tenant, &app, upload, bytes, settings, quotas).await?;
    let workers_updated = ctx.publish_change().await;
    progress.step(json!({
        "step": "live", "version": version.number, "workers": ctx.workers,
        "workers_updated": workers_updated,
    }));
    // Versions pruned past the quota may have left components unreferenced.
    ctx.collect_garbage().await;
    tracing::info!(
        tenant = %tenant.name, app = %app, version = version.number, compile_ms,
        cache_hits = compile_cache.hits, cache_lookups = compile_cache.lookups, "deployed"
    );
    Ok(reply(
        StatusCode::CREATED,
        serde_json::to_value(Deployed {
            app,
            version,
            compile_ms,
            compiler,
            optimizing,
            compile_cache,
            workers_updated,
        })
        .unwrap_or_default(),
    ))
}

/// A deploy's settings name at least one route (each already normalised and valid),
/// and ask for no outbound host beyond what the operator allows.
fn check_settings(settings: &AppSettings, outbound_ceiling: &[String]) -> Result<(), Refused> {
    if settings.routes.is_empty() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "give the app at least one route (route=/prefix or route=host/prefix)",
        ));
    }
    if let Some(entry) = settings
        .allow_outbound
        .iter()
        .find(|entry| !outbound::covers(outbound_ceiling, entry))
    {
        return Err(refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "allow_outbound {entry:?} is outside what this server allows its apps (its --allow-outbound); an app's list may only narrow it"
            ),
        ));
    }
    Ok(())
}

/// An upload written to a temporary file and compiled: where both files are (the
/// upload at 0, the artifact at 1; removed when dropped unless moved into place), and
/// what the compiler found.
struct CompiledUpload {
    sha: String,
    files: TempFiles,
    compiled: Compiled,
    /// The compiler of the artifact, and its engine key.
    tier: (Compiler, String),
}

/// Compiles from a temporary copy, in the tenant's turn ([`crate::deploy::queue`]);
/// only a component that compiled moves into place (in [`record`]). Whatever ends the
/// deploy before that (a refusal, a timeout, the client leaving) removes both files.
async fn compile_upload(
    ctx: &Arc<DeployContext>,
    tenant: &str,
    bytes: &Bytes,
    settings: &AppSettings,
) -> Result<CompiledUpload, Refused> {
    let _turn = ctx.compiles.deploy_turn(tenant).await?;
    // Hashed while it compiles: only recording the version needs the hash.
    let hashed = tokio::task::spawn_blocking({
        let bytes = bytes.clone();
        move || sha256_hex(&bytes)
    });
    let files = ctx.data.temp_files(&["upload", "artifact"]);
    let (upload_path, to_write) = (files.path(0).to_path_buf(), bytes.clone());
    let write =
        tokio::task::spawn_blocking(move || compile::write_now(&upload_path, &to_write)).await;
    flatten(write).map_err(DeployError::Storage)?;
    // Synced while it compiles, and before anything records it (in [`record`]).
    let to_sync = files.path(0).to_path_buf();
    let synced = tokio::task::spawn_blocking(move || compile::sync(&to_sync));
    let compile = |limits| {
        compile::compile(
            files.path(0),
            files.path(1),
            settings.mode_choice(),
            limits,
            ctx.compile_cache.as_ref(),
        )
    };
    // With tiers, the baseline compiler first: the version answers sooner, and the
    // optimized artifact follows in the background (DeployContext::prepare).
    let (compiled, tier) = ctx.compile_baseline(compile).await?;
    flatten(synced.await).map_err(DeployError::Storage)?;
    let sha = hashed
        .await
        .map_err(|e| DeployError::Storage(anyhow::anyhow!("the upload's hash failed: {e}")))?;
    Ok(CompiledUpload {
        sha,
        files,
        compiled,
        tier,
    })
}

/// Moves a compiled upload into place and records it as the app's new version. The
/// caller holds `publishing`.
async fn record(
    ctx: &Arc<DeployContext>,
    tenant: &Tenant,
    app: &str,
    upload: CompiledUpload,
    bytes: Bytes,
    settings: AppSettings,
    quotas: Quotas,
) -> Result<Version, Refused> {
    let CompiledUpload {
        sha,
        files,
        compiled,
        tier: (_, engine_key),
    } = upload;
    let (upload, artifact_tmp) = (files.path(0).to_path_buf(), files.path(1).to_path_buf());
    let (component_path, artifact_path) = (
        ctx.data.component(&sha),
        ctx.data.artifact(&sha, &engine_key),
    );
    let new = NewVersion {
        sha256: sha.clone(),
        size: bytes.len() as u64,
        export: compiled.export.clone(),
        mode: compiled.mode,
        settings,
        bytes,
        quotas,
    };
    let artifact_sha = compiled.artifact_sha256.clone();
    let (tenant, app) = (tenant.clone(), app.to_string());
    let me = ctx.clone();
    let version = ctx
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
            me.written_intact(&artifact_path);
            r.add_version(&tenant, &app, new).inspect_err(|_| {
                // Refused (a route conflict): leave no trace unless another version
                // uses the same bytes.
                if r.referenced_components()
                    .is_ok_and(|used| !used.contains(&sha))
                {
                    let _ = std::fs::remove_file(&component_path);
                    let _ = std::fs::remove_file(&artifact_path);
                }
            })
        })
        .await?;
    drop(files);
    Ok(version)
}

fn flatten<T>(joined: Result<anyhow::Result<T>, tokio::task::JoinError>) -> anyhow::Result<T> {
    joined.map_err(anyhow::Error::from)?
}

/// The OpenAPI description of this API, served at `/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::upload::settings_from_query;
    use crate::model::mode::ModeChoice;

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
