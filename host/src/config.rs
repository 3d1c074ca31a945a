//! Command-line and environment configuration, validated before anything binds.
//!
//! Every flag has an environment variable (`WASMLOOP_<FLAG>`) and a documented default.
//! Names follow Uvicorn and Gunicorn where one exists (`--threads`,
//! `--timeout-keep-alive`, `--graceful-timeout`, `--limit-concurrency`), so an operator
//! who knows those servers knows these flags. This module only parses and checks; the
//! modules that use a setting own its meaning.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::ValueEnum;

use crate::model::compiler::Compiler;
use crate::model::listen::{Bind, DEFAULT_LISTEN, parse_fd};
use crate::model::mode::ModeChoice;
use crate::model::proxies::TrustedProxies;
use crate::model::quota::Quotas;
use crate::model::reuse::{Reuse, ReuseMode, parse_range};
use crate::model::text::{parse_key_value, parse_size};

/// Where the admin listener (and with it the deploy API) is by default with a
/// registry, and where the CLI looks for it.
pub const DEFAULT_ADMIN_PORT: u16 = 9090;

/// The admin listener's address, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminListen {
    Off,
    At(SocketAddr),
}

fn parse_admin_listen(value: &str) -> Result<AdminListen, String> {
    if value.eq_ignore_ascii_case("off") {
        return Ok(AdminListen::Off);
    }
    value
        .parse()
        .map(AdminListen::At)
        .map_err(|e| format!("{e}: give HOST:PORT or `off`"))
}

/// `--compiler`: one compiler, or tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompilerChoice {
    Auto,
    Cranelift,
    Winch,
}

/// `--keep-request-id`: whose `X-Request-Id` becomes the request's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeepRequestId {
    /// Always make a new id.
    Never,
    /// Keep a well-formed id from a trusted proxy (`--forwarded-allow-ips`).
    Proxies,
    /// Keep a well-formed id from any client.
    Always,
}

/// Format of the log lines written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Settings of `wasmloop serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeConfig {
    /// A component to serve on its own: a .wasm file exporting
    /// wasi:http/incoming-handler@0.2.x (sync) or wasi:http/handler@0.3.0 (async).
    /// Without it, the server serves what tenants deployed into --data-dir.
    #[arg(env = "WASMLOOP_COMPONENT")]
    pub component: Option<PathBuf>,

    /// A TOML file of these settings, named as the flags without their dashes
    /// (`workers = 4`, `allow-outbound = ["api.example.com"]`, `no-access-log = true`);
    /// the environment and the command line override it.
    #[arg(long, env = "WASMLOOP_CONFIG")]
    pub config: Option<PathBuf>,

    /// What the master read from `config`, handed to its workers.
    #[arg(skip)]
    pub config_snapshot: Option<String>,

    /// Where deployed apps live: the registry (SQLite) and the components and
    /// compiled artifacts, by content hash. Used when no component is given.
    #[arg(long, env = "WASMLOOP_DATA_DIR", default_value = "wasmloop-data")]
    pub data_dir: PathBuf,

    /// Where the registry lives: unset for SQLite in --data-dir (one node), or a
    /// PostgreSQL URL (`postgres://user:password@host/db`) shared by several nodes.
    /// With PostgreSQL the database also holds the components; --data-dir keeps this
    /// node's compiled artifacts.
    #[arg(long, env = "WASMLOOP_REGISTRY", conflicts_with_all = ["component", "manifest"])]
    pub registry: Option<String>,

    /// With a shared registry: how often a node re-reads it even without a
    /// notification, so one it missed (a dropped connection) is healed.
    #[arg(long, env = "WASMLOOP_REGISTRY_RECHECK", default_value = "5s", value_parser = humantime::parse_duration)]
    pub registry_recheck: Duration,

    /// Watch the component file and swap a changed one in without dropping a request,
    /// as Uvicorn's --reload does (for development; serving one component). A file
    /// that does not load keeps the running version serving.
    #[arg(long, env = "WASMLOOP_RELOAD")]
    pub reload: bool,

    /// With --reload: a command run with `sh -c` when a source file under
    /// --reload-dir changes (`cargo build --release --target wasm32-wasip2`,
    /// `python -m wasmloop build`); the component it rebuilds is then swapped in.
    #[arg(long, env = "WASMLOOP_RELOAD_BUILD", requires = "reload")]
    pub reload_build: Option<String>,

    /// Where --reload-build looks for source changes (repeatable; default: the
    /// current directory). Build outputs and tool directories are ignored: target/,
    /// node_modules/, __pycache__/, hidden directories, *.wasm, *.pyc.
    #[arg(
        long = "reload-dir",
        env = "WASMLOOP_RELOAD_DIR",
        value_delimiter = ',',
        requires = "reload_build"
    )]
    pub reload_dirs: Vec<PathBuf>,

    /// How often --reload looks for changes.
    #[arg(long, env = "WASMLOOP_RELOAD_DELAY", default_value = "250ms", value_parser = humantime::parse_duration)]
    pub reload_delay: Duration,

    /// Serve the apps of a wasmloop.toml, for local development: no registry, no
    /// deploy API, components compiled by each worker at start.
    #[arg(long, env = "WASMLOOP_MANIFEST", conflicts_with = "component")]
    pub manifest: Option<PathBuf>,

    /// A file holding the admin token (the first line). Without it, the token comes
    /// from WASMLOOP_ADMIN_TOKEN; without that, one is generated into
    /// DATA_DIR/admin-token on first start.
    #[arg(long, env = "WASMLOOP_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// Largest component upload; larger is 413 before the body is read.
    #[arg(long, env = "WASMLOOP_MAX_UPLOAD", default_value = "50M", value_parser = parse_size)]
    pub max_upload: u64,

    /// How long compiling an upload may take; longer is refused (422).
    #[arg(long, env = "WASMLOOP_COMPILE_TIMEOUT", default_value = "120s", value_parser = humantime::parse_duration)]
    pub compile_timeout: Duration,

    /// Compile children this node runs at once (default: half the cores, at least
    /// one). Each tenant compiles one upload at a time.
    #[arg(long, env = "WASMLOOP_COMPILE_CONCURRENCY")]
    pub compile_concurrency: Option<usize>,

    /// Deploys that may wait for a turn to compile; more are refused (503).
    /// Each holds its upload in memory while it waits.
    #[arg(long, env = "WASMLOOP_COMPILE_QUEUE", default_value_t = 8)]
    pub compile_queue: usize,

    /// How long a deploy waits for a turn to compile before it is refused (503).
    #[arg(long, env = "WASMLOOP_COMPILE_QUEUE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub compile_queue_timeout: Duration,

    /// Default quotas of every tenant (the admin overrides them per tenant): apps,
    /// versions kept per app (older ones pruned, never the active one or the rollback
    /// target), routes per app, bytes of an app's variables and of its settings, and
    /// bytes of components stored. Over a quota a change is refused (403).
    #[arg(long, env = "WASMLOOP_TENANT_MAX_APPS", default_value_t = 100)]
    pub tenant_max_apps: u64,
    #[arg(long, env = "WASMLOOP_TENANT_MAX_VERSIONS", default_value_t = 10)]
    pub tenant_max_versions: u64,
    #[arg(long, env = "WASMLOOP_TENANT_MAX_ROUTES", default_value_t = 32)]
    pub tenant_max_routes: u64,
    #[arg(long, env = "WASMLOOP_TENANT_MAX_VARS_SIZE", default_value = "32K", value_parser = parse_size)]
    pub tenant_max_vars_size: u64,
    #[arg(long, env = "WASMLOOP_TENANT_MAX_SETTINGS_SIZE", default_value = "64K", value_parser = parse_size)]
    pub tenant_max_settings_size: u64,
    #[arg(long, env = "WASMLOOP_TENANT_MAX_STORED", default_value = "1G", value_parser = parse_size)]
    pub tenant_max_stored: u64,

    /// The node's compile cache (Cranelift's compiled functions, in
    /// DATA_DIR/compile-cache): a component that shares functions with one compiled
    /// before (two Python apps share CPython's) compiles those from the cache. Kept
    /// under this size, the entries used longest ago removed first; 0 turns it off.
    #[arg(long, env = "WASMLOOP_COMPILE_CACHE_SIZE", default_value = "1G", value_parser = parse_size)]
    pub compile_cache_size: u64,

    /// Address space the compiler process may use; more is refused (422).
    #[arg(long, env = "WASMLOOP_COMPILE_MAX_MEMORY", default_value = "4G", value_parser = parse_size)]
    pub compile_max_memory: u64,

    /// Guest memory one worker's requests in flight may reach together: each counts
    /// at its app's max_memory (the most its instance may grow to) plus 1 MiB; past
    /// it, 503 `overloaded` before any guest runs. Default, when serving deployed
    /// apps: half the machine's memory (or its cgroup's limit, when lower) divided by
    /// the workers; when serving one component or a manifest: none.
    #[arg(long, env = "WASMLOOP_WORKER_MEMORY_BUDGET", value_parser = parse_size)]
    pub worker_memory_budget: Option<u64>,

    /// A tenant's share of each worker's --limit-concurrency, --threads and memory
    /// budget when its own limits do not say (0 < share <= 1). A tenant never gets
    /// every pool thread.
    #[arg(long, env = "WASMLOOP_TENANT_SHARE", default_value_t = 0.5)]
    pub tenant_share: f64,

    /// Address to listen on [default: 127.0.0.1:8080, unless --bind, --uds or --fd
    /// name the listeners]. Port 0 picks a free port; each bound address is printed as
    /// `listening on http://ADDR` (`listening on unix:PATH` for a unix socket).
    #[arg(long, env = "WASMLOOP_LISTEN")]
    pub listen: Option<Bind>,

    /// A listener, as Gunicorn's `-b`: `IP:PORT`, `[::1]:PORT`, `unix:PATH` or
    /// `fd://N`. Repeatable (or comma-separated); every worker serves them all.
    #[arg(
        short = 'b',
        long = "bind",
        env = "WASMLOOP_BIND",
        value_delimiter = ','
    )]
    pub bind: Vec<Bind>,

    /// Listen on a unix domain socket at this path, as Uvicorn's `--uds` (a stale
    /// socket file left by a crash is replaced; the file is removed at exit).
    #[arg(long, env = "WASMLOOP_UDS")]
    pub uds: Option<PathBuf>,

    /// Listen on a socket this process was started with, by descriptor number, as
    /// Uvicorn's `--fd` (from a process manager that bound it).
    #[arg(long, env = "WASMLOOP_FD", value_parser = parse_fd)]
    pub fd: Option<i32>,

    /// Address of the admin listener (`/metrics`, `/doctor`, `/healthz`, and the
    /// deploy API with a registry), or `off`. Keep it on a private interface. Default:
    /// 127.0.0.1:9090 with a registry (where the CLI looks); serving a component or a
    /// manifest, any free port on 127.0.0.1, so two such servers run side by side. The
    /// bound address is printed as `admin listening on http://ADDR`.
    #[arg(long, env = "WASMLOOP_ADMIN_LISTEN", value_parser = parse_admin_listen)]
    pub admin_listen: Option<AdminListen>,

    /// A PEM certificate chain: with --ssl-keyfile, both listeners speak TLS only
    /// (the public one HTTP/2 and HTTP/1.1 by ALPN).
    #[arg(long, env = "WASMLOOP_SSL_CERTFILE", requires = "ssl_keyfile")]
    pub ssl_certfile: Option<PathBuf>,

    /// The PEM private key of --ssl-certfile.
    #[arg(long, env = "WASMLOOP_SSL_KEYFILE", requires = "ssl_certfile")]
    pub ssl_keyfile: Option<PathBuf>,

    /// Connections the admin listener holds open at once; past it, a new one is
    /// closed at once. It serves one request per connection, with the public
    /// listener's --timeout-header-read.
    #[arg(long, env = "WASMLOOP_ADMIN_MAX_CONNECTIONS", default_value_t = 64)]
    pub admin_max_connections: usize,

    /// Worker processes (default: one per CPU core). Each runs one event loop and its
    /// own thread pool; the kernel spreads connections across them.
    #[arg(short = 'w', long, env = "WASMLOOP_WORKERS")]
    pub workers: Option<usize>,

    /// Write the master's process id to this file once it serves (removed when it
    /// stops): the process to send HUP, TTIN, TTOU and TERM to.
    #[arg(long = "pid", env = "WASMLOOP_PID_FILE")]
    pub pid_file: Option<PathBuf>,

    /// Which compiler makes the guests' machine code. `auto`: serving one component,
    /// Winch (the baseline compiler, several times faster to compile) first so the
    /// server answers sooner, then Cranelift (optimizing) in the background at a low
    /// priority, swapped in for new requests when ready; with a registry or a
    /// manifest, Cranelift. `cranelift` or `winch`: that one alone.
    #[arg(long, env = "WASMLOOP_COMPILER", value_enum, default_value_t = CompilerChoice::Auto)]
    pub compiler: CompilerChoice,

    /// Trust `Forwarded` / `X-Forwarded-For` / `X-Forwarded-Proto` from the proxies of
    /// --forwarded-allow-ips for the client's address and scheme (on by default, as in
    /// Uvicorn); this turns it off.
    #[arg(long, env = "WASMLOOP_NO_PROXY_HEADERS")]
    pub no_proxy_headers: bool,

    /// Proxies whose forwarding headers are trusted: IPs, CIDR ranges, `unix` (peers
    /// on a unix-socket listener, local processes as loopback's are), comma-separated,
    /// or `*` for any peer. From other peers those headers are removed.
    #[arg(
        long,
        env = "WASMLOOP_FORWARDED_ALLOW_IPS",
        default_value = "127.0.0.1,unix"
    )]
    pub forwarded_allow_ips: String,

    /// Log no line per request (`wasmloop::access`); failures still count in the
    /// metrics.
    #[arg(long, env = "WASMLOOP_NO_ACCESS_LOG")]
    pub no_access_log: bool,

    /// Export a span per request (and per outbound request of a guest) over
    /// OTLP/HTTP, configured by the standard OTEL_* variables
    /// (OTEL_EXPORTER_OTLP_ENDPOINT, default http://localhost:4318; OTEL_SERVICE_NAME,
    /// default wasmloop; OTEL_TRACES_SAMPLER...).
    #[arg(long, env = "WASMLOOP_OTLP_TRACES")]
    pub otlp_traces: bool,

    /// Leave the query string out of the access log (it may carry tokens).
    #[arg(long, env = "WASMLOOP_NO_ACCESS_LOG_QUERY")]
    pub no_access_log_query: bool,

    /// The path prefix a proxy mounts this server under (`/api`), as Uvicorn's
    /// --root-path: a request under it reaches routes and guests without it (one the
    /// proxy already stripped is served as is), and every guest is told the prefix in
    /// `x-forwarded-prefix` to build its links.
    #[arg(long, env = "WASMLOOP_ROOT_PATH", value_parser = root_path, default_value = "")]
    pub root_path: String,

    /// Whose incoming `X-Request-Id` (1-128 characters of letters, digits and
    /// `-_.:/+=@~`) becomes the request's id in the log, the guest's request and the
    /// response; any other request gets a new one.
    #[arg(long, env = "WASMLOOP_KEEP_REQUEST_ID", value_enum, default_value_t = KeepRequestId::Proxies)]
    pub keep_request_id: KeepRequestId,

    /// Length of the listen queue of the shared socket.
    #[arg(long, env = "WASMLOOP_BACKLOG", default_value_t = 2048)]
    pub backlog: u32,

    /// A worker whose event loop has not reported for this long is killed and
    /// replaced (the report comes from the loop itself, so a stuck loop is caught).
    #[arg(long, env = "WASMLOOP_TIMEOUT_WORKER_HEALTHCHECK", default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout_worker_healthcheck: Duration,

    /// A worker retires gracefully after serving this many requests (0: never).
    #[arg(long, env = "WASMLOOP_MAX_REQUESTS", default_value_t = 0)]
    pub max_requests: u64,

    /// Up to this many requests are added to `--max-requests` at random per worker,
    /// so that workers do not all retire at once.
    #[arg(long, env = "WASMLOOP_MAX_REQUESTS_JITTER", default_value_t = 0)]
    pub max_requests_jitter: u64,

    /// Where the handler runs: `auto` reads the handler export's type.
    #[arg(long, env = "WASMLOOP_MODE", value_enum, default_value_t = ModeChoice::Auto)]
    pub mode: ModeChoice,

    /// Instance reuse of the component `serve FILE` serves (deployed apps and
    /// manifest apps state their own).
    #[command(flatten)]
    pub reuse: ReuseArgs,

    /// OS threads in the pool that runs sync handlers (anyio's default is 40).
    #[arg(long, env = "WASMLOOP_THREADS", default_value_t = 40)]
    pub threads: usize,

    /// Requests that may wait for a pool thread; past that the answer is 503 at once.
    #[arg(long, env = "WASMLOOP_POOL_QUEUE", default_value_t = 256)]
    pub pool_queue: usize,

    /// Nice value of the pool threads (0-19). Above the event loop's 0, pool threads
    /// busy computing cannot starve the loop on a busy core, so loop-resident apps
    /// keep their latency while the pool is saturated; the price is the pool's own
    /// tail latency when the loop is busy. Default: 19 when serving deployed apps or a
    /// manifest (loop and pool apps side by side), 0 for a single component.
    #[arg(long, env = "WASMLOOP_POOL_NICE", value_parser = clap::value_parser!(i32).range(0..=19))]
    pub pool_nice: Option<i32>,

    /// Hosts guests may send HTTP requests to: `HOST` (any port) or `HOST:PORT`,
    /// comma-separated. Any other outbound request fails inside the guest with
    /// `HTTP-request-denied`, and nothing is sent. Default: none.
    #[arg(long, env = "WASMLOOP_ALLOW_OUTBOUND", value_delimiter = ',')]
    pub allow_outbound: Vec<String>,

    /// Address ranges (CIDR, comma-separated) guests may reach although they are not
    /// public: loopback, private, link-local, unique-local. Whatever the hosts in
    /// --allow-outbound resolve to, a connection to such an address (or to one of this
    /// server's own listeners, always) is refused unless its range is listed here.
    /// Example: `10.0.0.0/8` for upstreams on a private network. Default: none.
    #[arg(long, env = "WASMLOOP_ALLOW_OUTBOUND_NET", value_delimiter = ',')]
    pub allow_outbound_net: Vec<ipnet::IpNet>,

    /// A configuration variable for the handler, `KEY=VALUE`; repeat the flag for
    /// more. Guests read them through the standard wasi:config interface. (The
    /// environment variable holds one pair; use the flag for several.)
    #[arg(long = "var", env = "WASMLOOP_VAR", value_parser = parse_key_value)]
    pub vars: Vec<(String, String)>,

    /// Fuel (WebAssembly work units) one request may burn; out of fuel is 503
    /// `cpu_limit`. The default is about one second of CPU on a current x86-64 core
    /// (see docs/operations.md for the measurement).
    #[arg(long, env = "WASMLOOP_FUEL", default_value_t = 10_000_000_000)]
    pub fuel: u64,

    /// Linear memory one instance may use (suffixes K, M, G: powers of 1024).
    #[arg(long, env = "WASMLOOP_MAX_MEMORY", default_value = "128M", value_parser = parse_size)]
    pub max_memory: u64,

    /// Wall-clock limit for one request, body included; past it the answer is 503
    /// `timeout` (or the connection is cut if the response had started).
    #[arg(long, env = "WASMLOOP_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    /// Largest request body accepted; larger ones get 413 before the guest runs.
    #[arg(long, env = "WASMLOOP_MAX_BODY", default_value = "10M", value_parser = parse_size)]
    pub max_body: u64,

    /// Largest request head (request line and headers); larger ones get 431.
    #[arg(long, env = "WASMLOOP_MAX_HEADER_SIZE", default_value = "32K", value_parser = parse_size)]
    pub max_header_size: u64,

    /// Most header fields accepted in one request; more get 431.
    #[arg(long, env = "WASMLOOP_MAX_HEADERS", default_value_t = 100)]
    pub max_headers: usize,

    /// How long an idle keep-alive connection is kept open.
    #[arg(long, env = "WASMLOOP_TIMEOUT_KEEP_ALIVE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout_keep_alive: Duration,

    /// How long a client may take to send a request's head once it started (slowloris).
    #[arg(long, env = "WASMLOOP_TIMEOUT_HEADER_READ", default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout_header_read: Duration,

    /// Requests in flight on this worker; past that the answer is 503 `overloaded`
    /// with Retry-After. Also sizes the instance pool.
    #[arg(long, env = "WASMLOOP_LIMIT_CONCURRENCY", default_value_t = 1000)]
    pub limit_concurrency: usize,

    /// How long a graceful stop (SIGTERM, ctrl-c) waits for requests in flight.
    #[arg(long, env = "WASMLOOP_GRACEFUL_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub graceful_timeout: Duration,

    /// How often a busy loop-resident guest is made to yield to the event loop (one
    /// epoch tick). Shorter is fairer to neighbours and costs a little throughput.
    #[arg(long, env = "WASMLOOP_EPOCH_INTERVAL", default_value = "2ms", value_parser = humantime::parse_duration)]
    pub epoch_interval: Duration,

    /// Log filter (`info`, `debug`, `wasmloop=debug,info`); RUST_LOG wins when set.
    #[arg(long, env = "WASMLOOP_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log line format.
    #[arg(long, env = "WASMLOOP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// An instance-reuse contract on the command line (`serve`, `deploy`).
#[derive(Debug, Clone, clap::Args)]
pub struct ReuseArgs {
    /// `none`: a fresh sandbox per request; `serial`: an instance serves one request
    /// at a time and is kept for the next, within the bounds below; `concurrent`: a
    /// wasi:http 0.3 instance serves several at once (other handlers: serially).
    #[arg(long = "reuse", default_value = "none", value_parser = parse_reuse_mode)]
    pub reuse_mode: ReuseMode,
    /// Requests one instance serves before it is retired: N, or LOW-HIGH for a value
    /// picked at random per instance.
    #[arg(long = "reuse-max-requests", default_value = "1000-1500", value_parser = parse_reuse_range)]
    pub reuse_max_requests: (u64, u64),
    /// Requests one instance serves at once, with `--reuse concurrent`.
    #[arg(long = "reuse-max-concurrent", default_value_t = 16)]
    pub reuse_max_concurrent: u32,
    /// How long an unused instance is kept.
    #[arg(long = "reuse-idle-timeout", default_value = "30s", value_parser = humantime::parse_duration)]
    pub reuse_idle_timeout: Duration,
    /// Linear memory past which an instance is retired after its request.
    #[arg(long = "reuse-memory-high-water", value_parser = parse_size)]
    pub reuse_memory_high_water: Option<u64>,
}

impl ReuseArgs {
    /// The contract these flags state.
    pub fn reuse(&self) -> anyhow::Result<Reuse> {
        let reuse = Reuse {
            mode: self.reuse_mode,
            max_requests: self.reuse_max_requests,
            max_concurrent: self.reuse_max_concurrent,
            idle_timeout_ms: self.reuse_idle_timeout.as_millis() as u64,
            memory_high_water: self.reuse_memory_high_water,
        };
        reuse.check()?;
        Ok(reuse)
    }
}

fn root_path(text: &str) -> Result<String, String> {
    crate::model::route::parse_root_path(text)
        .map(Option::unwrap_or_default)
        .map_err(|e| e.0)
}

fn parse_reuse_mode(text: &str) -> Result<ReuseMode, String> {
    text.parse().map_err(|e: crate::model::Invalid| e.0)
}

fn parse_reuse_range(text: &str) -> Result<(u64, u64), String> {
    parse_range(text).map_err(|e| e.0)
}

impl ServeConfig {
    /// The compiler a worker starts with, and the one it switches to in the
    /// background, if any.
    pub fn tiers(&self) -> (Compiler, Option<Compiler>) {
        match self.compiler {
            // One component, or deployed apps: Winch first, Cranelift in the background.
            // A manifest's apps are compiled by each worker at start, with Cranelift.
            CompilerChoice::Auto if self.manifest.is_none() => {
                (Compiler::Winch, Some(Compiler::Cranelift))
            }
            CompilerChoice::Auto | CompilerChoice::Cranelift => (Compiler::Cranelift, None),
            CompilerChoice::Winch => (Compiler::Winch, None),
        }
    }

    /// The admin listener's address: the flag's, else the mode's default (see
    /// `--admin-listen`).
    pub fn admin_listen(&self) -> AdminListen {
        self.admin_listen.unwrap_or_else(|| {
            let port = if self.component.is_none() && self.manifest.is_none() {
                DEFAULT_ADMIN_PORT
            } else {
                0
            };
            AdminListen::At(SocketAddr::from(([127, 0, 0, 1], port)))
        })
    }

    /// The quotas every tenant has unless the admin overrides them.
    pub fn default_quotas(&self) -> Quotas {
        Quotas {
            max_apps: self.tenant_max_apps,
            max_versions: self.tenant_max_versions,
            max_routes: self.tenant_max_routes,
            max_vars_bytes: self.tenant_max_vars_size,
            max_settings_bytes: self.tenant_max_settings_size,
            max_stored_bytes: self.tenant_max_stored,
        }
    }

    /// Checks the settings against each other; called before anything binds.
    /// Every public listener, in the order named, with the flag that named it:
    /// --listen, --bind, --uds, --fd; the default address when none is named.
    pub fn binds(&self) -> Vec<(Bind, &'static str)> {
        let binds: Vec<(Bind, &'static str)> = self
            .listen
            .iter()
            .map(|b| (b.clone(), "--listen"))
            .chain(self.bind.iter().map(|b| (b.clone(), "--bind")))
            .chain(self.uds.clone().map(|p| (Bind::Unix(p), "--uds")))
            .chain(self.fd.map(|fd| (Bind::Fd(fd), "--fd")))
            .collect();
        if binds.is_empty() {
            let default = DEFAULT_LISTEN.parse().expect("the default address parses");
            vec![(default, "--listen")]
        } else {
            binds
        }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        let binds = self.binds();
        for (i, (bind, flag)) in binds.iter().enumerate() {
            let any_port = matches!(bind, Bind::Tcp(addr) if addr.port() == 0);
            if !any_port && let Some((_, first)) = binds[..i].iter().find(|(b, _)| b == bind) {
                bail!("the listener {bind} is named twice ({first}, then {flag})");
            }
        }
        if self.reload && self.component.is_none() {
            bail!(
                "--reload watches the component of `wasmloop serve FILE.wasm`; deployed apps \
                 change with `wasmloop deploy`, a manifest's with a SIGHUP"
            );
        }
        self.reuse.reuse()?;
        TrustedProxies::parse(!self.no_proxy_headers, &self.forwarded_allow_ips)?;
        if self.workers == Some(0) {
            bail!("--workers must be at least 1");
        }
        if self.timeout_worker_healthcheck < Duration::from_millis(100) {
            bail!("--timeout-worker-healthcheck must be at least 100ms");
        }
        if let Some(url) = &self.registry
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            bail!("--registry must be a PostgreSQL URL (postgres://user:password@host/database)");
        }
        if self.registry_recheck < Duration::from_millis(100) {
            bail!("--registry-recheck must be at least 100ms");
        }
        if self.threads == 0 {
            bail!("--threads must be at least 1");
        }
        if self.limit_concurrency == 0 {
            bail!("--limit-concurrency must be at least 1");
        }
        if self.fuel == 0 {
            bail!("--fuel must be at least 1");
        }
        if self.max_memory < 64 * 1024 {
            bail!("--max-memory must be at least one WebAssembly page (64K)");
        }
        if self.max_header_size < 8 * 1024 {
            bail!("--max-header-size must be at least 8K (hyper's smallest read buffer)");
        }
        if self.epoch_interval < Duration::from_micros(100)
            || self.epoch_interval > Duration::from_secs(1)
        {
            bail!("--epoch-interval must be between 100us and 1s");
        }
        if self.timeout < self.epoch_interval {
            bail!("--timeout must be longer than --epoch-interval");
        }
        if !(self.tenant_share > 0.0 && self.tenant_share <= 1.0) {
            bail!("--tenant-share must be above 0 and at most 1");
        }
        Ok(())
    }

    /// The certificate and key files, when the listeners speak TLS.
    pub fn tls_files(&self) -> Option<(&std::path::Path, &std::path::Path)> {
        Some((self.ssl_certfile.as_deref()?, self.ssl_keyfile.as_deref()?))
    }

    /// Worker processes to run: `--workers`, else one per CPU core.
    pub fn worker_count(&self) -> usize {
        self.workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Epoch ticks in `--timeout`, rounded up: the deadline a pool job runs under.
    pub fn timeout_ticks(&self) -> u64 {
        self.timeout
            .as_nanos()
            .div_ceil(self.epoch_interval.as_nanos()) as u64
    }
}
