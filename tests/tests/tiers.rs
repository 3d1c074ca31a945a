//! Tiered compilation (`--compiler`): serving a component, the server answers on the
//! baseline tier (Winch) and switches to the optimized one (Cranelift) under load
//! without a failed request; each compiler serves alone; a registry deploys with the
//! one it is given. The access log names the compiler of the code behind each request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmloop_tests::{Server, guests, temp_dir};

#[tokio::test]
async fn auto_answers_on_the_baseline_tier_and_switches_under_load_without_a_failure() {
    for guest in [
        guests::ASYNC_GUEST,
        guests::SYNC_GUEST,
        guests::WSTD_GUEST,
        guests::HELLO,
        guests::HELLO_ASYNC,
    ] {
        let server = Arc::new(
            Server::new(guest)
                .arg("--compiler=auto")
                .arg("--workers=1")
                .start()
                .await,
        );
        let stop = Arc::new(AtomicBool::new(false));
        let load = {
            let (server, stop) = (server.clone(), stop.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    statuses.push(server.get("/").await.status.as_u16());
                }
                statuses
            })
        };
        let live = server.wait_for_log(&["optimized tier live"], Duration::from_secs(60));
        assert!(live.is_some(), "{guest}: {}", server.log());
        // A few requests more on the optimized tier.
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        let statuses = load.await.unwrap();
        assert!(statuses.len() > 10, "{guest}: {statuses:?}");
        assert!(statuses.iter().all(|s| *s == 200), "{guest}: {statuses:?}");
        let seen = server.compilers(None);
        // It was ready to serve on Winch before it said it listened, and switched
        // after; once on Cranelift, no request went back. (A small guest's optimized
        // tier is often live before the first request: the baseline tier's own
        // serving is tested with --compiler=winch below.)
        // Compared by the lines' timestamps: the worker's and the master's log lines
        // reach stderr through separate writers, so their order there may differ from
        // the order of events. The worker loads before it reports ready; the master
        // says it listens once the worker is ready.
        let log = server.log();
        let at = |what: &str| -> String {
            let line = log
                .lines()
                .find(|l| l.contains(what))
                .unwrap_or_else(|| panic!("{guest}: no {what:?} in {log}"));
            line.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string()
        };
        let baseline = at("compiler=winch");
        let ready = at("worker ready");
        let optimized = at("optimized tier live");
        assert!(log.contains("\nlistening on"), "{guest}: {log}");
        assert!(baseline <= ready && ready <= optimized, "{guest}: {log}");
        let first_cranelift = seen.iter().position(|c| c == "cranelift");
        assert!(first_cranelift.is_some(), "{guest}: {seen:?}");
        assert!(
            seen[first_cranelift.unwrap()..]
                .iter()
                .all(|c| c == "cranelift"),
            "{guest}: {seen:?}"
        );
        assert!(
            seen[..first_cranelift.unwrap()]
                .iter()
                .all(|c| c == "winch"),
            "{guest}: {seen:?}"
        );
    }
}

#[tokio::test]
async fn each_compiler_serves_alone() {
    for compiler in ["cranelift", "winch"] {
        let server = Server::new(guests::ASYNC_GUEST)
            .arg(&format!("--compiler={compiler}"))
            .start()
            .await;
        for path in ["/", "/sleep?ms=5", "/count"] {
            assert_eq!(server.get(path).await.status, 200, "{compiler} {path}");
        }
        // Preemption and fuel hold on both.
        assert_eq!(server.get("/spin?ms=20").await.status, 200, "{compiler}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let seen = server.compilers(None);
        assert!(
            !seen.is_empty() && seen.iter().all(|c| c == compiler),
            "{seen:?}"
        );
        assert!(
            !server.has_log(&["optimized tier"]),
            "{compiler}: {}",
            server.log()
        );
    }
    let server = Server::new(guests::ASYNC_GUEST)
        .arg("--compiler=winch")
        .arg("--fuel=100000000")
        .start()
        .await;
    assert_eq!(server.get("/forever").await.text(), "cpu_limit\n");
}

#[tokio::test]
async fn a_registry_deploys_with_the_compiler_it_is_given() {
    let dir = temp_dir("tiers-registry");
    let server = Server::registry(&dir).arg("--compiler=winch").start().await;
    let token = server.create_tenant("acme", "{}").await;
    let reply = server
        .deploy(&token, "hello", guests::SYNC_GUEST, "route=acme.test/")
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let reply = server.get_host("acme.test", "/").await;
    assert_eq!(reply.text(), "hello from sync\n");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.compilers(None), ["winch"]);
    // Its artifacts are the Winch engine's, apart from Cranelift's.
    let artifacts: Vec<_> = std::fs::read_dir(dir.join("artifacts"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        artifacts
            .iter()
            .any(|name| name.to_string_lossy().contains("winch")),
        "{artifacts:?}"
    );
}

#[tokio::test]
async fn a_component_the_baseline_cannot_compile_is_served_by_cranelift_alone() {
    // Relaxed SIMD: Cranelift compiles it, Winch does not.
    let server = Server::new(guests::RELAXED_SIMD_GUEST)
        .arg("--compiler=auto")
        .start()
        .await;
    assert_eq!(server.get("/").await.text(), "madd 7\n");
    let warned = server
        .wait_for_log(
            &["the baseline compiler cannot compile"],
            Duration::from_secs(5),
        )
        .unwrap_or_else(|| panic!("{}", server.log()));
    assert!(
        warned.contains("relaxed SIMD"),
        "the reason names the feature: {warned}"
    );
    assert!(server.has_log(&["compiler=cranelift"]), "{}", server.log());
    assert!(
        !server.has_log(&["optimized tier live"]),
        "{}",
        server.log()
    );
    // Asked for Winch alone, the server says why it cannot.
    let (status, output) = Server::new(guests::RELAXED_SIMD_GUEST)
        .arg("--compiler=winch")
        .start_expecting_failure();
    assert!(!status.success());
    assert!(output.contains("relaxed SIMD"), "{output}");
}

#[tokio::test]
async fn a_deploy_answers_on_the_baseline_tier_and_switches_under_load() {
    let dir = temp_dir("tiers-deploy");
    let server = Arc::new(
        Server::registry(&dir)
            .arg("--compiler=auto")
            .arg("--workers=2")
            .start()
            .await,
    );
    let token = server.create_tenant("acme", "{}").await;
    // Built with the Rust SDK and with wstd: each answers on Winch's code at once,
    // then moves to Cranelift's with no failed request.
    for (app, guest, host) in [
        ("sdk", guests::SDK_SYNC, "sdk.test"),
        ("wstd", guests::WSTD_GUEST, "wstd.test"),
    ] {
        let reply = server
            .deploy(&token, app, guest, &format!("route={host}/"))
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        let deployed = reply.json();
        assert_eq!(deployed["compiler"], "winch", "{deployed}");
        assert_eq!(deployed["optimizing"], true, "{deployed}");
        let stop = Arc::new(AtomicBool::new(false));
        let load = server.load_host(host, &stop);
        let live = server.wait_for_log(
            &[
                "optimized tier live",
                &deployed["version"]["sha256"].as_str().unwrap()[..16],
            ],
            Duration::from_secs(60),
        );
        assert!(live.is_some(), "{app}: {}", server.log());
        // Requests after the switch run on Cranelift's code.
        let switched = tokio::time::timeout(Duration::from_secs(10), async {
            while server.compilers(Some(host)).last().map(String::as_str) != Some("cranelift") {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        stop.store(true, Ordering::Relaxed);
        let statuses = load.await.unwrap();
        assert!(
            switched.is_ok(),
            "{app}: {:?}",
            server.compilers(Some(host))
        );
        assert!(
            statuses.len() > 10 && statuses.iter().all(|s| *s != 502 && *s != 503 && *s != 500),
            "{app}: {statuses:?}"
        );
        // The workers loaded Winch's code first (a small guest's optimized tier may
        // be live before the first request: the Python test sees requests on both),
        // and no request went back to it after the switch.
        // Compared by timestamps: the workers' lines and the master's reach stderr
        // through separate writers.
        let log = server.log();
        let sha = deployed["version"]["sha256"].as_str().unwrap();
        let at = |pred: &dyn Fn(&str) -> bool| {
            log.lines()
                .find(|l| pred(l))
                .and_then(|l| l.split_whitespace().next())
                .map(str::to_string)
        };
        let loaded = format!("loaded app app=acme/{app} version=1");
        let baseline = at(&|l| l.contains(&loaded) && l.contains("compiler=winch"));
        let optimized = at(&|l| l.contains("optimized tier live") && l.contains(sha));
        assert!(
            baseline.is_some() && optimized.is_some() && baseline <= optimized,
            "{app}: {log}"
        );
        let seen = server.compilers(Some(host));
        let first = seen.iter().position(|c| c == "cranelift").unwrap();
        assert!(
            seen[..first].iter().all(|c| c == "winch"),
            "{app}: {seen:?}"
        );
        assert!(
            seen[first..].iter().all(|c| c == "cranelift"),
            "{app}: {seen:?}"
        );
    }
}

#[tokio::test]
async fn tiered_artifacts_survive_a_restart_and_a_corrupt_one_is_compiled_again() {
    let dir = temp_dir("tiers-restart");
    let token;
    {
        let server = Server::registry(&dir).arg("--compiler=auto").start().await;
        token = server.create_tenant("acme", "{}").await;
        let reply = server
            .deploy(&token, "hello", guests::SYNC_GUEST, "route=acme.test/")
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        assert!(
            server
                .wait_for_log(&["optimized tier live"], Duration::from_secs(60))
                .is_some(),
            "{}",
            server.log()
        );
    }
    let artifacts = |compiler: &str| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir.join("artifacts"))
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().contains("winch") == (compiler == "winch"))
            .collect()
    };
    assert_eq!(
        (artifacts("winch").len(), artifacts("cranelift").len()),
        (1, 1)
    );

    // Restarted, it serves the optimized artifact from the first request.
    let server = Server::registry(&dir).arg("--compiler=auto").start().await;
    assert_eq!(
        server.get_host("acme.test", "/").await.text(),
        "hello from sync\n"
    );
    assert!(server.has_log(&["compiler=cranelift"]), "{}", server.log());
    assert!(
        !server.has_log(&["compiled a component"]),
        "{}",
        server.log()
    );
    drop(server);

    // Both artifacts corrupted on disk: the baseline one is compiled again before the
    // node serves, the optimized one in the background, and the app serves throughout.
    for path in artifacts("winch").into_iter().chain(artifacts("cranelift")) {
        std::fs::write(path, b"corrupt").unwrap();
    }
    let server = Server::registry(&dir).arg("--compiler=auto").start().await;
    assert_eq!(
        server.get_host("acme.test", "/").await.text(),
        "hello from sync\n"
    );
    assert!(
        server.has_log(&["cached artifact is corrupt"]),
        "{}",
        server.log()
    );
    assert!(
        server
            .wait_for_log(&["optimized tier live"], Duration::from_secs(60))
            .is_some(),
        "{}",
        server.log()
    );
    let reply = server.get_host("acme.test", "/").await;
    assert_eq!(reply.text(), "hello from sync\n");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        server.compilers(None).last().map(String::as_str),
        Some("cranelift")
    );
}

#[tokio::test]
async fn a_deploy_the_baseline_cannot_compile_is_served_by_cranelift_alone() {
    let dir = temp_dir("tiers-deploy-simd");
    let server = Server::registry(&dir).arg("--compiler=auto").start().await;
    let token = server.create_tenant("acme", "{}").await;
    let reply = server
        .deploy(
            &token,
            "simd",
            guests::RELAXED_SIMD_GUEST,
            "route=simd.test/",
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let deployed = reply.json();
    assert_eq!(
        (
            deployed["compiler"].as_str(),
            deployed["optimizing"].as_bool()
        ),
        (Some("cranelift"), Some(false)),
        "{deployed}"
    );
    assert_eq!(server.get_host("simd.test", "/").await.text(), "madd 7\n");
    assert!(
        server.has_log(&["the baseline compiler cannot compile this upload"]),
        "{}",
        server.log()
    );
}

#[tokio::test]
async fn a_deploy_reports_each_step_as_it_happens() {
    let dir = temp_dir("tiers-progress");
    let server = Server::registry(&dir).arg("--compiler=auto").start().await;
    let token = server.create_tenant("acme", "{}").await;
    let admin = server.admin.expect("an admin listener");

    // The API: asked with Accept: application/x-ndjson, a line per step.
    let wasm = std::fs::read(guests::SYNC_GUEST).unwrap();
    let req = http::Request::post(format!(
        "http://{admin}/v1/apps/raw/versions?route=raw.test/"
    ))
    .header("authorization", format!("Bearer {token}"))
    .header("content-type", "application/wasm")
    .header("accept", "application/x-ndjson")
    .body(http_body_util::Full::new(bytes::Bytes::from(wasm)))
    .unwrap();
    let reply = wasmloop_tests::HttpClient::new(admin).request(req).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["content-type"], "application/x-ndjson");
    let steps: Vec<serde_json::Value> = reply
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    let names: Vec<&str> = steps.iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["received", "compiled", "live", "done", "optimized"],
        "{steps:?}"
    );
    assert_eq!(steps[1]["compiler"], "winch");
    assert_eq!(steps[3]["deployed"]["version"]["number"], 1);
    assert_eq!(steps[4]["compiler"], "cranelift");
    // A refused upload ends its steps with the status it would have had.
    let req = http::Request::post(format!("http://{admin}/v1/apps/bad/versions?route=/bad"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/wasm")
        .header("accept", "application/x-ndjson")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"not wasm",
        )))
        .unwrap();
    let reply = wasmloop_tests::HttpClient::new(admin).request(req).await;
    let last: serde_json::Value =
        serde_json::from_str(reply.text().lines().last().unwrap()).unwrap();
    assert_eq!(
        (last["step"].as_str(), last["status"].as_u64()),
        (Some("failed"), Some(400)),
        "{last}"
    );

    // The CLI shows them, then the optimized tier going live.
    let out = server.cli(
        &token,
        &[
            "deploy",
            "--app",
            "shown",
            "--host",
            "shown.test",
            "--route",
            "/",
            guests::SDK_SYNC,
        ],
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    let order = [
        "received",
        "compiled with winch in",
        "version 1 live on 1 workers",
    ];
    let mut at = 0;
    for step in order {
        let found = stderr[at..]
            .find(step)
            .unwrap_or_else(|| panic!("{step}: {stderr}"));
        at += found;
    }
    assert!(stdout.contains("Deployed shown version 1"), "{stdout}");
    assert!(
        stdout.contains("optimized: Cranelift's code serves new requests"),
        "{stdout}"
    );
    assert_eq!(server.get_host("shown.test", "/").await.status, 200);
}

#[tokio::test]
async fn an_upload_no_compiler_can_serve_is_refused_without_a_second_compile() {
    // Only a compiler's own failure sends the upload to the other compiler: a
    // component without a handler is refused by the baseline compile alone.
    let dir = temp_dir("tiers-refused");
    let server = Server::registry(&dir).arg("--compiler=auto").start().await;
    let token = server.create_tenant("acme", "{}").await;
    let empty_component = b"\0asm\x0d\0\x01\0".to_vec();
    let reply = server
        .api(
            http::Method::POST,
            "/v1/apps/empty/versions?route=/empty",
            Some(&token),
            empty_component,
            "application/wasm",
        )
        .await;
    assert_eq!(reply.status, 422, "{}", reply.text());
    assert!(
        reply.text().contains("no wasi:http handler export"),
        "{}",
        reply.text()
    );
    assert!(
        !server.has_log(&["the baseline compiler cannot compile"]),
        "{}",
        server.log()
    );
}
