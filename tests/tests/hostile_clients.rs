//! Hostile clients, over raw sockets: request smuggling attempts, oversized heads,
//! pipelining, slow uploads, HTTP/2 rapid resets and stream floods. Whatever a client
//! sends, it gets a clear answer or a closed connection, never a request the server
//! parsed differently than it should; the host never panics; other clients are served.
//! (Malformed request lines, slowloris, idle keep-alive and bodies over the limit are
//! in http.rs and runtime.rs.)
//!
//! docs/reliability.md lists every case with its result.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use wasmloop_tests::{Server, guests};

const WAIT: Duration = Duration::from_secs(15);

/// Writes `request` on a fresh connection and reads until the server closes it or
/// `limit` passes.
async fn raw(addr: std::net::SocketAddr, request: &[u8], limit: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before the whole request is written.
    let _ = stream.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn responses(text: &str) -> usize {
    text.matches("HTTP/1.1 ").count()
}

#[tokio::test]
async fn no_request_is_smuggled_past_the_parser() {
    let server = Server::new(guests::SYNC_GUEST).start().await;
    // Each hides `GET /smuggled` where a parser that disagreed with hyper's reading of
    // the framing would see a second request.
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";
    let cases: Vec<(&str, String)> = vec![
        (
            "Content-Length and Transfer-Encoding together",
            format!(
                "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "two different Content-Lengths",
            format!(
                "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{smuggled}",
                smuggled.len()
            ),
        ),
        (
            "chunked that is not the last coding",
            format!(
                "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "an unknown transfer coding",
            format!(
                "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "a chunk size that overflows 64 bits",
            format!(
                "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1000000000000000000000000000005\r\nhello\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "a negative Content-Length",
            format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n{smuggled}"),
        ),
        (
            "whitespace before the colon",
            format!(
                "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length : {}\r\n\r\n{smuggled}",
                smuggled.len()
            ),
        ),
        (
            "a header folded onto a second line",
            format!(
                "POST /echo HTTP/1.1\r\nHost: t\r\nX-Fold: a\r\n Content-Length: 5\r\n\r\n{smuggled}"
            ),
        ),
        (
            "a bare LF inside a chunk size line",
            format!(
                "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n{smuggled}"
            ),
        ),
    ];
    for (what, request) in &cases {
        let started = Instant::now();
        let text = raw(server.addr, request.as_bytes(), Duration::from_secs(5)).await;
        let closed = started.elapsed() < Duration::from_secs(5);
        let status = text.lines().next().unwrap_or("(no answer)");
        eprintln!("{what}: {status}, closed: {closed}");
        // Refused (400/501), or framed one way and the connection closed after the one
        // answer (RFC 9112 §6.3 for Content-Length with Transfer-Encoding): never a
        // second response for the hidden request.
        assert!(
            responses(&text) <= 1,
            "{what}: more than one response:\n{text}"
        );
        assert!(closed, "{what}: the connection stayed open after {status}");
        assert!(
            ["HTTP/1.1 400", "HTTP/1.1 501", "HTTP/1.1 200"]
                .iter()
                .any(|s| status.starts_with(s))
                || text.is_empty(),
            "{what}: {status}"
        );
    }
    assert_eq!(server.get("/").await.status, 200);
    // The access log shows every request the server parsed: none for the hidden one.
    assert!(
        !server.log().contains("/smuggled"),
        "a smuggled request was parsed:\n{}",
        server.log()
    );
    assert_eq!(server.host_panics(), Vec::<String>::new());
}

#[tokio::test]
async fn a_megabyte_header_gets_431() {
    let server = Server::new(guests::ASYNC_GUEST).start().await;
    let request = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let text = raw(server.addr, request.as_bytes(), Duration::from_secs(5)).await;
    assert!(
        text.starts_with("HTTP/1.1 431"),
        "{}",
        &text[..text.len().min(200)]
    );
    assert_eq!(server.get("/").await.status, 200);
}

#[tokio::test]
async fn a_hundred_pipelined_requests_get_a_hundred_answers_in_order() {
    for guest in [guests::SYNC_GUEST, guests::ASYNC_GUEST] {
        let server = Server::new(guest).start().await;
        let mut batch = String::new();
        for i in 0..100 {
            let last = if i == 99 { "Connection: close\r\n" } else { "" };
            batch.push_str(&format!(
                "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n{last}\r\n#{i:03}",
                4
            ));
        }
        let text = raw(server.addr, batch.as_bytes(), Duration::from_secs(30)).await;
        assert_eq!(text.matches("HTTP/1.1 200").count(), 100, "{guest}");
        // Each answer is its own request's body, in the order they were sent.
        let bodies: Vec<usize> = (0..100)
            .map(|i| text.find(&format!("#{i:03}")).expect("every body"))
            .collect();
        assert!(
            bodies.windows(2).all(|w| w[0] < w[1]),
            "{guest}: out of order"
        );
    }
}

#[tokio::test]
async fn a_slow_upload_ends_at_the_deadline_and_frees_what_it_held() {
    for (mode, guest) in [("pool", guests::SYNC_GUEST), ("loop", guests::ASYNC_GUEST)] {
        let server = Server::new(guest)
            .arg("--timeout=2s")
            .arg("--threads=1")
            .start()
            .await;
        let started = Instant::now();
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\nabc")
            .await
            .unwrap();
        // One byte every 200 ms would take over three minutes.
        let dribble = tokio::spawn(async move {
            let mut answer = Vec::new();
            for _ in 0..997 {
                if stream.write_all(b"x").await.is_err() {
                    break;
                }
                let mut buf = [0u8; 1024];
                match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await
                {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
                    Err(_) => {}
                }
                if answer.ends_with(b"timeout\n") {
                    break;
                }
            }
            String::from_utf8_lossy(&answer).into_owned()
        });
        let answer = dribble.await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 503") && answer.ends_with("timeout\n"),
            "{mode}: {answer}"
        );
        assert!(started.elapsed() < Duration::from_secs(10), "{mode}");
        // After the deadline the guest's read is woken, and it gives its thread back.
        server
            .released(WAIT)
            .await
            .unwrap_or_else(|m| panic!("still held:\n{m}"));
        let reply = server.get("/").await;
        assert_eq!(reply.status, 200, "{mode}");
    }
}

/// An HTTP/2 connection without hyper's client, which never misbehaves.
async fn h2_connection(
    addr: std::net::SocketAddr,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    (client, tokio::spawn(connection))
}

#[tokio::test]
async fn http2_rapid_reset_is_cut_off_and_costs_nobody_else() {
    let server = Server::new(guests::ASYNC_GUEST).start().await;
    let (mut client, connection) = h2_connection(server.addr).await;
    let started = Instant::now();
    let mut sent = 0;
    // CVE-2023-44487: open a stream and reset it at once, as fast as possible.
    for _ in 0..10_000 {
        client = match client.ready().await {
            Ok(client) => client,
            Err(_) => break, // the server sent GOAWAY
        };
        let req = http::Request::get(format!("http://{}/sleep?ms=1000", server.addr))
            .body(())
            .unwrap();
        let Ok((_response, mut stream)) = client.send_request(req, false) else {
            break;
        };
        stream.send_reset(h2::Reason::CANCEL);
        sent += 1;
    }
    let ended = tokio::time::timeout(WAIT, connection).await;
    eprintln!(
        "rapid reset: {sent} streams opened and reset in {:?}; connection: {ended:?}",
        started.elapsed()
    );
    // The connection is closed by the server (GOAWAY), long before 10,000 streams.
    assert!(
        matches!(ended, Ok(Ok(Err(_)))) || sent < 10_000,
        "the server let {sent} resets through: {ended:?}"
    );
    // What the reset streams started is cancelled, not left running for a second each.
    server
        .released(WAIT)
        .await
        .unwrap_or_else(|m| panic!("still held:\n{m}"));
    assert_eq!(server.get("/").await.status, 200);
    assert_eq!(server.host_panics(), Vec::<String>::new());
}

#[tokio::test]
async fn an_http2_stream_flood_is_served_within_the_stream_limit() {
    let server = Server::new(guests::ASYNC_GUEST).start().await;
    let (client, _connection) = h2_connection(server.addr).await;
    let started = Instant::now();
    // 2,000 streams on one connection at once; the server advertises 256.
    let streams = (0..2000).map(|_| {
        let mut client = client.clone();
        let uri = format!("http://{}/sleep?ms=100", server.addr);
        tokio::spawn(async move {
            client = client.ready().await.map_err(|e| e.to_string())?;
            let req = http::Request::get(uri).body(()).unwrap();
            let (response, _) = client.send_request(req, true).map_err(|e| e.to_string())?;
            let response = response.await.map_err(|e| e.to_string())?;
            let mut body = response.into_body();
            while let Some(chunk) = body.data().await {
                let chunk = chunk.map_err(|e| e.to_string())?;
                let _ = body.flow_control().release_capacity(chunk.len());
            }
            Ok::<u16, String>(200)
        })
    });
    let mut failures = Vec::new();
    for stream in futures::future::join_all(streams).await {
        if let Err(e) = stream.unwrap() {
            failures.push(e);
        }
    }
    eprintln!(
        "stream flood: 2000 streams in {:?}, {} failed",
        started.elapsed(),
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:?}");
    server
        .released(WAIT)
        .await
        .unwrap_or_else(|m| panic!("still held:\n{m}"));
    let served = server
        .wait_for_metric(
            r#"wasmloop_requests_total{app="async_guest",mode="loop",status="200"}"#,
            |n| n >= 2000.0,
            WAIT,
        )
        .await;
    assert_eq!(served, Some(2000.0));
}

#[tokio::test]
async fn an_http2_client_that_goes_silent_is_closed_after_the_keep_alive() {
    let server = Server::new(guests::ASYNC_GUEST)
        .arg("--timeout-keep-alive=300ms")
        .start()
        .await;
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
    const SETTINGS: &[u8] = b"\0\0\0\x04\0\0\0\0\0";
    // Closing an idle HTTP/2 connection waits for the client to answer a PING, which
    // these never do: the preface alone, or a handshake never acknowledged.
    let openings = [PREFACE.to_vec(), [PREFACE, SETTINGS].concat()];
    let addr = server.addr;
    let clients = openings.map(|opening| {
        tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let started = Instant::now();
            stream.write_all(&opening).await.unwrap();
            let mut out = Vec::new();
            let closed = tokio::time::timeout(WAIT, stream.read_to_end(&mut out)).await;
            (closed.is_ok(), started.elapsed())
        })
    });
    for client in clients {
        let (closed, after) = client.await.unwrap();
        assert!(
            closed,
            "a silent HTTP/2 client held its connection past {WAIT:?}"
        );
        // The keep-alive, then at most the grace for closing.
        assert!(after < Duration::from_secs(5), "closed after {after:?}");
    }
    assert_eq!(server.get("/").await.status, 200);
    assert_eq!(server.host_panics(), Vec::<String>::new());
}
