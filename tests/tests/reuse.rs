//! Instance reuse by contract (`reuse = serial` and `concurrent`): state persists across requests
//! within an instance up to its request budget and never beyond it, never across
//! tenants or versions; a failed request (a trap, a deadline) retires its instance;
//! budgets are spread by jitter; idle instances are reclaimed; memory past the
//! high-water mark, or past what the memory budget lets a kept instance hold, retires
//! an instance; a deploy retires the old version's instances without failing a
//! request. Each on the pool (the sync fixture guest) and on the loop (the async one).
//! With `concurrent`, a 0.3 instance serves several requests at once up to its bound;
//! a request that computes makes its instance hot (no new requests go to it) while
//! the neighbours already on it wait for it; a trap or a guest computing past every
//! deadline on its instance ends that instance and no other.
//!
//! The fixtures' `/count` answers `N ID`: the requests their instance has counted and
//! the instance's random id. The next request may reach the server before the last
//! one's instance is back (its response is complete before its run has ended), and
//! then gets another instance: so the checks follow each instance by its id rather
//! than expect one sequence.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use wasmloop_tests::{Running, Server, guests, temp_dir};

const WAIT: Duration = Duration::from_secs(15);
const BOTH: [(&str, &str); 2] = [("pool", guests::SYNC_GUEST), ("loop", guests::ASYNC_GUEST)];

/// One `/count` answer: (count, instance id).
type Seen = (u64, String);

async fn count_at(server: &Running, host: Option<&str>) -> Seen {
    let reply = match host {
        Some(host) => server.get_host(host, "/count").await,
        None => server.get("/count").await,
    };
    assert_eq!(reply.status, 200, "{}", reply.text());
    let text = reply.text();
    let (n, id) = text.trim().split_once(' ').expect("N ID");
    (n.parse().unwrap(), id.to_string())
}

async fn counts(server: &Running, n: usize) -> Vec<Seen> {
    let mut seen = Vec::new();
    for _ in 0..n {
        seen.push(count_at(server, None).await);
    }
    seen
}

/// Each instance's counts in the order they came: every instance must have counted
/// 1, 2, 3, ... with no gap and no repeat (its state was its own and kept), never
/// more than `budget`.
fn by_instance(seen: &[Seen], budget: u64, what: &str) -> BTreeMap<String, Vec<u64>> {
    let mut runs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (n, id) in seen {
        runs.entry(id.clone()).or_default().push(*n);
    }
    for run in runs.values() {
        let expected: Vec<u64> = (1..=run.len() as u64).collect();
        assert_eq!(*run, expected, "{what}: an instance's counts {seen:?}");
        assert!(
            run.len() as u64 <= budget,
            "{what}: past its budget: {seen:?}"
        );
    }
    runs
}

fn serial(guest: &str) -> Server {
    Server::new(guest).arg("--workers=1").arg("--reuse=serial")
}

fn app_of(guest: &str) -> &str {
    guest.rsplit('/').next().unwrap().trim_end_matches(".wasm")
}

/// Waits until the metric `series` reads `value`; returns the scrape.
async fn metric_reaches(
    server: &Running,
    series: &str,
    value: f64,
    what: &str,
) -> wasmloop_tests::Metrics {
    let metrics = server
        .wait_for_metrics(|m| m.get(series) == Some(value), WAIT)
        .await;
    assert_eq!(metrics.get(series), Some(value), "{what}: {}", metrics.0);
    metrics
}

#[tokio::test]
async fn state_persists_within_an_instance_up_to_its_budget_and_no_further() {
    for (mode, guest) in BOTH {
        let server = serial(guest).arg("--reuse-max-requests=3").start().await;
        let seen = counts(&server, 12).await;
        let runs = by_instance(&seen, 3, mode);
        assert!(
            runs.len() < seen.len(),
            "{mode}: no instance was reused: {seen:?}"
        );
        // Instances that reached their budget were retired; the metrics say so.
        let full = runs.values().filter(|r| r.len() == 3).count() as f64;
        assert!(full >= 2.0, "{mode}: {seen:?}");
        let app = app_of(guest);
        let retired =
            format!(r#"wasmloop_instances_retired_total{{app="{app}",cause="max_requests"}}"#);
        let metrics = metric_reaches(&server, &retired, full, mode).await;
        let created = format!(r#"wasmloop_instances_created_total{{app="{app}"}}"#);
        assert_eq!(
            metrics.get(&created),
            Some(runs.len() as f64),
            "{mode}: {}",
            metrics.0
        );
        let served = format!(r#"wasmloop_instance_requests_sum{{app="{app}"}}"#);
        assert_eq!(metrics.get(&served), Some(3.0 * full), "{mode}");

        // Without a contract every request gets a fresh sandbox.
        let fresh = Server::new(guest).arg("--workers=1").start().await;
        let seen = counts(&fresh, 3).await;
        assert!(seen.iter().all(|(n, _)| *n == 1), "{mode}: {seen:?}");
    }
}

#[tokio::test]
async fn a_trap_or_a_deadline_retires_the_instance() {
    for (mode, guest) in BOTH {
        let server = serial(guest).arg("--timeout=1s").start().await;
        let app = app_of(guest);
        let mut seen = counts(&server, 3).await;
        assert_eq!(server.get("/trap").await.status, 500, "{mode}");
        seen.extend(counts(&server, 3).await);
        let slow = if mode == "pool" {
            "/sleep?ms=5000"
        } else {
            "/hang"
        };
        assert_eq!(server.get(slow).await.text(), "timeout\n", "{mode}");
        seen.extend(counts(&server, 3).await);
        // The instances that failed served nothing after; the others kept counting.
        by_instance(&seen, u64::MAX, mode);
        for cause in ["guest_trap", "timeout"] {
            let series =
                format!(r#"wasmloop_instances_retired_total{{app="{app}",cause="{cause}"}}"#);
            metric_reaches(&server, &series, 1.0, mode).await;
        }
    }
}

#[tokio::test]
async fn jitter_spreads_retirements() {
    for (mode, guest) in BOTH {
        let server = serial(guest).arg("--reuse-max-requests=2-6").start().await;
        let seen = counts(&server, 200).await;
        by_instance(&seen, 6, mode);
        // Budgets are drawn per instance: some retired after 2 requests, some after
        // more than 5 (of about 50 instances, each with a 1 in 5 chance of either).
        let app = app_of(guest);
        let metrics = server
            .wait_for_metrics(
                |m| {
                    m.get(&format!(
                        r#"wasmloop_instance_requests_count{{app="{app}"}}"#
                    ))
                    .unwrap_or(0.0)
                        >= 30.0
                },
                WAIT,
            )
            .await;
        let bucket = |le: &str| {
            metrics
                .get(&format!(
                    r#"wasmloop_instance_requests_bucket{{le="{le}",app="{app}"}}"#
                ))
                .unwrap_or(0.0)
        };
        assert!(bucket("2.0") > 0.0, "{mode}: {}", metrics.0);
        assert!(bucket("10.0") > bucket("5.0"), "{mode}: {}", metrics.0);
        assert_eq!(bucket("1.0"), 0.0, "{mode}");
    }
}

#[tokio::test]
async fn idle_instances_are_reclaimed_after_the_timeout() {
    for (mode, guest) in BOTH {
        let server = serial(guest)
            .arg("--reuse-idle-timeout=300ms")
            .start()
            .await;
        let before = counts(&server, 3).await;
        by_instance(&before, u64::MAX, mode);
        // The worker reaps every second; the live-instance gauge shows it.
        let metrics = server
            .wait_for_metrics(
                |m| {
                    m.0.contains(r#"cause="idle_timeout""#)
                        && m.get("wasmloop_instances_live") == Some(0.0)
                },
                WAIT,
            )
            .await;
        assert!(
            metrics.0.contains(r#"cause="idle_timeout""#),
            "{mode}: {}",
            metrics.0
        );
        let (n, id) = count_at(&server, None).await;
        assert_eq!(n, 1, "{mode}");
        assert!(
            before.iter().all(|(_, old)| *old != id),
            "{mode}: an idle instance came back"
        );
    }
}

#[tokio::test]
async fn memory_past_the_high_water_mark_retires_the_instance() {
    for (capped, high_water) in [
        (true, "--reuse-memory-high-water=6M"),
        (false, "--reuse-idle-timeout=30s"),
    ] {
        let server = serial(guests::ASYNC_GUEST).arg(high_water).start().await;
        let seen = counts(&server, 3).await;
        let runs = by_instance(&seen, u64::MAX, "below the mark");
        assert!(runs.len() < 3, "kept below the mark: {seen:?}");
        assert_eq!(server.get("/keep?mb=8").await.text(), "keeping 8 MiB\n");
        let cause =
            r#"wasmloop_instances_retired_total{app="async_guest",cause="memory_high_water"}"#;
        if capped {
            metric_reaches(&server, cause, 1.0, "capped").await;
        } else {
            // The grown instance serves on, and still holds what it kept.
            let mut all = seen.clone();
            all.extend(counts(&server, 3).await);
            by_instance(&all, u64::MAX, "uncapped");
            assert!(
                !server
                    .metrics()
                    .await
                    .0
                    .contains(r#"cause="memory_high_water""#)
            );
        }
    }
}

#[tokio::test]
async fn a_kept_instance_holds_its_memory_of_the_budget_or_is_retired() {
    // Each request counts 16 MiB + 1 MiB while it runs; a kept instance holds what
    // it reached + 1 MiB. 24 MiB fit a small instance kept next to a request, not one
    // that grew by 8 MiB.
    let server = serial(guests::ASYNC_GUEST)
        .arg("--max-memory=16M")
        .arg("--worker-memory-budget=24M")
        .start()
        .await;
    let seen = counts(&server, 3).await;
    assert!(by_instance(&seen, u64::MAX, "small").len() < 3, "{seen:?}");
    assert_eq!(server.get("/keep?mb=8").await.text(), "keeping 8 MiB\n");
    let retired = r#"wasmloop_instances_retired_total{app="async_guest",cause="memory_budget"}"#;
    metric_reaches(&server, retired, 1.0, "grown").await;
}

#[tokio::test]
async fn instances_never_cross_tenants_or_versions_and_a_deploy_fails_no_request() {
    let dir = temp_dir("reuse-tenants");
    let server = Server::registry(&dir).arg("--workers=1").start().await;
    let acme = server.create_tenant("acme", "{}").await;
    let other = server.create_tenant("other", "{}").await;
    // The same bytes for both tenants, the contract given through the CLI.
    for (token, host) in [(&acme, "acme.test"), (&other, "other.test")] {
        let route = format!("{host}/");
        let args = [
            "deploy",
            guests::ASYNC_GUEST,
            "--app",
            "counter",
            "--route",
            &route,
        ];
        let out = server.cli(token, &[&args[..], &["--reuse", "serial"]].concat());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (mut acme_seen, mut other_seen) = (Vec::new(), Vec::new());
    for _ in 0..4 {
        acme_seen.push(count_at(&server, Some("acme.test")).await);
        other_seen.push(count_at(&server, Some("other.test")).await);
    }
    let acme_v1 = by_instance(&acme_seen, u64::MAX, "acme");
    let other_runs = by_instance(&other_seen, u64::MAX, "other");
    assert!(acme_v1.len() < 4 && other_runs.len() < 4, "no reuse");
    assert!(
        acme_v1.keys().all(|id| !other_runs.contains_key(id)),
        "an instance served both tenants"
    );

    // A new version of acme's app starts from fresh instances; the other tenant's
    // instances are untouched.
    let reply = server
        .deploy(
            &acme,
            "counter",
            guests::ASYNC_GUEST,
            "route=acme.test/&reuse=serial&var=V=2",
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let (n, id) = count_at(&server, Some("acme.test")).await;
    assert_eq!(n, 1);
    assert!(
        !acme_v1.contains_key(&id),
        "version 2 got a version 1 instance"
    );
    other_seen.push(count_at(&server, Some("other.test")).await);
    by_instance(&other_seen, u64::MAX, "other, after acme's deploy");

    // Requests running through deploys all succeed.
    let server = std::sync::Arc::new(server);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (server, stop) = (server.clone(), stop.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                statuses.push(server.get_host("acme.test", "/count").await.status.as_u16());
            }
            statuses
        })
    };
    for (version, reuse) in [(3, "concurrent"), (4, "serial"), (5, "concurrent")] {
        let query = format!("route=acme.test/&reuse={reuse}&var=V={version}");
        let reply = server
            .deploy(&acme, "counter", guests::ASYNC_GUEST, &query)
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses = load.await.unwrap();
    assert!(
        !statuses.is_empty() && statuses.iter().all(|s| *s == 200),
        "{statuses:?}"
    );
    let versions = server
        .api(
            http::Method::GET,
            "/v1/apps/counter/versions",
            Some(&acme),
            "",
            "application/json",
        )
        .await;
    let versions: serde_json::Value = serde_json::from_slice(&versions.body).unwrap();
    // Contracts that make no sense are refused and change nothing.
    for (query, says) in [
        (
            "reuse=concurrent&reuse_max_concurrent=0",
            "reuse_max_concurrent must be from 1",
        ),
        ("reuse=always", "none, serial or concurrent"),
        ("reuse=serial&reuse_max_requests=0", "1 <= LOW <= HIGH"),
        ("reuse=serial&reuse_max_requests=9-3", "1 <= LOW <= HIGH"),
        (
            "reuse=serial&reuse_memory_high_water=lots",
            "reuse_memory_high_water",
        ),
    ] {
        let reply = server
            .deploy(
                &acme,
                "counter",
                guests::ASYNC_GUEST,
                &format!("route=acme.test/&{query}"),
            )
            .await;
        assert_eq!(reply.status, 400, "{query}: {}", reply.text());
        assert!(reply.text().contains(says), "{query}: {}", reply.text());
    }
    let after = server
        .api(
            http::Method::GET,
            "/v1/apps/counter/versions",
            Some(&acme),
            "",
            "application/json",
        )
        .await;
    let after: serde_json::Value = serde_json::from_slice(&after.body).unwrap();
    assert_eq!(
        after["versions"].as_array().map(Vec::len),
        Some(5),
        "{after}"
    );
    assert_eq!(
        versions["versions"][0]["settings"]["reuse"]["mode"], "serial",
        "{versions}"
    );
}

#[tokio::test]
async fn instances_kept_by_some_apps_never_take_the_slots_others_need() {
    // The engine has instance slots for the requests a worker may hold
    // (--limit-concurrency + --threads) and, apart, for the instances it keeps. Four
    // apps each burst to the limit; every request of each is served.
    let dir = temp_dir("reuse-slots");
    let server = Server::registry(&dir)
        .arg("--workers=1")
        .arg("--limit-concurrency=8")
        .arg("--threads=1")
        .start()
        .await;
    let token = server
        .create_tenant("acme", r#"{"max_in_flight": 8}"#)
        .await;
    let hosts = ["a.test", "b.test", "c.test", "d.test"];
    for (i, host) in hosts.iter().enumerate() {
        let query = format!("route={host}/&reuse=serial");
        let reply = server
            .deploy(&token, &format!("app{i}"), guests::ASYNC_GUEST, &query)
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text());
    }
    let server = std::sync::Arc::new(server);
    for host in hosts {
        let burst = (0..8).map(|_| {
            let server = server.clone();
            async move {
                let reply = server.get_host(host, "/sleep?ms=200").await;
                (reply.status.as_u16(), reply.text())
            }
        });
        for (status, text) in futures::future::join_all(burst).await {
            assert_eq!(status, 200, "{host}: {text}");
        }
    }
    // The apps keep what they made: more instances than the requests in flight allow.
    let kept =
        |m: &wasmloop_tests::Metrics| m.get("wasmloop_instances_live").is_some_and(|n| n > 9.0);
    let metrics = server.wait_for_metrics(kept, WAIT).await;
    assert!(kept(&metrics), "{}", metrics.0);
}

fn concurrent(max: u32) -> Server {
    Server::new(guests::ASYNC_GUEST)
        .arg("--workers=1")
        .arg("--reuse=concurrent")
        .arg(&format!("--reuse-max-concurrent={max}"))
}

fn parse_seen(reply: &wasmloop_tests::Reply) -> Seen {
    assert_eq!(reply.status, 200, "{}", reply.text());
    let text = reply.text();
    let (n, id) = text.trim().split_once(' ').expect("N ID");
    (n.parse().unwrap(), id.to_string())
}

/// A request's reply and how long it took.
async fn timed(server: &Running, path: &str) -> (wasmloop_tests::Reply, Duration) {
    let start = Instant::now();
    let reply = server.get(path).await;
    (reply, start.elapsed())
}

#[tokio::test]
async fn concurrent_requests_share_an_instance_up_to_their_bound() {
    let server = concurrent(4).start().await;
    // Eight requests that each wait 600 ms, at once: two instances of four, all
    // waiting together (one after another they would take 4.8 s).
    let start = Instant::now();
    let replies = futures::future::join_all((0..8).map(|_| server.get("/count?ms=600"))).await;
    let took = start.elapsed();
    let seen: Vec<Seen> = replies.iter().map(parse_seen).collect();
    let mut runs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (n, id) in &seen {
        runs.entry(id.clone()).or_default().push(*n);
    }
    for run in runs.values_mut() {
        run.sort();
    }
    assert_eq!(
        runs.values().cloned().collect::<Vec<_>>(),
        vec![vec![1, 2, 3, 4], vec![1, 2, 3, 4]],
        "{seen:?}"
    );
    assert!(
        took < Duration::from_millis(3000),
        "{took:?}: they did not run at once"
    );
    // The next request reuses one of them: its state goes on.
    let (n, id) = count_at(&server, None).await;
    assert!(runs.contains_key(&id) && n == 5, "{n} {id}: {runs:?}");
    let app = app_of(guests::ASYNC_GUEST);
    metric_reaches(
        &server,
        &format!(r#"wasmloop_instances_created_total{{app="{app}"}}"#),
        2.0,
        "created",
    )
    .await;
}

#[tokio::test]
async fn a_computing_request_gets_no_neighbours_and_those_it_has_wait_for_it() {
    // Fuel for well over 1.5 s of computing: the default (about a second of CPU) may
    // end the spinner, and with it its neighbour's instance, on a fast machine.
    let server = concurrent(16)
        .arg("--timeout=20s")
        .arg("--fuel=100000000000")
        .start()
        .await;
    // A neighbour that awaits is on the instance when a request on it starts to
    // compute (1.5 s without awaiting); a third request comes while it computes.
    let (early, spinner, late) = tokio::join!(
        timed(&server, "/count?ms=300"),
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            timed(&server, "/count?spin=1500").await
        },
        async {
            tokio::time::sleep(Duration::from_millis(700)).await;
            timed(&server, "/count").await
        },
    );
    let (early_seen, spinner_seen, late_seen) = (
        parse_seen(&early.0),
        parse_seen(&spinner.0),
        parse_seen(&late.0),
    );
    assert_eq!(
        early_seen.1, spinner_seen.1,
        "the computing request joined the awaiting one's instance"
    );
    // The neighbour in the same instance waited for the computing guest ...
    assert!(
        early.1 >= Duration::from_millis(1400),
        "the neighbour in the computing guest's instance answered in {:?}",
        early.1
    );
    // ... the request that came later went to another instance, and did not.
    assert_ne!(
        late_seen.1, spinner_seen.1,
        "a hot instance got a new request"
    );
    assert!(
        late.1 < Duration::from_millis(700),
        "the neighbour in another instance answered in {:?}",
        late.1
    );
    // Once it awaits again, the instance takes requests again.
    let replies = futures::future::join_all((0..3).map(|_| server.get("/count?ms=300"))).await;
    let ids: Vec<String> = replies.iter().map(|r| parse_seen(r).1).collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "three waiting requests spread over instances: {ids:?}"
    );
}

#[tokio::test]
async fn a_trap_or_a_guest_computing_past_its_deadline_ends_its_shared_instance_only() {
    // Fuel for far longer than the deadline: the deadline ends the hog below.
    let server = concurrent(16)
        .arg("--timeout=2s")
        .arg("--fuel=1000000000000")
        .start()
        .await;
    let app = app_of(guests::ASYNC_GUEST);
    let (first, _) = tokio::join!(server.get("/count?ms=200"), server.get("/count?ms=200"));
    let (_, id) = parse_seen(&first);
    // A trap alone on the instance: its own error, and the next request gets a
    // fresh instance.
    let trap = server.get("/trap").await;
    assert_eq!(trap.status, 500, "{}", trap.text());
    assert_eq!(trap.text(), "guest_trap\n");
    let (n, after) = count_at(&server, None).await;
    assert_ne!(after, id, "a request reached the instance that trapped");
    assert_eq!(n, 1);
    metric_reaches(
        &server,
        &format!(r#"wasmloop_instances_retired_total{{app="{app}",cause="guest_trap"}}"#),
        1.0,
        "trap",
    )
    .await;

    // A guest that never awaits, with a neighbour that shares its instance and one
    // that does not: both of the first are answered at their deadlines, the instance
    // goes, the third is served.
    let (neighbour, hog, other) = tokio::join!(
        timed(&server, "/count?ms=100"),
        async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            timed(&server, "/forever").await
        },
        async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            timed(&server, "/count").await
        },
    );
    assert_eq!(hog.0.status, 503, "{}", hog.0.text());
    assert_eq!(hog.0.text(), "timeout\n");
    assert_eq!(neighbour.0.status, 503, "{}", neighbour.0.text());
    assert_eq!(neighbour.0.text(), "timeout\n");
    let (_, other_id) = parse_seen(&other.0);
    assert!(other.1 < Duration::from_millis(1000), "{:?}", other.1);
    // The hog's instance is gone; the one the third request had serves on.
    let (_, next) = count_at(&server, None).await;
    assert_eq!(next, other_id);
    metric_reaches(
        &server,
        &format!(r#"wasmloop_instances_retired_total{{app="{app}",cause="timeout"}}"#),
        1.0,
        "deadline",
    )
    .await;
}

#[tokio::test]
async fn a_shared_instance_out_of_fuel_ends_with_the_requests_on_it() {
    // The store's fuel is shared: each request adds its budget. A guest that never
    // awaits burns its own and its neighbour's; the trap ends the instance, and
    // both requests on it are told so, with the cause.
    let server = concurrent(16)
        .arg("--timeout=20s")
        .arg("--fuel=500000000")
        .start()
        .await;
    let app = app_of(guests::ASYNC_GUEST);
    let (neighbour, hog) = tokio::join!(server.get("/count?ms=100"), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        server.get("/forever").await
    });
    for reply in [&neighbour, &hog] {
        assert_eq!(reply.status, 503, "{}", reply.text());
        assert_eq!(reply.text(), "instance_lost\n");
    }
    metric_reaches(
        &server,
        &format!(r#"wasmloop_instances_retired_total{{app="{app}",cause="cpu_limit"}}"#),
        1.0,
        "fuel",
    )
    .await;
    // Alone on an instance, the hog is told its own cause.
    let alone = server.get("/forever").await;
    assert_eq!(alone.text(), "cpu_limit\n");
    let (n, _) = count_at(&server, None).await;
    assert_eq!(n, 1, "a request reached an instance that ran out of fuel");
}
