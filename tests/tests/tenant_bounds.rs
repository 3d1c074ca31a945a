//! What one tenant can take of a node in total: pool threads held past a request's
//! deadline, compile capacity, stored data, memory. Each test plays the hostile tenant
//! (or its guest) and checks that the bound holds and that nothing is left behind.
//!
//! docs/reliability.md lists each case with its figure.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use wasmloop_tests::{Running, Server, guests};

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
