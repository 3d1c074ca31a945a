//! The CLI side of the admin API: `wasmloop tenant`, `deploy`, `apps`, `versions`,
//! `rollback`, `delete`. The server URL and token come from flags, else the
//! environment (`WASMLOOP_SERVER`, `WASMLOOP_TOKEN`), else a config file
//! (`~/.config/wasmloop/cli.toml` with `server = "..."` and `token = "..."`).

pub mod doctor;
pub mod template;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use serde_json::{Value, json};

use crate::config::ReuseArgs;
use crate::model::app::AppSettings;
use crate::model::manifest::Manifest;
use crate::model::mode::ModeChoice;
use crate::model::route::{normalize_route, parse_route};
use crate::model::tenant::TenantLimits;
use crate::model::text::{parse_key_value, parse_size};

/// Where the admin API is and who is asking.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// The server's admin listener.
    #[arg(long, env = "WASMLOOP_SERVER", global = true)]
    pub server: Option<String>,
    /// A tenant token (apps) or the admin token (tenants).
    #[arg(long, env = "WASMLOOP_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// A TOML file with `server` and `token` (default: ~/.config/wasmloop/cli.toml).
    #[arg(long, env = "WASMLOOP_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// A PEM file of CA certificates to trust for an https server (besides the web's
    /// roots), for one whose certificate a private CA signed.
    #[arg(long, env = "WASMLOOP_CACERT", global = true)]
    pub cacert: Option<PathBuf>,
}

#[derive(Debug, serde::Deserialize, Default)]
struct ConfigFile {
    server: Option<String>,
    token: Option<String>,
}

impl Connection {
    #[expect(clippy::disallowed_methods, reason = "a CLI command, not the loop")]
    fn resolve(&self) -> anyhow::Result<(String, Option<String>)> {
        let path = self.config.clone().or_else(|| {
            std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".config/wasmloop/cli.toml"))
        });
        let file: ConfigFile = match path {
            Some(path) if path.exists() => toml::from_str(
                &std::fs::read_to_string(&path)
                    .with_context(|| format!("failed to read {}", path.display()))?,
            )
            .with_context(|| format!("{} is not a valid CLI config", path.display()))?,
            Some(path) if self.config.is_some() => bail!("{} does not exist", path.display()),
            _ => ConfigFile::default(),
        };
        let server = self
            .server
            .clone()
            .or(file.server)
            .unwrap_or_else(|| "http://127.0.0.1:9090".to_string());
        Ok((
            server.trim_end_matches('/').to_string(),
            self.token.clone().or(file.token),
        ))
    }

    /// Sends one request and returns the status and the JSON answer.
    fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(Bytes, &str)>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        self.call_with_retry_after(method, path, body)
            .map(|(status, value, _)| (status, value))
    }

    /// [`Connection::call`], with the seconds of the answer's `Retry-After` if any.
    fn call_with_retry_after(
        &self,
        method: Method,
        path: &str,
        body: Option<(Bytes, &str)>,
    ) -> anyhow::Result<(StatusCode, Value, Option<u64>)> {
        let (server, token) = self.resolve()?;
        let url = format!("{server}{path}");
        let mut request = Request::builder().method(method).uri(&url);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let (body, content_type) = body.unwrap_or((Bytes::new(), "application/json"));
        let request = request
            .header("content-type", content_type)
            .body(Full::new(body))
            .with_context(|| format!("{url} is not a valid URL"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let client = crate::tls::cli_client::<Full<Bytes>>(self.cacert.as_deref())?;
            let response = tokio::time::timeout(Duration::from_secs(600), client.request(request))
                .await
                .context("the server did not answer within 10 minutes")?
                .with_context(|| format!("failed to reach {server}; is `wasmloop serve` running with its admin listener there?"))?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            let bytes = response.into_body().collect().await?.to_bytes();
            let value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
            };
            Ok((status, value, retry_after))
        })
    }

    /// Like [`Connection::call`], failing with the server's message on an error status.
    fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<(Bytes, &str)>,
    ) -> anyhow::Result<Value> {
        let (status, value) = self.call(method, path, body)?;
        if !status.is_success() {
            let message = value
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| value.to_string());
            bail!("{} {message}", status.as_u16());
        }
        Ok(value)
    }
}

/// `wasmloop tenant ...`.
#[derive(Debug, clap::Subcommand)]
pub enum TenantCommand {
    /// Create a tenant and print its token (shown once). Needs the admin token.
    Create {
        name: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Replace a tenant's limits and quotas (unset ones take the server's). Needs the
    /// admin token.
    Limits {
        name: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// List tenants. Needs the admin token.
    List,
    /// Delete a tenant and its apps. Needs the admin token.
    Delete { name: String },
}

/// `wasmloop host ...`: hosts bound to tenants (with the admin token).
#[derive(Debug, clap::Subcommand)]
pub enum HostCommand {
    /// Bind a host (`shop.example.com`) or every subdomain of one (`*.example.com`)
    /// to a tenant: only that tenant's routes may name it.
    Bind { pattern: String, tenant: String },
    /// Remove a binding.
    Unbind { pattern: String },
    /// List the bindings.
    List,
}

pub fn host(conn: &Connection, command: &HostCommand) -> anyhow::Result<()> {
    match command {
        HostCommand::Bind { pattern, tenant } => {
            let body = json!({ "tenant": tenant });
            let value = conn.expect(
                Method::PUT,
                &format!("/v1/hosts/{pattern}"),
                Some((Bytes::from(body.to_string()), "application/json")),
            )?;
            println!(
                "Bound {} to tenant {}.",
                value["pattern"].as_str().unwrap_or(pattern),
                value["tenant"].as_str().unwrap_or(tenant)
            );
        }
        HostCommand::Unbind { pattern } => {
            conn.expect(Method::DELETE, &format!("/v1/hosts/{pattern}"), None)?;
            println!("Unbound {pattern}.");
        }
        HostCommand::List => {
            let value = conn.expect(Method::GET, "/v1/hosts", None)?;
            for binding in value["hosts"].as_array().into_iter().flatten() {
                println!(
                    "{}\t{}",
                    binding["pattern"].as_str().unwrap_or_default(),
                    binding["tenant"].as_str().unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

/// Arguments of `wasmloop deploy`.
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The component to deploy (not with --manifest).
    pub file: Option<PathBuf>,
    /// The app's name (default: the file name without `.wasm`).
    #[arg(long)]
    pub app: Option<String>,
    /// A path prefix the app serves (repeatable; default `/APP`).
    #[arg(long = "route")]
    pub routes: Vec<String>,
    /// Serve the routes on this host only.
    #[arg(long)]
    pub host: Option<String>,
    /// A configuration variable KEY=VALUE (repeatable).
    #[arg(long = "var", value_parser = parse_key_value)]
    pub vars: Vec<(String, String)>,
    /// A host the app may call (repeatable).
    #[arg(long = "allow-outbound")]
    pub allow_outbound: Vec<String>,
    /// `loop` or `pool` to override the export's type.
    #[arg(long, value_enum)]
    pub mode: Option<ModeChoice>,
    /// Deploy every app of a wasmloop.toml.
    #[arg(long, conflicts_with = "file")]
    pub manifest: Option<PathBuf>,
    #[command(flatten)]
    pub reuse: ReuseArgs,
}

/// A tenant's limits and quotas on the command line; sizes take K, M, G suffixes.
#[derive(Debug, clap::Args)]
pub struct LimitArgs {
    /// Requests of this tenant in flight on the server.
    #[arg(long)]
    max_in_flight: Option<u64>,
    /// Pool threads of the server this tenant may hold.
    #[arg(long)]
    max_pool_threads: Option<u64>,
    /// Guest memory this tenant's requests in flight may reach together.
    #[arg(long, value_parser = parse_size)]
    memory_budget: Option<u64>,
    #[arg(long)]
    max_apps: Option<u64>,
    /// Versions kept per app (at least the active one and the one before it).
    #[arg(long)]
    max_versions: Option<u64>,
    /// Routes per app.
    #[arg(long)]
    max_routes: Option<u64>,
    /// Bytes of an app's variables.
    #[arg(long, value_parser = parse_size)]
    max_vars_bytes: Option<u64>,
    /// Bytes of an app's settings.
    #[arg(long, value_parser = parse_size)]
    max_settings_bytes: Option<u64>,
    /// Bytes of components the tenant's versions refer to.
    #[arg(long, value_parser = parse_size)]
    max_stored_bytes: Option<u64>,
}

impl LimitArgs {
    fn limits(&self) -> TenantLimits {
        TenantLimits {
            max_in_flight: self.max_in_flight,
            max_pool_threads: self.max_pool_threads,
            memory_budget: self.memory_budget,
            max_apps: self.max_apps,
            max_versions: self.max_versions,
            max_routes: self.max_routes,
            max_vars_bytes: self.max_vars_bytes,
            max_settings_bytes: self.max_settings_bytes,
            max_stored_bytes: self.max_stored_bytes,
            ..TenantLimits::default()
        }
    }
}

pub fn tenant(conn: &Connection, command: &TenantCommand) -> anyhow::Result<()> {
    match command {
        TenantCommand::Limits { name, limits } => {
            let body = serde_json::to_string(&limits.limits())?;
            let value = conn.expect(
                Method::PUT,
                &format!("/v1/tenants/{name}/limits"),
                Some((Bytes::from(body), "application/json")),
            )?;
            println!("Limits of {name}: {}", value["tenant"]["limits"]);
        }
        TenantCommand::Create { name, limits } => {
            let body = json!({ "name": name, "limits": limits.limits() });
            let value = conn.expect(
                Method::POST,
                "/v1/tenants",
                Some((Bytes::from(body.to_string()), "application/json")),
            )?;
            println!("Created tenant {name}. Its token (shown once; keep it):");
            println!("{}", value["token"].as_str().unwrap_or_default());
        }
        TenantCommand::List => {
            let value = conn.expect(Method::GET, "/v1/tenants", None)?;
            for tenant in value["tenants"].as_array().into_iter().flatten() {
                println!("{}", tenant["name"].as_str().unwrap_or_default());
            }
        }
        TenantCommand::Delete { name } => {
            conn.expect(Method::DELETE, &format!("/v1/tenants/{name}"), None)?;
            println!("Deleted tenant {name} and its apps.");
        }
    }
    Ok(())
}

pub fn deploy(conn: &Connection, args: &DeployArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.manifest {
        let manifest = Manifest::load(path)?;
        for app in &manifest.apps {
            upload(conn, &app.name, &app.component, app.settings()?)?;
        }
        return Ok(());
    }
    let Some(file) = &args.file else {
        bail!("give a .wasm file to deploy, or --manifest wasmloop.toml");
    };
    let app = match &args.app {
        Some(app) => app.clone(),
        None => file
            .file_stem()
            .map(|s| s.to_string_lossy().replace('_', "-"))
            .context("cannot tell the app's name from the file; give --app")?,
    };
    let routes = if args.routes.is_empty() {
        vec![format!("/{app}")]
    } else {
        args.routes.clone()
    };
    let routes = routes
        .iter()
        .map(|r| match &args.host {
            Some(host) if r.starts_with('/') => parse_route(&format!("{host}{r}")),
            _ => parse_route(r),
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Checked here too, so a mistake is named before the upload.
    for route in &routes {
        normalize_route(route)?;
    }
    let mut settings = AppSettings {
        routes,
        allow_outbound: args.allow_outbound.clone(),
        mode: args.mode,
        reuse: args.reuse.reuse()?,
        ..AppSettings::default()
    };
    settings.vars.extend(args.vars.iter().cloned());
    upload(conn, &app, file, settings)
}

/// How many times `wasmloop deploy` sends an upload again when the server's compile
/// queue turns it away.
const BUSY_RETRIES: u32 = 30;

#[expect(clippy::disallowed_methods, reason = "a CLI command, not the loop")]
fn upload(conn: &Connection, app: &str, file: &Path, settings: AppSettings) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(file).with_context(|| format!("failed to read {}", file.display()))?;
    let boundary = "wasmloop-upload-boundary-7f3a9c";
    let mut body = Vec::with_capacity(bytes.len() + 1024);
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"settings\"\r\nContent-Type: application/json\r\n\r\n").as_bytes());
    body.extend_from_slice(serde_json::to_string(&settings)?.as_bytes());
    body.extend_from_slice(format!("\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"component\"; filename=\"{app}.wasm\"\r\nContent-Type: application/wasm\r\n\r\n").as_bytes());
    body.extend_from_slice(&bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    eprintln!(
        "Uploading {} ({:.1} KiB) as app {app}, then validating and compiling it...",
        file.display(),
        bytes.len() as f64 / 1024.0
    );
    let started = Instant::now();
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let body = Bytes::from(body);
    let path = format!("/v1/apps/{app}/versions");
    let mut tries = 0;
    let value = loop {
        let (status, value, retry_after) =
            conn.call_with_retry_after(Method::POST, &path, Some((body.clone(), &content_type)))?;
        match retry_after {
            // The server's compile queue was full or its wait too long: nothing was
            // stored, so sending it again is safe.
            Some(seconds) if status == StatusCode::SERVICE_UNAVAILABLE && tries < BUSY_RETRIES => {
                tries += 1;
                if tries == 1 {
                    eprintln!(
                        "The server is busy compiling other deploys ({}).",
                        value["error"].as_str().unwrap_or("503")
                    );
                }
                eprintln!(
                    "Waiting {seconds} s for a turn to compile, then sending it again (try {tries} of {BUSY_RETRIES})..."
                );
                std::thread::sleep(Duration::from_secs(seconds));
            }
            _ if status.is_success() => break value,
            _ => {
                let message = value["error"]
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_string);
                bail!(
                    "deploying {} failed: {} {message}",
                    file.display(),
                    status.as_u16()
                );
            }
        }
    };
    let version = &value["version"];
    println!(
        "Deployed {app} version {} ({} mode) in {:.1} s, compiled in {} ms; routes: {}.{}",
        version["number"],
        version["mode"].as_str().unwrap_or("?"),
        started.elapsed().as_secs_f64(),
        value["compile_ms"],
        describe_routes(&version["settings"]["routes"]),
        if value["workers_updated"] == Value::Bool(true) {
            " Every worker serves it."
        } else {
            " Some workers have not confirmed it yet."
        },
    );
    Ok(())
}

fn describe_routes(routes: &Value) -> String {
    routes
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            format!(
                "{}{}",
                r["host"].as_str().unwrap_or(""),
                r["prefix"].as_str().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn apps(conn: &Connection) -> anyhow::Result<()> {
    let value = conn.expect(Method::GET, "/v1/apps", None)?;
    println!("{:<24} {:>7} {:>8}  ROUTES", "APP", "ACTIVE", "VERSIONS");
    for app in value["apps"].as_array().into_iter().flatten() {
        println!(
            "{:<24} {:>7} {:>8}  {}",
            app["name"].as_str().unwrap_or_default(),
            app["active_version"]
                .as_u64()
                .map_or("-".to_string(), |v| v.to_string()),
            app["versions"],
            describe_routes(&app["routes"]),
        );
    }
    Ok(())
}

pub fn versions(conn: &Connection, app: &str) -> anyhow::Result<()> {
    let value = conn.expect(Method::GET, &format!("/v1/apps/{app}/versions"), None)?;
    println!(
        "{:>7}  {:<6} {:<5} {:>10}  SHA-256",
        "VERSION", "ACTIVE", "MODE", "SIZE"
    );
    for v in value["versions"].as_array().into_iter().flatten() {
        println!(
            "{:>7}  {:<6} {:<5} {:>10}  {}",
            v["number"],
            if v["active"] == Value::Bool(true) {
                "*"
            } else {
                ""
            },
            v["mode"].as_str().unwrap_or_default(),
            v["size"],
            v["sha256"].as_str().unwrap_or_default(),
        );
    }
    Ok(())
}

pub fn rollback(conn: &Connection, app: &str, version: Option<u64>) -> anyhow::Result<()> {
    let body = json!({ "version": version }).to_string();
    let value = conn.expect(
        Method::POST,
        &format!("/v1/apps/{app}/activate"),
        Some((Bytes::from(body), "application/json")),
    )?;
    println!("{app} now serves version {}.", value["version"]["number"]);
    Ok(())
}

pub fn delete(conn: &Connection, app: &str) -> anyhow::Result<()> {
    conn.expect(Method::DELETE, &format!("/v1/apps/{app}"), None)?;
    println!("Deleted {app} and its versions.");
    Ok(())
}
