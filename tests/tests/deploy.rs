//! Deploys end to end: tenants, tokens, versions, rollback, hot swap under load,
//! restart, refused uploads, tenant isolation and limits, through raw HTTP and the
//! CLI, against the real binary serving a data directory.

use std::time::{Duration, Instant};

use http::Method;
use wasmloop_tests::{ADMIN_TOKEN, Server, guests, temp_dir};

#[tokio::test]
async fn deploy_roll_forward_and_back_through_raw_http() {
    let dir = temp_dir("raw-http");
    let server = Server::registry(&dir).start().await;
    assert_eq!(server.get("/config/VERSION").await.status, 404);
    let token = server.create_tenant("acme", "{}").await;

    let reply = server
        .deploy(
            &token,
            "site",
            guests::SDK_SYNC,
            "route=/config&var=VERSION=one",
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let deployed = reply.json();
    assert_eq!(deployed["version"]["number"], 1);
    assert_eq!(deployed["workers_updated"], true);
    assert_eq!(server.get("/config/VERSION").await.text(), "one");

    let reply = server
        .deploy(
            &token,
            "site",
            guests::SDK_ASYNC,
            "route=/config&var=VERSION=two",
        )
        .await;
    assert_eq!(reply.json()["version"]["number"], 2, "{}", reply.text());
    assert_eq!(server.get("/config/VERSION").await.text(), "two");
    assert!(server.has_log(&["app=\"acme/site\"", "version=2", "mode=loop"]));

    let versions = server
        .api(
            Method::GET,
            "/v1/apps/site/versions",
            Some(&token),
            "",
            "application/json",
        )
        .await;
    let versions = versions.json()["versions"].clone();
    let listed: Vec<(u64, bool, String)> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["number"].as_u64().unwrap(),
                v["active"].as_bool().unwrap(),
                v["mode"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [(1, false, "pool".into()), (2, true, "loop".into())]
    );

    // Roll back: without a version, the one before the active one.
    let reply = server
        .api(
            Method::POST,
            "/v1/apps/site/activate",
            Some(&token),
            "",
            "application/json",
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(server.get("/config/VERSION").await.text(), "one");
    let reply = server
        .api(
            Method::POST,
            "/v1/apps/site/activate",
            Some(&token),
            r#"{"version": 2}"#,
            "application/json",
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(server.get("/config/VERSION").await.text(), "two");

    let apps = server
        .api(
            Method::GET,
            "/v1/apps",
            Some(&token),
            "",
            "application/json",
        )
        .await;
    assert_eq!(apps.json()["apps"][0]["active_version"], 2);
    let openapi = server
        .api(Method::GET, "/v1/openapi.json", None, "", "")
        .await;
    assert_eq!(openapi.json()["openapi"], "3.0.3");

    let reply = server
        .api(
            Method::DELETE,
            "/v1/apps/site",
            Some(&token),
            "",
            "application/json",
        )
        .await;
    assert_eq!(reply.status, 204);
    assert_eq!(server.get("/config/VERSION").await.status, 404);
}

#[tokio::test]
async fn the_cli_deploys_lists_rolls_back_and_deletes() {
    let dir = temp_dir("cli");
    let server = Server::registry(&dir).start().await;
    let out = server.cli(ADMIN_TOKEN, &["tenant", "create", "cli-co"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let token = stdout.lines().last().unwrap().trim().to_string();
    assert!(token.starts_with("wlt_"), "{stdout}");

    let deploy = |var: &str| {
        server.cli(
            &token,
            &[
                "deploy",
                "--app",
                "cfg",
                "--route",
                "/config",
                "--var",
                var,
                guests::SDK_SYNC,
            ],
        )
    };
    for var in ["VERSION=first", "VERSION=second"] {
        let out = deploy(var);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("Deployed cfg version") && stdout.contains("/config"),
            "{stdout}"
        );
        let progress = String::from_utf8_lossy(&out.stderr);
        assert!(
            progress.contains("Uploading") && progress.contains("compiling"),
            "{progress}"
        );
    }
    assert_eq!(server.get("/config/VERSION").await.text(), "second");

    let out = server.cli(&token, &["apps"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("cfg") && l.contains(" 2 ")),
        "{listing}"
    );
    let out = server.cli(&token, &["versions", "cfg"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listing.lines().count(), 3, "{listing}");
    assert!(
        listing
            .lines()
            .any(|l| l.trim_start().starts_with("2") && l.contains('*')),
        "{listing}"
    );

    let out = server.cli(&token, &["rollback", "cfg"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(server.get("/config/VERSION").await.text(), "first");

    // A refused deploy says why and exits non-zero.
    let out = server.cli(&token, &["deploy", "--app", "bad", guests::TARGET_DIR]);
    assert!(!out.status.success());
    let out = server.cli(
        &token,
        &["deploy", "--app", "bad", "--route", "/bad", "Cargo.toml"],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("400") && stderr.contains("not a WebAssembly file"),
        "{stderr}"
    );

    let out = server.cli(&token, &["delete", "cfg"]);
    assert!(out.status.success());
    assert_eq!(server.get("/config/VERSION").await.status, 404);
    let out = server.cli("wlt_1_nope", &["apps"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

/// What a person at a terminal meets: a bare `host:port` for the server, a 401 that
/// names the token the call needs, aligned tables with times and human sizes, and the
/// per-app limits as deploy flags.
#[tokio::test]
async fn the_cli_speaks_plainly() {
    let dir = temp_dir("cli-plain");
    let server = Server::registry(&dir).start().await;
    let admin = server.admin.expect("an admin listener");
    let cli = |token: Option<&str>, args: &[&str]| {
        let mut command = std::process::Command::new(wasmloop_tests::binary());
        command
            .args(args)
            .arg(format!("--server={admin}"))
            .env_remove("WASMLOOP_TOKEN")
            .env_remove("WASMLOOP_SERVER")
            .env("WASMLOOP_CLI_CONFIG", "/dev/null");
        if let Some(token) = token {
            command.arg(format!("--token={token}"));
        }
        let out = command.output().expect("the CLI runs");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    let (ok, stdout, stderr) = cli(Some(ADMIN_TOKEN), &["tenant", "create", "plain"]);
    assert!(
        ok,
        "host:port without a scheme reaches the server: {stderr}"
    );
    let token = stdout.lines().last().unwrap().trim().to_string();

    // Each 401 says which token the call needs and what was wrong with the one sent.
    let (ok, _, stderr) = cli(None, &["apps"]);
    assert!(
        !ok && stderr.contains("401") && stderr.contains("needs a tenant token"),
        "{stderr}"
    );
    let (ok, _, stderr) = cli(Some(ADMIN_TOKEN), &["apps"]);
    assert!(
        !ok && stderr.contains("the admin token was sent"),
        "{stderr}"
    );
    let (ok, _, stderr) = cli(Some("wlt_9_nope"), &["apps"]);
    assert!(!ok && stderr.contains("no tenant's"), "{stderr}");
    let (ok, _, stderr) = cli(Some(&token), &["tenant", "list"]);
    assert!(
        !ok && stderr.contains("needs the admin token") && stderr.contains("is not it"),
        "{stderr}"
    );
    let (ok, _, stderr) = cli(None, &["host", "list"]);
    assert!(!ok && stderr.contains("needs the admin token"), "{stderr}");
    // A server address that is no address is named before anything is sent.
    let out = std::process::Command::new(wasmloop_tests::binary())
        .args(["apps", "--server=ftp://x:1"])
        .env("WASMLOOP_CLI_CONFIG", "/dev/null")
        .output()
        .expect("the CLI runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("http or https"),
        "{stderr}"
    );

    // The per-app limits are flags of deploy, and reach the version's settings.
    let (ok, stdout, stderr) = cli(
        Some(&token),
        &[
            "deploy",
            "--app",
            "limited",
            "--fuel",
            "123456789",
            "--max-memory",
            "32M",
            "--timeout",
            "1500ms",
            "--max-in-flight",
            "7",
            guests::SDK_SYNC,
        ],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("Deployed limited version 1"), "{stdout}");
    assert!(
        stderr.contains(" KiB)") || stderr.contains(" MiB)"),
        "a human size: {stderr}"
    );
    let versions = server
        .admin_get_with("/v1/apps/limited/versions", Some(&token))
        .await;
    let settings = &versions.json()["versions"][0]["settings"];
    assert_eq!(settings["fuel"], 123_456_789, "{settings}");
    assert_eq!(settings["max_memory"], 32 << 20, "{settings}");
    assert_eq!(settings["timeout_ms"], 1500, "{settings}");
    assert_eq!(settings["max_in_flight"], 7, "{settings}");
    let (ok, _, stderr) = cli(
        Some(&token),
        &["deploy", "--manifest", "wasmloop.toml", "--fuel", "1"],
    );
    assert!(
        !ok && stderr.contains("--fuel does not go with --manifest"),
        "{stderr}"
    );
    let (ok, _, _) = cli(
        Some(&token),
        &["deploy", "--app", "second-app", guests::SDK_SYNC],
    );
    assert!(ok);

    // Tables: every column starts where its heading does, times are UTC, sizes human.
    for args in [&["apps"][..], &["versions", "limited"][..]] {
        let (ok, stdout, stderr) = cli(Some(&token), args);
        assert!(ok, "{stderr}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert!(lines.len() >= 2, "{stdout}");
        let created = lines[0].find("CREATED").expect("a CREATED column");
        for line in &lines[1..] {
            let when = &line[created..created + 19];
            assert!(
                when.starts_with("20")
                    && when.as_bytes()[10] == b' '
                    && when.ends_with(char::is_numeric),
                "`{when}` is not a time in its column:\n{stdout}"
            );
        }
    }
    let (_, stdout, _) = cli(Some(&token), &["versions", "limited"]);
    assert!(
        stdout.contains(" KiB") || stdout.contains(" MiB"),
        "{stdout}"
    );
    let (_, stdout, _) = cli(Some(&token), &["apps"]);
    let rows: Vec<&str> = stdout.lines().collect();
    let routes = rows[0].find("ROUTES").unwrap();
    assert!(rows[1][routes..].starts_with("/limited"), "{stdout}");
    assert!(rows[2][routes..].starts_with("/second-app"), "{stdout}");
}

#[tokio::test]
async fn twenty_deploys_under_load_fail_no_request() {
    let dir = temp_dir("hot-swap");
    // Pool threads at the loop's priority. Once, in a whole-suite run, a pool version
    // here was refused for 90 ms with 503 `overloaded` (the tenant's pool share full
    // behind 4 sequential clients: runs that had answered but not ended), which is
    // admission, not a deploy. At the default nice 19 the pool threads get next to no
    // CPU while the other tests keep both cores busy, and a run ends only when its
    // thread runs again; this test is about swaps, not that priority.
    let server = Server::registry(&dir)
        .arg("--workers=2")
        .arg("--pool-nice=0")
        .start()
        .await;
    let token = server.create_tenant("busy", "{}").await;
    let reply = server
        .deploy(
            &token,
            "live",
            guests::SDK_ASYNC,
            "route=/config&var=VERSION=v0",
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (client, stop) = (server.client(), stop.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let reply = client.get("/config/VERSION").await;
                    seen.push((reply.status.as_u16(), reply.text()));
                }
                seen
            })
        })
        .collect();
    for n in 1..=20 {
        // Alternate the styles, so each swap also moves the app between pool and loop.
        let guest = if n % 2 == 0 {
            guests::SDK_ASYNC
        } else {
            guests::SDK_SYNC
        };
        let reply = server
            .deploy(
                &token,
                "live",
                guest,
                &format!("route=/config&var=VERSION=v{n}"),
            )
            .await;
        assert_eq!(reply.status, 201, "deploy {n}: {}", reply.text());
        assert_eq!(reply.json()["workers_updated"], true, "deploy {n}");
        assert_eq!(server.get("/config/VERSION").await.text(), format!("v{n}"));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for client in clients {
        for (status, body) in client.await.unwrap() {
            total += 1;
            if status != 200 {
                // Every request that did not succeed, and every warning or error.
                let refused: Vec<_> = server
                    .log()
                    .lines()
                    .filter(|l| {
                        (l.contains("wasmloop::access") && !l.contains("status=200"))
                            || l.contains(" WARN ")
                            || l.contains(" ERROR ")
                    })
                    .map(str::to_string)
                    .collect();
                panic!("{status} {body}: {refused:#?}");
            }
            let n: u32 = body
                .strip_prefix('v')
                .and_then(|n| n.parse().ok())
                .unwrap_or(99);
            assert!(n <= 20, "a response not wholly from one version: {body:?}");
        }
    }
    assert!(total > 40, "only {total} requests ran during the deploys");
}

#[tokio::test]
async fn what_was_deployed_is_served_after_a_restart() {
    let dir = temp_dir("restart");
    let mut server = Server::registry(&dir).start().await;
    let token = server.create_tenant("durable", "{}").await;
    let reply = server
        .deploy(
            &token,
            "keep",
            guests::SDK_SYNC,
            "route=/config&var=VERSION=kept",
        )
        .await;
    assert_eq!(reply.status, 201);
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(15)).is_some());

    let server = Server::registry(&dir).start().await;
    assert_eq!(server.get("/config/VERSION").await.text(), "kept");
    // The token still works, and the versions are still there.
    let versions = server
        .api(
            Method::GET,
            "/v1/apps/keep/versions",
            Some(&token),
            "",
            "application/json",
        )
        .await;
    assert_eq!(
        versions.json()["versions"].as_array().map(Vec::len),
        Some(1)
    );
    // Workers loaded the cached artifact rather than compiling again.
    assert!(
        !server.log().contains("compiling the component instead"),
        "{}",
        server.log()
    );
}

#[tokio::test]
async fn tokens_are_checked_and_tenants_cannot_touch_each_other() {
    let dir = temp_dir("auth");
    let server = Server::registry(&dir).start().await;
    let a = server.create_tenant("a", "{}").await;
    let b = server.create_tenant("b", "{}").await;
    let reply = server
        .deploy(&b, "bee", guests::SDK_SYNC, "route=/config&var=VERSION=b1")
        .await;
    assert_eq!(reply.status, 201);

    // No token, a bad token, a tenant token where the admin token is needed.
    let wasm = std::fs::read(guests::SDK_SYNC).unwrap();
    for token in [None, Some("wlt_2_0000"), Some("nonsense")] {
        let reply = server
            .api(
                Method::POST,
                "/v1/apps/bee/versions?route=/config",
                token,
                wasm.clone(),
                "application/wasm",
            )
            .await;
        assert_eq!(reply.status, 401, "{token:?}");
    }
    let reply = server
        .api(
            Method::POST,
            "/v1/tenants",
            Some(&a),
            r#"{"name":"c"}"#,
            "application/json",
        )
        .await;
    assert_eq!(reply.status, 401);
    // A's token on B's app: as if it did not exist.
    server.assert_hidden("bee", &a).await;
    // A cannot take B's route, even with an app of the same name.
    let reply = server
        .deploy(&a, "bee", guests::SDK_SYNC, "route=/config")
        .await;
    assert_eq!(reply.status, 409, "{}", reply.text());
    // B's data is unchanged.
    let versions = server
        .api(
            Method::GET,
            "/v1/apps/bee/versions",
            Some(&b),
            "",
            "application/json",
        )
        .await;
    assert_eq!(
        versions.json()["versions"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(server.get("/config/VERSION").await.text(), "b1");
    let apps = server.api(Method::GET, "/v1/apps", Some(&a), "", "").await;
    assert_eq!(apps.json()["apps"], serde_json::json!([]));
}

#[tokio::test]
async fn bad_uploads_are_refused_with_the_reason_and_leave_nothing() {
    let dir = temp_dir("bad-uploads");
    let server = Server::registry(&dir).arg("--max-upload=1M").start().await;
    let token = server.create_tenant("t", "{}").await;
    let good = std::fs::read(guests::SDK_SYNC).unwrap();
    let empty_component = b"\0asm\x0d\0\x01\0".to_vec();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "random bytes",
            (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect(),
            400,
            "not a WebAssembly file",
        ),
        (
            "a core module",
            b"\0asm\x01\0\0\0".to_vec(),
            400,
            "core WebAssembly module",
        ),
        (
            "a truncated component",
            good[..good.len() / 2].to_vec(),
            400,
            "truncated or corrupt",
        ),
        (
            "a component without a handler",
            empty_component,
            422,
            "no wasi:http handler export",
        ),
    ];
    for (what, bytes, status, message) in cases {
        let reply = server
            .api(
                Method::POST,
                "/v1/apps/x/versions?route=/x",
                Some(&token),
                bytes,
                "application/wasm",
            )
            .await;
        assert_eq!(reply.status, status, "{what}: {}", reply.text());
        assert!(reply.text().contains(message), "{what}: {}", reply.text());
    }
    // Oversized: refused on its Content-Length, before the body is sent (a client
    // still writing it would see the connection close under it).
    let admin = server.admin.unwrap();
    let head = format!(
        "POST /v1/apps/x/versions?route=/x HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {token}\r\nContent-Type: application/wasm\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        2 << 20
    );
    let answer = raw_request(admin, head.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("--max-upload"), "{answer}");

    let apps = server
        .api(Method::GET, "/v1/apps", Some(&token), "", "")
        .await;
    assert_eq!(apps.json()["apps"], serde_json::json!([]));
    for sub in ["components", "artifacts", "tmp"] {
        let left: Vec<_> = std::fs::read_dir(dir.join(sub)).unwrap().collect();
        assert!(left.is_empty(), "{sub} holds {left:?}");
    }
    // A component importing something the host does not provide names it.
    let reply = server
        .api(
            Method::POST,
            "/v1/apps/x/versions?route=/x&mode=pool",
            Some(&token),
            std::fs::read(guests::ASYNC_GUEST).unwrap(),
            "application/wasm",
        )
        .await;
    assert_eq!(reply.status, 422, "{}", reply.text());
    assert!(
        reply.text().contains("cannot run on the pool"),
        "{}",
        reply.text()
    );
}

#[tokio::test]
async fn requests_reach_only_the_app_their_host_and_path_select() {
    let dir = temp_dir("isolation");
    let server = Server::registry(&dir).start().await;
    let a = server.create_tenant("a", "{}").await;
    let b = server.create_tenant("b", "{}").await;
    for (token, host, secret) in [(&a, "a.example", "a-secret"), (&b, "b.example", "b-secret")] {
        let query = format!("route={host}/config&var=SECRET={secret}");
        let reply = server.deploy(token, "app", guests::SDK_SYNC, &query).await;
        assert_eq!(reply.status, 201, "{}", reply.text());
    }
    assert_eq!(
        server.get_host("a.example", "/config/SECRET").await.text(),
        "a-secret"
    );
    assert_eq!(
        server
            .get_host("B.EXAMPLE:80", "/config/SECRET")
            .await
            .text(),
        "b-secret"
    );
    // Headers a client controls do not select another app.
    let req = http::Request::get(format!("http://{}/config/SECRET", server.addr))
        .header("host", "a.example")
        .header("x-forwarded-host", "b.example")
        .header("forwarded", "host=b.example")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(server.client().request(req).await.text(), "a-secret");
    // An absolute-form URI that disagrees with Host is refused, not guessed at.
    let raw = "GET http://b.example/config/SECRET HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n";
    let answer = raw_request(server.addr, raw.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("host_mismatch"), "{answer}");
    for path in ["/config/../config/SECRET", "/config/%2e%2e/x"] {
        assert_eq!(
            server.get_host("a.example", path).await.status,
            400,
            "{path}"
        );
    }
    // No host route matches an unknown host, and A cannot claim B's route.
    assert_eq!(
        server.get_host("c.example", "/config/SECRET").await.status,
        404
    );
    let reply = server
        .deploy(&a, "grab", guests::SDK_SYNC, "route=b.example/config")
        .await;
    assert_eq!(reply.status, 409, "{}", reply.text());
    assert_eq!(
        server.get_host("b.example", "/config/SECRET").await.text(),
        "b-secret"
    );
}

async fn raw_request(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_tenant_at_its_limit_does_not_fail_another_tenants_requests() {
    let dir = temp_dir("limits");
    let server = Server::registry(&dir).start().await;
    let noisy = server
        .create_tenant("noisy", r#"{"max_in_flight": 4}"#)
        .await;
    let quiet = server.create_tenant("quiet", "{}").await;
    for (token, route) in [(&noisy, "/noisy"), (&quiet, "/quiet")] {
        let reply = server
            .deploy(token, "app", guests::SLEEPY, &format!("route={route}"))
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text());
    }
    // The sleepy example answers any path after `ms` milliseconds.
    let client = server.client();
    let started = Instant::now();
    let noisy_requests: Vec<_> = (0..30)
        .map(|_| {
            let client = client.fresh_connections();
            tokio::spawn(async move { client.get("/noisy/x?ms=1000").await.status.as_u16() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..10 {
        let reply = client.get("/quiet/?ms=1").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let mut refused = 0;
    for request in noisy_requests {
        match request.await.unwrap() {
            200 => {}
            503 => refused += 1,
            other => panic!("noisy got {other}"),
        }
    }
    assert!(
        refused >= 20,
        "only {refused} of 30 noisy requests were refused"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    let rejected = server
        .wait_for_metric(
            r#"wasmloop_requests_rejected_total{app="app",reason="tenant_limit",tenant="noisy"}"#,
            |v| v >= 20.0,
            Duration::from_secs(10),
        )
        .await;
    assert!(rejected.is_some_and(|v| v >= 20.0), "{rejected:?}");
    // The doctor names the tenant at its limit.
    let report = server.doctor();
    let first = report.lines().find(|l| l.starts_with("WARNING"));
    assert!(
        first.is_some_and(|l| l.contains("[tenant_limit]") && l.contains("Tenant noisy")),
        "{report}"
    );
}

#[tokio::test]
async fn a_manifest_is_served_locally_and_deployed_by_the_cli() {
    let dir = temp_dir("manifest");
    let manifest = dir.join("wasmloop.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"
[[app]]
name = "cfg"
component = "{sdk}"
routes = ["/config"]
[app.vars]
VERSION = "from-the-manifest"

[[app]]
name = "hello"
component = "{hello}"
routes = ["/hello"]
[app.limits]
timeout = "5s"
"#,
            sdk = guests::SDK_SYNC,
            hello = guests::HELLO_ASYNC
        ),
    )
    .unwrap();
    let local = Server::registry(&dir.join("unused"))
        .arg(&format!("--manifest={}", manifest.display()))
        .start()
        .await;
    assert_eq!(
        local.get("/config/VERSION").await.text(),
        "from-the-manifest"
    );
    assert_eq!(local.get("/hello").await.text(), "Hello, world!\n");
    assert_eq!(local.get("/other").await.status, 404);
    drop(local);

    let server = Server::registry(&dir.join("data")).start().await;
    let token = server.create_tenant("m", "{}").await;
    let out = server.cli(
        &token,
        &["deploy", "--manifest", manifest.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("Deployed")
            .count(),
        2
    );
    assert_eq!(
        server.get("/config/VERSION").await.text(),
        "from-the-manifest"
    );
    assert_eq!(server.get("/hello").await.text(), "Hello, world!\n");
}

/// Bytes of every file under `dir`.
fn bytes_under(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => bytes_under(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// `(hits, lookups)` of a deploy's answer.
fn cache_use(reply: &wasmloop_tests::Reply) -> (u64, u64) {
    assert_eq!(reply.status, 201, "{}", reply.text());
    let cache = &reply.json()["compile_cache"];
    (
        cache["hits"].as_u64().unwrap(),
        cache["lookups"].as_u64().unwrap(),
    )
}

#[tokio::test]
async fn the_compile_cache_serves_shared_functions_and_survives_a_restart() {
    let dir = temp_dir("compile-cache");
    let server = Server::registry(&dir).start().await;
    let token = server.create_tenant("cached", "{}").await;
    // The first compile on a node fills the cache (its hits are functions that
    // occur twice in it: adapters, trampolines).
    let first = server
        .deploy(&token, "one", guests::SDK_SYNC, "route=/one")
        .await;
    let (first_hits, first_lookups) = cache_use(&first);
    assert!(
        first_lookups > 100 && first_hits < first_lookups / 2,
        "{first_hits} of {first_lookups}"
    );
    // Another component built by the same toolchain shares part of its functions:
    // more of them come from the cache than in the first compile.
    let other = server
        .deploy(&token, "two", guests::SDK_ASYNC, "route=/two")
        .await;
    let (hits, lookups) = cache_use(&other);
    eprintln!("compile cache: first {first_hits} of {first_lookups}, then {hits} of {lookups}");
    assert!(
        hits < lookups && hits * first_lookups > first_hits * lookups,
        "{hits} of {lookups} (first: {first_hits} of {first_lookups})"
    );
    // Served by the guest (its own 404 for a path it has no route for), not refused
    // by the host for want of an app.
    let served = server.get("/two").await.text();
    assert!(!served.is_empty() && served != "no_app\n", "{served}");
    drop(server);

    // After a restart the cache is still there: the same component again finds every
    // function in it (1443 of 1541 before vendor/cranelift-codegen's fix: a function's
    // key depended on what its compile context had compiled before), and what it
    // serves is unchanged.
    let server = Server::registry(&dir).start().await;
    let again = server
        .deploy(&token, "three", guests::SDK_SYNC, "route=/three")
        .await;
    let (hits, lookups) = cache_use(&again);
    assert!(lookups > 100 && hits == lookups, "{hits} of {lookups}");
    let (three, one) = (server.get("/three").await, server.get("/one").await);
    assert_eq!((three.status, three.text()), (one.status, one.text()));
    assert_ne!(three.text(), "no_app\n");
    drop(server);

    // Bounded: with a small size, what is left after a compile fits in it.
    let server = Server::registry(&dir)
        .arg("--compile-cache-size=64K")
        .start()
        .await;
    let reply = server
        .deploy(&token, "four", guests::SYNC_GUEST, "route=/four")
        .await;
    cache_use(&reply);
    let left = bytes_under(&dir.join("compile-cache"));
    assert!(left <= 64 << 10, "the cache holds {left} bytes");
    // And 0 turns it off.
    drop(server);
    let server = Server::registry(&dir)
        .arg("--compile-cache-size=0")
        .start()
        .await;
    let reply = server
        .deploy(&token, "five", guests::SDK_SYNC, "route=/five")
        .await;
    assert_eq!(cache_use(&reply), (0, 0));
}
