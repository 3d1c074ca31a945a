//! Instance reuse by contract (`reuse = serial`): state persists across requests
//! within an instance up to its request budget and never beyond it, never across
//! tenants or versions; a failed request (a trap, a deadline) retires its instance;
//! budgets are spread by jitter; idle instances are reclaimed; memory past the
//! high-water mark retires an instance; a deploy retires the old version's instances
//! without failing a request. Each on the pool (the sync fixture guest) and on the
//! loop (the async one). The fixtures' `/count` answers how many requests their
//! instance has seen.

use std::time::Duration;

use wasmloop_tests::{Running, Server, guests, temp_dir};

const WAIT: Duration = Duration::from_secs(15);
const BOTH: [(&str, &str); 2] = [("pool", guests::SYNC_GUEST), ("loop", guests::ASYNC_GUEST)];

async fn count(server: &Running) -> u64 {
    let reply = server.get("/count").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.text().trim().parse().unwrap()
}

async fn counts(server: &Running, n: usize) -> Vec<u64> {
    let mut seen = Vec::new();
    for _ in 0..n {
        seen.push(count(server).await);
    }
    seen
}

fn serial(guest: &str) -> Server {
    Server::new(guest).arg("--workers=1").arg("--reuse=serial")
}

#[tokio::test]
async fn state_persists_within_an_instance_up_to_its_budget_and_no_further() {
    for (mode, guest) in BOTH {
        let server = serial(guest).arg("--reuse-max-requests=3").start().await;
        assert_eq!(counts(&server, 7).await, [1, 2, 3, 1, 2, 3, 1], "{mode}");
        let app = guest.rsplit('/').next().unwrap().trim_end_matches(".wasm");
        let retired =
            format!(r#"wasmloop_instances_retired_total{{app="{app}",cause="max_requests"}}"#);
        let metrics = server
            .wait_for_metrics(|m| m.get(&retired) == Some(2.0), WAIT)
            .await;
        assert_eq!(metrics.get(&retired), Some(2.0), "{mode}: {}", metrics.0);
        assert_eq!(
            metrics.get(&format!(
                r#"wasmloop_instances_created_total{{app="{app}"}}"#
            )),
            Some(3.0),
            "{mode}: {}",
            metrics.0
        );
        assert_eq!(
            metrics.get(&format!(
                r#"wasmloop_instance_requests_count{{app="{app}"}}"#
            )),
            Some(2.0),
            "{mode}"
        );

        // Without a contract every request gets a fresh sandbox.
        let fresh = Server::new(guest).arg("--workers=1").start().await;
        assert_eq!(counts(&fresh, 3).await, [1, 1, 1], "{mode}");
    }
}

#[tokio::test]
async fn a_trap_or_a_deadline_retires_the_instance() {
    for (mode, guest) in BOTH {
        let server = serial(guest).arg("--timeout=1s").start().await;
        assert_eq!(counts(&server, 2).await, [1, 2], "{mode}");
        assert_eq!(server.get("/trap").await.status, 500, "{mode}");
        assert_eq!(counts(&server, 2).await, [1, 2], "{mode}: after a trap");
        let slow = if mode == "pool" {
            "/sleep?ms=5000"
        } else {
            "/hang"
        };
        assert_eq!(server.get(slow).await.text(), "timeout\n", "{mode}");
        assert_eq!(counts(&server, 1).await, [1], "{mode}: after a deadline");
    }
}

#[tokio::test]
async fn jitter_spreads_retirements_and_metrics_count_them() {
    for (mode, guest) in BOTH {
        let server = serial(guest).arg("--reuse-max-requests=2-6").start().await;
        let seen = counts(&server, 80).await;
        // Each instance's last count is its budget: more than one budget was drawn.
        let budgets: std::collections::BTreeSet<u64> = seen
            .windows(2)
            .filter(|w| w[1] == 1)
            .map(|w| w[0])
            .collect();
        assert!(
            budgets.len() > 1,
            "{mode}: every instance served {budgets:?}"
        );
        assert!(
            budgets.iter().all(|b| (2..=6).contains(b)),
            "{mode}: {budgets:?}"
        );
    }
}

#[tokio::test]
async fn idle_instances_are_reclaimed_after_the_timeout() {
    for (mode, guest) in BOTH {
        let server = serial(guest)
            .arg("--reuse-idle-timeout=300ms")
            .start()
            .await;
        assert_eq!(counts(&server, 2).await, [1, 2], "{mode}");
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
        assert_eq!(
            counts(&server, 1).await,
            [1],
            "{mode}: after the idle timeout"
        );
    }
}

#[tokio::test]
async fn memory_past_the_high_water_mark_retires_the_instance() {
    let capped = serial(guests::ASYNC_GUEST)
        .arg("--reuse-memory-high-water=6M")
        .start()
        .await;
    assert_eq!(counts(&capped, 2).await, [1, 2], "kept below the mark");
    assert_eq!(capped.get("/keep?mb=8").await.text(), "keeping 8 MiB\n");
    assert_eq!(counts(&capped, 1).await, [1], "the grown instance was kept");

    let uncapped = serial(guests::ASYNC_GUEST).start().await;
    assert_eq!(counts(&uncapped, 1).await, [1]);
    assert_eq!(uncapped.get("/keep?mb=8").await.text(), "keeping 8 MiB\n");
    assert_eq!(counts(&uncapped, 1).await, [2]);
}

async fn count_on(server: &Running, host: &str) -> u64 {
    let reply = server.get_host(host, "/count").await;
    assert_eq!(reply.status, 200, "{host}: {}", reply.text());
    reply.text().trim().parse().unwrap()
}

#[tokio::test]
async fn instances_never_cross_tenants_or_versions_and_a_deploy_fails_no_request() {
    let dir = temp_dir("reuse-tenants");
    let server = Server::registry(&dir).arg("--workers=1").start().await;
    let acme = server.create_tenant("acme", "{}").await;
    let other = server.create_tenant("other", "{}").await;
    // The same bytes for both tenants, the contract given through the CLI.
    for (token, host) in [(&acme, "acme.test"), (&other, "other.test")] {
        let out = server.cli(
            token,
            &[
                "deploy",
                guests::ASYNC_GUEST,
                "--app",
                "counter",
                "--route",
                &format!("{host}/"),
                "--reuse",
                "serial",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push((
            count_on(&server, "acme.test").await,
            count_on(&server, "other.test").await,
        ));
    }
    assert_eq!(seen, [(1, 1), (2, 2), (3, 3)]);

    // A new version of acme's app starts from fresh instances; the other tenant's
    // instance is untouched.
    let reply = server
        .deploy(
            &acme,
            "counter",
            guests::ASYNC_GUEST,
            "route=acme.test/&reuse=serial&var=V=2",
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(count_on(&server, "acme.test").await, 1);
    assert_eq!(count_on(&server, "other.test").await, 4);

    // Requests running through a deploy all succeed.
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
    for version in 3..6 {
        let reply = server
            .deploy(
                &acme,
                "counter",
                guests::ASYNC_GUEST,
                &format!("route=acme.test/&reuse=serial&var=V={version}"),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
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
    assert_eq!(
        versions["versions"][0]["settings"]["reuse"]["mode"], "serial",
        "{versions}"
    );
}
