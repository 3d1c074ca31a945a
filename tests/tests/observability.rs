//! Metrics and `wasmloop doctor` end to end: series move when requests, limits, hot
//! guests and a busy pool make them move, and the doctor names the bottleneck in
//! staged scenarios (and stays quiet for a healthy server).

use std::time::{Duration, Instant};

use wasmloop_tests::{HttpClient, Metrics, Running, Server, guests};

const WAIT: Duration = Duration::from_secs(10);

/// Sends `path` from `clients` concurrent loops until `duration` has passed.
async fn load(client: &HttpClient, path: &str, clients: usize, duration: Duration) {
    let until = Instant::now() + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (client, path) = (client.fresh_connections(), path.to_string());
            tokio::spawn(async move {
                while Instant::now() < until {
                    let _ = client.get(&path).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// Waits until the master has the worker's metrics for at least `n` requests.
async fn wait_for_requests(server: &Running, series: &str, n: f64) {
    let got = server.wait_for_metric(series, |v| v >= n, WAIT).await;
    assert!(got.is_some_and(|v| v >= n), "{series}: {got:?}");
}

#[tokio::test]
async fn a_request_moves_its_series() {
    let server = Server::new(guests::SYNC_GUEST).start().await;
    let series = r#"wasmloop_requests_total{app="sync_guest",mode="pool",status="200"}"#;
    assert_eq!(server.metric(series).await, None);
    assert_eq!(server.get("/").await.status, 200);
    wait_for_requests(&server, series, 1.0).await;
    let server = &server;
    let metric = |s: &'static str| async move { server.metric(s).await.unwrap_or(-1.0) };
    assert_eq!(
        metric(r#"wasmloop_request_duration_seconds_count{app="sync_guest",mode="pool"}"#).await,
        1.0
    );
    assert!(metric(r#"wasmloop_fuel_consumed_total{app="sync_guest"}"#).await > 0.0);
    assert_eq!(metric("wasmloop_workers").await, 1.0);
    assert_eq!(metric("wasmloop_pool_threads").await, 40.0);
    assert_eq!(metric("wasmloop_instances_live").await, 0.0);
    assert_eq!(metric("wasmloop_requests_in_flight").await, 0.0);
    let text = server.admin_get("/metrics").await;
    assert!(
        text.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
    );
    assert!(text.text().ends_with("# EOF\n"));
    assert_eq!(server.admin_get("/healthz").await.text(), "ok\n");
    assert_eq!(server.admin_get("/nope").await.status, 404);
}

#[tokio::test]
async fn complete_responses_over_keep_alive_never_count_as_a_client_gone() {
    // Hyper drops a body of known length once written, without polling its end:
    // that used to cancel the run, and a guest still returning from its handler then
    // counted as `client_gone` although the client had every byte. (Epoch ticks
    // every 100 µs make the window between the two likely to be hit.)
    for (guest, mode, reuse) in [
        (guests::SYNC_GUEST, "pool", "none"),
        (guests::ASYNC_GUEST, "loop", "none"),
        (guests::ASYNC_GUEST, "loop", "concurrent"),
    ] {
        let server = Server::new(guest)
            .arg("--workers=1")
            .arg("--epoch-interval=100us")
            .arg(&format!("--reuse={reuse}"))
            .start()
            .await;
        // Eight keep-alive clients, 125 requests each.
        let clients = (0..8).map(|_| async {
            for _ in 0..125 {
                let reply = server.get("/").await;
                assert_eq!(reply.status, 200, "{mode}: {}", reply.text());
            }
        });
        futures::future::join_all(clients).await;
        let app = guest.rsplit('/').next().unwrap().trim_end_matches(".wasm");
        let series =
            format!(r#"wasmloop_requests_total{{app="{app}",mode="{mode}",status="200"}}"#);
        wait_for_requests(&server, &series, 1000.0).await;
        let metrics = server.metrics().await;
        let gone = format!(r#"wasmloop_request_failures_total{{app="{app}",cause="client_gone"}}"#);
        assert_eq!(metrics.get(&gone), None, "{mode}: {}", metrics.0);
        let retired =
            format!(r#"wasmloop_instances_retired_total{{app="{app}",cause="client_gone"}}"#);
        assert_eq!(metrics.get(&retired), None, "{mode}: {}", metrics.0);
        assert!(
            !server.log().contains("client_gone"),
            "{mode}: {}",
            server.log()
        );
    }
}

#[tokio::test]
async fn fuel_exhaustion_counts_as_cpu_limit() {
    let server = Server::new(guests::SYNC_GUEST)
        .arg("--fuel=100000000")
        .start()
        .await;
    assert_eq!(server.get("/forever").await.status, 503);
    let series = r#"wasmloop_request_failures_total{app="sync_guest",cause="cpu_limit"}"#;
    wait_for_requests(&server, series, 1.0).await;
    let status = r#"wasmloop_requests_total{app="sync_guest",mode="pool",status="503"}"#;
    assert_eq!(server.metric(status).await, Some(1.0));
}

#[tokio::test]
async fn a_spinning_async_guest_counts_forced_yields_and_loop_lag() {
    // A long epoch makes each preemption a visible lag for the loop's probe timer.
    let server = Server::new(guests::ASYNC_GUEST)
        .arg("--epoch-interval=20ms")
        .start()
        .await;
    assert_eq!(server.get("/spin?ms=400").await.status, 200);
    let yields = r#"wasmloop_guest_forced_yields_total{app="async_guest"}"#;
    // 400 ms of computing at 20 ms ticks: about 20 preemptions.
    wait_for_requests(&server, yields, 10.0).await;
    let cpu = server
        .metric(r#"wasmloop_guest_cpu_seconds_total{app="async_guest",mode="loop"}"#)
        .await;
    assert!(cpu.is_some_and(|s| s >= 0.3), "{cpu:?}");

    // Labelled by the worker's slot (the only worker: 0), not its pid, so the series
    // stay the same across worker restarts.
    let metrics = server.metrics().await;
    let total = metrics
        .get(r#"wasmloop_loop_lag_seconds_count{worker="0"}"#)
        .unwrap();
    let quick = metrics
        .get(r#"wasmloop_loop_lag_seconds_bucket{le="0.01",worker="0"}"#)
        .unwrap();
    assert!(
        total - quick >= 5.0,
        "expected the spinning guest to delay the probe past 10 ms several times: {total} probes, {quick} on time"
    );
}

#[tokio::test]
async fn a_saturated_pool_shows_its_queue() {
    let server = Server::new(guests::SYNC_GUEST)
        .arg("--threads=1")
        .start()
        .await;
    let client = server.client();
    let requests: Vec<_> = (0..5)
        .map(|_| {
            let client = client.fresh_connections();
            tokio::spawn(async move { client.get("/sleep?ms=1000").await })
        })
        .collect();
    // One scrape must show the thread busy and the others waiting: a scrape taken
    // between admission and the thread waking shows a queue with no thread busy yet.
    let saturated = |m: &Metrics| {
        m.get("wasmloop_pool_threads_busy") == Some(1.0)
            && m.get("wasmloop_pool_queue_depth").is_some_and(|d| d > 0.0)
    };
    let metrics = server.wait_for_metrics(saturated, WAIT).await;
    assert!(saturated(&metrics), "{}", metrics.0);
    for request in requests {
        assert_eq!(request.await.unwrap().status, 200);
    }
    let waited = server
        .wait_for_metric("wasmloop_pool_queue_wait_seconds_count", |v| v >= 5.0, WAIT)
        .await;
    assert_eq!(waited, Some(5.0));
}

#[tokio::test]
async fn counters_survive_a_worker_that_is_killed_and_replaced() {
    let server = Server::new(guests::ASYNC_GUEST).start().await;
    for _ in 0..3 {
        server.get("/").await;
    }
    let series = r#"wasmloop_requests_total{app="async_guest",mode="loop",status="200"}"#;
    wait_for_requests(&server, series, 3.0).await;
    let victim = server.worker_pids()[0];
    server.signal_pid(victim, "KILL");
    let replaced = server
        .wait_for_metric("wasmloop_worker_restarts_total", |v| v >= 1.0, WAIT)
        .await;
    assert_eq!(replaced, Some(1.0));
    server.wait_for_workers(1, WAIT);
    server.get("/").await;
    wait_for_requests(&server, series, 4.0).await;
}

#[tokio::test]
async fn doctor_is_quiet_about_a_healthy_server() {
    let server = Server::new(guests::SYNC_GUEST).start().await;
    for _ in 0..20 {
        assert_eq!(server.get("/").await.status, 200);
    }
    let series = r#"wasmloop_requests_total{app="sync_guest",mode="pool",status="200"}"#;
    wait_for_requests(&server, series, 20.0).await;
    let report = server.doctor();
    assert!(report.contains("No bottleneck found"), "{report}");
    assert!(!report.contains("WARNING"), "{report}");
    assert!(report.contains("20 requests"), "{report}");
}

#[tokio::test]
async fn doctor_names_a_saturated_pool() {
    let server = Server::new(guests::SYNC_GUEST)
        .arg("--threads=2")
        .start()
        .await;
    load(&server.client(), "/sleep?ms=200", 8, Duration::from_secs(3)).await;
    let series = r#"wasmloop_requests_total{app="sync_guest",mode="pool",status="200"}"#;
    wait_for_requests(&server, series, 20.0).await;
    let report = server.doctor();
    let first = report.lines().find(|l| l.starts_with("WARNING"));
    assert!(
        first.is_some_and(|l| l.contains("[pool_saturated]")),
        "{report}"
    );
    assert!(report.contains("raise --threads (now 2)"), "{report}");
    // The fuel burned tells waiting from computing: these handlers sleep.
    assert!(report.contains("The handlers mostly wait"), "{report}");
    assert!(!report.contains("Add workers"), "{report}");
}

#[tokio::test]
async fn doctor_tells_a_pool_that_computes_from_one_that_waits() {
    let server = Server::new(guests::SYNC_GUEST)
        .arg("--threads=2")
        .start()
        .await;
    let spin = "/spin?ms=100&chunk=1000000";
    load(&server.client(), spin, 8, Duration::from_secs(3)).await;
    let series = r#"wasmloop_requests_total{app="sync_guest",mode="pool",status="200"}"#;
    wait_for_requests(&server, series, 20.0).await;
    let report = server.doctor();
    assert!(report.contains("[pool_saturated]"), "{report}");
    assert!(report.contains("The handlers compute"), "{report}");
    assert!(report.contains("Add workers"), "{report}");
    assert!(!report.contains("raise --threads"), "{report}");
}

#[tokio::test]
async fn doctor_names_a_hot_guest_on_the_loop() {
    let server = Server::new(guests::ASYNC_GUEST).start().await;
    let client = server.client();
    let (spinning, _) = tokio::join!(
        load(&client, "/spin?ms=250", 1, Duration::from_secs(3)),
        load(&client, "/", 1, Duration::from_secs(3)),
    );
    let () = spinning;
    let series = r#"wasmloop_guest_forced_yields_total{app="async_guest"}"#;
    wait_for_requests(&server, series, 100.0).await;
    let report = server.doctor();
    let first = report.lines().find(|l| l.starts_with("WARNING"));
    assert!(
        first.is_some_and(|l| l.contains("[loop_hot_guest]") && l.contains("App async_guest")),
        "{report}"
    );
}

#[tokio::test]
async fn doctor_names_a_concurrency_limit() {
    let server = Server::new(guests::ASYNC_GUEST)
        .arg("--limit-concurrency=2")
        .start()
        .await;
    load(&server.client(), "/sleep?ms=300", 6, Duration::from_secs(2)).await;
    let series =
        r#"wasmloop_requests_rejected_total{app="async_guest",reason="concurrency_limit"}"#;
    wait_for_requests(&server, series, 1.0).await;
    let report = server.doctor();
    let first = report.lines().find(|l| l.starts_with("WARNING"));
    assert!(
        first.is_some_and(
            |l| l.contains("[concurrency_limit]") && l.contains("--limit-concurrency=2")
        ),
        "{report}"
    );
}

#[tokio::test]
async fn per_worker_series_are_labelled_by_slot_and_stay_bounded_across_restarts() {
    let server = Server::new(guests::ASYNC_GUEST)
        .arg("--workers=2")
        .start()
        .await;
    let first = server.wait_for_workers(2, Duration::from_secs(30));
    let lag = |slot: &str| format!(r#"wasmloop_loop_lag_max_seconds{{worker="{slot}"}}"#);
    let both = server
        .wait_for_metrics(
            |m| m.get(&lag("0")).is_some() && m.get(&lag("1")).is_some(),
            Duration::from_secs(10),
        )
        .await;
    assert!(both.get(&lag("1")).is_some(), "{}", both.0);
    // Kill each worker in turn: the replacements take the freed slots, and no third
    // series appears.
    for pid in first {
        server.signal_pid(pid, "KILL");
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.worker_pids().contains(&pid) || server.worker_pids().len() < 2 {
            assert!(Instant::now() < deadline, "{}", server.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    server.wait_for_workers(2, Duration::from_secs(30));
    let after = server
        .wait_for_metrics(
            |m| m.get(&lag("0")).is_some() && m.get(&lag("1")).is_some(),
            Duration::from_secs(10),
        )
        .await;
    assert!(
        after.get(&lag("0")).is_some() && after.get(&lag("1")).is_some(),
        "{}",
        after.0
    );
    assert!(
        !after.0.contains(r#"worker="2""#),
        "a third series: {}",
        after.0
    );
    for pid in server.worker_pids() {
        assert!(!after.0.contains(&format!(r#"worker="{pid}""#)));
    }
    // process_* for the master and each worker, by slot; the build.
    for process in [
        r#"process="master""#,
        r#"process="worker",worker="0""#,
        r#"process="worker",worker="1""#,
    ] {
        let rss = after.get(&format!("process_resident_memory_bytes{{{process}}}"));
        assert!(
            rss.is_some_and(|b| b > 1e6),
            "{process}: {rss:?}\n{}",
            after.0
        );
        let fds = after.get(&format!("process_open_fds{{{process}}}"));
        assert!(fds.is_some_and(|n| n >= 3.0), "{process}: {fds:?}");
        let started = after.get(&format!("process_start_time_seconds{{{process}}}"));
        assert!(started.is_some_and(|t| t > 1.7e9), "{process}: {started:?}");
        assert!(
            after
                .get(&format!("process_cpu_seconds_total{{{process}}}"))
                .is_some()
        );
    }
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        after.get(&format!(r#"wasmloop_build_info{{version="{version}"}}"#)),
        Some(1.0)
    );
}

/// `--otlp-traces`: a span per request and per outbound call, received by a local
/// OTLP collector with the attributes operators look for.
#[tokio::test]
async fn spans_reach_an_otlp_collector_with_the_request_story() {
    use wasmloop_tests::otlp::{Collector, TracedUpstream};
    let collector = Collector::start().await;
    let upstream = TracedUpstream::start().await;
    let server = Server::new(guests::SYNC_GUEST)
        .arg("--otlp-traces")
        .arg(&format!("--allow-outbound={}", upstream.addr))
        .arg("--allow-outbound-net=127.0.0.0/8")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint())
        .env("OTEL_BSP_SCHEDULE_DELAY", "50")
        .env("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
        .start()
        .await;

    // A request that continues a caller's trace.
    let (trace, caller) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let req = http::Request::get(format!("http://{}/?lang=en", server.addr))
        .header("traceparent", format!("00-{trace}-{caller}-01"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let reply = server.client().request(req).await;
    assert_eq!(reply.status, 200);
    let id = reply.headers["x-request-id"].to_str().unwrap().to_string();
    let span = collector
        .wait_for(WAIT, |s| s.attr("wasmloop.request_id") == id)
        .await
        .unwrap_or_else(|| panic!("no span for {id}: {:?}", collector.spans()));
    assert_eq!(span.kind, 2, "a server span: {span:?}");
    assert_eq!(
        (span.trace_id.as_str(), span.parent_span_id.as_str()),
        (trace, caller)
    );
    for (key, value) in [
        ("http.request.method", "GET"),
        ("url.path", "/"),
        ("url.query", "lang=en"),
        ("http.response.status_code", "200"),
        ("http.response.body.size", "16"),
        ("wasmloop.mode", "pool"),
        ("client.address", "127.0.0.1"),
    ] {
        assert_eq!(span.attr(key), value, "{key}: {span:?}");
    }
    assert!(
        span.attr("wasmloop.fuel").parse::<u64>().unwrap() > 0,
        "{span:?}"
    );
    assert!(
        span.attr("wasmloop.queue_wait_ms").parse::<f64>().is_ok(),
        "{span:?}"
    );
    assert!(!span.attr("wasmloop.app").is_empty(), "{span:?}");
    assert_eq!(
        span.resource.get("service.name").map(String::as_str),
        Some("wasmloop")
    );
    assert_eq!(
        span.resource
            .get("deployment.environment")
            .map(String::as_str),
        Some("test")
    );

    // An outbound call: a client span under the request's, whose traceparent the
    // upstream received.
    let reply = server.get(&format!("/fetch?to={}", upstream.addr)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let id = reply.headers["x-request-id"].to_str().unwrap().to_string();
    let parent = collector
        .wait_for(WAIT, |s| s.attr("wasmloop.request_id") == id)
        .await
        .expect("the fetching request's span");
    let call = collector
        .wait_for(WAIT, |s| s.kind == 3 && s.parent_span_id == parent.span_id)
        .await
        .unwrap_or_else(|| panic!("no client span under {parent:?}: {:?}", collector.spans()));
    assert_eq!(call.trace_id, parent.trace_id);
    assert_eq!(call.attr("http.response.status_code"), "200", "{call:?}");
    assert_eq!(call.attr("server.address"), "127.0.0.1", "{call:?}");
    assert_eq!(
        upstream.traceparents(),
        [format!("00-{}-{}-01", call.trace_id, call.span_id)]
    );

    // A failure: an error span naming the cause, as the access log does.
    let reply = server.get("/trap").await;
    assert_eq!(reply.status, 500);
    let id = reply.headers["x-request-id"].to_str().unwrap().to_string();
    let failed = collector
        .wait_for(WAIT, |s| s.attr("wasmloop.request_id") == id)
        .await
        .expect("the trapping request's span");
    assert_eq!(failed.status_code, 2, "an error span: {failed:?}");
    assert!(
        server.has_log(&[
            &format!("id=\"{id}\""),
            &format!("cause=\"{}\"", failed.attr("error.type"))
        ]),
        "the span's error.type is the log's cause: {failed:?}\n{}",
        server.log()
    );
}
