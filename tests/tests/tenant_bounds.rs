//! What one tenant can take of a node in total: pool threads held past a request's
//! deadline, compile capacity, stored data, memory. Each test plays the hostile tenant
//! (or its guest) and checks that the bound holds and that nothing is left behind.
//!
//! docs/reliability.md lists each case with its figure.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use wasmloop_tests::{Running, Server, guests, temp_dir};

const WAIT: Duration = Duration::from_secs(15);

/// An upstream that reads each request, writes `prefix` (maybe nothing) and then
/// holds the connection open without another byte.
async fn holding_upstream(prefix: &'static [u8]) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            let _ = stream.write_all(prefix).await;
            held.push(stream);
        }
    });
    addr
}

/// A pool server with one thread and a 1 s deadline, which may call out to loopback.
async fn one_pool_thread(upstream: std::net::SocketAddr) -> Running {
    Server::new(guests::SYNC_GUEST)
        .arg("--timeout=1s")
        .arg("--threads=1")
        .arg(&format!("--allow-outbound={upstream}"))
        .arg("--allow-outbound-net=127.0.0.0/8")
        .start()
        .await
}

/// The request ended at its deadline (not far past it), and the only pool thread is
/// free right after: a plain request is served at once, not queued behind a guest
/// still waiting in a host call.
async fn ends_at_deadline_and_frees_the_thread(server: &Running, path: &str, what: &str) {
    let started = Instant::now();
    let reply = server.get(path).await;
    let took = started.elapsed();
    assert_eq!(reply.status, 503, "{what}: {}", reply.text());
    assert_eq!(reply.text(), "timeout\n", "{what}");
    assert!(took < Duration::from_secs(5), "{what}: took {took:?}");
    let reply = server.get("/").await;
    assert_eq!(
        (reply.status.as_u16(), reply.text().as_str()),
        (200, "hello from sync\n"),
        "{what}: the pool thread is still held"
    );
    server
        .released(WAIT)
        .await
        .unwrap_or_else(|m| panic!("{what}: still held after the deadline:\n{m}"));
}

#[tokio::test]
async fn a_blocking_read_of_a_slow_upstream_body_ends_at_the_deadline() {
    // Headers and one byte of a megabyte, then nothing: the guest waits in
    // `input-stream.blocking-read`.
    let upstream = holding_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\nx").await;
    let server = one_pool_thread(upstream).await;
    for _ in 0..2 {
        ends_at_deadline_and_frees_the_thread(
            &server,
            &format!("/fetch?to={upstream}"),
            "slow upstream body",
        )
        .await;
    }
}

#[tokio::test]
async fn a_ten_minute_outbound_timeout_is_cut_at_the_deadline() {
    // The upstream accepts and never answers; the guest asks for 600 s timeouts.
    let upstream = holding_upstream(b"").await;
    let server = one_pool_thread(upstream).await;
    for _ in 0..2 {
        ends_at_deadline_and_frees_the_thread(
            &server,
            &format!("/fetch?to={upstream}&timeout_s=600"),
            "10-minute timeouts",
        )
        .await;
    }
}

#[tokio::test]
async fn a_blocking_read_of_a_slow_client_body_ends_at_the_deadline() {
    // The client promises a kilobyte and sends ten bytes: `/echo` waits in
    // `input-stream.blocking-read` on the request body.
    let server = one_pool_thread(holding_upstream(b"").await).await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    slow.write_all(b"POST /echo HTTP/1.1\r\nHost: test\r\ncontent-length: 1000\r\n\r\n0123456789")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, slow.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 503") || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let reply = server.get("/").await;
    assert_eq!(reply.status, 200, "the pool thread is still held");
    drop(slow);
    server
        .released(WAIT)
        .await
        .unwrap_or_else(|m| panic!("still held after the deadline:\n{m}"));
}

/// Compile children of the master running now (`wasmloop compile`).
fn compile_children(server: &Running) -> usize {
    server
        .worker_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmd| cmd.split(|b| *b == 0).nth(1) == Some(b"compile"))
        })
        .count()
}

fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Waits until `dir` is empty; returns what is left after `WAIT`.
async fn emptied(dir: &std::path::Path) -> Vec<String> {
    let end = Instant::now() + WAIT;
    loop {
        let left = files_in(dir);
        if left.is_empty() || Instant::now() >= end {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn concurrent_deploys_beyond_the_compile_limit_wait_or_are_refused_and_leave_nothing() {
    let dir = temp_dir("bounds-compile-queue");
    let server = Server::registry(&dir)
        .arg("--compile-concurrency=1")
        .arg("--compile-queue=1")
        .start()
        .await;
    let server = std::sync::Arc::new(server);
    let guests = [
        guests::SDK_ASYNC,
        guests::SDK_SYNC,
        guests::JSON_API,
        guests::FETCH_PROXY,
        guests::HELLO_ASYNC,
        guests::WSTD_GUEST,
    ];
    let mut tokens = Vec::new();
    for i in 0..guests.len() {
        tokens.push(server.create_tenant(&format!("t{i}"), "{}").await);
    }
    // Watch the compile children while six tenants deploy at once.
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let peak = {
        let (server, watching) = (server.clone(), watching.clone());
        tokio::task::spawn_blocking(move || {
            let mut peak = 0;
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(compile_children(&server));
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        })
    };
    let deploys = guests
        .iter()
        .zip(&tokens)
        .enumerate()
        .map(|(i, (guest, token))| {
            let server = server.clone();
            let (guest, token) = (guest.to_string(), token.clone());
            async move {
                server
                    .deploy(&token, "app", &guest, &format!("route=/t{i}"))
                    .await
            }
        });
    let replies = futures::future::join_all(deploys).await;
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let peak = peak.await.unwrap();
    let mut created = 0;
    for reply in &replies {
        match reply.status.as_u16() {
            201 => created += 1,
            503 => {
                assert!(reply.headers.contains_key("retry-after"), "{reply:?}");
                assert!(reply.text().contains("--compile-queue"), "{}", reply.text());
            }
            other => panic!("{other}: {}", reply.text()),
        }
    }
    assert!(created >= 1, "none deployed");
    assert!(
        created < guests.len(),
        "all six deployed: the queue held none back"
    );
    assert_eq!(peak, 1, "compile children at once");
    assert_eq!(emptied(&dir.join("tmp")).await, Vec::<String>::new());
    // What was refused is not stored: one component per deploy that succeeded.
    assert_eq!(files_in(&dir.join("components")).len(), created);
    // Refused deploys can try again once the queue is free.
    for (i, (reply, (guest, token))) in replies.iter().zip(guests.iter().zip(&tokens)).enumerate() {
        if reply.status == 503 {
            let again = server
                .deploy(token, "app", guest, &format!("route=/t{i}"))
                .await;
            assert_eq!(again.status, 201, "{}", again.text());
        }
    }
}

#[tokio::test]
async fn the_cli_says_it_waits_for_a_turn_and_tries_again() {
    let dir = temp_dir("bounds-compile-cli");
    let server = Server::registry(&dir)
        .arg("--compile-concurrency=1")
        .arg("--compile-queue=0")
        .start()
        .await;
    let first = server.create_tenant("first", "{}").await;
    let second = server.create_tenant("second", "{}").await;
    let server = std::sync::Arc::new(server);
    let busy = {
        let server = server.clone();
        tokio::spawn(async move {
            server
                .deploy(&first, "app", guests::SDK_ASYNC, "route=/a")
                .await
        })
    };
    // The CLI's deploy comes while the first compiles: it is turned away, says so,
    // and succeeds on a later try.
    while compile_children(&server) == 0 && !busy.is_finished() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cli = {
        let server = server.clone();
        tokio::task::spawn_blocking(move || {
            server.cli(
                &second,
                &["deploy", guests::HELLO, "--app", "b", "--route", "/b"],
            )
        })
    };
    assert_eq!(busy.await.unwrap().status, 201);
    let output = cli.await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("busy compiling other deploys"), "{stderr}");
    assert!(
        stderr.contains("Waiting 2 s for a turn to compile"),
        "{stderr}"
    );
    assert_eq!(server.get("/b").await.status, 200);
}

#[tokio::test]
async fn a_client_that_leaves_mid_compile_leaves_nothing_in_tmp() {
    let dir = temp_dir("bounds-client-gone");
    let server = Server::registry(&dir).start().await;
    let token = server.create_tenant("acme", "{}").await;
    let admin = server.admin.unwrap();
    for round in 0..3 {
        let bytes = std::fs::read(guests::SDK_ASYNC).unwrap();
        let mut stream = TcpStream::connect(admin).await.unwrap();
        let head = format!(
            "POST /v1/apps/app{round}/versions?route=/r{round} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {token}\r\nContent-Type: application/wasm\r\nContent-Length: {}\r\n\r\n",
            bytes.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&bytes).await.unwrap();
        // Gone once its upload is in tmp/ (round 0) or while it compiles.
        let end = Instant::now() + WAIT;
        while (if round == 0 {
            files_in(&dir.join("tmp")).is_empty()
        } else {
            compile_children(&server) == 0
        }) && Instant::now() < end
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        drop(stream);
        assert_eq!(
            emptied(&dir.join("tmp")).await,
            Vec::<String>::new(),
            "round {round}"
        );
    }
    // The server is fine and deploys as before.
    let reply = server
        .deploy(&token, "after", guests::HELLO, "route=/after")
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
}

/// A refusal over a quota: 403 naming the quota and its value.
fn assert_over(reply: &wasmloop_tests::Reply, quota: &str, limit: u64) {
    assert_eq!(reply.status, 403, "{quota}: {}", reply.text());
    let value = reply.json();
    assert_eq!(value["quota"], quota, "{value}");
    assert_eq!(value["limit"], limit, "{value}");
    let message = value["error"].as_str().unwrap();
    assert!(message.contains(&format!("{quota} ({limit})")), "{message}");
}

#[tokio::test]
async fn each_quota_holds_at_its_value_and_refuses_past_it_storing_nothing() {
    let dir = temp_dir("bounds-quotas");
    let stored = std::fs::metadata(guests::HELLO).unwrap().len();
    let server = Server::registry(&dir)
        // Server-wide defaults; the tenant below overrides some of them.
        .arg("--tenant-max-apps=1")
        .arg("--tenant-max-routes=2")
        .arg("--tenant-max-vars-size=100")
        .arg("--tenant-max-settings-size=400")
        .arg(&format!("--tenant-max-stored={}", stored + 10))
        .arg(&format!(
            "--allow-outbound={}",
            (0..12)
                .map(|i| format!("host-{i}.example.com"))
                .collect::<Vec<_>>()
                .join(",")
        ))
        .start()
        .await;
    let token = server.create_tenant("acme", r#"{"max_apps": 2}"#).await;
    let snapshot = || {
        (
            files_in(&dir.join("components")),
            files_in(&dir.join("artifacts")),
        )
    };

    // Routes: two at the quota, three past it.
    let reply = server
        .deploy(&token, "one", guests::HELLO, "route=/a&route=/b")
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let before = snapshot();
    let reply = server
        .deploy(&token, "one", guests::HELLO, "route=/a&route=/b&route=/c")
        .await;
    assert_over(&reply, "max_routes", 2);
    // Variables: 100 bytes (keys and values) at the quota, 101 past it.
    let ninety_nine = "v".repeat(99);
    let reply = server
        .deploy(
            &token,
            "one",
            guests::HELLO,
            &format!("route=/a&var=K={ninety_nine}"),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let reply = server
        .deploy(
            &token,
            "one",
            guests::HELLO,
            &format!("route=/a&var=K={ninety_nine}x"),
        )
        .await;
    assert_over(&reply, "max_vars_bytes", 100);
    // Settings: the same variables under allowed outbound hosts that take more room.
    let hosts = (0..12)
        .map(|i| format!("&allow_outbound=host-{i}.example.com"))
        .collect::<String>();
    let reply = server
        .deploy(
            &token,
            "one",
            guests::HELLO,
            &format!("route=/a&var=K={ninety_nine}{hosts}"),
        )
        .await;
    assert_over(&reply, "max_settings_bytes", 400);
    // Apps: the tenant's override (2) over the server's 1.
    let reply = server
        .deploy(&token, "two", guests::HELLO, "route=/two")
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let reply = server
        .deploy(&token, "three", guests::HELLO, "route=/three")
        .await;
    assert_over(&reply, "max_apps", 2);
    // Stored bytes: HELLO fits (shared by both apps, counted once); another
    // component on top does not, and neither does one larger than all of it.
    let reply = server
        .deploy(&token, "two", guests::HELLO_ASYNC, "route=/two")
        .await;
    assert_over(&reply, "max_stored_bytes", stored + 10);
    let reply = server
        .deploy(&token, "two", guests::SDK_ASYNC, "route=/two")
        .await;
    assert_over(&reply, "max_stored_bytes", stored + 10);
    // Nothing of the refused deploys was stored, and the tenant still serves.
    assert_eq!(snapshot(), before);
    assert_eq!(files_in(&dir.join("tmp")), Vec::<String>::new());
    assert_eq!(server.get("/a").await.status, 200);
    assert_eq!(server.get("/c").await.status, 404);

    // The admin raises a quota without a restart; another tenant keeps the defaults.
    let reply = server
        .api(
            http::Method::PUT,
            "/v1/tenants/acme/limits",
            Some(wasmloop_tests::ADMIN_TOKEN),
            r#"{"max_apps": 3}"#,
            "application/json",
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = server
        .deploy(&token, "three", guests::HELLO, "route=/three")
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let other = server.create_tenant("other", "{}").await;
    assert_eq!(
        server
            .deploy(&other, "x", guests::HELLO, "route=/x")
            .await
            .status,
        201
    );
    assert_over(
        &server.deploy(&other, "y", guests::HELLO, "route=/y").await,
        "max_apps",
        1,
    );
    // Limits of a tenant that does not exist, or with a field that is not a limit,
    // change nothing.
    for (path, body, status) in [
        ("/v1/tenants/nobody/limits", r#"{"max_apps": 5}"#, 404),
        ("/v1/tenants/acme/limits", r#"{"max_aps": 5}"#, 400),
        ("/v1/tenants/acme/limits", r#"{"max_apps": -1}"#, 400),
    ] {
        let reply = server
            .api(
                http::Method::PUT,
                path,
                Some(wasmloop_tests::ADMIN_TOKEN),
                body,
                "application/json",
            )
            .await;
        assert_eq!(reply.status, status, "{path} {body}: {}", reply.text());
    }
    let reply = server
        .deploy(&token, "four", guests::HELLO, "route=/four")
        .await;
    assert_over(&reply, "max_apps", 3);
    // A tenant cannot change its own limits.
    let reply = server
        .api(
            http::Method::PUT,
            "/v1/tenants/acme/limits",
            Some(&token),
            "{}",
            "application/json",
        )
        .await;
    assert_eq!(reply.status, 401, "{}", reply.text());
}

/// Versions of `app` as the API lists them: (number, active).
async fn versions(server: &Running, token: &str, app: &str) -> Vec<(u64, bool)> {
    let reply = server
        .api(
            http::Method::GET,
            &format!("/v1/apps/{app}/versions"),
            Some(token),
            "",
            "application/json",
        )
        .await;
    let value = reply.json();
    value["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["number"].as_u64().unwrap(),
                v["active"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn sha_of(path: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// Whether the data directory holds the component `guest` (and an artifact of it).
fn holds(dir: &std::path::Path, guest: &str) -> (bool, bool) {
    let sha = sha_of(guest);
    (
        files_in(&dir.join("components")).contains(&format!("{sha}.wasm")),
        files_in(&dir.join("artifacts"))
            .iter()
            .any(|n| n.starts_with(&sha)),
    )
}

#[tokio::test]
async fn pruned_and_deleted_versions_leave_no_files_and_the_active_one_survives_a_restart() {
    let dir = temp_dir("bounds-gc");
    let mut server = Server::registry(&dir)
        .arg("--tenant-max-versions=2")
        .start()
        .await;
    let token = server.create_tenant("acme", "{}").await;
    for guest in [guests::SYNC_GUEST, guests::ASYNC_GUEST, guests::HELLO] {
        let reply = server
            .deploy(&token, "shop", guest, "route=shop.test/")
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text());
    }
    // v1 is pruned, v2 (the rollback target) and v3 (active) kept.
    assert_eq!(
        versions(&server, &token, "shop").await,
        vec![(2, false), (3, true)]
    );
    assert_eq!(
        holds(&dir, guests::SYNC_GUEST),
        (false, false),
        "v1's files"
    );
    assert_eq!(holds(&dir, guests::ASYNC_GUEST), (true, true), "v2's files");
    // The rollback target is still there to roll back to.
    let reply = server
        .api(
            http::Method::POST,
            "/v1/apps/shop/activate",
            Some(&token),
            "",
            "application/json",
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        server.get_host("shop.test", "/").await.text(),
        "hello from async\n"
    );

    // Another app shares HELLO's bytes; deleting `shop` keeps them for it.
    let reply = server
        .deploy(&token, "kept", guests::HELLO, "route=/kept")
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let reply = server
        .api(
            http::Method::DELETE,
            "/v1/apps/shop",
            Some(&token),
            "",
            "application/json",
        )
        .await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    assert_eq!(
        holds(&dir, guests::ASYNC_GUEST),
        (false, false),
        "shop's files"
    );
    assert_eq!(holds(&dir, guests::HELLO), (true, true), "kept's files");
    assert_eq!(files_in(&dir.join("components")).len(), 1);

    // After a restart the app still served is served.
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(15)).is_some());
    let server = Server::registry(&dir).start().await;
    assert_eq!(server.get("/kept").await.status, 200);
    assert_eq!(server.get_host("shop.test", "/").await.status, 404);
}

/// The worker's resident memory, sampled until `stop`; returns the peak.
fn watch_rss(
    server: std::sync::Arc<Running>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::task::spawn_blocking(move || {
        let mut peak = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            peak = peak.max(server.rss_bytes());
            std::thread::sleep(Duration::from_millis(10));
        }
        peak
    })
}

#[tokio::test]
async fn a_tenant_at_its_memory_budget_cannot_fail_another_or_outgrow_the_worker() {
    const MIB: u64 = 1 << 20;
    let dir = temp_dir("bounds-memory");
    let server = Server::registry(&dir)
        .arg("--workers=1")
        .arg("--worker-memory-budget=600M")
        .start()
        .await;
    let hog = server.create_tenant("hog", "{}").await;
    let calm = server.create_tenant("calm", "{}").await;
    let reply = server
        .deploy(
            &hog,
            "hog",
            guests::ASYNC_GUEST,
            "route=hog.test/&max_memory=64M",
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let reply = server
        .deploy(
            &calm,
            "calm",
            guests::HELLO_ASYNC,
            "route=/calm&max_memory=16M",
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let baseline = server.rss_bytes();
    let server = std::sync::Arc::new(server);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let peak = watch_rss(server.clone(), stop.clone());

    // Thirty requests that each fill 48 MiB and hold it for two seconds: without a
    // budget, 1.4 GiB. The tenant's share is half of 600 MiB: four at 65 MiB each.
    let hogs: Vec<_> = (0..30)
        .map(|_| {
            let client = server.client().fresh_connections();
            let req = http::Request::get(format!("http://{}/hold?mb=48&ms=2000", client.addr()))
                .header("host", "hog.test")
                .body(Default::default())
                .unwrap();
            tokio::spawn(async move { client.request(req).await })
        })
        .collect();
    let mut calm_replies = Vec::new();
    let end = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < end {
        calm_replies.push(server.get("/calm").await);
    }
    let mut by_answer = std::collections::BTreeMap::<String, usize>::new();
    for reply in futures::future::join_all(hogs).await {
        let reply = reply.unwrap();
        *by_answer
            .entry(format!("{} {}", reply.status.as_u16(), reply.text().trim()))
            .or_default() += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = peak.await.unwrap();
    eprintln!(
        "hog: {by_answer:?}; worker RSS {} MiB before, {} MiB at the peak",
        baseline / MIB,
        peak / MIB
    );

    assert_eq!(by_answer.get("200 held 48 MiB"), Some(&4), "{by_answer:?}");
    assert_eq!(by_answer.get("503 overloaded"), Some(&26), "{by_answer:?}");
    assert!(calm_replies.len() > 10, "{}", calm_replies.len());
    for reply in &calm_replies {
        assert_eq!(reply.status, 200, "the calm tenant got {}", reply.text());
    }
    assert!(peak < 600 * MIB, "worker RSS peaked at {} MiB", peak / MIB);
    let metrics = server
        .wait_for_metrics(
            |m| m.get(r#"wasmloop_requests_rejected_total{app="hog",reason="tenant_memory_budget",tenant="hog"}"#) == Some(26.0),
            WAIT,
        )
        .await;
    assert_eq!(
        metrics.get(r#"wasmloop_requests_rejected_total{app="hog",reason="tenant_memory_budget",tenant="hog"}"#),
        Some(26.0),
        "{}",
        metrics.0
    );
}

#[tokio::test]
async fn tenant_limits_hold_per_server_and_a_deleted_app_leaves_no_series() {
    let dir = temp_dir("bounds-per-server");
    let server = Server::registry(&dir).arg("--workers=2").start().await;
    let token = server
        .create_tenant("acme", r#"{"max_in_flight": 4}"#)
        .await;
    let reply = server
        .deploy(&token, "slow", guests::ASYNC_GUEST, "route=/")
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    server.wait_for_workers(2, WAIT);
    // Each of the two workers takes its share, two: at most four in flight in all,
    // whichever worker each connection lands on.
    let sleepers: Vec<_> = (0..12)
        .map(|_| {
            let client = server.client().fresh_connections();
            tokio::spawn(async move { client.get("/sleep?ms=1500").await.status.as_u16() })
        })
        .collect();
    let mut ok = 0;
    for status in futures::future::join_all(sleepers).await {
        match status.unwrap() {
            200 => ok += 1,
            503 => {}
            other => panic!("{other}"),
        }
    }
    assert!((1..=4).contains(&ok), "{ok} in flight at once");

    let series = r#"wasmloop_requests_total{app="slow",mode="loop",status="200",tenant="acme"}"#;
    let metrics = server
        .wait_for_metrics(|m| m.0.contains(series), WAIT)
        .await;
    assert!(metrics.0.contains(series), "{}", metrics.0);
    let reply = server
        .api(
            http::Method::DELETE,
            "/v1/apps/slow",
            Some(&token),
            "",
            "application/json",
        )
        .await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    let gone = |m: &wasmloop_tests::Metrics| !m.0.contains(r#"app="slow""#);
    let metrics = server.wait_for_metrics(gone, WAIT).await;
    assert!(gone(&metrics), "{}", metrics.0);
}

/// Component hashes whose bytes a shared registry at `url` keeps.
fn stored_components(url: &str) -> Vec<String> {
    let url = url.to_string();
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let mut shas: Vec<String> = client
            .query("SELECT sha256 FROM components", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        shas.sort();
        shas
    })
    .join()
    .unwrap()
}

#[tokio::test]
async fn quotas_and_collection_hold_across_nodes_of_a_shared_registry() {
    let Some(pg) = wasmloop_tests::pg::Postgres::start() else {
        return;
    };
    let url = pg.database("bounds");
    let (dir_a, dir_b) = (temp_dir("bounds-node-a"), temp_dir("bounds-node-b"));
    let node = |dir: &std::path::Path| {
        Server::registry(dir)
            .arg(&format!("--registry={url}"))
            .arg("--registry-recheck=1s")
            .start()
    };
    let a = node(&dir_a).await;
    let b = node(&dir_b).await;
    let token = a
        .create_tenant("acme", r#"{"max_versions": 2, "max_apps": 1}"#)
        .await;
    let served_by_b = |body: &'static str| {
        let b = &b;
        async move {
            let end = Instant::now() + WAIT;
            while b.get_host("shop.test", "/").await.text() != body {
                assert!(Instant::now() < end, "node b never served {body:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let reply = a
        .deploy(&token, "shop", guests::SYNC_GUEST, "route=shop.test/")
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    served_by_b("hello from sync\n").await;
    assert_eq!(holds(&dir_b, guests::SYNC_GUEST), (true, true));
    for guest in [guests::ASYNC_GUEST, guests::HELLO] {
        let reply = a.deploy(&token, "shop", guest, "route=shop.test/").await;
        assert_eq!(reply.status, 201, "{}", reply.text());
    }
    served_by_b("Hello, world!\n").await;
    // v1 is pruned: its bytes leave the registry, its files both nodes.
    let v1 = sha_of(guests::SYNC_GUEST);
    assert!(!stored_components(&url).contains(&v1));
    assert_eq!(holds(&dir_a, guests::SYNC_GUEST), (false, false), "node a");
    let end = Instant::now() + WAIT;
    while holds(&dir_b, guests::SYNC_GUEST) != (false, false) {
        assert!(Instant::now() < end, "node b kept v1's files");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A quota holds whichever node is asked.
    let reply = b
        .deploy(&token, "second", guests::HELLO, "route=/second")
        .await;
    assert_over(&reply, "max_apps", 1);
    assert_eq!(stored_components(&url).len(), 2);
}
