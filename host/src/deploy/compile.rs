//! The deploy path, master side: checks an upload, stores the component by content
//! hash, compiles it into a cached artifact in a child process bounded in time and
//! memory (`wasmloop compile`), and only then records the version. Also the child's
//! side of that compilation, [`run_compile`].
//!
//! Files are written to a temporary name, synced and renamed into place, so a crash
//! or a full disk leaves either the whole file or none; a refused upload leaves
//! nothing behind. Everything here blocks or waits on a child: the admin API calls it
//! from blocking tasks.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::model::app::sha256_hex;
use crate::model::compiler::Compiler;
use crate::model::mode::{Mode, ModeChoice};
use crate::runtime::compile_cache::{self, CacheStats, DiskCache};
use crate::runtime::{component, engine};

/// Why an upload was refused, with the status the admin API answers.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Not a component, or a corrupt one: 400.
    #[error("{0}")]
    Invalid(String),
    /// Larger than `--max-upload`: 413.
    #[error("the upload is larger than --max-upload ({0} bytes)")]
    TooLarge(u64),
    /// A valid component wasmloop cannot serve: no handler, missing imports, a
    /// compilation that ran out of time or memory: 422.
    #[error("{0}")]
    Unprocessable(String),
    /// A valid component this compiler cannot compile (Winch lacks relaxed SIMD, tail
    /// calls, GC...): 422, unless another compiler can (see `DeployContext`).
    #[error("{0}")]
    Uncompilable(String),
    /// The host's fault (disk full, read-only data directory): 500.
    #[error(transparent)]
    Storage(#[from] anyhow::Error),
    /// No turn to compile: the queue is full or the wait too long. 503 with
    /// `Retry-After`.
    #[error("{message}")]
    Busy { message: String, retry_after: u64 },
}

/// The data directory's layout.
#[derive(Debug, Clone)]
pub struct DataDir {
    pub root: PathBuf,
}

impl DataDir {
    pub fn new(root: PathBuf) -> DataDir {
        DataDir { root }
    }

    pub fn component(&self, sha256: &str) -> PathBuf {
        self.root.join("components").join(format!("{sha256}.wasm"))
    }

    pub fn artifact(&self, sha256: &str, engine: &str) -> PathBuf {
        self.root
            .join("artifacts")
            .join(format!("{sha256}-{engine}.cwasm"))
    }

    fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Creates the directories (for this user only: tenants' components, variables
    /// and the admin token live here) and tightens an existing one; clears what an
    /// interrupted upload left in `tmp/`.
    pub fn prepare(&self) -> anyhow::Result<()> {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        for dir in ["", "components", "artifacts", "tmp"] {
            let path = self.root.join(dir);
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&path)
                .with_context(|| format!("failed to create {}", path.display()))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("failed to make {} private", path.display()))?;
        }
        for file in [
            "registry.sqlite3",
            "registry.sqlite3-wal",
            "registry.sqlite3-shm",
        ] {
            let path = self.root.join(file);
            if path.exists() {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("failed to make {} private", path.display()))?;
            }
        }
        if let Ok(entries) = std::fs::read_dir(self.tmp()) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    /// A fresh path in `tmp/` for an upload in progress.
    pub fn temp_path(&self, what: &str) -> PathBuf {
        let mut random = [0u8; 8];
        let _ = getrandom::fill(&mut random);
        self.tmp().join(format!("{what}-{}", hex::encode(random)))
    }

    /// Files a deploy keeps in `tmp/`, removed whatever ends it (see [`TempFiles`]).
    pub fn temp_files(&self, names: &[&str]) -> TempFiles {
        TempFiles(names.iter().map(|what| self.temp_path(what)).collect())
    }
}

/// Temporary files of one deploy (and the partial files [`write_durably`] makes of
/// them), removed when dropped: on success the files were moved away already, and on
/// a refusal, a compile timeout, or a client that left (hyper drops the request's
/// future), they go. A server stop leaves them to the start-up sweep of `tmp/`.
#[derive(Debug)]
pub struct TempFiles(Vec<PathBuf>);

impl TempFiles {
    pub fn path(&self, index: usize) -> &Path {
        &self.0[index]
    }
}

impl Drop for TempFiles {
    fn drop(&mut self) {
        let mut paths = std::mem::take(&mut self.0);
        let partials: Vec<PathBuf> = paths.iter().filter_map(|p| partial_path(p)).collect();
        paths.extend(partials);
        // Off the runtime's threads when there is one: removing a 50 MB file blocks.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || remove_all(&paths))),
            Err(_) => remove_all(&paths),
        }
    }
}

fn remove_all(paths: &[PathBuf]) {
    for path in paths {
        let _ = std::fs::remove_file(path);
    }
}

/// Where [`write_durably`] writes `path` before renaming it into place.
fn partial_path(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    Some(path.parent()?.join(format!(".{name}.partial")))
}

/// Writes `bytes` to `path` all or nothing: a temporary file in the same directory,
/// synced, renamed into place, and the directory synced.
pub fn write_durably(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_whole(path, bytes, true)
}

/// Writes `bytes` to `path` all or nothing, not yet synced: a compile child can read
/// it at once while [`sync`] makes it durable beside the compile.
pub fn write_now(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_whole(path, bytes, false)
}

/// Makes a file [`write_now`] wrote durable, with its directory entry.
pub fn sync(path: &Path) -> anyhow::Result<()> {
    let synced = |p: &Path| {
        std::fs::File::open(p)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("failed to sync {}", p.display()))
    };
    synced(path)?;
    synced(path.parent().context("a path without a directory")?)
}

/// Writes `bytes` to `path` all or nothing (a temporary file renamed into place);
/// synced to disk only when `sync`.
fn write_whole(path: &Path, bytes: &[u8], sync: bool) -> anyhow::Result<()> {
    let dir = path.parent().context("a path without a directory")?;
    let tmp = partial_path(path).context("a path without a file name")?;
    let result = (|| -> anyhow::Result<()> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("failed to create {}", tmp.display()))?;
        file.write_all(bytes)
            .with_context(|| format!("failed to write {}", tmp.display()))?;
        if sync {
            file.sync_all()
                .with_context(|| format!("failed to sync {}", tmp.display()))?;
        }
        std::fs::rename(&tmp, path)
            .with_context(|| format!("failed to move {} into place", path.display()))?;
        if sync {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .with_context(|| format!("failed to sync {}", dir.display()))?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// What the compiler child found out about a component.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Compiled {
    pub export: String,
    pub export_is_async: bool,
    pub mode: Mode,
    /// Hex SHA-256 of the artifact written.
    pub artifact_sha256: String,
    /// What the compile took from the node's compile cache (zero without one).
    #[serde(default)]
    pub cache: CacheStats,
}

/// The node's compile cache: Cranelift's compiled functions, shared by every compile
/// child, kept under `max_bytes` (`--compile-cache-size`).
#[derive(Debug, Clone)]
pub struct CompileCache {
    pub dir: PathBuf,
    pub max_bytes: u64,
}

/// Bounds on one compilation, and on the trial instantiation that follows it.
#[derive(Debug, Clone, Copy)]
pub struct CompileLimits {
    pub timeout: Duration,
    pub max_memory: u64,
    /// The server's `--fuel` and `--max-memory`: the most any request may use, so
    /// the most a component may use to start.
    pub guest_fuel: u64,
    pub guest_max_memory: u64,
    /// The compiler.
    pub compiler: Compiler,
    /// A background compile (the optimized tier): the child runs at the lowest CPU
    /// priority, so requests and deploys come first.
    pub low_priority: bool,
}

/// Exit codes of `wasmloop compile`, telling the master which status to answer.
const EXIT_INVALID: i32 = 10;
const EXIT_UNPROCESSABLE: i32 = 11;
const EXIT_UNCOMPILABLE: i32 = 12;

/// Compiles the component at `component` into `artifact` in a child process
/// (`wasmloop compile`), killed past `limits.timeout`, its address space capped at
/// `limits.max_memory`.
pub async fn compile(
    component: &Path,
    artifact: &Path,
    mode: ModeChoice,
    limits: CompileLimits,
    cache: Option<&CompileCache>,
) -> Result<Compiled, DeployError> {
    let exe = std::env::current_exe().context("failed to find the wasmloop binary")?;
    let mut command = tokio::process::Command::new(exe);
    command.arg("compile");
    if let Some(cache) = cache {
        command
            .arg(format!("--cache-dir={}", cache.dir.display()))
            .arg(format!("--cache-max-bytes={}", cache.max_bytes));
    }
    let child = command
        .arg(component)
        .arg(artifact)
        .arg(format!("--mode={mode}"))
        .arg(format!("--max-memory={}", limits.max_memory))
        .arg(format!("--guest-fuel={}", limits.guest_fuel))
        .arg(format!("--guest-max-memory={}", limits.guest_max_memory))
        .arg(format!("--compiler={}", limits.compiler))
        // The child compiles one file; the registry's credentials are not its business.
        .env_remove("WASMLOOP_REGISTRY")
        // mimalloc reserves address space 1 GiB at a time, and the child's memory cap
        // is a cap on address space: in 64 MiB steps, a cap of a few hundred MiB
        // still leaves room for the compiler's threads.
        .env("MIMALLOC_ARENA_RESERVE", "64MiB")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("failed to start the compiler")?;
    if limits.low_priority
        && let Some(pid) = child
            .id()
            .and_then(|id| rustix::process::Pid::from_raw(id as i32))
        && let Err(e) = rustix::process::setpriority_process(Some(pid), 19)
    {
        tracing::warn!("failed to lower the background compile's priority: {e}");
    }
    let output = match tokio::time::timeout(limits.timeout, child.wait_with_output()).await {
        Ok(output) => output.context("the compiler failed")?,
        Err(_) => {
            return Err(DeployError::Unprocessable(format!(
                "compilation took longer than {} s and was stopped",
                limits.timeout.as_secs()
            )));
        }
    };
    let message = String::from_utf8_lossy(&output.stderr)
        .trim()
        .trim_start_matches("error: ")
        .to_string();
    match output.status.code() {
        Some(0) => serde_json::from_slice(&output.stdout)
            .context("the compiler's report is unreadable")
            .map_err(DeployError::Storage),
        Some(EXIT_INVALID) => Err(DeployError::Invalid(message)),
        Some(EXIT_UNPROCESSABLE) => Err(DeployError::Unprocessable(message)),
        Some(EXIT_UNCOMPILABLE) => Err(DeployError::Uncompilable(message)),
        _ => Err(DeployError::Unprocessable(format!(
            "compilation failed ({}), possibly out of its {} MiB memory budget: {message}",
            output.status,
            limits.max_memory >> 20
        ))),
    }
}

/// What a deploy checks of an upload's bytes, in order: a component (not a core
/// module, not something else), valid (not truncated or corrupt), compilable, with a
/// wasi:http handler export, linking against what the host provides in its mode.
/// `Invalid` is the uploader's 400, `Unprocessable` their 422. The fuzz target
/// `upload` runs this on arbitrary bytes.
pub fn compile_upload(
    engine: &wasmtime::Engine,
    bytes: &[u8],
    mode: ModeChoice,
) -> Result<(wasmtime::component::Component, component::Handler), DeployError> {
    component::check_is_component(bytes).map_err(|e| DeployError::Invalid(format!("{e:#}")))?;
    // Validation runs beside the compile, which starts with a long single-threaded
    // translation: the second core validates meanwhile (a deploy's first response
    // waits for both). Wasmtime validates what it compiles too, so corrupt bytes only
    // reach it to be refused; the validator's verdict decides the status.
    let (valid, compiled) = beside(
        || {
            wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
                .validate_all(bytes)
                .map(drop)
        },
        || wasmtime::component::Component::new(engine, bytes),
    );
    match valid {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(DeployError::Invalid(format!(
                "the component is truncated or corrupt: {e}"
            )));
        }
        Err(_) => {
            return Err(DeployError::Invalid(
                "the component could not be validated".to_string(),
            ));
        }
    }
    let compiled =
        compiled.map_err(|e| DeployError::Uncompilable(format!("compilation failed: {e:#}")))?;
    let handler = component::prepare(engine, &compiled, mode)
        .map_err(|e| DeployError::Unprocessable(format!("{e:#}")))?;
    Ok((compiled, handler))
}

/// Arguments of the hidden `wasmloop compile`.
#[derive(Debug, clap::Args)]
pub struct CompileArgs {
    /// The component to compile.
    pub component: PathBuf,
    /// Where to write the artifact.
    pub artifact: PathBuf,
    #[arg(long, value_enum, default_value = "auto")]
    pub mode: ModeChoice,
    /// Address-space limit for this process, in bytes.
    #[arg(long)]
    pub max_memory: u64,
    /// Fuel the trial instantiation may burn.
    #[arg(long)]
    pub guest_fuel: u64,
    /// Linear memory the trial instantiation may reach, in bytes.
    #[arg(long)]
    pub guest_max_memory: u64,
    /// The compiler to use.
    #[arg(long, value_enum, default_value_t = Compiler::Cranelift)]
    pub compiler: Compiler,
    /// The node's compile cache (Cranelift only).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// The most the compile cache may hold, in bytes, once this compile is done.
    #[arg(long, default_value_t = 1 << 30)]
    pub cache_max_bytes: u64,
}

/// Runs `side` on a thread of its own while this one runs `main`; `side`'s panic is
/// returned, not raised. When no thread can be started (the address-space cap leaves
/// no room for its stack), `side` runs after `main` on this thread: slower, not lost.
fn beside<T: Send, U>(
    side: impl Fn() -> T + Sync,
    main: impl FnOnce() -> U,
) -> (std::thread::Result<T>, U) {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new().spawn_scoped(scope, &side);
        let main = main();
        let side = match thread {
            Ok(thread) => thread.join(),
            Err(_) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(&side)),
        };
        (side, main)
    })
}

/// `wasmloop compile`: validates, compiles, classifies and links one component,
/// instantiates it once, writes its artifact and prints a [`Compiled`] report. Exits
/// 10 for an invalid component, 11 for one wasmloop cannot serve, 12 for one this
/// compiler cannot compile.
#[expect(
    clippy::disallowed_methods,
    reason = "a one-shot child process, no event loop"
)]
pub fn run_compile(args: &CompileArgs) -> std::process::ExitCode {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let fail = |code: i32, message: String| {
        eprintln!("error: {message}");
        std::process::ExitCode::from(code as u8)
    };
    // Only the soft limit: the trial instantiation below lifts it again.
    let hard = match getrlimit(Resource::RLIMIT_AS) {
        Ok((_, hard)) => hard,
        Err(e) => return fail(1, format!("failed to read the memory limit: {e}")),
    };
    if let Err(e) = setrlimit(Resource::RLIMIT_AS, args.max_memory.min(hard), hard) {
        return fail(1, format!("failed to cap the compiler's memory: {e}"));
    }

    let bytes = match std::fs::read(&args.component) {
        Ok(bytes) => bytes,
        Err(e) => return fail(1, format!("failed to read the upload: {e}")),
    };
    // A cache that cannot be opened (a full or read-only disk) only costs time.
    let cache = args
        .cache_dir
        .as_deref()
        .filter(|_| args.compiler == Compiler::Cranelift)
        .and_then(|dir| {
            DiskCache::open(dir)
                .map_err(|e| eprintln!("warning: {e:#}"))
                .ok()
        })
        .map(Arc::new);
    let store = cache.clone().map(|c| c as Arc<dyn wasmtime::CacheStore>);
    let engine = match engine::build_for_compile(args.compiler, store) {
        Ok(engine) => engine,
        Err(e) => return fail(1, format!("{e:#}")),
    };
    let (compiled, handler) = match compile_upload(&engine, &bytes, args.mode) {
        Ok(done) => done,
        Err(DeployError::Invalid(e)) => return fail(EXIT_INVALID, e),
        Err(DeployError::Uncompilable(e)) => return fail(EXIT_UNCOMPILABLE, e),
        Err(e) => return fail(EXIT_UNPROCESSABLE, e.to_string()),
    };
    // The address-space cap is for Cranelift. An instance reserves more address space
    // than that for its linear memory (4 GiB plus guards, mostly never touched); what
    // it may really use is bounded by the store's memory limiter and fuel below, and
    // its time by the master's timeout on this process.
    if let Err(e) = setrlimit(Resource::RLIMIT_AS, hard, hard) {
        return fail(1, format!("failed to lift the compiler's memory cap: {e}"));
    }
    let trial = crate::runtime::sandbox::Limits {
        fuel: args.guest_fuel,
        max_memory: usize::try_from(args.guest_max_memory).unwrap_or(usize::MAX),
        allow_outbound: Vec::new().into(),
        addresses: Default::default(),
        vars: Default::default(),
    };
    if let Err(e) = component::try_instantiate(&engine, &handler, &trial) {
        return fail(EXIT_UNPROCESSABLE, format!("{e:#}"));
    }
    // What `Component::serialize` would copy, written from where it is.
    let artifact = component::image(&compiled);
    // No fsync: an artifact is checked against its recorded hash before any use and
    // compiled again when it is not intact, so a crash can cost a recompile, never a
    // wrong artifact (a deploy's first response waits for this write).
    // Hashed on the second core while this one writes. Only a compile that used the
    // cache can have grown it, and its entries are all written by now: it is trimmed
    // meanwhile too (Winch's compile, the baseline a deploy waits for, leaves it
    // alone and so skips a walk of every entry).
    let evict = cache.as_ref().and(args.cache_dir.as_deref());
    let (artifact_sha256, written) = beside(
        || sha256_hex(artifact),
        || {
            beside(
                || evict.map(|dir| compile_cache::evict(dir, args.cache_max_bytes)),
                || write_whole(&args.artifact, artifact, false),
            )
            .1
        },
    );
    if let Err(e) = written {
        return fail(1, format!("{e:#}"));
    }
    let Ok(artifact_sha256) = artifact_sha256 else {
        return fail(1, "failed to hash the artifact".to_string());
    };
    let stats = cache.as_ref().map(|c| c.stats()).unwrap_or_default();
    let report = Compiled {
        export: handler.export,
        export_is_async: handler.export_is_async,
        mode: handler.mode,
        artifact_sha256,
        cache: stats,
    };
    match serde_json::to_string(&report) {
        Ok(json) => {
            println!("{json}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => fail(1, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::beside;

    #[test]
    fn beside_returns_both_results_and_the_side_s_panic() {
        let (side, main) = beside(|| 2 + 2, || "main");
        assert_eq!((side.ok(), main), (Some(4), "main"));
        let (side, main) = beside(|| -> u8 { panic!("side failed") }, || 7);
        assert!(side.is_err());
        assert_eq!(main, 7);
    }
}
