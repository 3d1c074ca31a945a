//! `wasmloop doctor`: reads the counters of the last minute and says, in plain words
//! and with numbers, what limits throughput. [`diagnose`] is a pure function of two
//! metric views that runs one function per rule, so each is tested without a server;
//! the master runs it for `GET /doctor` and the CLI prints the result.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::metrics::{Counters, Histogram, Snapshot};

/// What the server is configured with, for the rules that compare against it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Facts {
    pub workers: u64,
    pub cores: u64,
    /// Pool threads per worker (`--threads`).
    pub threads: u64,
    pub limit_concurrency: u64,
    pub fuel: u64,
    pub epoch_interval_ms: f64,
}

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Requests are slowed down or refused because of it.
    Warning,
    /// Worth changing; nothing is failing because of it.
    Advice,
}

/// One thing that limits throughput.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub severity: Severity,
    /// A stable name: `pool_saturated`, `loop_hot_guest`, `concurrency_limit`,
    /// `tenant_limit`, `cpu_limit`, `failures`, `few_workers`, `reuse_would_help`,
    /// `reused_instances_fail`.
    pub code: String,
    /// What happened, with numbers.
    pub summary: String,
    /// What to do about it.
    pub advice: String,
}

/// The doctor's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub window_seconds: f64,
    pub workers: u64,
    pub cores: u64,
    pub requests: u64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    /// Share of pool thread time spent running requests, 0..1; none without a pool.
    pub pool_busy: Option<f64>,
    pub loop_lag_p99_ms: Option<f64>,
    /// Most important first; empty when nothing limits throughput.
    pub findings: Vec<Finding>,
}

/// Requests above this share of pool thread time make the pool the bottleneck.
const POOL_SATURATED: f64 = 0.7;
/// A wait for a pool thread longer than this counts as queueing.
const QUEUED: f64 = 0.005;
/// Forced yields in the window above which a loop guest is called hot.
const HOT_YIELDS: u64 = 25;

/// Compares `now` with `before` (taken `window` earlier) and names the bottlenecks:
/// each rule below looks at the same window and may add findings.
pub fn diagnose(before: &Counters, now: &Snapshot, window: Duration, facts: &Facts) -> Report {
    let w = Window {
        before,
        now,
        c: &now.counters,
        seconds: window.as_secs_f64().max(0.001),
        facts,
    };
    let mut latency = Histogram::default();
    for (key, h) in &w.c.latency {
        let earlier = before.latency.get(key).cloned().unwrap_or_default();
        latency.add(&h.since(&earlier));
    }
    let loop_lag_p99 = w.c.loop_lag.since(&before.loop_lag).quantile(0.99);
    let pool_busy = w.pool_busy();
    let (hot_guests, loop_busy_total) = loop_hot_guests(&w, loop_lag_p99);

    let mut findings: Vec<Finding> = pool_saturated(&w, pool_busy).into_iter().collect();
    findings.extend(hot_guests);
    findings.extend(concurrency_limit(&w));
    findings.extend(tenant_limits(&w));
    findings.extend(failures(&w));
    findings.extend(few_workers(&w, pool_busy, loop_busy_total));
    findings.extend(reuse_would_help(&w));
    findings.extend(reused_instances_fail(&w));
    findings.sort_by_key(|f| f.severity != Severity::Warning);
    Report {
        window_seconds: w.seconds,
        workers: facts.workers,
        cores: facts.cores,
        requests: w.requests(),
        latency_p50_ms: latency.quantile(0.5).map(|s| s * 1000.0),
        latency_p99_ms: latency.quantile(0.99).map(|s| s * 1000.0),
        pool_busy,
        loop_lag_p99_ms: loop_lag_p99.map(|s| s * 1000.0),
        findings,
    }
}

/// The window the rules look at: the counters at both ends and the server's facts.
struct Window<'a> {
    before: &'a Counters,
    now: &'a Snapshot,
    c: &'a Counters,
    seconds: f64,
    facts: &'a Facts,
}

impl Window<'_> {
    fn requests(&self) -> u64 {
        self.c
            .requests
            .iter()
            .map(|(k, n)| delta(*n, self.before.requests.get(k)))
            .sum()
    }

    /// Share of pool thread time spent running requests; none without a pool.
    fn pool_busy(&self) -> Option<f64> {
        let threads = self.now.gauges.pool_threads;
        (threads > 0).then(|| {
            ((self.c.pool_busy_seconds - self.before.pool_busy_seconds)
                / (self.seconds * threads as f64))
                .clamp(0.0, 1.0)
        })
    }
}

fn delta(now: u64, then: Option<&u64>) -> u64 {
    now.saturating_sub(then.copied().unwrap_or(0))
}

/// The pool: busy most of the time, and requests waited for a thread.
fn pool_saturated(w: &Window<'_>, pool_busy: Option<f64>) -> Option<Finding> {
    let (c, seconds) = (w.c, w.seconds);
    let pool_threads = w.now.gauges.pool_threads;
    let waits = c.pool_queue_wait.since(&w.before.pool_queue_wait);
    let queued = waits.above(QUEUED);
    let pool_full: u64 = sum_by_reason(c, w.before, "pool_full");
    // Queueing is the symptom that matters: a pool can look half idle over the window
    // and still make most requests wait during a burst.
    let mostly_queued = waits.count > 0
        && queued * 5 >= waits.count
        && waits.quantile(0.5).is_some_and(|median| median >= 0.01);
    let busy = pool_busy?;
    if !((busy >= POOL_SATURATED && queued > 0) || mostly_queued || pool_full > 0) {
        return None;
    }
    let mut summary = format!(
        "The pool's {pool_threads} threads were busy {:.0}% of the last {seconds:.0} s and requests queued for them: {queued} of {} waited over {} ms (median wait up to {}).",
        busy * 100.0,
        waits.count,
        QUEUED * 1000.0,
        ms(waits.quantile(0.5)),
    );
    if pool_full > 0 {
        let _ = write!(
            summary,
            " {pool_full} were refused with 503 because the queue was full."
        );
    }
    let threads = w.facts.threads;
    let waits_advice = format!(
        "raise --threads (now {threads}) or write it as an `async fn` so it runs on the event loop and holds no thread while it waits"
    );
    let advice = match pool_compute_share(w) {
        Some(share) if share >= COMPUTES => {
            let _ = write!(
                summary,
                " The handlers compute: about {:.0}% of their time on a thread burned fuel.",
                share * 100.0
            );
            "Add workers (up to one per core) or make the handler do less; more threads would not help, the cores are the limit.".to_string()
        }
        Some(share) if share <= WAITS => {
            let _ = write!(
                summary,
                " The handlers mostly wait: about {:.0}% of their time on a thread burned fuel, the rest was waiting (outbound calls, sleeps).",
                share * 100.0
            );
            format!("{}{waits_advice}.", "Threads wait, not compute: ")
        }
        _ => format!(
            "If the handler mostly waits (outbound calls, sleeps), {waits_advice}. If it computes, add workers (up to one per core) or make it do less."
        ),
    };
    Some(Finding {
        severity: Severity::Warning,
        code: "pool_saturated".into(),
        summary,
        advice,
    })
}

/// Fuel a current x86-64 core burns in one second of guest code (the default
/// `--fuel` is calibrated to about a second: docs/operations.md).
const FUEL_PER_CPU_SECOND: f64 = 1e10;
/// Share of a pool guest's time on its thread that burns fuel, at or above which its
/// handlers compute, and at or below which they mostly wait.
const COMPUTES: f64 = 0.5;
const WAITS: f64 = 0.2;

/// The share of the pool guests' time on their threads that was computing, from the
/// fuel they burned in the window; `None` without pool time.
fn pool_compute_share(w: &Window<'_>) -> Option<f64> {
    let mut seconds = 0.0;
    let mut fuel = 0u64;
    for ((app, mode), secs) in &w.c.guest_seconds {
        if mode != "pool" {
            continue;
        }
        let before = w.before.guest_seconds.get(&(app.clone(), mode.clone()));
        seconds += secs - before.unwrap_or(&0.0);
        fuel += delta(
            w.c.fuel.get(app).copied().unwrap_or(0),
            w.before.fuel.get(app),
        );
    }
    (seconds > 0.0).then(|| (fuel as f64 / FUEL_PER_CPU_SECOND / seconds).min(1.0))
}

/// Loop-resident guests that compute without awaiting; also how long loop guests
/// held the loop in all, for [`few_workers`].
fn loop_hot_guests(w: &Window<'_>, loop_lag_p99: Option<f64>) -> (Vec<Finding>, f64) {
    let (c, before, seconds, facts) = (w.c, w.before, w.seconds, w.facts);
    let mut findings = Vec::new();
    let mut loop_busy_total = 0.0;
    for ((app, mode), secs) in &c.guest_seconds {
        if mode != "loop" {
            continue;
        }
        let earlier = before
            .guest_seconds
            .get(&(app.clone(), mode.clone()))
            .copied()
            .unwrap_or(0.0);
        let busy = (secs - earlier).max(0.0);
        loop_busy_total += busy;
        let yields = delta(
            c.forced_yields.get(app).copied().unwrap_or(0),
            before.forced_yields.get(app),
        );
        if yields >= HOT_YIELDS {
            findings.push(Finding {
                severity: Severity::Warning,
                code: "loop_hot_guest".into(),
                summary: format!(
                    "App {app} computes on the event loop without awaiting: the host preempted it {yields} times in the last {seconds:.0} s, and it held the loop for {busy:.1} s ({:.0}% of the loop's time). Requests sharing the loop waited for it: loop lag p99 {}, worst in the last second {}.",
                    busy / (seconds * facts.workers.max(1) as f64) * 100.0,
                    ms(loop_lag_p99),
                    ms(Some(w.now.gauges.loop_lag_max)),
                ),
                advice: format!(
                    "Move the CPU-heavy part of {app} to a plain `fn` handler (it then runs on the pool, a thread of its own under --fuel), or split the work and await between the pieces. Preemption every {} ms keeps its neighbours going, but they share the loop with it.",
                    facts.epoch_interval_ms
                ),
            });
        }
    }
    (findings, loop_busy_total)
}

/// Requests refused at the worker's concurrency limit.
fn concurrency_limit(w: &Window<'_>) -> Option<Finding> {
    let at_limit = sum_by_reason(w.c, w.before, "concurrency_limit");
    (at_limit > 0).then(|| Finding {
        severity: Severity::Warning,
        code: "concurrency_limit".into(),
        summary: format!(
            "{} in the last {:.0} s were refused with 503 because a worker already had --limit-concurrency={} requests in flight.",
            requests_word(at_limit),
            w.seconds,
            w.facts.limit_concurrency
        ),
        advice: "Raise --limit-concurrency if memory and CPU allow (each in-flight request holds an instance), or add workers.".into(),
    })
}

/// Tenants at their own limits (registry mode: apps are named `tenant/app`).
fn tenant_limits(w: &Window<'_>) -> Vec<Finding> {
    let mut by_tenant: std::collections::BTreeMap<&str, [u64; 3]> = Default::default();
    for ((app, reason), n) in &w.c.rejected {
        let n = delta(*n, w.before.rejected.get(&(app.clone(), reason.clone())));
        let tenant = app.split_once('/').map_or("", |(t, _)| t);
        let slot = match reason.as_str() {
            "tenant_limit" => 0,
            "tenant_pool_share" => 1,
            "tenant_memory_budget" => 2,
            _ => continue,
        };
        by_tenant.entry(tenant).or_default()[slot] += n;
    }
    by_tenant
        .into_iter()
        .filter(|(_, counts)| counts.iter().sum::<u64>() > 0)
        .map(|(tenant, [in_flight, pool, memory])| Finding {
            severity: Severity::Warning,
            code: "tenant_limit".into(),
            summary: format!(
                "Tenant {tenant} reached its limits in the last {:.0} s: {} refused at its limit of requests in flight, {} at its share of pool threads, {} at its share of the memory budget. Other tenants were not affected by it.",
                w.seconds,
                requests_word(in_flight),
                requests_word(pool),
                requests_word(memory),
            ),
            advice: format!(
                "If {tenant} should get more, raise its limits (wasmloop tenant limits {tenant} --max-in-flight/--max-pool-threads/--memory-budget, or --tenant-share), or lower its apps' max_memory if they need less; if it is misbehaving, its 503s are what protect the others."
            ),
        })
        .collect()
}

/// Requests that ran out of fuel, and other failures by cause.
fn failures(w: &Window<'_>) -> Vec<Finding> {
    let seconds = w.seconds;
    let mut findings = Vec::new();
    for ((app, cause), n) in &w.c.failures {
        let n = delta(*n, w.before.failures.get(&(app.clone(), cause.clone())));
        if n == 0 {
            continue;
        }
        match cause.as_str() {
            "cpu_limit" => findings.push(Finding {
                severity: Severity::Warning,
                code: "cpu_limit".into(),
                summary: format!(
                    "{} of app {app} ran out of fuel (503 cpu_limit) in the last {seconds:.0} s; each may burn --fuel={:.1e} units (about 1.5e10 per CPU second).",
                    requests_word(n),
                    w.facts.fuel as f64
                ),
                advice: format!("Raise --fuel if {app} is meant to compute that long, else find what loops."),
            }),
            "timeout" | "memory_limit" | "guest_trap" => findings.push(Finding {
                severity: Severity::Warning,
                code: "failures".into(),
                summary: format!(
                    "{} of app {app} failed with {cause} in the last {seconds:.0} s.",
                    requests_word(n)
                ),
                advice: match cause.as_str() {
                    "timeout" => "Requests ran past --timeout: look for slow upstreams or raise --timeout.".into(),
                    "memory_limit" => "The guest asked for more than --max-memory: raise it or make the guest allocate less.".into(),
                    _ => format!("{app} trapped or panicked: its stderr is in the log next to each request id."),
                },
            }),
            _ => {}
        }
    }
    findings
}

/// Fewer workers than cores while the work is CPU-bound.
fn few_workers(w: &Window<'_>, pool_busy: Option<f64>, loop_busy_total: f64) -> Option<Finding> {
    let facts = w.facts;
    let loop_share = loop_busy_total / (w.seconds * facts.workers.max(1) as f64);
    let busy = pool_busy.is_some_and(|b| b >= 0.5) || loop_share >= 0.5;
    (facts.workers < facts.cores && busy).then(|| Finding {
        severity: Severity::Advice,
        code: "few_workers".into(),
        summary: format!(
            "{} worker(s) serve on {} cores while the work keeps them busy.",
            facts.workers, facts.cores
        ),
        advice: format!(
            "Start with --workers {} (each worker runs one event loop on one core), or send SIGTTIN to the master to add one now.",
            facts.cores
        ),
    })
}

/// Instantiation above this share of an app's guest time makes reuse worth a look.
const INSTANTIATION_DOMINATES: f64 = 0.5;
/// Requests in the window below which the share is not worth a word.
const ENOUGH_REQUESTS: u64 = 100;

/// Apps with a fresh sandbox per request that spend most of their guest time
/// instantiating: a reuse contract would save most of it.
fn reuse_would_help(w: &Window<'_>) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (app, secs) in &w.c.instantiate_seconds {
        if w.c.instances_created.contains_key(app) {
            continue; // it reuses instances already
        }
        let instantiating = secs - w.before.instantiate_seconds.get(app).unwrap_or(&0.0);
        let guest: f64 =
            w.c.guest_seconds
                .iter()
                .filter(|((a, _), _)| a == app)
                .map(|(k, s)| s - w.before.guest_seconds.get(k).unwrap_or(&0.0))
                .sum();
        let requests: u64 =
            w.c.requests
                .iter()
                .filter(|((a, ..), _)| a == app)
                .map(|(k, n)| delta(*n, w.before.requests.get(k)))
                .sum();
        if requests < ENOUGH_REQUESTS || guest <= 0.0 {
            continue;
        }
        let share = (instantiating / guest).min(1.0);
        if share >= INSTANTIATION_DOMINATES {
            findings.push(Finding {
                severity: Severity::Advice,
                code: "reuse_would_help".into(),
                summary: format!(
                    "App {app} spent {:.0}% of its guest time instantiating a fresh sandbox for each of its {} in the last {:.0} s ({:.0} µs each).",
                    share * 100.0,
                    requests_word(requests),
                    w.seconds,
                    instantiating / requests as f64 * 1e6
                ),
                advice: format!(
                    "If {app} keeps nothing of one request that another may not see, deploy it with reuse=serial (docs/operations.md, \"Instance reuse\"): its instances then serve many requests each."
                ),
            });
        }
    }
    findings
}

/// Reusing apps whose instances are retired by failures: each costs a fresh
/// instance and whatever the old one had built.
fn reused_instances_fail(w: &Window<'_>) -> Vec<Finding> {
    let mut by_app: std::collections::BTreeMap<&str, u64> = Default::default();
    for ((app, cause), n) in &w.c.instances_retired {
        if matches!(
            cause.as_str(),
            "guest_trap" | "cpu_limit" | "memory_limit" | "instantiation"
        ) {
            *by_app.entry(app).or_default() += delta(
                *n,
                w.before
                    .instances_retired
                    .get(&(app.clone(), cause.clone())),
            );
        }
    }
    by_app
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(app, n)| Finding {
            severity: Severity::Warning,
            code: "reused_instances_fail".into(),
            summary: format!(
                "{n} reused instance(s) of app {app} were retired by a trap, fuel or memory in the last {:.0} s.",
                w.seconds
            ),
            advice: format!(
                "Each failure throws away an instance and what it had built, and the next request pays for a fresh one: see {app}'s stderr in the log next to the failed requests' ids."
            ),
        })
        .collect()
}

fn requests_word(n: u64) -> String {
    if n == 1 {
        "1 request".into()
    } else {
        format!("{n} requests")
    }
}

fn sum_by_reason(now: &Counters, before: &Counters, reason: &str) -> u64 {
    now.rejected
        .iter()
        .filter(|((_, r), _)| r == reason)
        .map(|(k, n)| n.saturating_sub(before.rejected.get(k).copied().unwrap_or(0)))
        .sum()
}

/// A duration in seconds as "12 ms" (bucket bounds, so "up to").
fn ms(seconds: Option<f64>) -> String {
    match seconds {
        None => "n/a".into(),
        Some(s) if s.is_infinite() => "over 60 s".into(),
        Some(s) if s < 0.01 => format!("{:.1} ms", s * 1000.0),
        Some(s) => format!("{:.0} ms", s * 1000.0),
    }
}

/// The report as the CLI prints it.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "wasmloop doctor: the last {:.0} s, {} worker(s) on {} core(s)",
        report.window_seconds, report.workers, report.cores
    );
    let per_second = report.requests as f64 / report.window_seconds;
    let _ = write!(
        out,
        "  {} requests ({per_second:.1}/s), latency p50 {} p99 {} (estimated within histogram buckets)",
        report.requests,
        ms(report.latency_p50_ms.map(|v| v / 1000.0)),
        ms(report.latency_p99_ms.map(|v| v / 1000.0)),
    );
    if let Some(busy) = report.pool_busy {
        let _ = write!(out, ", pool busy {:.0}%", busy * 100.0);
    }
    let _ = writeln!(
        out,
        ", loop lag p99 {}",
        ms(report.loop_lag_p99_ms.map(|v| v / 1000.0))
    );
    let _ = writeln!(out);
    if report.findings.is_empty() {
        let _ = writeln!(
            out,
            "No bottleneck found: no queueing for pool threads, no hot guest on the loop, no refused or failed requests."
        );
    }
    for finding in &report.findings {
        let label = match finding.severity {
            Severity::Warning => "WARNING",
            Severity::Advice => "ADVICE",
        };
        let _ = writeln!(out, "{label} [{}] {}", finding.code, finding.summary);
        let _ = writeln!(out, "  -> {}", finding.advice);
        let _ = writeln!(out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Gauges;
    use crate::metrics::recorder::{Finished, Recorder};
    use crate::model::mode::Mode;

    fn facts() -> Facts {
        Facts {
            workers: 1,
            cores: 2,
            threads: 4,
            limit_concurrency: 1000,
            fuel: 10_000_000_000,
            epoch_interval_ms: 2.0,
        }
    }

    /// A request of `app` that succeeded in 2 ms, 100 µs of it in the guest; tests
    /// change what they look at.
    fn done(app: &str) -> Finished<'_> {
        Finished {
            app,
            mode: Some(Mode::Pool),
            status: 200,
            duration: Duration::from_millis(2),
            fuel: 100,
            cause: None,
            forced_yields: 0,
            guest_time: Duration::from_micros(100),
            instance: None,
            instantiate_time: Duration::ZERO,
        }
    }

    fn served(recorder: &Recorder, mode: Mode, n: usize) {
        for _ in 0..n {
            recorder.request(&Finished {
                mode: Some(mode),
                ..done("app")
            });
        }
    }

    fn codes(report: &Report) -> Vec<&str> {
        report.findings.iter().map(|f| f.code.as_str()).collect()
    }

    #[test]
    fn a_healthy_server_has_no_findings() {
        let recorder = Recorder::default();
        served(&recorder, Mode::Pool, 100);
        recorder.pool_job(Duration::from_micros(50), Duration::from_millis(1));
        let now = recorder.snapshot(Gauges {
            pool_threads: 4,
            ..Gauges::default()
        });
        let report = diagnose(
            &Counters::default(),
            &now,
            Duration::from_secs(60),
            &facts(),
        );
        assert_eq!(codes(&report), Vec::<&str>::new());
        assert!(render(&report).contains("No bottleneck found"));
    }

    #[test]
    fn a_busy_pool_with_a_queue_is_saturated() {
        let recorder = Recorder::default();
        for _ in 0..100 {
            // 4 threads × 10 s = 40 thread-seconds; 36 of them busy.
            recorder.pool_job(Duration::from_millis(80), Duration::from_millis(360));
        }
        let now = recorder.snapshot(Gauges {
            pool_threads: 4,
            ..Gauges::default()
        });
        let report = diagnose(
            &Counters::default(),
            &now,
            Duration::from_secs(10),
            &facts(),
        );
        assert_eq!(codes(&report), ["pool_saturated", "few_workers"]);
        assert!(
            report.findings[0].summary.contains("busy 90%"),
            "{:?}",
            report.findings[0]
        );
    }

    #[test]
    fn only_what_happened_in_the_window_counts() {
        let recorder = Recorder::default();
        recorder.rejected("app", "concurrency_limit");
        let before = recorder.snapshot(Gauges::default()).counters;
        let now = recorder.snapshot(Gauges::default());
        let report = diagnose(&before, &now, Duration::from_secs(60), &facts());
        assert!(report.findings.is_empty(), "{:?}", report.findings);
        recorder.rejected("app", "concurrency_limit");
        let now = recorder.snapshot(Gauges::default());
        let report = diagnose(&before, &now, Duration::from_secs(60), &facts());
        assert_eq!(codes(&report), ["concurrency_limit"]);
    }

    /// `n` requests of `app` on the loop, each `guest` long of which `instantiate`
    /// made its instance; `reused`: the app reuses instances (one made per request
    /// here, so the metric has it).
    fn instantiating(recorder: &Recorder, app: &str, n: usize, instantiate: u64, reused: bool) {
        for _ in 0..n {
            recorder.request(&Finished {
                mode: Some(Mode::Loop),
                instance: reused.then_some((true, None)),
                instantiate_time: Duration::from_micros(instantiate),
                ..done(app)
            });
        }
    }

    #[test]
    fn reuse_is_suggested_when_instantiation_dominates_a_fresh_app() {
        let recorder = Recorder::default();
        instantiating(&recorder, "heavy", 200, 80, false);
        instantiating(&recorder, "light", 200, 10, false);
        instantiating(&recorder, "reusing", 200, 80, true);
        instantiating(&recorder, "rare", 20, 90, false);
        let now = recorder.snapshot(Gauges::default());
        let report = diagnose(
            &Counters::default(),
            &now,
            Duration::from_secs(60),
            &facts(),
        );
        let found: Vec<_> = report
            .findings
            .iter()
            .filter(|f| f.code == "reuse_would_help")
            .collect();
        assert_eq!(found.len(), 1, "{:?}", report.findings);
        assert!(
            found[0].summary.contains("App heavy spent 80%"),
            "{}",
            found[0].summary
        );
        assert!(found[0].advice.contains("reuse=serial"));
    }

    #[test]
    fn reused_instances_retired_by_traps_are_a_warning() {
        let recorder = Recorder::default();
        for cause in ["guest_trap", "guest_trap", "max_requests", "idle_timeout"] {
            recorder.request(&Finished {
                mode: Some(Mode::Loop),
                status: 500,
                instance: Some((false, Some((cause, 3)))),
                ..done("acme/shop")
            });
        }
        let now = recorder.snapshot(Gauges::default());
        let report = diagnose(
            &Counters::default(),
            &now,
            Duration::from_secs(60),
            &facts(),
        );
        assert_eq!(codes(&report), ["reused_instances_fail"]);
        assert!(
            report.findings[0]
                .summary
                .starts_with("2 reused instance(s) of app acme/shop")
        );
    }

    #[test]
    fn a_guest_preempted_again_and_again_is_hot() {
        let recorder = Recorder::default();
        recorder.request(&Finished {
            mode: Some(Mode::Loop),
            duration: Duration::from_millis(400),
            fuel: 1,
            forced_yields: 200,
            guest_time: Duration::from_millis(400),
            ..done("spinner")
        });
        let now = recorder.snapshot(Gauges::default());
        let report = diagnose(
            &Counters::default(),
            &now,
            Duration::from_secs(10),
            &facts(),
        );
        assert_eq!(codes(&report), ["loop_hot_guest"]);
        assert!(report.findings[0].summary.contains("App spinner"));
    }
}
