//! Metrics: what a worker counts, how the counts reach the master, and how the master
//! shows one view of all workers in Prometheus's format.
//!
//! A worker records into a [`Recorder`] (the loop thread and the pool threads both
//! write to it) and sends a [`Snapshot`] to the master every second over its report
//! pipe. The master keeps the latest snapshot of every live worker and folds the
//! counters of workers that exited into a `retired` total ([`Aggregate`]), so counters
//! never go backwards when a worker is replaced. `/metrics` on the admin listener
//! encodes the merged view with `prometheus-client`; `doctor` reads the same view.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use serde::{Deserialize, Serialize};

use crate::model::mode::Mode;

/// Upper bounds of the latency buckets, in seconds.
pub const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// A histogram of durations with [`BUCKETS`]; `counts` has one more entry (+Inf).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }
}

impl Histogram {
    pub fn observe(&mut self, value: Duration) {
        let seconds = value.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(BUCKETS.len());
        self.counts[bucket] += 1;
        self.sum += seconds;
        self.count += 1;
    }

    pub fn add(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.sum += other.sum;
        self.count += other.count;
    }

    /// `self - earlier`: what was observed in between.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        Histogram {
            counts: self
                .counts
                .iter()
                .zip(&earlier.counts)
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
            sum: (self.sum - earlier.sum).max(0.0),
            count: self.count.saturating_sub(earlier.count),
        }
    }

    /// The bucket bound at or below which `q` of the observations fall (an upper
    /// estimate); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(BUCKETS.get(i).copied().unwrap_or(f64::INFINITY));
            }
        }
        Some(f64::INFINITY)
    }

    /// Observations above `bound` seconds (counted by whole buckets).
    pub fn above(&self, bound: f64) -> u64 {
        BUCKETS
            .iter()
            .chain(std::iter::once(&f64::INFINITY))
            .zip(&self.counts)
            .filter(|(upper, _)| **upper > bound)
            .map(|(_, n)| n)
            .sum()
    }

    /// `(upper bound, count in this bucket alone)`: prometheus-client's encoder adds
    /// them up into Prometheus's cumulative `le` buckets.
    fn buckets(&self) -> Vec<(f64, u64)> {
        BUCKETS
            .iter()
            .chain(std::iter::once(&f64::INFINITY))
            .zip(&self.counts)
            .map(|(bound, n)| (*bound, *n))
            .collect()
    }
}

/// Monotonic counts since a worker started; summed across workers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// (app, mode, status) -> requests answered.
    #[serde(with = "pairs")]
    pub requests: BTreeMap<(String, String, u16), u64>,
    /// (app, cause) -> requests that failed with that cause.
    #[serde(with = "pairs")]
    pub failures: BTreeMap<(String, String), u64>,
    /// (app, reason) -> requests refused with 503 before a guest ran.
    #[serde(with = "pairs")]
    pub rejected: BTreeMap<(String, String), u64>,
    /// (app, mode) -> time from request to the end of the run.
    #[serde(with = "pairs")]
    pub latency: BTreeMap<(String, String), Histogram>,
    /// app -> fuel burned.
    #[serde(with = "pairs")]
    pub fuel: BTreeMap<String, u64>,
    /// app -> times a loop-resident guest was made to yield at an epoch tick.
    #[serde(with = "pairs")]
    pub forced_yields: BTreeMap<String, u64>,
    /// (app, mode) -> seconds guests spent running (on the loop: inside polls).
    #[serde(with = "pairs")]
    pub guest_seconds: BTreeMap<(String, String), f64>,
    /// Thread-seconds the pool spent running jobs.
    pub pool_busy_seconds: f64,
    /// Time jobs waited for a pool thread.
    pub pool_queue_wait: Histogram,
    /// How late the loop's 10 ms probe timer fired.
    pub loop_lag: Histogram,
}

impl Counters {
    fn add(&mut self, other: &Counters) {
        fn add_map<K: Ord + Clone, V: Clone>(
            mine: &mut BTreeMap<K, V>,
            theirs: &BTreeMap<K, V>,
            add: impl Fn(&mut V, &V),
        ) {
            for (k, v) in theirs {
                match mine.get_mut(k) {
                    Some(m) => add(m, v),
                    None => {
                        mine.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        add_map(&mut self.requests, &other.requests, |a, b| *a += b);
        add_map(&mut self.failures, &other.failures, |a, b| *a += b);
        add_map(&mut self.rejected, &other.rejected, |a, b| *a += b);
        add_map(&mut self.latency, &other.latency, Histogram::add);
        add_map(&mut self.fuel, &other.fuel, |a, b| *a += b);
        add_map(&mut self.forced_yields, &other.forced_yields, |a, b| {
            *a += b
        });
        add_map(&mut self.guest_seconds, &other.guest_seconds, |a, b| {
            *a += b
        });
        self.pool_busy_seconds += other.pool_busy_seconds;
        self.pool_queue_wait.add(&other.pool_queue_wait);
        self.loop_lag.add(&other.loop_lag);
    }
}

/// Values that are true now, not counts: they are dropped when a worker exits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Gauges {
    pub in_flight: u64,
    pub instances: u64,
    pub pool_threads: u64,
    pub pool_busy: u64,
    pub pool_queued: u64,
    /// The largest loop lag since the previous snapshot, in seconds.
    pub loop_lag_max: f64,
}

/// What a worker sends the master every second.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub counters: Counters,
    pub gauges: Gauges,
}

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
}

impl Recorder {
    fn with(&self, f: impl FnOnce(&mut Counters)) {
        if let Ok(mut counters) = self.counters.lock() {
            f(&mut counters);
        }
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
            if let Some(cause) = done.cause {
                *c.failures.entry((app, cause.to_string())).or_default() += 1;
            }
        });
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
        if let Ok(mut max) = self.lag_max.lock() {
            *max = max.max(lag.as_secs_f64());
        }
    }

    /// The counters so far and `gauges`, with the lag maximum since the last call.
    pub fn snapshot(&self, mut gauges: Gauges) -> Snapshot {
        gauges.loop_lag_max = self
            .lag_max
            .lock()
            .map(|mut max| std::mem::take(&mut *max))
            .unwrap_or(0.0);
        gauges.instances = live_instances();
        let counters = self.counters.lock().map(|c| c.clone()).unwrap_or_default();
        Snapshot { counters, gauges }
    }
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

/// The master's view: the latest snapshot of every live worker, and the counters of
/// the ones that exited.
#[derive(Debug, Default)]
pub struct Aggregate {
    live: BTreeMap<u32, Snapshot>,
    retired: Counters,
}

/// Facts about the master the workers cannot report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MasterFacts {
    pub workers: u64,
    pub workers_target: u64,
    pub worker_restarts: u64,
    pub cores: u64,
    /// Whether the registry answers (an embedded one always does).
    pub registry_up: bool,
    /// Times a shared registry stopped answering.
    pub registry_outages: u64,
}

impl Aggregate {
    pub fn update(&mut self, pid: u32, snapshot: Snapshot) {
        self.live.insert(pid, snapshot);
    }

    /// A worker exited: its counters stay in the totals, its gauges go.
    pub fn retire(&mut self, pid: u32) {
        if let Some(last) = self.live.remove(&pid) {
            self.retired.add(&last.counters);
        }
    }

    /// Counters of all workers, past and present, and gauges of the live ones.
    pub fn merged(&self) -> Snapshot {
        let mut merged = Snapshot {
            counters: self.retired.clone(),
            gauges: Gauges::default(),
        };
        for snapshot in self.live.values() {
            merged.counters.add(&snapshot.counters);
            let (g, s) = (&mut merged.gauges, &snapshot.gauges);
            g.in_flight += s.in_flight;
            g.instances += s.instances;
            g.pool_threads += s.pool_threads;
            g.pool_busy += s.pool_busy;
            g.pool_queued += s.pool_queued;
            g.loop_lag_max = g.loop_lag_max.max(s.loop_lag_max);
        }
        merged
    }

    /// The Prometheus text exposition (OpenMetrics) of the merged view.
    pub fn encode(&self, master: &MasterFacts) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(Exposition {
            merged: self.merged(),
            per_worker: self
                .live
                .iter()
                .map(|(pid, s)| (*pid, s.counters.loop_lag.clone(), s.gauges.loop_lag_max))
                .collect(),
            master: master.clone(),
        }));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
}

/// Serializes a map as a list of pairs, so keys may be tuples.
mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S, K, V>(map: &BTreeMap<K, V>, s: S) -> Result<S::Ok, S::Error>
    where
        S: Serializer,
        K: Serialize,
        V: Serialize,
    {
        s.collect_seq(map.iter())
    }

    pub fn deserialize<'de, D, K, V>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        D: Deserializer<'de>,
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
    {
        Vec::<(K, V)>::deserialize(d).map(|pairs| pairs.into_iter().collect())
    }
}

/// One scrape's worth of values, encoded as const metrics.
#[derive(Debug)]
struct Exposition {
    merged: Snapshot,
    per_worker: Vec<(u32, Histogram, f64)>,
    master: MasterFacts,
}

type Labels = Vec<(&'static str, String)>;

impl Exposition {
    fn counter(
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (Labels, f64)>,
    ) -> std::fmt::Result {
        let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, value) in series {
            metric
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, f64>(&value, None)?;
        }
        Ok(())
    }

    fn gauge(
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (Labels, f64)>,
    ) -> std::fmt::Result {
        let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, value) in series {
            metric.encode_family(&labels)?.encode_gauge(&value)?;
        }
        Ok(())
    }

    fn histogram<'h>(
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (Labels, &'h Histogram)>,
    ) -> std::fmt::Result {
        let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
        for (labels, h) in series {
            metric
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets(), None)?;
        }
        Ok(())
    }
}

/// Labels for a series of `app`: `tenant/app` names (registry mode) become an `app`
/// and a `tenant` label, the tenant last so single-file series keep their shape.
fn with_app(app: &str, rest: Labels) -> Labels {
    let (tenant, name) = match app.split_once('/') {
        Some((tenant, name)) => (Some(tenant), name),
        None => (None, app),
    };
    let mut labels = vec![("app", name.to_string())];
    labels.extend(rest);
    if let Some(tenant) = tenant {
        labels.push(("tenant", tenant.to_string()));
    }
    labels
}

fn one(value: f64) -> Vec<(Labels, f64)> {
    vec![(Vec::new(), value)]
}

impl Collector for Exposition {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let c = &self.merged.counters;
        let g = &self.merged.gauges;
        Self::counter(
            &mut e,
            "wasmloop_requests",
            "Requests answered, by app, mode (loop or pool) and status.",
            c.requests.iter().map(|((app, mode, status), n)| {
                (
                    with_app(
                        app,
                        vec![("mode", mode.clone()), ("status", status.to_string())],
                    ),
                    *n as f64,
                )
            }),
        )?;
        Self::counter(
            &mut e,
            "wasmloop_request_failures",
            "Requests that ended in an error, by app and cause (cpu_limit, timeout, overloaded, memory_limit, guest_trap, ...).",
            c.failures.iter().map(|((app, cause), n)| {
                (with_app(app, vec![("cause", cause.clone())]), *n as f64)
            }),
        )?;
        Self::counter(
            &mut e,
            "wasmloop_requests_rejected",
            "Requests refused with 503 before a guest ran, by app and reason (pool_full, concurrency_limit).",
            c.rejected.iter().map(|((app, reason), n)| {
                (with_app(app, vec![("reason", reason.clone())]), *n as f64)
            }),
        )?;
        Self::histogram(
            &mut e,
            "wasmloop_request_duration_seconds",
            "Time from receiving a request to the end of its run, by app and mode.",
            c.latency
                .iter()
                .map(|((app, mode), h)| (with_app(app, vec![("mode", mode.clone())]), h)),
        )?;
        Self::counter(
            &mut e,
            "wasmloop_fuel_consumed",
            "Fuel guests burned, by app (about 1.5e10 units per CPU second).",
            c.fuel
                .iter()
                .map(|(app, n)| (with_app(app, Vec::new()), *n as f64)),
        )?;
        Self::counter(
            &mut e,
            "wasmloop_guest_forced_yields",
            "Times a loop-resident guest was preempted at an epoch tick because it computed without awaiting, by app.",
            c.forced_yields
                .iter()
                .map(|(app, n)| (with_app(app, Vec::new()), *n as f64)),
        )?;
        Self::counter(
            &mut e,
            "wasmloop_guest_cpu_seconds",
            "Seconds guests spent running, by app and mode (on the loop, time inside the guest's polls).",
            c.guest_seconds
                .iter()
                .map(|((app, mode), s)| (with_app(app, vec![("mode", mode.clone())]), *s)),
        )?;
        Self::gauge(
            &mut e,
            "wasmloop_requests_in_flight",
            "Requests being served now.",
            one(g.in_flight as f64),
        )?;
        Self::gauge(
            &mut e,
            "wasmloop_instances_live",
            "Guest instances alive now.",
            one(g.instances as f64),
        )?;
        Self::gauge(
            &mut e,
            "wasmloop_pool_threads",
            "Pool threads across workers.",
            one(g.pool_threads as f64),
        )?;
        Self::gauge(
            &mut e,
            "wasmloop_pool_threads_busy",
            "Pool threads running a request now.",
            one(g.pool_busy as f64),
        )?;
        Self::gauge(
            &mut e,
            "wasmloop_pool_queue_depth",
            "Requests waiting for a pool thread now.",
            one(g.pool_queued as f64),
        )?;
        Self::counter(
            &mut e,
            "wasmloop_pool_busy_seconds",
            "Thread-seconds pool threads spent running requests.",
            one(c.pool_busy_seconds),
        )?;
        Self::histogram(
            &mut e,
            "wasmloop_pool_queue_wait_seconds",
            "Time requests waited for a pool thread.",
            [(Vec::new(), &c.pool_queue_wait)],
        )?;
        Self::histogram(
            &mut e,
            "wasmloop_loop_lag_seconds",
            "How late each worker's event loop ran a 10 ms probe timer, by worker pid.",
            self.per_worker
                .iter()
                .map(|(pid, h, _)| (vec![("worker", pid.to_string())], h)),
        )?;
        Self::gauge(
            &mut e,
            "wasmloop_loop_lag_max_seconds",
            "The largest event-loop lag of each worker in its last second, by worker pid.",
            self.per_worker
                .iter()
                .map(|(pid, _, max)| (vec![("worker", pid.to_string())], *max)),
        )?;
        let m = &self.master;
        Self::gauge(
            &mut e,
            "wasmloop_workers",
            "Worker processes serving.",
            one(m.workers as f64),
        )?;
        Self::gauge(
            &mut e,
            "wasmloop_workers_target",
            "Worker processes the master aims for (--workers, TTIN/TTOU).",
            one(m.workers_target as f64),
        )?;
        Self::counter(
            &mut e,
            "wasmloop_worker_restarts",
            "Workers that died or hung and were replaced.",
            one(m.worker_restarts as f64),
        )?;
        Self::gauge(
            &mut e,
            "wasmloop_registry_up",
            "1 while the registry answers; 0 while a shared registry is unreachable (the node serves what it has).",
            one(u64::from(m.registry_up) as f64),
        )?;
        Self::counter(
            &mut e,
            "wasmloop_registry_outages",
            "Times the shared registry stopped answering.",
            one(m.registry_outages as f64),
        )?;
        Self::gauge(
            &mut e,
            "wasmloop_cpu_cores",
            "CPU cores available to the server.",
            one(m.cores as f64),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn histograms_bucket_and_estimate_quantiles() {
        let mut h = Histogram::default();
        for _ in 0..98 {
            h.observe(ms(2));
        }
        h.observe(ms(300));
        h.observe(ms(90_000));
        assert_eq!(h.count, 100);
        assert_eq!(h.quantile(0.5), Some(0.0025));
        assert_eq!(h.quantile(0.99), Some(0.5));
        assert_eq!(h.quantile(1.0), Some(f64::INFINITY));
        assert_eq!(h.above(0.1), 2);
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn counters_of_exited_workers_stay_in_the_totals() {
        let recorder = Recorder::default();
        let done = Finished {
            app: "hello",
            mode: Some(Mode::Pool),
            status: 200,
            duration: ms(3),
            fuel: 10,
            cause: None,
            forced_yields: 0,
            guest_time: ms(1),
        };
        recorder.request(&done);
        let mut aggregate = Aggregate::default();
        aggregate.update(
            1,
            recorder.snapshot(Gauges {
                in_flight: 4,
                ..Gauges::default()
            }),
        );
        aggregate.update(2, recorder.snapshot(Gauges::default()));
        let key = ("hello".to_string(), "pool".to_string(), 200);
        assert_eq!(aggregate.merged().counters.requests[&key], 2);
        assert_eq!(aggregate.merged().gauges.in_flight, 4);
        aggregate.retire(1);
        assert_eq!(aggregate.merged().counters.requests[&key], 2);
        assert_eq!(aggregate.merged().gauges.in_flight, 0);
    }

    #[test]
    fn snapshots_survive_their_trip_through_json() {
        let recorder = Recorder::default();
        recorder.rejected("a", "pool_full");
        recorder.pool_job(ms(5), ms(10));
        recorder.loop_lag(ms(7));
        let snapshot = recorder.snapshot(Gauges::default());
        let json = serde_json::to_string(&snapshot).unwrap();
        assert_eq!(serde_json::from_str::<Snapshot>(&json).unwrap(), snapshot);
        assert_eq!(snapshot.gauges.loop_lag_max, 0.007);
    }

    #[test]
    fn the_exposition_is_prometheus_text_with_conventional_names() {
        let recorder = Recorder::default();
        recorder.request(&Finished {
            app: "hello",
            mode: Some(Mode::Loop),
            status: 503,
            duration: ms(3),
            fuel: 0,
            cause: Some("cpu_limit"),
            forced_yields: 2,
            guest_time: ms(4),
        });
        let mut aggregate = Aggregate::default();
        aggregate.update(7, recorder.snapshot(Gauges::default()));
        let text = aggregate.encode(&MasterFacts::default());
        for line in [
            r#"wasmloop_requests_total{app="hello",mode="loop",status="503"} 1"#,
            r#"wasmloop_request_failures_total{app="hello",cause="cpu_limit"} 1"#,
            r#"wasmloop_guest_forced_yields_total{app="hello"} 2"#,
            r#"wasmloop_request_duration_seconds_bucket{le="0.005",app="hello",mode="loop"} 1"#,
            "# TYPE wasmloop_loop_lag_seconds histogram",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
