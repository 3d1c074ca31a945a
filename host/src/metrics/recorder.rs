//! The worker's side of metrics: the [`Recorder`] its loop and pool threads count
//! into, and the count of live guest instances.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::metrics::{Counters, Gauges, Snapshot};
use crate::model::mode::Mode;

/// A worker's recording side, shared by its loop and pool threads.
#[derive(Debug, Default)]
pub struct Recorder {
    counters: Mutex<Counters>,
    lag_max: Mutex<f64>,
}

/// How one request ended, for [`Recorder::request`].
#[derive(Debug)]
pub struct Finished<'a> {
    pub app: &'a str,
    /// `None` when no app was found for the request.
    pub mode: Option<Mode>,
    pub status: u16,
    pub duration: Duration,
    pub fuel: u64,
    /// The cause code of a failure (`cpu_limit`, `guest_trap`, ...).
    pub cause: Option<&'static str>,
    pub forced_yields: u64,
    pub guest_time: Duration,
    /// For an app that reuses instances: whether its instance was made for this
    /// request, and whether (why, after how many requests) it was retired after it.
    pub instance: Option<(bool, Option<(&'static str, u64)>)>,
    /// Time spent making a fresh instance for it (zero when it got a kept one).
    pub instantiate_time: Duration,
}

impl Recorder {
    /// Counts under the lock. A panic elsewhere while it was held (a bug) leaves a
    /// count at most one update off: better than dropping every count after it, or
    /// reporting zeros that make the master's counters go backwards.
    fn with(&self, f: impl FnOnce(&mut Counters)) {
        f(&mut self.counters.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Counts a request that got a response.
    pub fn request(&self, done: &Finished<'_>) {
        let mode = done.mode.map_or_else(|| "-".to_string(), |m| m.to_string());
        self.with(|c| {
            let app = done.app.to_string();
            *c.requests
                .entry((app.clone(), mode.clone(), done.status))
                .or_default() += 1;
            c.latency
                .entry((app.clone(), mode.clone()))
                .or_default()
                .observe(done.duration);
            if done.fuel > 0 {
                *c.fuel.entry(app.clone()).or_default() += done.fuel;
            }
            if done.forced_yields > 0 {
                *c.forced_yields.entry(app.clone()).or_default() += done.forced_yields;
            }
            if !done.guest_time.is_zero() {
                *c.guest_seconds.entry((app.clone(), mode)).or_default() +=
                    done.guest_time.as_secs_f64();
            }
            if !done.instantiate_time.is_zero() {
                *c.instantiate_seconds.entry(app.clone()).or_default() +=
                    done.instantiate_time.as_secs_f64();
            }
            if let Some((created, retired)) = done.instance {
                if created {
                    *c.instances_created.entry(app.clone()).or_default() += 1;
                }
                if let Some((cause, served)) = retired {
                    retire(c, &app, cause, served);
                }
            }
            if let Some(cause) = done.cause {
                *c.failures.entry((app, cause.to_string())).or_default() += 1;
            }
        });
    }

    /// Counts instances of `app` that ended between requests (idle too long, the
    /// budgets could not keep them), each with its cause and the requests it served.
    pub fn instances_ended(&self, app: &str, ended: &[(&'static str, u64)]) {
        self.with(|c| {
            for &(cause, n) in ended {
                retire(c, app, cause, n);
            }
        });
    }

    /// Forgets the series of apps `keep` refuses (deleted ones).
    pub fn retain_apps(&self, keep: impl Fn(&str) -> bool) {
        self.with(|c| c.retain_apps(&keep));
        OUTBOUND_DENIED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(app, _), _| keep(app));
        APP_LOAD_FAILURES
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|app, _| keep(app));
    }

    /// Counts a request refused before any guest ran (`pool_full`,
    /// `concurrency_limit`); its response is counted by [`Recorder::request`].
    pub fn rejected(&self, app: &str, reason: &str) {
        self.with(|c| *c.rejected.entry((app.into(), reason.into())).or_default() += 1);
    }

    /// Records one pool job: how long it waited for a thread and ran on it.
    pub fn pool_job(&self, waited: Duration, ran: Duration) {
        self.with(|c| {
            c.pool_queue_wait.observe(waited);
            c.pool_busy_seconds += ran.as_secs_f64();
        });
    }

    /// Records how late the loop's probe timer fired.
    pub fn loop_lag(&self, lag: Duration) {
        self.with(|c| c.loop_lag.observe(lag));
        let mut max = self.lag_max.lock().unwrap_or_else(PoisonError::into_inner);
        *max = max.max(lag.as_secs_f64());
    }

    /// The counters so far and `gauges`, with the lag maximum since the last call.
    pub fn snapshot(&self, mut gauges: Gauges) -> Snapshot {
        gauges.loop_lag_max =
            std::mem::take(&mut *self.lag_max.lock().unwrap_or_else(PoisonError::into_inner));
        gauges.instances = live_instances();
        let mut counters = self
            .counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        counters.outbound_denied = OUTBOUND_DENIED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        counters.app_load_failures = APP_LOAD_FAILURES
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Snapshot { counters, gauges }
    }
}

/// Counts a retired instance of `app`.
fn retire(c: &mut Counters, app: &str, cause: &str, served: u64) {
    *c.instances_retired
        .entry((app.to_string(), cause.to_string()))
        .or_default() += 1;
    c.instance_requests
        .entry(app.to_string())
        .or_default()
        .observe_in(&crate::metrics::REUSE_BUCKETS, served as f64);
}

/// (app, reason) -> outbound requests refused in this process. Counted from inside a
/// store, which has no recorder; rare, so one lock is no cost.
static OUTBOUND_DENIED: Mutex<BTreeMap<(String, String), u64>> = Mutex::new(BTreeMap::new());

/// Counts an outbound request of `app` refused for `reason`.
pub fn outbound_denied(app: &str, reason: &str) {
    *OUTBOUND_DENIED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry((app.to_string(), reason.to_string()))
        .or_default() += 1;
}

/// app -> times this worker could not load it. Counted where tables are built, which
/// has no recorder; rare.
static APP_LOAD_FAILURES: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

/// Counts an app this worker could not load.
pub fn app_load_failed(app: &str) {
    *APP_LOAD_FAILURES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(app.to_string())
        .or_default() += 1;
}

/// Guest instances (stores) alive in this process.
static INSTANCES: AtomicI64 = AtomicI64::new(0);

/// Counts a live instance until dropped; the sandbox holds one.
#[derive(Debug)]
pub struct LiveInstance(());

impl LiveInstance {
    pub fn new() -> LiveInstance {
        INSTANCES.fetch_add(1, Ordering::Relaxed);
        LiveInstance(())
    }
}

impl Default for LiveInstance {
    fn default() -> Self {
        LiveInstance::new()
    }
}

impl Drop for LiveInstance {
    fn drop(&mut self) {
        INSTANCES.fetch_sub(1, Ordering::Relaxed);
    }
}

fn live_instances() -> u64 {
    u64::try_from(INSTANCES.load(Ordering::Relaxed)).unwrap_or(0)
}
