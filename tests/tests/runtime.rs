//! The runtime core, end to end: the real binary, guests built from source, real HTTP.
//! Loop and pool behaviour, limits, status codes, graceful stop.

use std::time::{Duration, Instant};

use futures::future::join_all;
use http::Method;
use wasmloop_tests::{Server, guests};

#[tokio::test]
async fn sync_hello_runs_on_the_pool() {
    let server = Server::new(guests::HELLO).start().await;
    let reply = server.get("/").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "Hello, world!\n");
    assert!(reply.headers.contains_key("x-request-id"));
    assert!(
        server.has_log(&["mode=pool"]),
        "start-up log names the mode:\n{}",
        server.log()
    );
}

#[tokio::test]
async fn async_hello_runs_on_the_loop() {
    let server = Server::new(guests::HELLO_ASYNC).start().await;
    let reply = server.get("/").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "Hello, world!\n");
    assert!(reply.headers.contains_key("x-request-id"));
    assert!(
        server.has_log(&["mode=loop"]),
        "start-up log names the mode:\n{}",
        server.log()
    );
}

#[tokio::test]
async fn mode_override_runs_a_sync_handler_on_the_loop() {
    let server = Server::new(guests::SYNC_GUEST)
        .arg("--mode=loop")
        .start()
        .await;
    let reply = server.get("/").await;
    assert_eq!(
        (reply.status.as_u16(), reply.text().as_str()),
        (200, "hello from sync\n")
    );
    assert!(server.has_log(&["mode=loop"]));
    // A trap on the loop path is still a trap, and the next request is fine.
    assert_eq!(server.get("/trap").await.status, 500);
    assert_eq!(server.get("/").await.status, 200);
}

#[tokio::test]
async fn an_async_handler_cannot_be_forced_onto_the_pool() {
    let (status, output) = Server::new(guests::ASYNC_GUEST)
        .arg("--mode=pool")
        .start_expecting_failure();
    assert!(!status.success());
    assert!(output.contains("cannot run on the pool"), "{output}");
}

#[tokio::test]
async fn awaiting_requests_share_one_thread() {
    // 50 requests awaiting a 200 ms timer, one pool thread: only the loop can make
    // them overlap.
    let server = Server::new(guests::ASYNC_GUEST)
        .arg("--threads=1")
        .start()
        .await;
    let start = Instant::now();
    let replies = join_all((0..50).map(|_| server.get("/sleep?ms=200"))).await;
    let elapsed = start.elapsed();
    assert!(
        replies
            .iter()
            .all(|r| r.status == 200 && r.text() == "slept 200 ms\n")
    );
    assert!(
        elapsed < Duration::from_secs(2),
        "50 concurrent 200 ms sleeps took {elapsed:?}"
    );
}

#[tokio::test]
async fn the_pool_bounds_concurrency() {
    let server = Server::new(guests::SYNC_GUEST)
        .arg("--threads=2")
        .start()
        .await;
    let start = Instant::now();
    let replies = join_all((0..4).map(|_| server.get("/sleep?ms=300"))).await;
    let elapsed = start.elapsed();
    assert!(replies.iter().all(|r| r.status == 200));
    // Two threads, four 300 ms jobs: two rounds.
    assert!(
        elapsed >= Duration::from_millis(600),
        "4 jobs on 2 threads took only {elapsed:?}"
    );
}

#[tokio::test]
async fn a_full_pool_queue_answers_503_at_once() {
    let server = Server::new(guests::SYNC_GUEST)
        .arg("--threads=2")
        .arg("--pool-queue=2")
        .start()
        .await;
    // Two running, two queued.
    let client = server.client();
    let busy =
        tokio::spawn(async move { join_all((0..4).map(|_| client.get("/sleep?ms=1500"))).await });
    // Wait until the four are in (running or queued), then overflow.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reply = server.get("/").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.text(), "overloaded\n");
    assert_eq!(
        reply
            .headers
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("1")
    );
    assert!(
        reply.elapsed < Duration::from_millis(500),
        "the refusal took {:?}",
        reply.elapsed
    );
    let statuses: Vec<u16> = busy
        .await
        .unwrap()
        .iter()
        .map(|r| r.status.as_u16())
        .collect();
    assert_eq!(statuses, vec![200; 4]);
}

#[tokio::test]
async fn a_spinning_async_guest_does_not_stall_its_neighbours() {
    // Fuel enough for the spin: this test is about the loop, not the CPU budget.
    let server = Server::new(guests::ASYNC_GUEST)
        .arg("--fuel=1000000000000")
        .start()
        .await;
    let spinner = server.get("/spin?ms=1500");
    let neighbours = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut slowest = Duration::ZERO;
        for _ in 0..5 {
            let reply = server.get("/").await;
            assert_eq!(reply.status, 200);
            slowest = slowest.max(reply.elapsed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        slowest
    };
    let (spun, slowest) = tokio::join!(spinner, neighbours);
    assert_eq!(spun.status, 200);
    assert!(spun.elapsed >= Duration::from_millis(1500));
    assert!(
        slowest < Duration::from_millis(100),
        "a neighbour waited {slowest:?} behind the spinner"
    );
}

#[tokio::test]
async fn guest_limits_end_one_request_only() {
    for guest in [guests::SYNC_GUEST, guests::ASYNC_GUEST] {
        let server = Server::new(guest).arg("--fuel=500000000").start().await;
        let cases = [
            ("/forever", 503, "cpu_limit\n"),
            ("/trap", 500, "guest_trap\n"),
            ("/alloc", 500, "memory_limit\n"),
        ];
        for (path, status, body) in cases {
            let reply = server.get(path).await;
            assert_eq!(
                (reply.status.as_u16(), reply.text().as_str()),
                (status, body),
                "{guest} {path}"
            );
            assert!(reply.headers.contains_key("x-request-id"));
            let next = server.get("/").await;
            assert_eq!(next.status, 200, "{guest}: the request after {path} failed");
        }
        assert!(
            server
                .wait_for_log(
                    &["path=\"/forever\"", "cause=\"cpu_limit\"", "fuel=500000000"],
                    Duration::from_secs(5)
                )
                .is_some(),
            "the access log names the cause and the fuel:\n{}",
            server.log()
        );
    }
}

#[tokio::test]
async fn memory_bombs_leave_the_worker_bounded() {
    for guest in [guests::SYNC_GUEST, guests::ASYNC_GUEST] {
        let server = Server::new(guest).arg("--max-memory=64M").start().await;
        for _ in 0..3 {
            assert_eq!(server.get("/").await.status, 200);
        }
        let before = server.rss_bytes();
        let replies = join_all((0..8).map(|_| server.get("/alloc"))).await;
        assert!(
            replies
                .iter()
                .all(|r| r.status == 500 && r.text() == "memory_limit\n")
        );
        assert_eq!(server.get("/").await.status, 200);
        let after = server.rss_bytes();
        // Eight 64 MiB bombs ran; the pool allocator must have given the memory back.
        assert!(
            after < before + 256 * 1024 * 1024,
            "{guest}: RSS grew from {before} to {after} bytes"
        );
    }
}

#[tokio::test]
async fn requests_past_the_deadline_get_503() {
    for (guest, path) in [
        (guests::SYNC_GUEST, "/sleep?ms=3000"),
        (guests::ASYNC_GUEST, "/hang"),
        (guests::ASYNC_GUEST, "/forever"),
    ] {
        let server = Server::new(guest)
            .arg("--timeout=500ms")
            .arg("--fuel=1000000000000")
            .start()
            .await;
        let reply = server.get(path).await;
        assert_eq!(
            (reply.status.as_u16(), reply.text().as_str()),
            (503, "timeout\n"),
            "{guest} {path}"
        );
        assert!(
            reply.elapsed < Duration::from_millis(1500),
            "{guest} {path}: answered after {:?}",
            reply.elapsed
        );
        assert_eq!(server.get("/").await.status, 200);
    }
}

#[tokio::test]
async fn oversized_bodies_get_413_before_the_guest_runs() {
    for guest in [guests::SYNC_GUEST, guests::ASYNC_GUEST] {
        let server = Server::new(guest).arg("--max-body=1K").start().await;
        let small = server.send(Method::POST, "/echo", "x".repeat(1000)).await;
        assert_eq!((small.status.as_u16(), small.body.len()), (200, 1000));
        let big = server.send(Method::POST, "/echo", "x".repeat(4096)).await;
        assert_eq!(
            (big.status.as_u16(), big.text().as_str()),
            (413, "body_too_large\n")
        );
        let line = server
            .wait_for_log(&["status=413"], Duration::from_secs(5))
            .expect("a log line for the 413");
        assert!(
            line.contains("fuel=0"),
            "the guest ran for a body it should not see: {line}"
        );
    }
}

#[tokio::test]
async fn large_responses_stream_whole() {
    for guest in [guests::SYNC_GUEST, guests::ASYNC_GUEST] {
        let server = Server::new(guest).start().await;
        let reply = server.get("/big?kb=4096").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body.len(), 4096 * 1024);
        assert!(reply.body.iter().all(|&b| b == b'x'));
    }
}

#[tokio::test]
async fn sigterm_lets_requests_in_flight_finish() {
    for guest in [guests::SYNC_GUEST, guests::ASYNC_GUEST] {
        let mut server = Server::new(guest)
            .arg("--graceful-timeout=10s")
            .start()
            .await;
        let client = server.client();
        let in_flight =
            tokio::spawn(
                async move { join_all((0..5).map(|_| client.get("/sleep?ms=1000"))).await },
            );
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.signal("TERM");
        let replies = in_flight.await.unwrap();
        assert!(
            replies
                .iter()
                .all(|r| r.status == 200 && r.text() == "slept 1000 ms\n"),
            "{replies:?}"
        );
        let status = server
            .wait_exit(Duration::from_secs(10))
            .expect("the server exits after draining");
        assert!(status.success(), "exit status {status:?}");
    }
}

#[tokio::test]
async fn any_wasi_http_0_2_patch_release_is_served() {
    // sync-guest is built against wasi 0.2.4, the examples against 0.2.12.
    let server = Server::new(guests::SYNC_GUEST).start().await;
    assert!(
        server.has_log(&["export=wasi:http/incoming-handler@0.2.4"]),
        "{}",
        server.log()
    );
    assert_eq!(server.get("/").await.text(), "hello from sync\n");
}

#[tokio::test]
async fn handlers_built_with_third_party_libraries_are_served() {
    let server = Server::new(guests::WSTD_GUEST).start().await;
    let reply = server.get("/from/wstd").await;
    assert_eq!(
        (reply.status.as_u16(), reply.text().as_str()),
        (200, "hello from wstd at /from/wstd\n")
    );
}

#[tokio::test]
async fn guest_output_is_logged_with_the_request_id() {
    for guest in [guests::SYNC_GUEST, guests::ASYNC_GUEST] {
        let server = Server::new(guest).start().await;
        let reply = server.get("/trap").await;
        assert_eq!(reply.status, 500);
        let id = reply.headers["x-request-id"].to_str().unwrap().to_string();
        let line = server.wait_for_log(
            &["wasmloop::guest", &id, "the guest asked to trap"],
            Duration::from_secs(5),
        );
        assert!(
            line.is_some(),
            "{guest}: the panic message is not in the log with id {id}:\n{}",
            server.log()
        );
        assert!(
            !reply.text().contains("asked to trap"),
            "the guest's message must not reach the client"
        );
    }
}

#[tokio::test]
async fn configuration_variables_reach_the_guest_through_wasi_config() {
    let server = Server::new(guests::SYNC_GUEST)
        .arg("--var=GREETING=hello, world")
        .arg("--var=URL=http://x/?a=b")
        .start()
        .await;
    assert_eq!(
        server.get("/config?key=GREETING").await.text(),
        "hello, world"
    );
    assert_eq!(server.get("/config?key=URL").await.text(), "http://x/?a=b");
    let missing = server.get("/config?key=NOPE").await;
    assert_eq!(
        (missing.status.as_u16(), missing.text().as_str()),
        (404, "no such variable\n")
    );
}
