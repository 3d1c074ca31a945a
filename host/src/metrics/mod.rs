//! Metrics: what a worker counts, how the counts reach the master, and how the master
//! shows one view of all workers in Prometheus's format.
//!
//! A worker records into a [`recorder::Recorder`] (the loop thread and the pool threads
//! both write to it) and sends a [`Snapshot`] to the master every second over its
//! report pipe. The master keeps the latest snapshot of every live worker and folds
//! the counters of workers that exited into a `retired` total
//! ([`exposition::Aggregate`]), so counters never go backwards when a worker is
//! replaced. `/metrics` on the admin listener encodes the merged view with
//! `prometheus-client`; `doctor` reads the same view. This file holds what both
//! sides share: the counters, gauges and histograms.

pub mod exposition;
pub mod process;
pub mod recorder;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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

/// Upper bounds of the buckets of requests one instance served.
pub const REUSE_BUCKETS: [f64; 12] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
];

impl Histogram {
    pub fn observe(&mut self, value: Duration) {
        self.observe_in(&BUCKETS, value.as_secs_f64());
    }

    /// Counts `value` in the buckets `bounds` (the same bounds every time).
    pub fn observe_in(&mut self, bounds: &[f64], value: f64) {
        self.counts.resize(bounds.len() + 1, 0);
        let bucket = bounds
            .iter()
            .position(|&bound| value <= bound)
            .unwrap_or(bounds.len());
        self.counts[bucket] += 1;
        self.sum += value;
        self.count += 1;
    }

    pub fn add(&mut self, other: &Histogram) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
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

    /// The value below which `q` of the observations fall, interpolated linearly
    /// within the bucket that holds it (as Prometheus's `histogram_quantile` does);
    /// in the last, unbounded bucket, its lower bound. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * self.count as f64).max(f64::MIN_POSITIVE);
        let mut below = 0u64;
        for (i, &n) in self.counts.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let lower = if i == 0 { 0.0 } else { BUCKETS[i - 1] };
                let Some(&upper) = BUCKETS.get(i) else {
                    return Some(lower);
                };
                let within = (rank - below as f64) / n as f64;
                return Some(lower + (upper - lower) * within);
            }
            below += n;
        }
        BUCKETS.last().copied()
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

    /// `(upper bound, count in this bucket alone)` for the buckets `bounds`:
    /// prometheus-client's encoder adds them up into Prometheus's cumulative `le`
    /// buckets.
    pub(crate) fn buckets_in(&self, bounds: &[f64]) -> Vec<(f64, u64)> {
        bounds
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
    /// (app, reason) -> outbound requests refused before anything was sent.
    #[serde(with = "pairs", default)]
    pub outbound_denied: BTreeMap<(String, String), u64>,
    /// app -> times a worker could not load it (its compiled artifact missing or
    /// corrupt on this node) and served it nowhere.
    #[serde(default)]
    pub app_load_failures: BTreeMap<String, u64>,
    /// app -> seconds spent instantiating its component (every fresh instance).
    #[serde(default)]
    pub instantiate_seconds: BTreeMap<String, f64>,
    /// app -> instances made, for apps that reuse them.
    #[serde(default)]
    pub instances_created: BTreeMap<String, u64>,
    /// (app, cause) -> instances retired, for apps that reuse them.
    #[serde(with = "pairs", default)]
    pub instances_retired: BTreeMap<(String, String), u64>,
    /// app -> requests each retired instance served ([`REUSE_BUCKETS`]).
    #[serde(default)]
    pub instance_requests: BTreeMap<String, Histogram>,
}

/// Whether the series of `app` stay when only `deployed` are served: a deployed
/// app's (`tenant/app`) stays while it is deployed; a single file's, and `-` (no
/// app), always.
pub fn keeps_series(app: &str, deployed: &std::collections::BTreeSet<String>) -> bool {
    !app.contains('/') || deployed.contains(app)
}

impl Counters {
    /// Drops every series of an app `keep` refuses (a deleted app's): its counts do
    /// not outlive it, and the label maps do not grow with every app ever deployed.
    pub fn retain_apps(&mut self, keep: impl Fn(&str) -> bool) {
        self.requests.retain(|(app, ..), _| keep(app));
        self.failures.retain(|(app, _), _| keep(app));
        self.rejected.retain(|(app, _), _| keep(app));
        self.latency.retain(|(app, _), _| keep(app));
        self.fuel.retain(|app, _| keep(app));
        self.forced_yields.retain(|app, _| keep(app));
        self.guest_seconds.retain(|(app, _), _| keep(app));
        self.outbound_denied.retain(|(app, _), _| keep(app));
        self.app_load_failures.retain(|app, _| keep(app));
        self.instantiate_seconds.retain(|app, _| keep(app));
        self.instances_created.retain(|app, _| keep(app));
        self.instances_retired.retain(|(app, _), _| keep(app));
        self.instance_requests.retain(|app, _| keep(app));
    }

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
        add_map(&mut self.outbound_denied, &other.outbound_denied, |a, b| {
            *a += b
        });
        add_map(
            &mut self.app_load_failures,
            &other.app_load_failures,
            |a, b| *a += b,
        );
        add_map(
            &mut self.instantiate_seconds,
            &other.instantiate_seconds,
            |a, b| *a += b,
        );
        add_map(
            &mut self.instances_created,
            &other.instances_created,
            |a, b| *a += b,
        );
        add_map(
            &mut self.instances_retired,
            &other.instances_retired,
            |a, b| *a += b,
        );
        add_map(
            &mut self.instance_requests,
            &other.instance_requests,
            Histogram::add,
        );
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

#[cfg(test)]
mod tests {
    use super::exposition::*;
    use super::recorder::*;
    use super::*;
    use crate::model::mode::Mode;

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
        // The median is the 50th of 98 observations in (1 ms, 2.5 ms]: interpolated,
        // not the bucket's bound.
        let median = h.quantile(0.5).unwrap();
        assert!(
            (median - (0.001 + 0.0015 * 50.0 / 98.0)).abs() < 1e-12,
            "{median}"
        );
        assert_eq!(h.quantile(0.99), Some(0.5));
        // In the unbounded bucket, its lower bound.
        assert_eq!(h.quantile(1.0), Some(60.0));
        assert_eq!(h.above(0.1), 2);
        assert_eq!(Histogram::default().quantile(0.5), None);
        // 530 ms requests spread over (500 ms, 1 s]: p50 near their middle, not 1 s.
        let mut h = Histogram::default();
        for i in 0..100 {
            h.observe(ms(510 + i * 4));
        }
        let p50 = h.quantile(0.5).unwrap();
        assert!((0.7..0.8).contains(&p50), "{p50}");
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
            instance: None,
            instantiate_time: Duration::ZERO,
        };
        recorder.request(&done);
        let mut aggregate = Aggregate::default();
        aggregate.update(
            1,
            0,
            recorder.snapshot(Gauges {
                in_flight: 4,
                ..Gauges::default()
            }),
        );
        aggregate.update(2, 1, recorder.snapshot(Gauges::default()));
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
            instance: None,
            instantiate_time: Duration::ZERO,
        });
        let mut aggregate = Aggregate::default();
        aggregate.update(7, 0, recorder.snapshot(Gauges::default()));
        let text = aggregate.encode(&MasterFacts::default());
        // Per-worker series carry the worker's slot, not its pid.
        assert!(
            text.contains(r#"wasmloop_loop_lag_max_seconds{worker="0"}"#),
            "{text}"
        );
        assert!(!text.contains(r#"worker="7""#), "{text}");
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
