//! The master process: binds the listeners once ([`listeners`]), runs `--workers`
//! worker processes that inherit them, watches their heartbeats, replaces the ones
//! that die or hang, and carries out the signal table (docs/operations.md). It runs no
//! guest code.
//!
//! Workers are this binary re-executed as `wasmloop worker ARGS` with the listening
//! sockets as file descriptors 3, 4, ... (systemd's `LISTEN_FDS` convention) and their
//! stdout piped back: one [`Report`] per line. The kernel spreads connections across
//! the workers' `accept` calls on each shared socket; there are no per-worker
//! `SO_REUSEPORT` sockets, whose closing would reset the connections queued on them.
//!
//! Replacing a worker (SIGHUP for all of them, `--max-requests` for one) is one step
//! at a time: start a new worker, wait until it reports ready, then ask the old one
//! to drain. So capacity never drops below `--workers` and no request fails. A new
//! worker that fails at start-up once the server serves (a component overwritten with
//! a broken one, then SIGHUP) abandons the replacement: the running workers keep
//! serving what they loaded, and the next SIGHUP tries again. Only a server that
//! never served stops on it.

use std::collections::BTreeMap;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use command_fds::{CommandFdExt as _, FdMapping};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use std::sync::{Arc, Mutex};

use crate::config::{AdminListen, LogFormat, ServeConfig};
use crate::deploy::context::DeployContext;
use crate::doctor;
use crate::master::admin::{self, AdminGuard, AdminState, ApiSlot, SharedState, lock};
use crate::master::listeners::{self, Listener, in_use_hint};
use crate::master::reload;
use crate::metrics::exposition::MasterFacts;
use crate::model::app::{ActiveApp, Version};
use crate::model::mode::Mode;
use crate::model::tenant::TenantLimits;
use crate::protocol::{self, AppFiles, Report, TableEntry, TableMessage};
use crate::registry::RegistryError;
use crate::registry::follow::{self, Health};
use crate::telemetry;

/// A worker started at run time did not come up: the master stops rather than
/// respawn it over and over.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// How often heartbeats are checked and delayed respawns are due.
const TICK: Duration = Duration::from_millis(100);

/// Runs the master until a stop signal; returns an error when a worker fails at
/// start-up.
pub fn run(config: ServeConfig) -> anyhow::Result<()> {
    config.validate()?;
    // Everything this server and its children create (the registry, components,
    // artifacts, the admin token) is for its user alone, from the moment it exists.
    rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o077));
    let _log = telemetry::init(&config.log_level, config.log_format, !config.no_access_log)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the master's event loop")?;
    let pid_file = config.pid_file.clone();
    runtime.block_on(async {
        let master = Master::new(config).await?;
        let _pid = pid_file.as_deref().map(PidFile::write).transpose()?;
        master.run().await
    })
}

/// The master's pid in a file while it runs (`--pid`).
struct PidFile(std::path::PathBuf);

impl PidFile {
    #[expect(clippy::disallowed_methods, reason = "once, before the loop serves")]
    fn write(path: &std::path::Path) -> anyhow::Result<PidFile> {
        // Readable by others (the file says nothing secret), unlike what the umask
        // gives this process's other files.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("failed to write the pid file {} (--pid)", path.display()))?;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644));
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Started, not ready yet.
    Booting,
    Serving,
    /// Asked to stop (TERM); finishing what it has.
    Draining,
}

struct Worker {
    /// The smallest number no other live worker has: the `worker` label of its
    /// metric series, which so stays bounded across restarts.
    slot: usize,
    started: Instant,
    last_report: Instant,
    served: u64,
    phase: Phase,
    /// To be replaced by a fresh worker (SIGHUP, or it reached --max-requests).
    replace: bool,
    /// Lines for the worker's stdin (route tables), in registry mode.
    stdin: Option<mpsc::UnboundedSender<String>>,
    /// The route-table generation the worker serves.
    applied: u64,
}

/// What happens to the master, in the order it happens.
pub enum Event {
    Report(u32, Report),
    /// A deploy changed what is served: send this table to every worker.
    Publish(TableMessage),
    Exited(u32, std::io::Result<ExitStatus>),
}

struct Master {
    config: ServeConfig,
    /// Arguments a worker is started with (this process's, `serve` -> `worker`).
    worker_args: Vec<std::ffi::OsString>,
    /// The shared sockets; closed when the master stops.
    listeners: Vec<Listener>,
    target: usize,
    workers: BTreeMap<u32, Worker>,
    /// A new worker started to replace an old one, and the old one.
    replacing: Option<(u32, u32)>,
    events_tx: mpsc::UnboundedSender<Event>,
    events: mpsc::UnboundedReceiver<Event>,
    /// Crashes since a worker last lived long enough; sets the respawn delay.
    crashes: u32,
    respawn_at: Option<Instant>,
    restarts: u64,
    /// New workers that failed at start-up while the server served.
    reload_failures: u64,
    announced: bool,
    /// What the admin listener shows.
    admin: SharedState,
    /// In registry mode: the table every worker must serve, as a stdin line.
    table: Option<String>,
    /// The deploy side of the admin API, in registry mode.
    deploys: Option<Arc<DeployContext>>,
    applied_tx: tokio::sync::watch::Sender<u64>,
    /// This server's listeners as bound, for the workers' outbound floor.
    own_listeners: String,
}

impl Master {
    async fn new(config: ServeConfig) -> anyhow::Result<Master> {
        let worker_args = worker_args()?;
        let listeners = listeners::bind_all(&config)?;
        let admin = Arc::new(Mutex::new(admin_state(&config)));
        let registry_mode = config.component.is_none() && config.manifest.is_none();
        let api = if registry_mode {
            ApiSlot::registry()
        } else {
            ApiSlot::default()
        };
        // The admin listener answers from the start: /livez and /readyz while a node
        // waits for its registry, /v1 once it has it.
        let admin_addr = start_admin_listener(&config, &admin, &api)?;
        let own_listeners =
            protocol::own_listeners_value(listeners.iter().filter_map(|l| l.tcp).chain(admin_addr));
        if config.registry.is_some() {
            lock(&admin).not_ready = Some("waiting for the registry".into());
        }
        let (events_tx, events) = mpsc::unbounded_channel();
        let (applied_tx, applied_rx) = tokio::sync::watch::channel(0);
        let (table, deploys) = match (&config.component, &config.manifest) {
            (Some(_), _) => (None, None),
            (None, Some(path)) => (Some(protocol::table_line(&manifest_table(path)?)?), None),
            (None, None) => {
                let tables = forward_tables(events_tx.clone());
                let (table, deploys) = open_registry(&config, tables, applied_rx).await?;
                api.open(deploys.clone());
                (Some(protocol::table_line(&table)?), Some(deploys))
            }
        };
        Ok(Master {
            target: config.worker_count(),
            config,
            worker_args,
            listeners,
            workers: BTreeMap::new(),
            replacing: None,
            events_tx,
            events,
            crashes: 0,
            respawn_at: None,
            restarts: 0,
            reload_failures: 0,
            announced: false,
            admin,
            table,
            deploys,
            applied_tx,
            own_listeners,
        })
    }

    async fn run(mut self) -> anyhow::Result<()> {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut quit = signal(SignalKind::quit())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut ttin = signal(SignalKind::from_raw(nix::libc::SIGTTIN))?;
        let mut ttou = signal(SignalKind::from_raw(nix::libc::SIGTTOU))?;
        let mut tick = tokio::time::interval(TICK);
        let mut reloads = reload::start(&self.config);

        if let (Some(deploys), Some(url)) = (&self.deploys, &self.config.registry) {
            follow_registry(url, self.config.registry_recheck, &self.admin, deploys)?;
        }
        tracing::info!(workers = self.target, "master starting");
        for _ in 0..self.target {
            self.spawn()?;
        }
        loop {
            tokio::select! {
                Some(event) = self.events.recv() => self.on_event(event)?,
                _ = tick.tick() => self.on_tick()?,
                _ = term.recv() => return self.stop_gracefully("SIGTERM").await,
                _ = int.recv() => return self.stop_gracefully("SIGINT").await,
                _ = quit.recv() => return self.stop_fast().await,
                _ = hup.recv() => self.replace_all("SIGHUP"),
                Some(why) = next_reload(&mut reloads) => self.replace_all(&format!("reload: {why}")),
                _ = ttin.recv() => {
                    self.target += 1;
                    tracing::info!(workers = self.target, "SIGTTIN: one worker more");
                }
                _ = ttou.recv() => {
                    self.target = (self.target - 1).max(1);
                    tracing::info!(workers = self.target, "SIGTTOU: one worker less");
                }
            }
            self.reconcile()?;
            self.publish_gauges();
        }
    }

    /// Marks every serving worker for replacement, one at a time (SIGHUP, --reload).
    fn replace_all(&mut self, why: &str) {
        tracing::info!("{why}: replacing every worker, one at a time");
        for worker in self
            .workers
            .values_mut()
            .filter(|w| w.phase != Phase::Draining)
        {
            worker.replace = true;
        }
    }

    /// Copies the master's own gauges to the admin state after every event, so a
    /// scrape never shows a worker that already served as not serving.
    fn publish_gauges(&self) {
        let serving = self
            .workers
            .values()
            .filter(|w| w.phase == Phase::Serving)
            .count();
        let mut admin = lock(&self.admin);
        admin.not_ready = if !self.announced {
            Some(format!(
                "starting: {serving} of {} workers serve",
                self.target
            ))
        } else if serving == 0 {
            Some("no worker serves".into())
        } else {
            None
        };
        admin.master.workers = serving as u64;
        admin.master.workers_target = self.target as u64;
        admin.master.worker_restarts = self.restarts;
        admin.master.worker_start_failures = self.reload_failures;
    }

    fn on_event(&mut self, event: Event) -> anyhow::Result<()> {
        match event {
            Event::Report(pid, report) => self.on_report(pid, report),
            Event::Publish(table) => self.on_publish(&table),
            Event::Exited(pid, status) => self.on_exit(pid, &status),
        }
    }

    /// A worker's report: it is ready, alive, has metrics, applied a table, or asks
    /// to be replaced. Once every worker serves, says so on stderr.
    fn on_report(&mut self, pid: u32, report: Report) -> anyhow::Result<()> {
        let Some(worker) = self.workers.get_mut(&pid) else {
            return Ok(());
        };
        worker.last_report = Instant::now();
        match report {
            Report::Ready => {
                if worker.phase == Phase::Booting {
                    worker.phase = Phase::Serving;
                    tracing::info!(
                        pid,
                        boot_ms = worker.started.elapsed().as_millis() as u64,
                        "worker ready"
                    );
                }
            }
            Report::Beat { served } => worker.served = served,
            Report::Metrics(snapshot) => {
                lock(&self.admin)
                    .aggregate
                    .update(pid, worker.slot, *snapshot);
            }
            Report::Applied(generation) => {
                worker.applied = generation;
                self.publish_applied();
            }
            Report::Retire => {
                if !worker.replace && worker.phase == Phase::Serving {
                    tracing::info!(
                        pid,
                        served = worker.served,
                        "worker reached --max-requests; replacing it"
                    );
                    worker.replace = true;
                }
            }
        }
        let serving = self
            .workers
            .values()
            .filter(|w| w.phase == Phase::Serving)
            .count();
        if !self.announced && serving >= self.target {
            self.announced = true;
            self.publish_gauges();
            // The line scripts wait for, once every worker serves: one per listener.
            for listener in &self.listeners {
                announce(self.config.log_format, "listening on", listener.shown());
            }
        }
        Ok(())
    }

    /// A deploy changed what is served: every worker gets the new table, and so does
    /// every worker started from now on.
    fn on_publish(&mut self, table: &TableMessage) -> anyhow::Result<()> {
        let line = protocol::table_line(table)?;
        let deployed = table.app_names();
        lock(&self.admin).retain_apps(|app| crate::metrics::keeps_series(app, &deployed));
        for worker in self.workers.values() {
            if let Some(stdin) = &worker.stdin {
                let _ = stdin.send(line.clone());
            }
        }
        tracing::info!(
            generation = table.generation,
            apps = table.apps.len(),
            "route table published"
        );
        self.table = Some(line);
        Ok(())
    }

    /// A worker exited: as asked (draining), at start-up (the master stops), or by
    /// crashing (replaced after a backoff that grows with repeated crashes).
    fn on_exit(&mut self, pid: u32, status: &std::io::Result<ExitStatus>) -> anyhow::Result<()> {
        lock(&self.admin).aggregate.retire(pid);
        let Some(worker) = self.workers.remove(&pid) else {
            return Ok(());
        };
        let status = describe(status);
        match worker.phase {
            Phase::Draining => {
                tracing::info!(pid, %status, served = worker.served, "worker stopped")
            }
            Phase::Booting if !self.announced => {
                bail!("worker {pid} failed at start-up ({status}); its error is above")
            }
            Phase::Booting => self.on_failed_boot(pid, &status),
            Phase::Serving => {
                self.restarts += 1;
                let lived = worker.started.elapsed();
                self.crashes = if lived > Duration::from_secs(30) {
                    1
                } else {
                    self.crashes + 1
                };
                let delay = backoff(self.crashes);
                tracing::warn!(
                    pid, %status, served = worker.served, lived_s = lived.as_secs(),
                    restarts = self.restarts, respawn_in_ms = delay.as_millis() as u64,
                    "worker died; replacing it"
                );
                self.respawn_at = Some(Instant::now() + delay);
            }
        }
        if self.replacing.is_some_and(|(new, _)| new == pid) {
            self.replacing = None;
        }
        Ok(())
    }

    /// A new worker of a server that serves failed at start-up. As a replacement, the
    /// replacing is abandoned (the running workers keep serving); as a worker to
    /// restore capacity, it is tried again after a backoff.
    fn on_failed_boot(&mut self, pid: u32, status: &str) {
        self.reload_failures += 1;
        if self.replacing.is_some_and(|(new, _)| new == pid) {
            for worker in self.workers.values_mut() {
                worker.replace = false;
            }
            tracing::error!(
                pid, %status,
                "a new worker failed at start-up (its error is above); the running workers \
                 keep serving what they loaded. Fix the cause and send SIGHUP again"
            );
        } else {
            self.crashes += 1;
            let delay = backoff(self.crashes);
            tracing::error!(
                pid, %status, respawn_in_ms = delay.as_millis() as u64,
                "a new worker failed at start-up (its error is above); trying again"
            );
            self.respawn_at = Some(Instant::now() + delay);
        }
    }

    /// Tells deploys waiting for their table which generation every serving worker
    /// has applied.
    fn publish_applied(&self) {
        let serving = self
            .workers
            .values()
            .filter(|w| w.phase == Phase::Serving)
            .map(|w| w.applied)
            .min();
        if let Some(generation) = serving {
            self.applied_tx.send_replace(generation);
        }
    }

    /// Kills workers whose loop went quiet, and stops on a worker that never booted.
    fn on_tick(&mut self) -> anyhow::Result<()> {
        lock(&self.admin).sample();
        let timeout = self.config.timeout_worker_healthcheck;
        for (&pid, worker) in &self.workers {
            let quiet = worker.last_report.elapsed();
            match worker.phase {
                Phase::Booting if quiet > BOOT_TIMEOUT => {
                    send(pid, Signal::SIGKILL);
                    if !self.announced {
                        bail!(
                            "worker {pid} did not become ready within {}s",
                            BOOT_TIMEOUT.as_secs()
                        );
                    }
                    // Its exit is handled as a failed start-up.
                    tracing::error!(
                        pid,
                        "a new worker did not become ready within {}s; killing it",
                        BOOT_TIMEOUT.as_secs()
                    );
                }
                Phase::Serving | Phase::Draining if quiet > timeout => {
                    tracing::warn!(
                        pid,
                        quiet_ms = quiet.as_millis() as u64,
                        "worker's event loop stopped reporting; killing it"
                    );
                    send(pid, Signal::SIGKILL);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Moves toward `target` workers, replacing old ones one at a time.
    ///
    /// Workers marked `replace` keep serving until their replacement is ready, so
    /// they count toward the target; a replacement in flight is one worker extra.
    fn reconcile(&mut self) -> anyhow::Result<()> {
        if let Some((new, old)) = self.replacing {
            if self
                .workers
                .get(&new)
                .is_some_and(|w| w.phase == Phase::Serving)
            {
                self.replacing = None;
                self.drain(old);
            }
        } else if let Some(old) = self.oldest(|w| w.replace && w.phase == Phase::Serving) {
            let new = self.spawn()?;
            self.replacing = Some((new, old));
        }

        let live = self
            .workers
            .values()
            .filter(|w| w.phase != Phase::Draining)
            .count();
        let expected = self.target + usize::from(self.replacing.is_some());
        if live < expected && self.respawn_at.is_none_or(|at| Instant::now() >= at) {
            self.respawn_at = None;
            self.spawn()?;
        } else if live > expected {
            let surplus = self
                .oldest(|w| w.replace && w.phase == Phase::Serving)
                .or_else(|| self.oldest(|w| w.phase == Phase::Serving));
            if let Some(pid) =
                surplus.filter(|&pid| self.replacing.is_none_or(|(new, _)| new != pid))
            {
                self.drain(pid);
            }
        }
        Ok(())
    }

    fn oldest(&self, pick: impl Fn(&Worker) -> bool) -> Option<u32> {
        self.workers
            .iter()
            .filter(|(_, w)| pick(w))
            .min_by_key(|(_, w)| w.started)
            .map(|(&pid, _)| pid)
    }

    fn drain(&mut self, pid: u32) {
        if let Some(worker) = self.workers.get_mut(&pid) {
            tracing::info!(pid, served = worker.served, "asking worker to drain");
            worker.phase = Phase::Draining;
            send(pid, Signal::SIGTERM);
        }
    }

    /// Starts one worker and the task that relays its reports and its exit.
    fn spawn(&mut self) -> anyhow::Result<u32> {
        let exe = std::env::current_exe().context("failed to find the wasmloop binary")?;
        if self.listeners.is_empty() {
            bail!("the master is stopping");
        }
        let mappings = self
            .listeners
            .iter()
            .zip(3..)
            .map(|(listener, child_fd)| {
                Ok(FdMapping {
                    parent_fd: listener
                        .as_fd()
                        .try_clone_to_owned()
                        .context("failed to share a listener")?,
                    child_fd,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let listen_fds = mappings.len().to_string();
        let mut command = tokio::process::Command::new(exe);
        if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
            // Wasmtime makes an error (and, with RUST_BACKTRACE=1, captures a
            // backtrace) each time a store is dropped: 8% of a worker's CPU on small
            // requests. Panics keep their backtraces (RUST_BACKTRACE); errors get none
            // unless the operator sets RUST_LIB_BACKTRACE.
            command.env("RUST_LIB_BACKTRACE", "0");
        }
        command
            .args(&self.worker_args)
            .env("LISTEN_FDS", listen_fds)
            .env_remove("LISTEN_PID")
            .env_remove("WASMLOOP_REGISTRY")
            .env_remove(protocol::CONFIG_SNAPSHOT_ENV)
            .env(protocol::OWN_LISTENERS_ENV, &self.own_listeners)
            .stdin(if self.table.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .fd_mappings(mappings)
            .context("failed to pass the listeners to a worker")?;
        if let Some(snapshot) = &self.config.config_snapshot {
            command.env(protocol::CONFIG_SNAPSHOT_ENV, snapshot);
        }
        let mut child = command.spawn().context("failed to start a worker")?;
        let pid = child.id().context("a worker exited at once")?;
        let stdout = child
            .stdout
            .take()
            .context("a worker's stdout is not piped")?;
        // Route tables go to the worker's stdin, the current one first.
        let stdin = match (child.stdin.take(), &self.table) {
            (Some(mut pipe), Some(current)) => {
                let (tx, mut rx) = mpsc::unbounded_channel::<String>();
                let _ = tx.send(current.clone());
                tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt as _;
                    while let Some(line) = rx.recv().await {
                        if pipe.write_all(line.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                });
                Some(tx)
            }
            _ => None,
        };
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(report) = Report::parse(&line) {
                    let _ = events.send(Event::Report(pid, report));
                }
            }
            let status = child.wait().await;
            let _ = events.send(Event::Exited(pid, status));
        });
        let now = Instant::now();
        let slot = (0..)
            .find(|slot| self.workers.values().all(|w| w.slot != *slot))
            .unwrap_or_default();
        self.workers.insert(
            pid,
            Worker {
                slot,
                started: now,
                last_report: now,
                served: 0,
                phase: Phase::Booting,
                replace: false,
                stdin,
                applied: 0,
            },
        );
        tracing::info!(pid, "worker started");
        Ok(pid)
    }

    /// TERM/INT: workers stop accepting and finish what they hold, then exit 0.
    async fn stop_gracefully(mut self, why: &str) -> anyhow::Result<()> {
        tracing::info!(workers = self.workers.len(), "{why}: graceful stop");
        lock(&self.admin).not_ready = Some("stopping".into());
        let pids: Vec<u32> = self.workers.keys().copied().collect();
        for pid in pids {
            self.drain(pid);
        }
        // The workers have their own copies of the socket; closing ours lets the
        // kernel refuse new connections once they have closed theirs.
        self.listeners.clear();
        let deadline = Instant::now() + self.config.graceful_timeout + Duration::from_secs(2);
        self.wait_for_exits(deadline).await;
        Ok(())
    }

    /// QUIT: workers exit at once.
    async fn stop_fast(mut self) -> anyhow::Result<()> {
        tracing::info!(workers = self.workers.len(), "SIGQUIT: fast stop");
        for &pid in self.workers.keys() {
            send(pid, Signal::SIGQUIT);
        }
        self.listeners.clear();
        self.wait_for_exits(Instant::now() + Duration::from_secs(2))
            .await;
        Ok(())
    }

    async fn wait_for_exits(&mut self, deadline: Instant) {
        while !self.workers.is_empty() {
            match tokio::time::timeout_at(deadline.into(), self.events.recv()).await {
                Ok(Some(Event::Exited(pid, status))) => {
                    self.workers.remove(&pid);
                    tracing::info!(pid, status = %describe(&status), "worker stopped");
                }
                Ok(Some(Event::Report(..) | Event::Publish(_))) => {}
                Ok(None) | Err(_) => break,
            }
        }
        for &pid in self.workers.keys() {
            tracing::warn!(
                pid,
                "worker still running after the stop deadline; killing it"
            );
            send(pid, Signal::SIGKILL);
        }
    }
}

/// The arguments a worker is started with: this process's, `serve` -> `worker`, less
/// `--registry`: workers never talk to the registry, and its URL (with a password)
/// must not show on their command lines.
fn worker_args() -> anyhow::Result<Vec<std::ffi::OsString>> {
    let mut args: Vec<_> = std::env::args_os().skip(1).collect();
    match args.first_mut() {
        Some(arg) if arg == "serve" => *arg = "worker".into(),
        _ => bail!("the master must be started as `wasmloop serve ...`"),
    }
    Ok(without_registry(args))
}

/// `args` without `--registry URL` / `--registry=URL`.
fn without_registry(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut kept = Vec::with_capacity(args.len());
    let mut skip_value = false;
    for arg in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        match arg.to_str() {
            Some("--registry") => skip_value = true,
            Some(a) if a.starts_with("--registry=") => {}
            _ => kept.push(arg),
        }
    }
    kept
}

/// What the admin listener shows before any worker reports.
fn admin_state(config: &ServeConfig) -> AdminState {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    AdminState::new(
        doctor::Facts {
            workers: 0,
            cores,
            threads: config.threads as u64,
            limit_concurrency: config.limit_concurrency as u64,
            fuel: config.fuel,
            epoch_interval_ms: config.epoch_interval.as_secs_f64() * 1000.0,
        },
        MasterFacts {
            cores,
            registry_up: true,
            ..MasterFacts::default()
        },
    )
}

/// Binds `--admin-listen` (unless it is `off`) and serves it from now on; returns
/// the address it bound.
fn start_admin_listener(
    config: &ServeConfig,
    admin: &SharedState,
    api: &ApiSlot,
) -> anyhow::Result<Option<std::net::SocketAddr>> {
    let AdminListen::At(addr) = config.admin_listen() else {
        return Ok(None);
    };
    let listener = std::net::TcpListener::bind(addr).map_err(|e| {
        anyhow::anyhow!(
            "failed to bind the admin listener to {addr} (--admin-listen): {e}{}",
            in_use_hint(&e, "--admin-listen")
        )
    })?;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)
        .context("failed to register the admin listener")?;
    let bound = listener.local_addr()?;
    let scheme = if config.tls_files().is_some() {
        "https"
    } else {
        "http"
    };
    announce(
        config.log_format,
        "admin listening on",
        &format!("{scheme}://{bound}"),
    );
    let guard = AdminGuard {
        header_read_timeout: config.timeout_header_read,
        max_connections: config.admin_max_connections.max(1),
        token: crate::deploy::context::configured_admin_token(config)?.map(Arc::from),
        tls: match config.tls_files() {
            Some((cert, key)) => Some(crate::tls::acceptor(cert, key, crate::tls::ADMIN_ALPN)?),
            None => None,
        },
    };
    tokio::spawn(admin::serve(listener, admin.clone(), api.clone(), guard));
    Ok(Some(bound))
}

/// Opens the registry and reads the first table. Opening a shared registry waits
/// while its database is down; so does reading it.
async fn open_registry(
    config: &ServeConfig,
    tables: mpsc::UnboundedSender<TableMessage>,
    applied: tokio::sync::watch::Receiver<u64>,
) -> anyhow::Result<(TableMessage, Arc<DeployContext>)> {
    let opening = config.clone();
    let deploys =
        tokio::task::spawn_blocking(move || DeployContext::open(&opening, tables, applied))
            .await??;
    let deploys = Arc::new(deploys);
    loop {
        match deploys.load(1).await {
            Ok(table) => return Ok((table, deploys)),
            // The database went away between reading and fetching.
            Err(e) if deploys.shared() => {
                tracing::warn!("waiting for the registry: {e:#}; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e.context("failed to read the registry")),
        }
    }
}

/// A sender for the deploy side's tables: each one becomes an [`Event::Publish`] on
/// the master's loop, in the order they were sent.
fn forward_tables(events: mpsc::UnboundedSender<Event>) -> mpsc::UnboundedSender<TableMessage> {
    let (tables, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(table) = rx.recv().await {
            if events.send(Event::Publish(table)).is_err() {
                return;
            }
        }
    });
    tables
}

/// Prints a line scripts wait for on stderr, whatever the log level, in one write:
/// the workers share the stream, and `eprintln!` may write a line in pieces another
/// process's log line can land between. In text form `WHAT ADDRESS`; with
/// `--log-format json` a record like the other log lines, with the address in
/// `address`.
fn announce(format: LogFormat, what: &str, address: &str) {
    use std::io::Write as _;
    let line = match format {
        LogFormat::Text => format!("{what} {address}\n"),
        LogFormat::Json => {
            let record = serde_json::json!({
                "timestamp": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
                "level": "INFO",
                "message": what,
                "address": address,
                "target": "wasmloop::master",
            });
            format!("{record}\n")
        }
    };
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// Keeps this node in step with a shared registry: a listener thread wakes a task on
/// the master's loop, which re-reads the registry and publishes what changed.
fn follow_registry(
    url: &str,
    recheck: Duration,
    admin: &SharedState,
    deploys: &Arc<DeployContext>,
) -> anyhow::Result<()> {
    let (wake_tx, mut wake) = mpsc::unbounded_channel();
    let health = admin.clone();
    follow::spawn_listener(
        url,
        recheck,
        move |h| lock(&health).registry_health(h),
        wake_tx,
    )?;
    let (admin, deploys) = (admin.clone(), deploys.clone());
    tokio::spawn(async move {
        while wake.recv().await.is_some() {
            while wake.try_recv().is_ok() {}
            match deploys.sync().await {
                Ok(()) => {}
                Err(RegistryError::Unavailable(why)) => {
                    lock(&admin).registry_health(Health::Down(why))
                }
                Err(e) => tracing::error!("failed to follow the registry: {e:#}"),
            }
        }
    });
    Ok(())
}

/// The next reason to reload, never when `--reload` is off.
async fn next_reload(reloads: &mut Option<mpsc::UnboundedReceiver<String>>) -> Option<String> {
    match reloads {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn send(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

/// The delay before respawning after the `crashes`-th crash in a row: 100 ms,
/// doubling, at most 10 s.
fn backoff(crashes: u32) -> Duration {
    let exponent = crashes.saturating_sub(1).min(7);
    (Duration::from_millis(100) * 2u32.pow(exponent)).min(Duration::from_secs(10))
}

fn describe(status: &std::io::Result<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(sig)) => {
                Signal::try_from(sig).map_or(format!("signal {sig}"), |s| format!("killed by {s}"))
            }
            _ => "unknown exit".to_string(),
        },
        Err(e) => format!("could not be waited for: {e}"),
    }
}

/// The table for `serve --manifest`: every app of the manifest under tenant `local`,
/// compiled by each worker from its file.
fn manifest_table(path: &std::path::Path) -> anyhow::Result<TableMessage> {
    let manifest = crate::model::manifest::Manifest::load(path)?;
    let mut apps = Vec::new();
    for app in &manifest.apps {
        anyhow::ensure!(
            app.component.exists(),
            "app {:?}: {} does not exist",
            app.name,
            app.component.display()
        );
        apps.push(TableEntry {
            active: ActiveApp {
                tenant: "local".into(),
                // Local development: one tenant, the whole worker.
                tenant_limits: TenantLimits {
                    max_in_flight: Some(u64::MAX),
                    max_pool_threads: Some(u64::MAX),
                    ..TenantLimits::default()
                },
                app: app.name.clone(),
                version: Version {
                    number: 1,
                    sha256: String::new(),
                    size: 0,
                    export: String::new(),
                    // Not read: each worker classifies the component it compiles.
                    mode: Mode::Loop,
                    settings: app.settings()?,
                    created_at: 0,
                    active: true,
                },
            },
            files: AppFiles {
                compiler: Default::default(),
                component: app.component.clone(),
                artifact: None,
                local: true,
            },
        });
    }
    Ok(TableMessage {
        generation: 1,
        apps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_never_get_the_registry_url() {
        let args = |list: &[&str]| list.iter().map(std::ffi::OsString::from).collect();
        assert_eq!(
            without_registry(args(&[
                "worker",
                "--registry",
                "postgres://u:secret@db/x",
                "--workers=2",
                "--registry=postgres://u:secret@db/x",
                "--registry-recheck=1s",
            ])),
            args(&["worker", "--workers=2", "--registry-recheck=1s"]) as Vec<std::ffi::OsString>
        );
    }

    #[test]
    fn respawns_back_off_exponentially_up_to_ten_seconds() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(30), Duration::from_secs(10));
    }
}
