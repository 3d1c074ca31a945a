//! Several nodes sharing one registry on PostgreSQL, end to end: a deploy or a
//! rollback through any node reaches every node within 2 s; a database restart
//! under load fails no request and a deploy after it reaches every node; tokens and
//! tenant isolation hold across nodes; a node started while the database is down
//! waits and says so. Each test starts its own PostgreSQL server (tests/src/pg.rs).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::Method;
use wasmloop_tests::pg::Postgres;
use wasmloop_tests::{Running, Server, guests, temp_dir};

/// How soon every node must serve a change made through one of them.
const PROPAGATION: Duration = Duration::from_secs(2);

/// One cluster at a time: a new component reaching a node includes compiling it
/// there (0.4 s of CPU for the fixture guest, 1.2 s for an SDK guest), and the 2 s
/// bound is for a cluster that shares this machine's two cores with nobody else.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts a node with its own data directory on the shared registry at `url`.
async fn node(name: &str, url: &str) -> Running {
    Server::registry(&temp_dir(name))
        .arg(&format!("--registry={url}"))
        .arg("--registry-recheck=1s")
        .start()
        .await
}

/// Three nodes on one fresh database.
async fn cluster(pg: &Postgres, db: &str) -> [Running; 3] {
    let url = pg.database(db);
    [
        node("node-a", &url).await,
        node("node-b", &url).await,
        node("node-c", &url).await,
    ]
}

/// Waits until `path` on `node` answers 200 with `body`.
async fn until_serves(node: &Running, path: &str, body: &str, within: Duration) {
    let start = Instant::now();
    loop {
        let reply = node.get(path).await;
        if reply.status == 200 && reply.text() == body {
            return;
        }
        assert!(
            start.elapsed() < within,
            "{path} still answers {} {:?} after {within:?}; the node's log:\n{}",
            reply.status,
            reply.text(),
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Deploys the fixture guest as `app` on /config, with VERSION=`version`.
async fn deploy(node: &Running, token: &str, app: &str, version: &str) -> wasmloop_tests::Reply {
    let query = format!("route=/config&var=VERSION={version}");
    node.deploy(token, app, guests::SYNC_GUEST, &query).await
}

/// Waits until every one of `nodes` serves `version`, within [`PROPAGATION`] of
/// now (just after the change was answered); prints how long that took.
async fn all_serve(nodes: &[&Running], version: &str, what: &str) {
    let since = Instant::now();
    for node in nodes {
        let left = PROPAGATION.saturating_sub(since.elapsed());
        until_serves(node, "/config?key=VERSION", version, left).await;
    }
    eprintln!("{what}: served after {:?}", since.elapsed());
}

#[tokio::test]
async fn a_deploy_and_a_rollback_through_any_node_reach_every_node() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let Some(pg) = Postgres::start() else { return };
    let [a, b, c] = cluster(&pg, "propagation").await;
    let token = a.create_tenant("acme", "{}").await;

    let reply = deploy(&a, &token, "site", "one").await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    all_serve(&[&b, &c], "one", "version 1 deployed through A: B and C").await;
    assert_eq!(a.get("/config?key=VERSION").await.text(), "one");
    // B and C fetched the component from the database and compiled it themselves.
    for node in [&b, &c] {
        assert!(node.has_log(&["compiled a component for this node"]));
    }

    // Version 2, new settings for the same component, through B.
    let reply = deploy(&b, &token, "site", "two").await;
    assert_eq!(reply.json()["version"]["number"], 2, "{}", reply.text());
    all_serve(&[&a, &c], "two", "version 2 deployed through B: A and C").await;

    // Roll back through C: A and B follow.
    let reply = c
        .api(
            Method::POST,
            "/v1/apps/site/activate",
            Some(&token),
            "{}",
            "application/json",
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["version"]["number"], 1);
    all_serve(&[&a, &b], "one", "rolled back through C: A and B").await;

    // Deleting through A empties every node.
    let reply = a
        .api(
            Method::DELETE,
            "/v1/apps/site",
            Some(&token),
            "",
            "application/json",
        )
        .await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    let deleted = Instant::now();
    for node in [&b, &c] {
        loop {
            if node.get("/config?key=VERSION").await.status == 404 {
                break;
            }
            assert!(deleted.elapsed() < PROPAGATION, "{}", node.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for node in [&a, &b, &c] {
        assert!(node.host_panics().is_empty(), "{}", node.log());
    }
}

#[tokio::test]
async fn a_database_restart_under_load_fails_no_request_and_later_deploys_reach_every_node() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let Some(pg) = Postgres::start() else { return };
    let nodes = cluster(&pg, "restart").await;
    let token = nodes[0].create_tenant("acme", "{}").await;
    let reply = deploy(&nodes[0], &token, "site", "one").await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let [a, b, c] = &nodes;
    all_serve(&[a, b, c], "one", "version 1 deployed through A").await;

    // Two clients per node for the whole outage.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for node in &nodes {
        for _ in 0..2 {
            let (client, stop, ok, failed) =
                (node.client(), stop.clone(), ok.clone(), failed.clone());
            load.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let reply = client.get("/config?key=VERSION").await;
                    if reply.status == 200 && reply.text() == "one" {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    pg.down();
    // Every node notices, reports it, and keeps serving.
    for node in &nodes {
        wait_until(Duration::from_secs(10), || async {
            node.metric("wasmloop_registry_up").await == Some(0.0)
        })
        .await;
        let health = node.admin_get("/healthz").await;
        assert_eq!(health.status, 503);
        assert!(
            health.text().contains("registry unreachable"),
            "{}",
            health.text()
        );
        // Ready still: it serves what it has.
        assert_eq!(node.admin_get("/readyz").await.status, 200);
        assert_eq!(node.admin_get("/livez").await.status, 200);
    }
    // A change while the database is away is refused, clearly, and changes nothing.
    let reply = deploy(&nodes[1], &token, "site", "two").await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(
        reply.text().contains("registry is unreachable"),
        "{}",
        reply.text()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    pg.up();
    for node in &nodes {
        wait_until(Duration::from_secs(15), || async {
            node.metric("wasmloop_registry_up").await == Some(1.0)
        })
        .await;
        assert_eq!(node.admin_get("/healthz").await.text(), "ok\n");
        assert_eq!(
            node.metric("wasmloop_registry_outages_total").await,
            Some(1.0)
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("during the outage: {ok} requests served, {failed} failed");
    assert_eq!(failed, 0);
    assert!(ok > 100, "{ok}");

    // A deploy after the database came back reaches every node.
    let reply = deploy(&nodes[1], &token, "site", "two").await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    all_serve(&[a, b, c], "two", "deployed after the outage").await;
}

/// Polls `check` every 50 ms until it holds; fails after `within`.
async fn wait_until<F, Fut>(within: Duration, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < within, "not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn tokens_and_tenant_isolation_hold_across_nodes() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let Some(pg) = Postgres::start() else { return };
    let [a, b, c] = cluster(&pg, "isolation").await;
    // Tenants made on A, used on B and C.
    let one = a.create_tenant("one", "{}").await;
    let two = a.create_tenant("two", "{}").await;
    let reply = deploy(&b, &one, "app", "one").await;
    assert_eq!(reply.status, 201, "{}", reply.text());

    // The admin token is the same on every node; tenant tokens work on every node.
    let tenants = c
        .api(
            Method::GET,
            "/v1/tenants",
            Some(wasmloop_tests::ADMIN_TOKEN),
            "",
            "",
        )
        .await;
    assert_eq!(tenants.json()["tenants"].as_array().map(Vec::len), Some(2));
    let apps = c.api(Method::GET, "/v1/apps", Some(&one), "", "").await;
    assert_eq!(apps.json()["apps"][0]["name"], "app", "{}", apps.text());

    // No token, a forged token, a tenant token where the admin token is needed.
    let forged = format!("wlt_1_{}", "0".repeat(64));
    for node in [&a, &b, &c] {
        for token in [None, Some(forged.as_str()), Some("nonsense")] {
            let reply = node.api(Method::GET, "/v1/apps", token, "", "").await;
            assert_eq!(reply.status, 401, "{token:?}");
        }
        let reply = node
            .api(
                Method::POST,
                "/v1/tenants",
                Some(&one),
                r#"{"name":"x"}"#,
                "application/json",
            )
            .await;
        assert_eq!(reply.status, 401);
    }
    // Tenant two cannot see or touch tenant one's app through any node.
    for node in [&a, &b, &c] {
        node.assert_hidden("app", &two).await;
    }
    // Nor take its route, through a node other than the one that deployed it.
    let reply = deploy(&c, &two, "app", "two").await;
    assert_eq!(reply.status, 409, "{}", reply.text());
    all_serve(&[&a, &b, &c], "one", "tenant one's app").await;
    // A deleted tenant's token stops working on every node at once.
    let reply = b
        .api(
            Method::DELETE,
            "/v1/tenants/one",
            Some(wasmloop_tests::ADMIN_TOKEN),
            "",
            "",
        )
        .await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    for node in [&a, &b, &c] {
        let reply = node.api(Method::GET, "/v1/apps", Some(&one), "", "").await;
        assert_eq!(reply.status, 401);
    }
}

#[tokio::test]
async fn a_node_started_while_the_database_is_down_waits_and_says_so() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("late");
    pg.down();
    let launched = Server::registry(&temp_dir("node-late"))
        .arg(&format!("--registry={url}"))
        .launch();
    let waiting = launched.wait_for_log(&["waiting for the registry at"], Duration::from_secs(20));
    let waiting = waiting.expect("a message saying what the node waits for");
    assert!(
        waiting.contains("postgres://wasmloop@127.0.0.1")
            && waiting.contains("not serving until it answers"),
        "{waiting}"
    );
    // Alive, not ready, and the API says why.
    let admin = wasmloop_tests::HttpClient::new(launched.admin());
    assert_eq!(admin.get("/livez").await.status, 200);
    let ready = admin.get("/readyz").await;
    assert_eq!(
        (ready.status.as_u16(), ready.text()),
        (503, "not ready: waiting for the registry\n".to_string())
    );
    let reply = admin.get("/v1/apps").await;
    assert_eq!(reply.status, 503, "{}", reply.text());

    pg.up();
    let node = launched.ready();
    assert_eq!(node.admin_get("/readyz").await.text(), "ready\n");
    let token = node.create_tenant("t", "{}").await;
    let reply = deploy(&node, &token, "site", "late").await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(node.get("/config?key=VERSION").await.text(), "late");
}

#[tokio::test]
async fn concurrent_deploys_of_one_app_through_two_nodes_all_land_in_order() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let Some(pg) = Postgres::start() else { return };
    let [a, b, c] = cluster(&pg, "concurrent").await;
    let token = a.create_tenant("acme", "{}").await;
    let deploys = (0..4).flat_map(|i| {
        [&a, &b].map(|node| {
            let token = token.clone();
            async move {
                let query = format!("route=/config&var=VERSION=v{i}");
                let reply = node
                    .deploy(&token, "site", guests::SYNC_GUEST, &query)
                    .await;
                assert_eq!(reply.status, 201, "{}", reply.text());
                reply.json()["version"]["number"].as_u64().unwrap()
            }
        })
    });
    let mut numbers = futures::future::join_all(deploys).await;
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=8).collect::<Vec<_>>());
    // Every node ends on the same, newest version.
    let versions = c
        .api(Method::GET, "/v1/apps/site/versions", Some(&token), "", "")
        .await;
    let versions = versions.json()["versions"].as_array().cloned().unwrap();
    let active: Vec<u64> = versions
        .iter()
        .filter(|v| v["active"] == true)
        .map(|v| v["number"].as_u64().unwrap())
        .collect();
    assert_eq!(active, [8]);
    let newest = versions[7]["settings"]["vars"]["VERSION"]
        .as_str()
        .unwrap()
        .to_string();
    all_serve(
        &[&a, &b, &c],
        &newest,
        "the newest of eight concurrent deploys",
    )
    .await;
}
