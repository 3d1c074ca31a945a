//! The master's side of metrics: the [`Aggregate`] of every worker's latest snapshot
//! and the counters of the ones that exited, and its exposition in Prometheus's
//! format.

use std::collections::BTreeMap;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use serde::{Deserialize, Serialize};

use crate::metrics::process::{self, ProcessStats};
use crate::metrics::{Counters, Gauges, Histogram, Snapshot};

/// The master's view: the latest snapshot of every live worker, and the counters of
/// the ones that exited.
#[derive(Debug, Default)]
pub struct Aggregate {
    live: BTreeMap<u32, Snapshot>,
    /// Each live worker's slot (0, 1, ...): the per-worker series are labelled by
    /// it, so their number stays bounded however often workers are replaced.
    slots: BTreeMap<u32, usize>,
    retired: Counters,
}

/// Facts about the master the workers cannot report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MasterFacts {
    pub workers: u64,
    pub workers_target: u64,
    pub worker_restarts: u64,
    /// New workers that failed at start-up while the server served (the running
    /// workers kept serving).
    #[serde(default)]
    pub worker_start_failures: u64,
    pub cores: u64,
    /// Whether the registry answers (an embedded one always does).
    pub registry_up: bool,
    /// Times a shared registry stopped answering.
    pub registry_outages: u64,
}

impl Aggregate {
    pub fn update(&mut self, pid: u32, slot: usize, snapshot: Snapshot) {
        self.live.insert(pid, snapshot);
        self.slots.insert(pid, slot);
    }

    /// Forgets the series of apps `keep` refuses, in the exited workers' counters
    /// (the live workers forget them in their own).
    pub fn retain_apps(&mut self, keep: impl Fn(&str) -> bool) {
        self.retired.retain_apps(&keep);
        for snapshot in self.live.values_mut() {
            snapshot.counters.retain_apps(&keep);
        }
    }

    /// A worker exited: its counters stay in the totals, its gauges go.
    pub fn retire(&mut self, pid: u32) {
        if let Some(last) = self.live.remove(&pid) {
            self.retired.add(&last.counters);
        }
        self.slots.remove(&pid);
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
        Exposition {
            merged: self.merged(),
            per_worker: self
                .live
                .iter()
                .map(|(pid, s)| {
                    let slot = self.slots.get(pid).copied().unwrap_or_default();
                    (slot, s.counters.loop_lag.clone(), s.gauges.loop_lag_max)
                })
                .collect(),
            master: master.clone(),
            processes: self.processes(),
            tenant_view: false,
        }
        .text()
    }

    /// The master's (this process's) and each live worker's `process_*` figures.
    fn processes(&self) -> Vec<(Labels, ProcessStats)> {
        let master = process::read(std::process::id())
            .map(|stats| (vec![("process", "master".to_string())], stats));
        let workers = self.slots.iter().filter_map(|(pid, slot)| {
            let labels = vec![
                ("process", "worker".to_string()),
                ("worker", slot.to_string()),
            ];
            process::read(*pid).map(|stats| (labels, stats))
        });
        master.into_iter().chain(workers).collect()
    }

    /// What `tenant` may see: the series of its own apps (named `tenant/app`), and
    /// nothing of other tenants, the workers or the master.
    pub fn encode_tenant(&self, tenant: &str) -> String {
        let prefix = format!("{tenant}/");
        let mine = |app: &String| app.starts_with(&prefix);
        let c = self.merged().counters;
        let counters = Counters {
            requests: c
                .requests
                .into_iter()
                .filter(|((a, ..), _)| mine(a))
                .collect(),
            failures: c
                .failures
                .into_iter()
                .filter(|((a, _), _)| mine(a))
                .collect(),
            rejected: c
                .rejected
                .into_iter()
                .filter(|((a, _), _)| mine(a))
                .collect(),
            latency: c
                .latency
                .into_iter()
                .filter(|((a, _), _)| mine(a))
                .collect(),
            fuel: c.fuel.into_iter().filter(|(a, _)| mine(a)).collect(),
            forced_yields: c
                .forced_yields
                .into_iter()
                .filter(|(a, _)| mine(a))
                .collect(),
            guest_seconds: c
                .guest_seconds
                .into_iter()
                .filter(|((a, _), _)| mine(a))
                .collect(),
            outbound_denied: c
                .outbound_denied
                .into_iter()
                .filter(|((a, _), _)| mine(a))
                .collect(),
            app_load_failures: c
                .app_load_failures
                .into_iter()
                .filter(|(a, _)| mine(a))
                .collect(),
            instantiate_seconds: c
                .instantiate_seconds
                .into_iter()
                .filter(|(a, _)| mine(a))
                .collect(),
            instances_created: c
                .instances_created
                .into_iter()
                .filter(|(a, _)| mine(a))
                .collect(),
            instances_retired: c
                .instances_retired
                .into_iter()
                .filter(|((a, _), _)| mine(a))
                .collect(),
            instance_requests: c
                .instance_requests
                .into_iter()
                .filter(|(a, _)| mine(a))
                .collect(),
            ..Counters::default()
        };
        Exposition {
            merged: Snapshot {
                counters,
                gauges: Gauges::default(),
            },
            per_worker: Vec::new(),
            master: MasterFacts::default(),
            processes: Vec::new(),
            tenant_view: true,
        }
        .text()
    }
}

/// One scrape's worth of values, encoded as const metrics.
#[derive(Debug)]
struct Exposition {
    merged: Snapshot,
    /// Each live worker's slot, loop-lag histogram and largest lag.
    per_worker: Vec<(usize, Histogram, f64)>,
    master: MasterFacts,
    /// `process_*` figures of the master and each live worker, with their labels.
    processes: Vec<(Labels, ProcessStats)>,
    /// Only the per-app series (a tenant's scrape).
    tenant_view: bool,
}

impl Exposition {
    fn text(self) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(self));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
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
        Self::histogram_in(encoder, name, help, &crate::metrics::BUCKETS, series)
    }

    fn histogram_in<'h>(
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        bounds: &[f64],
        series: impl IntoIterator<Item = (Labels, &'h Histogram)>,
    ) -> std::fmt::Result {
        let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
        for (labels, h) in series {
            metric
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets_in(bounds), None)?;
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
        self.encode_requests(&mut e)?;
        if self.tenant_view {
            return Ok(());
        }
        self.encode_capacity(&mut e)?;
        self.encode_master(&mut e)?;
        self.encode_processes(&mut e)
    }
}

impl Exposition {
    /// The series of requests and guests, by app.
    fn encode_requests(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let c = &self.merged.counters;
        Self::counter(
            e,
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
            e,
            "wasmloop_request_failures",
            "Requests that ended in an error, by app and cause (cpu_limit, timeout, overloaded, memory_limit, guest_trap, ...).",
            c.failures.iter().map(|((app, cause), n)| {
                (with_app(app, vec![("cause", cause.clone())]), *n as f64)
            }),
        )?;
        Self::counter(
            e,
            "wasmloop_requests_rejected",
            "Requests refused with 503 before a guest ran, by app and reason (pool_full, concurrency_limit).",
            c.rejected.iter().map(|((app, reason), n)| {
                (with_app(app, vec![("reason", reason.clone())]), *n as f64)
            }),
        )?;
        Self::histogram(
            e,
            "wasmloop_request_duration_seconds",
            "Time from receiving a request to the end of its run, by app and mode.",
            c.latency
                .iter()
                .map(|((app, mode), h)| (with_app(app, vec![("mode", mode.clone())]), h)),
        )?;
        Self::counter(
            e,
            "wasmloop_outbound_denied",
            "Outbound requests of guests refused before anything was sent, by app and reason (not_listed, loopback, private, link_local, own_listener, ...).",
            c.outbound_denied.iter().map(|((app, reason), n)| {
                (with_app(app, vec![("reason", reason.clone())]), *n as f64)
            }),
        )?;
        Self::counter(
            e,
            "wasmloop_instantiate_seconds",
            "Time spent instantiating guests for requests (a fresh instance each, or a new one for a reusing app), by app.",
            c.instantiate_seconds
                .iter()
                .map(|(app, s)| (with_app(app, Vec::new()), *s)),
        )?;
        Self::counter(
            e,
            "wasmloop_instances_created",
            "Instances made for apps that reuse them, by app.",
            c.instances_created
                .iter()
                .map(|(app, n)| (with_app(app, Vec::new()), *n as f64)),
        )?;
        Self::counter(
            e,
            "wasmloop_instances_retired",
            "Instances of apps that reuse them, retired, by app and cause (max_requests, idle_timeout, memory_high_water, client_gone, instantiation, or the cause of the request that failed on it: guest_trap, cpu_limit, timeout, memory_limit, ...).",
            c.instances_retired.iter().map(|((app, cause), n)| {
                (with_app(app, vec![("cause", cause.clone())]), *n as f64)
            }),
        )?;
        Self::histogram_in(
            e,
            "wasmloop_instance_requests",
            "Requests each retired instance served, by app (apps that reuse instances).",
            &crate::metrics::REUSE_BUCKETS,
            c.instance_requests
                .iter()
                .map(|(app, h)| (with_app(app, Vec::new()), h)),
        )?;
        Self::counter(
            e,
            "wasmloop_app_load_failures",
            "Times a worker could not load an app because its compiled artifact was missing or corrupt on this node (the app is not served by that worker until the master rebuilds it), by app.",
            c.app_load_failures
                .iter()
                .map(|(app, n)| (with_app(app, Vec::new()), *n as f64)),
        )?;
        Self::counter(
            e,
            "wasmloop_fuel_consumed",
            "Fuel guests burned, by app (about 1.5e10 units per CPU second).",
            c.fuel
                .iter()
                .map(|(app, n)| (with_app(app, Vec::new()), *n as f64)),
        )?;
        Self::counter(
            e,
            "wasmloop_guest_forced_yields",
            "Times a loop-resident guest was preempted at an epoch tick because it computed without awaiting, by app.",
            c.forced_yields
                .iter()
                .map(|(app, n)| (with_app(app, Vec::new()), *n as f64)),
        )?;
        Self::counter(
            e,
            "wasmloop_guest_cpu_seconds",
            "Seconds guests spent running, by app and mode (on the loop, time inside the guest's polls).",
            c.guest_seconds
                .iter()
                .map(|((app, mode), s)| (with_app(app, vec![("mode", mode.clone())]), *s)),
        )
    }

    /// What the workers have now: requests in flight, instances, the pool, the loop.
    fn encode_capacity(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let c = &self.merged.counters;
        let g = &self.merged.gauges;
        Self::gauge(
            e,
            "wasmloop_requests_in_flight",
            "Requests being served now.",
            one(g.in_flight as f64),
        )?;
        Self::gauge(
            e,
            "wasmloop_instances_live",
            "Guest instances alive now.",
            one(g.instances as f64),
        )?;
        Self::gauge(
            e,
            "wasmloop_pool_threads",
            "Pool threads across workers.",
            one(g.pool_threads as f64),
        )?;
        Self::gauge(
            e,
            "wasmloop_pool_threads_busy",
            "Pool threads running a request now.",
            one(g.pool_busy as f64),
        )?;
        Self::gauge(
            e,
            "wasmloop_pool_queue_depth",
            "Requests waiting for a pool thread now.",
            one(g.pool_queued as f64),
        )?;
        Self::counter(
            e,
            "wasmloop_pool_busy_seconds",
            "Thread-seconds pool threads spent running requests.",
            one(c.pool_busy_seconds),
        )?;
        Self::histogram(
            e,
            "wasmloop_pool_queue_wait_seconds",
            "Time requests waited for a pool thread.",
            [(Vec::new(), &c.pool_queue_wait)],
        )?;
        Self::histogram(
            e,
            "wasmloop_loop_lag_seconds",
            "How late each worker's event loop ran a 10 ms probe timer, by worker slot.",
            self.per_worker
                .iter()
                .map(|(slot, h, _)| (vec![("worker", slot.to_string())], h)),
        )?;
        Self::gauge(
            e,
            "wasmloop_loop_lag_max_seconds",
            "The largest event-loop lag of each worker in its last second, by worker slot.",
            self.per_worker
                .iter()
                .map(|(slot, _, max)| (vec![("worker", slot.to_string())], *max)),
        )
    }

    /// `process_*` of the master and the workers, and the build.
    fn encode_processes(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let each = |f: fn(&ProcessStats) -> f64| {
            self.processes
                .iter()
                .map(move |(labels, stats)| (labels.clone(), f(stats)))
        };
        Self::counter(
            e,
            "process_cpu_seconds",
            "User and system CPU time of each process (the master, each worker by slot).",
            each(|s| s.cpu_seconds),
        )?;
        Self::gauge(
            e,
            "process_resident_memory_bytes",
            "Resident memory of each process.",
            each(|s| s.resident_bytes),
        )?;
        Self::gauge(
            e,
            "process_virtual_memory_bytes",
            "Virtual memory of each process (a worker reserves its guests' pooling allocator).",
            each(|s| s.virtual_bytes),
        )?;
        Self::gauge(
            e,
            "process_open_fds",
            "Open file descriptors of each process.",
            each(|s| s.open_fds),
        )?;
        Self::gauge(
            e,
            "process_max_fds",
            "The open file descriptor limit of each process.",
            each(|s| s.max_fds),
        )?;
        Self::gauge(
            e,
            "process_start_time_seconds",
            "Start time of each process, in seconds since the Unix epoch.",
            each(|s| s.start_time_seconds),
        )?;
        Self::gauge(
            e,
            "wasmloop_build_info",
            "Always 1; the version of the running binary is in its label.",
            [(
                vec![("version", env!("CARGO_PKG_VERSION").to_string())],
                1.0,
            )],
        )
    }

    /// What only the master knows: its workers and the registry.
    fn encode_master(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let m = &self.master;
        Self::gauge(
            e,
            "wasmloop_workers",
            "Worker processes serving.",
            one(m.workers as f64),
        )?;
        Self::gauge(
            e,
            "wasmloop_workers_target",
            "Worker processes the master aims for (--workers, TTIN/TTOU).",
            one(m.workers_target as f64),
        )?;
        Self::counter(
            e,
            "wasmloop_worker_restarts",
            "Workers that died or hung and were replaced.",
            one(m.worker_restarts as f64),
        )?;
        Self::counter(
            e,
            "wasmloop_worker_start_failures",
            "New workers that failed at start-up while the server served (a broken component on SIGHUP): the running workers kept serving.",
            one(m.worker_start_failures as f64),
        )?;
        Self::gauge(
            e,
            "wasmloop_registry_up",
            "1 while the registry answers; 0 while a shared registry is unreachable (the node serves what it has).",
            one(u64::from(m.registry_up) as f64),
        )?;
        Self::counter(
            e,
            "wasmloop_registry_outages",
            "Times the shared registry stopped answering.",
            one(m.registry_outages as f64),
        )?;
        Self::gauge(
            e,
            "wasmloop_cpu_cores",
            "CPU cores available to the server.",
            one(m.cores as f64),
        )
    }
}
