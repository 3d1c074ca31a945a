//! Outbound HTTP from guests goes only to the hosts the operator listed with
//! `--allow-outbound`; anything else fails inside the guest, and no connection is made.
//! The upstream here listens on loopback, which the outbound floor refuses unless the
//! operator opens it (`--allow-outbound-net`; tests/tests/hostile_tenants.rs covers
//! the floor).

use wasmloop_tests::{Server, Upstream, guests};

#[tokio::test]
async fn a_listed_host_is_reached_from_both_styles() {
    let upstream = Upstream::start().await;
    let addr = upstream.addr;
    let guests = [
        guests::SYNC_GUEST,
        guests::ASYNC_GUEST,
        guests::SDK_SYNC,
        guests::SDK_ASYNC,
    ];
    for guest in guests {
        let server = Server::new(guest)
            .arg(&format!("--allow-outbound=example.com,{addr}"))
            .arg("--allow-outbound-net=127.0.0.0/8")
            .start()
            .await;
        let reply = server.get(&format!("/fetch?to={addr}")).await;
        assert_eq!(
            (reply.status.as_u16(), reply.text().as_str()),
            (200, "upstream saw /upstream"),
            "{guest}"
        );
    }
    assert_eq!(upstream.connections(), guests.len());
}

#[tokio::test]
async fn an_unlisted_host_gets_an_error_and_no_connection() {
    let upstream = Upstream::start().await;
    let addr = upstream.addr;
    let other_port = format!("127.0.0.1:{}", addr.port().wrapping_add(1).max(1));
    let guests = [
        guests::SYNC_GUEST,
        guests::ASYNC_GUEST,
        guests::SDK_SYNC,
        guests::SDK_ASYNC,
    ];
    let flags = [None, Some(format!("--allow-outbound={other_port}"))];
    for (guest, flag) in guests
        .iter()
        .flat_map(|g| flags.iter().map(move |f| (*g, f)))
    {
        let mut server = Server::new(guest);
        if let Some(flag) = &flag {
            server = server.arg(flag);
        }
        let server = server.start().await;
        let reply = server.get(&format!("/fetch?to={addr}")).await;
        // The guest handled the error itself and said so.
        assert_eq!(reply.status, 502, "{guest} {flag:?}: {}", reply.text());
        assert!(
            reply.text().contains("HttpRequestDenied"),
            "{guest} {flag:?}: {}",
            reply.text()
        );
        assert!(
            server.has_log(&["outbound request denied"]),
            "{}",
            server.log()
        );
    }
    assert_eq!(
        upstream.connections(),
        0,
        "a denied request reached the upstream"
    );
}
