//! The CLI side of the admin API: `wasmloop tenant`, `deploy`, `apps`, `versions`,
//! `rollback`, `delete`, `doctor`. The server's admin address (`--server`, a URL or
//! `host:port`) and the token come from flags, else the environment
//! (`WASMLOOP_SERVER`, `WASMLOOP_TOKEN`), else a config file
//! (`~/.config/wasmloop/cli.toml` with `server = "..."` and `token = "..."`).

pub mod doctor;
pub mod template;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use crate::config::ReuseArgs;
use crate::model::app::AppSettings;
use crate::model::manifest::Manifest;
use crate::model::mode::ModeChoice;
use crate::model::route::{normalize_route, parse_route};
use crate::model::tenant::TenantLimits;
use crate::model::text::{format_size, parse_key_value, parse_size};

/// The media type of a deploy's steps as they happen (the API's `Accept` for them).
const NDJSON: &str = "application/x-ndjson";

/// Where the admin API is and who is asking.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// The server's admin listener: a URL (`https://admin.example.com:9090`) or
    /// `host:port` for plain http [default: http://127.0.0.1:9090].
    #[arg(long, env = "WASMLOOP_SERVER", global = true, alias = "admin")]
    pub server: Option<String>,
    /// A tenant token (apps) or the admin token (tenants, hosts, doctor).
    #[arg(long, env = "WASMLOOP_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// A TOML file with `server` and `token` (default: ~/.config/wasmloop/cli.toml).
    #[arg(long = "cli-config", env = "WASMLOOP_CLI_CONFIG", global = true)]
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
        Ok((server_url(&server)?, self.token.clone().or(file.token)))
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

    /// Sends `body` (reporting its upload to `sent`, in bytes) asking for a deploy's
    /// steps as they happen, and hands each step to `step` as it arrives. Returns
    /// the status of the answer (`200` for a stream of steps).
    fn stream_steps(
        &self,
        path: &str,
        body: Bytes,
        content_type: &str,
        sent: impl Fn(u64) + Send + Sync + 'static,
        mut step: impl FnMut(Value),
    ) -> anyhow::Result<(StatusCode, Value)> {
        use http_body_util::StreamBody;
        use hyper::body::Frame;
        let (server, token) = self.resolve()?;
        let url = format!("{server}{path}");
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(&url)
            .header("accept", NDJSON)
            .header("content-type", content_type);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        // In chunks, so the upload's progress shows as hyper writes them.
        const CHUNK: usize = 256 << 10;
        let chunks: Vec<Bytes> = (0..body.len())
            .step_by(CHUNK)
            .map(|at| body.slice(at..(at + CHUNK).min(body.len())))
            .collect();
        let mut done = 0u64;
        let frames = futures_util::stream::iter(chunks).map(move |chunk| {
            done += chunk.len() as u64;
            sent(done);
            Ok::<_, std::convert::Infallible>(Frame::data(chunk))
        });
        let request = request
            .body(BodyExt::boxed(StreamBody::new(frames)))
            .with_context(|| format!("{url} is not a valid URL"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let client = crate::tls::cli_client::<http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>>(self.cacert.as_deref())?;
            let response = tokio::time::timeout(Duration::from_secs(600), client.request(request))
                .await
                .context("the server did not answer within 10 minutes")?
                .with_context(|| format!("failed to reach {server}; is `wasmloop serve` running with its admin listener there?"))?;
            let status = response.status();
            let streaming = response
                .headers()
                .get("content-type")
                .is_some_and(|v| v.as_bytes().starts_with(NDJSON.as_bytes()));
            let mut body = response.into_body();
            let mut pending = Vec::new();
            let mut whole = Vec::new();
            while let Some(frame) = body.frame().await {
                let Ok(data) = frame?.into_data() else { continue };
                if !streaming {
                    whole.extend_from_slice(&data);
                    continue;
                }
                pending.extend_from_slice(&data);
                while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    if let Ok(value) = serde_json::from_slice::<Value>(&line) {
                        step(value);
                    }
                }
            }
            let value = serde_json::from_slice(&whole).unwrap_or(Value::Null);
            Ok((status, value))
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

/// The admin address as a URL without a trailing slash: `host:port` (or `[::1]:9090`)
/// means plain http; a URL must be http or https and name a host.
fn server_url(server: &str) -> anyhow::Result<String> {
    let server = server.trim().trim_end_matches('/');
    let url = if server.contains("://") {
        server.to_string()
    } else {
        format!("http://{server}")
    };
    let uri: http::Uri = url.parse().with_context(|| {
        format!(
            "`{server}` is not an admin address: give host:port or a URL (http://127.0.0.1:9090)"
        )
    })?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => bail!("`{server}` is not an admin address: the scheme must be http or https"),
    }
    if uri.host().is_none_or(str::is_empty) {
        bail!("`{server}` is not an admin address: it names no host");
    }
    Ok(url)
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
            let mut table = Table::new(&["HOST", "TENANT"]);
            for binding in value["hosts"].as_array().into_iter().flatten() {
                table.row(vec![
                    binding["pattern"].as_str().unwrap_or_default().to_string(),
                    binding["tenant"].as_str().unwrap_or_default().to_string(),
                ]);
            }
            print!("{table}");
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
    /// Fuel (WebAssembly work units) one request may burn (default: the server's
    /// --fuel).
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Linear memory one instance may grow to, e.g. `64M` (default: the server's
    /// --max-memory).
    #[arg(long, value_parser = parse_size)]
    pub max_memory: Option<u64>,
    /// How long one request may take, e.g. `2s`, `500ms` (default: the server's
    /// --timeout).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// Requests of this app in flight on each worker (default: the tenant's limit).
    #[arg(long)]
    pub max_in_flight: Option<u64>,
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
        let per_app_flags = [
            ("--app", args.app.is_some()),
            ("--route", !args.routes.is_empty()),
            ("--host", args.host.is_some()),
            ("--var", !args.vars.is_empty()),
            ("--allow-outbound", !args.allow_outbound.is_empty()),
            ("--mode", args.mode.is_some()),
            ("--fuel", args.fuel.is_some()),
            ("--max-memory", args.max_memory.is_some()),
            ("--timeout", args.timeout.is_some()),
            ("--max-in-flight", args.max_in_flight.is_some()),
        ];
        if let Some((flag, _)) = per_app_flags.iter().find(|(_, set)| *set) {
            bail!("{flag} does not go with --manifest: each app's settings come from the manifest");
        }
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
        fuel: args.fuel,
        max_memory: args.max_memory,
        timeout_ms: args
            .timeout
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        max_in_flight: args.max_in_flight,
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
    use std::io::{IsTerminal as _, Write as _};
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
        "Uploading {} ({}) as app {app}, then validating and compiling it...",
        file.display(),
        format_size(bytes.len() as u64)
    );
    let started = Instant::now();
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let body = Bytes::from(body);
    let total = body.len() as u64;
    let path = format!("/v1/apps/{app}/versions");
    let terminal = std::io::stderr().is_terminal();
    let mut tries = 0;
    loop {
        let mut outcome: Option<Value> = None;
        let since = started;
        let (status, plain) = conn.stream_steps(
            &path,
            body.clone(),
            &content_type,
            move |sent| {
                if terminal {
                    eprint!("\r  sent {:>3}% of the upload", sent * 100 / total.max(1));
                    if sent >= total {
                        eprintln!();
                    }
                    let _ = std::io::stderr().flush();
                }
            },
            |step| {
                let at = since.elapsed().as_secs_f64();
                match step["step"].as_str().unwrap_or_default() {
                    "received" => eprintln!(
                        "  {at:5.1} s  received {}, validating and compiling",
                        format_size(step["bytes"].as_u64().unwrap_or(0))
                    ),
                    "compiled" => eprintln!(
                        "  {at:5.1} s  compiled with {} in {} ms{}",
                        step["compiler"].as_str().unwrap_or("?"),
                        step["ms"],
                        from_cache(&step["cache"])
                    ),
                    "live" => eprintln!(
                        "  {at:5.1} s  version {} live on {} {}",
                        step["version"],
                        step["workers"],
                        if step["workers_updated"] == Value::Bool(true) {
                            "workers"
                        } else {
                            "workers (some have not confirmed it yet)"
                        }
                    ),
                    "done" => {
                        report_deployed(app, &step["deployed"], since);
                        outcome = Some(step);
                    }
                    "optimized" => println!(
                        "  {at:5.1} s  optimized: Cranelift's code serves new requests (compiled in {:.1} s)",
                        step["ms"].as_f64().unwrap_or(0.0) / 1000.0
                    ),
                    "optimize_failed" => eprintln!(
                        "  {at:5.1} s  the optimized compile failed; the baseline code goes on serving: {}",
                        step["error"].as_str().unwrap_or("?")
                    ),
                    "failed" => outcome = Some(step),
                    _ => {}
                }
            },
        )?;
        // A server that does not stream steps answered the whole deploy at once.
        let (status, value, retry_after) = match outcome {
            Some(step) if step["step"] == "done" => return Ok(()),
            Some(step) => (
                StatusCode::from_u16(step["status"].as_u64().unwrap_or(500) as u16)
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                json!({ "error": step["error"] }),
                step["retry_after"].as_u64(),
            ),
            None if status.is_success() => {
                report_deployed(app, &plain, started);
                return Ok(());
            }
            None => (status, plain, None),
        };
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
    }
}

/// ` (H of L functions from the compile cache)`, or nothing.
fn from_cache(cache: &Value) -> String {
    match (cache["hits"].as_u64(), cache["lookups"].as_u64()) {
        (Some(hits), Some(lookups)) if lookups > 0 => {
            format!(" ({hits} of {lookups} functions from the compile cache)")
        }
        _ => String::new(),
    }
}

/// The line a finished deploy prints, and what follows with tiers.
fn report_deployed(app: &str, value: &Value, started: Instant) {
    let version = &value["version"];
    println!(
        "Deployed {app} version {} ({} mode) in {:.1} s, compiled in {} ms{}; routes: {}.{}",
        version["number"],
        version["mode"].as_str().unwrap_or("?"),
        started.elapsed().as_secs_f64(),
        value["compile_ms"],
        from_cache(&value["compile_cache"]),
        describe_routes(&version["settings"]["routes"]),
        if value["workers_updated"] == Value::Bool(true) {
            " Every worker serves it."
        } else {
            " Some workers have not confirmed it yet."
        },
    );
    if value["optimizing"] == Value::Bool(true) {
        println!(
            "It runs on {}'s code (the baseline tier) while Cranelift compiles it in the \
             background; new requests move to the optimized code when that is done.",
            value["compiler"]
                .as_str()
                .unwrap_or("the baseline compiler")
        );
    }
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
    let mut table = Table::new(&[
        "APP",
        ">ACTIVE",
        ">VERSIONS",
        "DEPLOYED",
        "CREATED",
        "ROUTES",
    ]);
    for app in value["apps"].as_array().into_iter().flatten() {
        table.row(vec![
            app["name"].as_str().unwrap_or_default().to_string(),
            app["active_version"]
                .as_u64()
                .map_or("-".to_string(), |v| v.to_string()),
            app["versions"].to_string(),
            app["deployed_at"]
                .as_u64()
                .map_or("-".to_string(), format_time),
            app["created_at"]
                .as_u64()
                .map_or("-".to_string(), format_time),
            describe_routes(&app["routes"]),
        ]);
    }
    print!("{table}");
    Ok(())
}

pub fn versions(conn: &Connection, app: &str) -> anyhow::Result<()> {
    let value = conn.expect(Method::GET, &format!("/v1/apps/{app}/versions"), None)?;
    let mut table = Table::new(&[">VERSION", "ACTIVE", "MODE", ">SIZE", "CREATED", "SHA-256"]);
    for v in value["versions"].as_array().into_iter().flatten() {
        table.row(vec![
            v["number"].to_string(),
            if v["active"] == Value::Bool(true) {
                "*".to_string()
            } else {
                String::new()
            },
            v["mode"].as_str().unwrap_or_default().to_string(),
            v["size"].as_u64().map_or("-".to_string(), format_size),
            v["created_at"]
                .as_u64()
                .map_or("-".to_string(), format_time),
            v["sha256"].as_str().unwrap_or_default().to_string(),
        ]);
    }
    print!("{table}");
    Ok(())
}

/// A time from the API (seconds since the Unix epoch) in UTC, to the second.
fn format_time(seconds: u64) -> String {
    let time = std::time::UNIX_EPOCH + Duration::from_secs(seconds);
    humantime::format_rfc3339_seconds(time)
        .to_string()
        .replacen('T', " ", 1)
}

/// A table for a terminal: every column as wide as its widest cell, numbers aligned
/// right (a heading starting with `>`), two spaces between columns, no trailing spaces.
struct Table {
    headings: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(headings: &[&str]) -> Self {
        Self {
            headings: headings
                .iter()
                .map(|h| h.trim_start_matches('>').to_string())
                .collect(),
            right: headings.iter().map(|h| h.starts_with('>')).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let width = |i: usize| {
            std::iter::once(&self.headings)
                .chain(&self.rows)
                .filter_map(|row| row.get(i))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..self.headings.len()).map(width).collect();
        for row in std::iter::once(&self.headings).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = widths[i].saturating_sub(cell.chars().count());
                if self.right[i] {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
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
