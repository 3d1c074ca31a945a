//! A tenant tried as an attacker would try it, against the real binary: what its
//! guests may reach outside the sandbox, and what its deploys may ask for. Every case
//! also checks that the victim (the host, or another tenant) is unchanged afterwards.

use std::time::Duration;

use http::Method;
use wasmloop_tests::{Running, Server, Upstream, guests, temp_dir};

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
