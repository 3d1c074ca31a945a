//! The HTTP front door, end to end with raw sockets: what a misbehaving or slow
//! client gets, and HTTP/2.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use wasmloop_tests::{Server, guests};

/// Writes `request` on a fresh connection and reads until the server closes it or
/// `limit` passes; returns what came back and how long it took.
async fn raw(addr: std::net::SocketAddr, request: &[u8], limit: Duration) -> (String, Duration) {
    let start = Instant::now();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before the whole request is written.
    let _ = stream.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut out)).await;
    (String::from_utf8_lossy(&out).into_owned(), start.elapsed())
}

fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

#[tokio::test]
async fn a_malformed_request_line_gets_400() {
    let server = Server::new(guests::SYNC_GUEST).start().await;
    let (response, _) = raw(server.addr, b"GARBAGE\r\n\r\n", Duration::from_secs(5)).await;
    assert!(
        status_line(&response).starts_with("HTTP/1.1 400"),
        "{response}"
    );
    assert_eq!(server.get("/").await.status, 200);
}

#[tokio::test]
async fn a_huge_header_gets_431() {
    let server = Server::new(guests::SYNC_GUEST)
        .arg("--max-header-size=16K")
        .start()
        .await;
    let request = format!(
        "GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let (response, _) = raw(server.addr, request.as_bytes(), Duration::from_secs(5)).await;
    assert!(
        status_line(&response).starts_with("HTTP/1.1 431"),
        "{}",
        status_line(&response)
    );
    assert_eq!(server.get("/").await.status, 200);
}

#[tokio::test]
async fn too_many_headers_get_431() {
    let server = Server::new(guests::SYNC_GUEST)
        .arg("--max-headers=20")
        .start()
        .await;
    let headers: String = (0..50).map(|i| format!("x-h{i}: v\r\n")).collect();
    let request = format!("GET / HTTP/1.1\r\nhost: x\r\n{headers}\r\n");
    let (response, _) = raw(server.addr, request.as_bytes(), Duration::from_secs(5)).await;
    assert!(
        status_line(&response).starts_with("HTTP/1.1 431"),
        "{}",
        status_line(&response)
    );
}

/// Lines of `response` that start with `prefix`, in order.
fn lines_with<'a>(response: &'a str, prefix: &str) -> Vec<&'a str> {
    response.lines().filter(|l| l.starts_with(prefix)).collect()
}

/// The front door moves a head's URI and header values out of hyper's read buffer
/// (`detach_head`): what the guest is given must be what the client sent, byte for
/// byte, even while the next pipelined request is read into that buffer.
#[tokio::test]
async fn a_guest_gets_the_head_as_sent_while_the_next_one_is_read() {
    let server = Server::new(guests::ASYNC_GUEST).start().await;
    let long = "v".repeat(3000);
    let mut pipelined = format!(
        "GET /headers?ms=200&q=a%20b HTTP/1.1\r\nhost: x\r\nx-many: 1\r\nx-empty:\r\n\
         x-many: 2\r\nx-long: {long}\r\n"
    )
    .into_bytes();
    pipelined.extend_from_slice(b"x-latin: caf\xe9 au lait\r\n\r\n");
    // The second head arrives with the first and sits in hyper's buffer while the
    // first request's guest waits.
    pipelined.extend_from_slice(
        b"GET http://x/headers?second HTTP/1.1\r\nhost: x\r\nx-many: 3\r\nconnection: close\r\n\r\n",
    );
    let (response, _) = raw(server.addr, &pipelined, Duration::from_secs(10)).await;
    let (first, second) = response
        .split_once("/headers?second")
        .unwrap_or_else(|| panic!("two answers: {response}"));
    assert!(status_line(first).starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(lines_with(first, "/headers"), ["/headers?ms=200&q=a%20b"]);
    assert_eq!(lines_with(first, "x-many:"), ["x-many: 1", "x-many: 2"]);
    assert_eq!(lines_with(first, "x-empty:"), ["x-empty: "]);
    assert_eq!(lines_with(first, "x-long:"), [format!("x-long: {long}")]);
    assert_eq!(lines_with(first, "x-latin:"), [r"x-latin: caf\xe9 au lait"]);
    // The second, in absolute form, as sent too.
    assert_eq!(lines_with(second, "x-many:"), ["x-many: 3"]);
    assert_eq!(lines_with(second, "x-long:"), Vec::<&str>::new());
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_gets_413() {
    for guest in [guests::SYNC_GUEST, guests::ASYNC_GUEST] {
        let server = Server::new(guest).arg("--max-body=1K").start().await;
        let chunk = format!("800\r\n{}\r\n", "y".repeat(0x800));
        let request = format!(
            "POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n{chunk}0\r\n\r\n"
        );
        let (response, _) = raw(server.addr, request.as_bytes(), Duration::from_secs(5)).await;
        assert!(
            status_line(&response).starts_with("HTTP/1.1 413"),
            "{guest}: {response}"
        );
        assert!(response.contains("body_too_large"), "{response}");
    }
}

#[tokio::test]
async fn a_slow_header_is_cut_off_and_others_are_served() {
    let server = Server::new(guests::SYNC_GUEST)
        .arg("--timeout-header-read=500ms")
        .start()
        .await;
    let addr = server.addr;
    // An HTTP/1.1 head that never ends, and HTTP/2's preface a byte at a time (the
    // bytes that tell the protocol are timed too), each a byte every 100 ms.
    let openings: [(&[u8], &[u8]); 2] = [
        (b"GET / HTTP/1.1\r\n", &[b'x'; 40]),
        (b"", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
    ];
    let slowlorises = openings.map(|(opening, dribble)| {
        tokio::spawn(async move {
            let start = Instant::now();
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(opening).await.unwrap();
            for byte in dribble {
                if stream.write_all(&[*byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let mut rest = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut rest)).await;
            start.elapsed()
        })
    });
    assert_eq!(server.get("/").await.status, 200);
    for (slowloris, (opening, _)) in slowlorises.into_iter().zip(openings) {
        let cut_after = slowloris.await.unwrap();
        assert!(
            cut_after < Duration::from_secs(2),
            "the slow client opening with {opening:?} held its connection for {cut_after:?}"
        );
    }
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let server = Server::new(guests::SYNC_GUEST)
        .arg("--timeout-keep-alive=300ms")
        .start()
        .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the idle connection was never closed");
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.contains("hello from sync"),
        "{text}"
    );
    assert!(start.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_served() {
    for guest in [guests::SYNC_GUEST, guests::ASYNC_GUEST] {
        let server = Server::new(guest).start().await;
        let stream = TcpStream::connect(server.addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let mut answers = Vec::new();
        for _ in 0..3 {
            let req = http::Request::builder()
                .uri(format!("http://{}/", server.addr))
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            answers.push(sender.send_request(req));
        }
        for answer in futures::future::join_all(answers).await {
            let response = answer.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.version(), http::Version::HTTP_2);
            assert!(response.headers().contains_key("x-request-id"));
        }
    }
}
