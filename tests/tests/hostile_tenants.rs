//! A tenant tried as an attacker would try it, against the real binary: what its
//! guests may reach outside the sandbox, and what its deploys may ask for. Every case
//! also checks that the victim (the host, or another tenant) is unchanged afterwards.

use std::time::Duration;

use http::Method;
use wasmloop_tests::pg::Postgres;
use wasmloop_tests::{ADMIN_TOKEN, Running, Server, Upstream, guests, temp_dir};

/// Asks the guest to fetch `http://TO/upstream`: `(status, body)`.
async fn fetch(server: &Running, to: &str) -> (u16, String) {
    let reply = server.get(&format!("/fetch?to={to}")).await;
    (reply.status.as_u16(), reply.text())
}

/// Spellings of addresses that are not public, with the reason the floor gives:
/// loopback by name and number in both families, IPv4-mapped and NAT64 IPv6, the
/// numeric forms getaddrinfo accepts, the cloud metadata address, private ranges.
const NOT_PUBLIC: &[(&str, &str)] = &[
    ("127.0.0.1", "loopback"),
    ("localhost", "loopback"),
    ("[::1]", "loopback"),
    ("[::ffff:127.0.0.1]", "loopback"),
    ("[64:ff9b::7f00:1]", "loopback"),
    ("2130706433", "loopback"),
    ("0x7f000001", "loopback"),
    ("127.1", "loopback"),
    ("0.0.0.0", "unspecified"),
    ("169.254.169.254", "link_local"),
    ("[::ffff:169.254.169.254]", "link_local"),
    ("[fe80::1]", "link_local"),
    ("10.0.0.1", "private"),
    ("192.168.1.1", "private"),
    ("[fd00::1]", "unique_local"),
];

#[tokio::test]
async fn a_guest_reaches_no_address_of_the_host_whatever_the_list_says() {
    let upstream = Upstream::start().await;
    let port = upstream.addr.port();
    // The operator listed every spelling (any port): the list is the ceiling, the
    // floor still holds.
    let listed: Vec<&str> = NOT_PUBLIC.iter().map(|(host, _)| *host).collect();
    for guest in [guests::SYNC_GUEST, guests::ASYNC_GUEST] {
        let server = Server::new(guest)
            .arg(&format!("--allow-outbound={}", listed.join(",")))
            .start()
            .await;
        let admin = server.admin.expect("an admin listener");
        let mut targets: Vec<(String, &str)> = NOT_PUBLIC
            .iter()
            .map(|(host, reason)| (format!("{host}:{port}"), *reason))
            .collect();
        // The server's own listeners, loopback or not.
        targets.push((format!("127.0.0.1:{}", admin.port()), "own_listener"));
        targets.push((format!("localhost:{}", server.addr.port()), "own_listener"));
        for (to, reason) in &targets {
            let (status, body) = fetch(&server, to).await;
            assert_eq!(status, 502, "{guest} -> {to}: {body}");
            assert!(
                body.contains("HttpRequestDenied"),
                "{guest} -> {to}: {body}"
            );
            assert!(
                server.has_log(&[
                    "outbound request denied",
                    &format!("uri=http://{to}/upstream"),
                    &format!("reason={reason}"),
                ]),
                "{guest} -> {to}: no log line with reason={reason}\n{}",
                server.log()
            );
        }
        let scrape = server
            .wait_for_metrics(
                |m| {
                    m.0.lines().any(|l| {
                        l.starts_with("wasmloop_outbound_denied_total{")
                            && l.contains(r#"reason="own_listener""#)
                    })
                },
                Duration::from_secs(5),
            )
            .await;
        assert!(
            scrape.0.contains(r#"reason="link_local""#),
            "no outbound_denied series for link_local:\n{}",
            scrape.0
        );
        // The host is unharmed: the server serves, its admin listener answers.
        assert_eq!(server.get("/").await.status, 200, "{guest}");
        assert_eq!(server.admin_get("/livez").await.status, 200, "{guest}");
    }
    assert_eq!(
        upstream.connections(),
        0,
        "a refused request reached the upstream"
    );
}

#[tokio::test]
async fn an_opened_range_is_reached_but_never_the_servers_own_listeners() {
    let upstream = Upstream::start().await;
    let port = upstream.addr.port();
    for guest in [guests::SYNC_GUEST, guests::ASYNC_GUEST] {
        let server = Server::new(guest)
            .arg("--allow-outbound-net=127.0.0.0/8,::1/128")
            .arg("--allow-outbound=127.0.0.1,localhost")
            .start()
            .await;
        for to in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
            assert_eq!(
                fetch(&server, &to).await,
                (200, "upstream saw /upstream".to_string()),
                "{guest} -> {to}"
            );
        }
        let admin = server.admin.expect("an admin listener");
        for to in [
            format!("127.0.0.1:{}", admin.port()),
            format!("localhost:{}", server.addr.port()),
        ] {
            let (status, body) = fetch(&server, &to).await;
            assert_eq!(status, 502, "{guest} -> {to}: {body}");
            assert!(
                server.has_log(&[&format!("uri=http://{to}/upstream"), "reason=own_listener"]),
                "{}",
                server.log()
            );
        }
        // A range that is open does not open its neighbours.
        let (status, body) = fetch(&server, "169.254.169.254:80").await;
        assert_eq!(status, 502, "{guest}: {body}");
    }
    assert_eq!(upstream.connections(), 4);
}

#[tokio::test]
async fn an_apps_outbound_list_may_only_narrow_the_operators() {
    let upstream = Upstream::start().await;
    let addr = upstream.addr;
    let dir = temp_dir("tenants-outbound");
    let server = Server::registry(&dir)
        .arg(&format!("--allow-outbound=example.com,{addr}"))
        .arg("--allow-outbound-net=127.0.0.0/8")
        .start()
        .await;
    let victim = server.create_tenant("victim", "{}").await;
    let attacker = server.create_tenant("attacker", "{}").await;
    let reply = server
        .deploy(&victim, "shop", guests::SYNC_GUEST, "route=/echo")
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());

    let admin = server.admin.expect("an admin listener").to_string();
    for wide in [
        "169.254.169.254",
        "127.0.0.1",
        &format!("127.0.0.1:{}", addr.port() ^ 1),
        "example.org",
        "EXAMPLE.com.evil.test",
        &admin,
        // The operator listed one port of this host; any port is wider.
        &addr.ip().to_string(),
    ] {
        let reply = server
            .deploy(
                &attacker,
                "proxy",
                guests::SYNC_GUEST,
                &format!("route=/fetch&allow_outbound={wide}"),
            )
            .await;
        assert_eq!(reply.status, 422, "{wide}: {}", reply.text());
        assert!(
            reply.text().contains("--allow-outbound"),
            "{wide}: {}",
            reply.text()
        );
    }
    // Nothing was stored for the refused deploys.
    let apps = server
        .api(
            Method::GET,
            "/v1/apps",
            Some(&attacker),
            "",
            "application/json",
        )
        .await;
    assert_eq!(apps.status, 200);
    assert!(!apps.text().contains("proxy"), "{}", apps.text());

    // A list within the operator's is accepted (any case, a port of a host the
    // operator allowed on every port), and works.
    let reply = server
        .deploy(
            &attacker,
            "proxy",
            guests::SYNC_GUEST,
            &format!("route=/fetch&allow_outbound={addr}&allow_outbound=Example.com:443"),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let reply = server.get(&format!("/fetch?to={addr}")).await;
    assert_eq!(
        (reply.status.as_u16(), reply.text().as_str()),
        (200, "upstream saw /upstream")
    );
    // The victim is served as before.
    assert_eq!(server.get("/echo").await.status, 200);
    assert_eq!(upstream.connections(), 1);
}

/// Routes an attacker may not claim next to a victim serving `shop.test/`,
/// `b%C3%BCcher.test/` (bücher.test) and `/config` for any host: inside, around, on
/// the victim's host in other spellings, or shadowing its any-host route on a host.
const CAPTURES: &[&str] = &[
    "shop.test/users",
    "shop.test/config/x",
    "SHOP.test/users",
    "shop.test./users",
    "shop.test",
    "xn--bcher-kva.test/x",
    "B%C3%9CCHER.test/x",
    "/config/VERSION",
    "/config",
    "/",
    "victim.test/",
    "victim.test/config",
    "elsewhere.test/config/deep",
];

/// What the victim's requests must keep reaching, by Host and path, whatever the
/// attacker tried: `(host, path)` pairs answered `victim`.
const VICTIM_TRAFFIC: &[(&str, &str)] = &[
    ("shop.test", "/config/VERSION"),
    ("SHOP.TEST", "/config/VERSION"),
    ("shop.test.", "/config/VERSION"),
    ("shop.test:8080", "/config/VERSION"),
    ("xn--bcher-kva.test", "/config/VERSION"),
    ("victim.test", "/config/VERSION"),
    ("anything.test", "/config/VERSION"),
];

async fn assert_victim_served(server: &Running) {
    for (host, path) in VICTIM_TRAFFIC {
        let reply = server.get_host(host, path).await;
        assert_eq!(
            (reply.status.as_u16(), reply.text().as_str()),
            (200, "victim"),
            "Host: {host} {path}"
        );
    }
}

async fn deploy_victim(server: &Running) -> String {
    let victim = server.create_tenant("acme", "{}").await;
    let reply = server
        .deploy(
            &victim,
            "storefront",
            guests::SDK_SYNC,
            "route=shop.test/&route=b%C3%BCcher.test/&route=/config&var=VERSION=victim",
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    victim
}

#[tokio::test]
async fn no_deploy_takes_another_tenants_traffic() {
    let dir = temp_dir("tenants-routes");
    let server = Server::registry(&dir).start().await;
    captures_are_refused(&server).await;
}

#[tokio::test]
async fn no_deploy_takes_another_tenants_traffic_on_a_shared_registry() {
    let Some(pg) = Postgres::start() else { return };
    let server = Server::registry(&temp_dir("tenants-routes-pg"))
        .arg(&format!("--registry={}", pg.database("routes")))
        .start()
        .await;
    captures_are_refused(&server).await;
}

/// Two tenants deploying overlapping routes at the same moment through two nodes of
/// one registry: exactly one of each pair is accepted, every time.
#[tokio::test]
async fn concurrent_overlapping_deploys_through_two_nodes_accept_one() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("routes_race");
    let node = |name: &'static str| {
        Server::registry(&temp_dir(name))
            .arg(&format!("--registry={url}"))
            .start()
    };
    let (one, two) = (node("race-a").await, node("race-b").await);
    let a = one.create_tenant("alpha", "{}").await;
    let b = one.create_tenant("beta", "{}").await;
    for round in 0..4 {
        let (app_a, app_b) = (format!("a{round}"), format!("b{round}"));
        let outer = format!("route=/race{round}");
        let inner = format!("route=/race{round}/inner");
        let (x, y) = tokio::join!(
            one.deploy(&a, &app_a, guests::SYNC_GUEST, &outer),
            two.deploy(&b, &app_b, guests::SYNC_GUEST, &inner),
        );
        let mut statuses = [x.status.as_u16(), y.status.as_u16()];
        statuses.sort();
        assert_eq!(
            statuses,
            [201, 409],
            "round {round}: {} / {}",
            x.text(),
            y.text()
        );
    }
}

async fn captures_are_refused(server: &Running) {
    deploy_victim(server).await;
    let attacker = server.create_tenant("mallory", "{}").await;
    assert_victim_served(server).await;

    for route in CAPTURES {
        let reply = server
            .deploy(
                &attacker,
                "grab",
                guests::SDK_SYNC,
                &format!("route={route}&var=VERSION=attacker"),
            )
            .await;
        let text = reply.text();
        assert_eq!(reply.status, 409, "{route}: {text}");
        assert!(text.contains("is taken"), "{route}: {text}");
        for secret in ["acme", "storefront"] {
            assert!(!text.contains(secret), "{route}: names the victim: {text}");
        }
    }
    // A route with a port could never match: refused, not silently dead.
    let reply = server
        .deploy(
            &attacker,
            "grab",
            guests::SDK_SYNC,
            "route=other.test:8080/x",
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(reply.text().contains("port"), "{}", reply.text());
    let reply = server
        .deploy(
            &attacker,
            "grab",
            guests::SDK_SYNC,
            "route=/elsewhere&var=VERSION=attacker",
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());

    // Nothing the attacker tried was stored; what does not overlap is its own.
    let versions = server
        .api(
            Method::GET,
            "/v1/apps/grab/versions",
            Some(&attacker),
            "",
            "application/json",
        )
        .await;
    let versions: serde_json::Value = serde_json::from_slice(&versions.body).unwrap();
    assert_eq!(versions["versions"].as_array().map(Vec::len), Some(1));
    for route in [
        "other.test/shop",
        "/configuration",
        "shop.test.example/shop",
    ] {
        let reply = server
            .deploy(
                &attacker,
                &format!("own{}", route.len()),
                guests::SDK_SYNC,
                &format!("route={route}&var=VERSION=attacker"),
            )
            .await;
        assert_eq!(reply.status, 201, "{route}: {}", reply.text());
    }
    // Those are served by the attacker's apps (the guest's own 404, not the host's).
    for (host, path) in [("other.test", "/shop/x"), ("shop.test.example", "/shop")] {
        let reply = server.get_host(host, path).await;
        assert!(
            !reply.text().contains("no_app") && reply.text() != "victim",
            "Host: {host} {path}: {} {}",
            reply.status,
            reply.text()
        );
    }
    // A host route that would shadow the victim's any-host /config is still refused.
    let reply = server
        .deploy(&attacker, "late", guests::SDK_SYNC, "route=other.test/")
        .await;
    assert_eq!(reply.status, 409, "{}", reply.text());
    assert_victim_served(server).await;
}

/// The mode bits of `path`.
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn the_data_directory_is_private_from_the_first_byte() {
    let dir = temp_dir("tenants-modes");
    // An older server's directory, world-readable: tightened at start.
    std::fs::create_dir_all(&dir).unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let server = Server::registry(&dir).start().await;
    let token = server.create_tenant("acme", "{}").await;
    let reply = server
        .deploy(
            &token,
            "app",
            guests::SYNC_GUEST,
            "route=/&var=SECRET=hunter2",
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(mode(&dir), 0o700, "the data directory");
    for sub in ["components", "artifacts", "tmp"] {
        assert_eq!(mode(&dir.join(sub)), 0o700, "{sub}/");
    }
    let mut files = vec![dir.join("registry.sqlite3")];
    for sub in ["components", "artifacts"] {
        for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
            files.push(entry.unwrap().path());
        }
    }
    assert!(files.len() >= 3, "{files:?}");
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    drop(server);

    // A generated admin token is private too, and one others can read is refused.
    let dir = temp_dir("tenants-token");
    let token_file = dir.join("admin-token-copy");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&token_file, "a-token-that-is-long-enough\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let (status, output) = Server::registry(&dir)
        .arg(&format!("--admin-token-file={}", token_file.display()))
        .start_expecting_failure();
    assert!(!status.success());
    assert!(
        output.contains("can be read by other users") && output.contains("chmod 600"),
        "{output}"
    );
    assert!(!output.contains("a-token-that"), "{output}");
}

#[tokio::test]
async fn the_registry_password_shows_nowhere() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("secrets");
    let with_password = url.replace("wasmloop@", "wasmloop:Pa55-in-url@");
    // The server takes URLs; the key=value forms are covered by redact's unit test.
    let in_query = format!("{url}?password=Pa55-in-query");
    for (url, secret) in [(with_password, "Pa55-in-url"), (in_query, "Pa55-in-query")] {
        let server = Server::registry(&temp_dir("tenants-secrets"))
            .arg(&format!("--registry={url}"))
            .arg("--registry-recheck=1s")
            .arg("--workers=2")
            .start()
            .await;
        let workers = server.wait_for_workers(2, Duration::from_secs(10));
        for pid in workers {
            for what in ["cmdline", "environ"] {
                let text = std::fs::read(format!("/proc/{pid}/{what}")).unwrap_or_default();
                let text = String::from_utf8_lossy(&text);
                assert!(!text.contains(secret), "worker {pid}'s {what}: {text}");
                assert!(!text.contains("wasmloop:"), "worker {pid}'s {what}: {text}");
            }
        }
        // The database goes away: the node says so everywhere, without the password.
        pg.down();
        let mut health = String::new();
        for _ in 0..100 {
            health = server.admin_get("/healthz").await.text();
            if health.contains("registry unreachable") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(health.contains("registry unreachable"), "{health}");
        assert!(!health.contains(secret), "{health}");
        assert!(health.contains("***"), "{health}");
        pg.up();
        let log = server.log();
        assert!(!log.contains(secret), "{log}");
    }
}

/// Whether the server closes `stream` within `within` (reads until EOF or an error).
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn the_admin_listener_holds_no_slow_idle_or_flooding_connection() {
    use tokio::io::AsyncWriteExt as _;
    let dir = temp_dir("tenants-admin");
    let server = Server::registry(&dir)
        .arg("--timeout-header-read=1s")
        .arg("--admin-max-connections=8")
        .start()
        .await;
    let admin = server.admin.expect("an admin listener");

    // A head that never ends, and a connection that never says anything.
    let mut slow = tokio::net::TcpStream::connect(admin).await.unwrap();
    slow.write_all(b"GET /livez HTTP/1.1\r\nHost: adm")
        .await
        .unwrap();
    let mut idle = tokio::net::TcpStream::connect(admin).await.unwrap();
    assert!(
        closed_within(&mut slow, Duration::from_secs(4)).await,
        "a slow head stayed open"
    );
    assert!(
        closed_within(&mut idle, Duration::from_secs(4)).await,
        "an idle connection stayed open"
    );

    // After one answer the connection is closed: nothing idles between requests.
    let mut once = tokio::net::TcpStream::connect(admin).await.unwrap();
    once.write_all(b"GET /livez HTTP/1.1\r\nHost: admin\r\n\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut once, Duration::from_secs(2)).await,
        "kept alive"
    );

    // A flood: past the cap, connections are closed at once; once the flood's idle
    // connections time out, probes are answered again.
    let mut flood = Vec::new();
    for _ in 0..40 {
        flood.push(tokio::net::TcpStream::connect(admin).await.unwrap());
    }
    let mut shut_at_once = 0;
    for stream in &mut flood {
        if closed_within(stream, Duration::from_millis(300)).await {
            shut_at_once += 1;
        }
    }
    assert!(shut_at_once >= 32, "only {shut_at_once} of 40 were refused");
    let mut answered = false;
    for _ in 0..50 {
        if server.admin_get_with("/livez", None).await.status == 200 {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered, "the admin listener stayed full after the flood");
    // The public listener was never affected.
    assert_eq!(server.get("/").await.status, 404);
}

#[tokio::test]
async fn metrics_and_the_doctor_are_not_for_everyone() {
    let dir = temp_dir("tenants-metrics");
    let server = Server::registry(&dir).start().await;
    let a = server.create_tenant("alpha", "{}").await;
    let b = server.create_tenant("beta", "{}").await;
    for (token, app, route, path) in [
        (&a, "one", "/echo", "/echo"),
        (&b, "two", "/big", "/big?kb=1"),
    ] {
        let reply = server
            .deploy(token, app, guests::SYNC_GUEST, &format!("route={route}"))
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        assert_eq!(server.get(path).await.status, 200);
    }
    server
        .wait_for_metrics(
            |m| m.0.contains(r#"tenant="alpha""#) && m.0.contains(r#"tenant="beta""#),
            Duration::from_secs(5),
        )
        .await;

    for path in ["/metrics", "/doctor"] {
        for token in [None, Some("not-a-token"), Some("wlt_1_0000")] {
            let reply = server.admin_get_with(path, token).await;
            assert_eq!(reply.status, 401, "{path} with {token:?}: {}", reply.text());
            assert!(!reply.text().contains("alpha"), "{}", reply.text());
        }
    }
    // A tenant reads its own series, nothing of the other tenant or the node.
    let mine = server.admin_get_with("/metrics", Some(&a)).await;
    assert_eq!(mine.status, 200);
    let text = mine.text();
    assert!(text.contains(r#"tenant="alpha""#), "{text}");
    assert!(!text.contains("beta"), "{text}");
    assert!(!text.contains("wasmloop_workers"), "{text}");
    assert_eq!(server.admin_get_with("/doctor", Some(&a)).await.status, 403);
    // The operator reads everything; the probes are open and say nothing secret.
    assert!(
        server
            .admin_get("/metrics")
            .await
            .text()
            .contains(r#"tenant="beta""#)
    );
    assert_eq!(server.admin_get("/doctor").await.status, 200);
    for probe in ["/livez", "/readyz", "/healthz"] {
        let reply = server.admin_get_with(probe, None).await;
        assert_eq!(reply.status, 200, "{probe}");
        assert!(!reply.text().contains("alpha"), "{probe}: {}", reply.text());
    }
    // A server without tenants asks for the token too, once the operator set one
    // (the test harness always does).
    let single = Server::new(guests::SYNC_GUEST).start().await;
    assert_eq!(single.admin_get_with("/metrics", None).await.status, 401);
    assert_eq!(single.admin_get("/metrics").await.status, 200);
}

async fn bind(server: &Running, pattern: &str, tenant: &str, token: &str) -> wasmloop_tests::Reply {
    server
        .api(
            Method::PUT,
            &format!("/v1/hosts/{pattern}"),
            Some(token),
            format!(r#"{{"tenant": "{tenant}"}}"#),
            "application/json",
        )
        .await
}

async fn bound_hosts_take_routes_from_their_tenant_only(server: &Running) {
    let acme = server.create_tenant("acme", "{}").await;
    let mallory = server.create_tenant("mallory", "{}").await;
    let deploy = |token: &str, app: &str, route: &str| {
        let (token, app, query) = (token.to_string(), app.to_string(), format!("route={route}"));
        async move {
            server
                .deploy(&token, &app, guests::SYNC_GUEST, &query)
                .await
        }
    };
    // Only the operator binds.
    assert_eq!(
        bind(server, "shop.test", "mallory", &mallory).await.status,
        401
    );
    for pattern in ["Shop.Test.", "*.acme.test"] {
        let reply = bind(server, pattern, "acme", ADMIN_TOKEN).await;
        assert_eq!(reply.status, 200, "{pattern}: {}", reply.text());
    }
    for route in [
        "shop.test/free",
        "SHOP.TEST./x",
        "api.acme.test/",
        "x.y.acme.test/deep",
    ] {
        let reply = deploy(&mallory, "grab", route).await;
        assert_eq!(reply.status, 409, "{route}: {}", reply.text());
        assert!(reply.text().contains("bound"), "{route}: {}", reply.text());
        assert!(!reply.text().contains("acme\""), "{}", reply.text());
    }
    // The apex is not a subdomain; the owner deploys on its hosts.
    assert_eq!(deploy(&mallory, "apex", "acme.test/").await.status, 201);
    for (app, route) in [("shop", "shop.test/"), ("api", "api.acme.test/")] {
        let reply = deploy(&acme, app, route).await;
        assert_eq!(reply.status, 201, "{route}: {}", reply.text());
    }
    // A host another tenant serves cannot be bound away from it, nor can a pattern
    // meeting another tenant's binding.
    assert_eq!(
        deploy(&mallory, "theirs", "mallory.test/").await.status,
        201
    );
    assert_eq!(
        bind(server, "mallory.test", "acme", ADMIN_TOKEN)
            .await
            .status,
        409
    );
    assert_eq!(
        bind(server, "x.acme.test", "mallory", ADMIN_TOKEN)
            .await
            .status,
        409
    );
    for bad in ["*.test", "a.*.test", "shop.test:443"] {
        let reply = bind(server, bad, "acme", ADMIN_TOKEN).await;
        assert!(
            matches!(reply.status.as_u16(), 400 | 409),
            "{bad}: {}",
            reply.text()
        );
    }
    let list = server
        .api(
            Method::GET,
            "/v1/hosts",
            Some(ADMIN_TOKEN),
            "",
            "application/json",
        )
        .await;
    let text = list.text();
    assert!(
        text.contains(r#""pattern":"shop.test""#) && text.contains("*.acme.test"),
        "{text}"
    );
    // Unbound, a host follows the ownership rule again.
    let reply = server
        .api(
            Method::DELETE,
            "/v1/hosts/*.acme.test",
            Some(ADMIN_TOKEN),
            "",
            "application/json",
        )
        .await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    assert_eq!(
        deploy(&mallory, "free", "free.acme.test/").await.status,
        201
    );
    assert_eq!(
        deploy(&mallory, "api2", "api.acme.test/x").await.status,
        409
    );
    // Acme's traffic is its own throughout.
    for (host, app) in [("shop.test", "acme/shop"), ("api.acme.test", "acme/api")] {
        let req = http::Request::get(format!("http://{}/", server.addr))
            .header("host", host)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let reply = server.client().request(req).await;
        assert_eq!(reply.status, 200, "{host}");
        assert!(
            server.has_log(&["wasmloop::access", &format!("app=\"{app}\""), "status=200"]),
            "{}",
            server.log()
        );
    }
}

#[tokio::test]
async fn an_operator_binds_hosts_to_tenants() {
    let server = Server::registry(&temp_dir("tenants-bind")).start().await;
    bound_hosts_take_routes_from_their_tenant_only(&server).await;
    // The CLI binds and lists too.
    let output = server.cli(ADMIN_TOKEN, &["host", "bind", "cli.test", "acme"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = server.cli(ADMIN_TOKEN, &["host", "list"]);
    let listed = String::from_utf8_lossy(&output.stdout);
    assert!(
        listed
            .lines()
            .any(|l| l.split_whitespace().eq(["cli.test", "acme"])),
        "{listed}"
    );
}

#[tokio::test]
async fn an_operator_binds_hosts_to_tenants_on_a_shared_registry() {
    let Some(pg) = Postgres::start() else { return };
    let server = Server::registry(&temp_dir("tenants-bind-pg"))
        .arg(&format!("--registry={}", pg.database("bindings")))
        .start()
        .await;
    bound_hosts_take_routes_from_their_tenant_only(&server).await;
}
