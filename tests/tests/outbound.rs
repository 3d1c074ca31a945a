//! Outbound HTTP from guests goes only to the hosts the operator listed with
//! `--allow-outbound`; anything else fails inside the guest, and no connection is made.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use wasmloop_tests::{Server, guests};

/// A local upstream on 127.0.0.1:0 that answers every request and counts connections.
async fn upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let body = format!("upstream saw {}", req.uri().path());
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(body)),
                        ))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, connections)
}

#[tokio::test]
async fn a_listed_host_is_reached_from_both_styles() {
    let (addr, connections) = upstream().await;
    for guest in [guests::SYNC_GUEST, guests::ASYNC_GUEST] {
        let server = Server::new(guest)
            .arg(&format!("--allow-outbound=example.com,{addr}"))
            .start()
            .await;
        let reply = server.get(&format!("/fetch?to={addr}")).await;
        assert_eq!(
            (reply.status.as_u16(), reply.text().as_str()),
            (200, "upstream saw /upstream"),
            "{guest}"
        );
    }
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_unlisted_host_gets_an_error_and_no_connection() {
    let (addr, connections) = upstream().await;
    let other_port = format!("127.0.0.1:{}", addr.port().wrapping_add(1).max(1));
    for (guest, flag) in [
        (guests::SYNC_GUEST, None),
        (guests::ASYNC_GUEST, None),
        (
            guests::SYNC_GUEST,
            Some(format!("--allow-outbound={other_port}")),
        ),
        (
            guests::ASYNC_GUEST,
            Some(format!("--allow-outbound={other_port}")),
        ),
    ] {
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
        connections.load(Ordering::SeqCst),
        0,
        "a denied request reached the upstream"
    );
}
