//! The master and its workers, with real processes and real signals: crashes,
//! hangs, graceful stop, rolling restarts, retirement, scaling.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::join_all;
use wasmloop_tests::{HttpClient, Running, Server, guests, temp_dir};

/// Requests sent by `clients` loops, each on a fresh connection, until stopped.
struct Load {
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(client: &HttpClient, clients: usize, path: &'static str) -> Load {
        let (ok, failed, stop) = (
            Arc::default(),
            Arc::default(),
            Arc::new(AtomicBool::new(false)),
        );
        let tasks = (0..clients)
            .map(|_| {
                let client = client.fresh_connections();
                let (ok, failed, stop): (Arc<AtomicU64>, Arc<AtomicU64>, Arc<AtomicBool>) =
                    (Arc::clone(&ok), Arc::clone(&failed), Arc::clone(&stop));
                tokio::spawn(async move {
                    let mut errors = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let req = http::Request::get(format!("http://{}{path}", client.addr()))
                            .body(http_body_util::Full::new(bytes::Bytes::new()))
                            .unwrap();
                        match client.try_request(req).await {
                            Ok(reply) if reply.status == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(reply) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                errors.push(format!("status {}: {}", reply.status, reply.text()));
                            }
                            Err(e) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                errors.push(e);
                            }
                        }
                    }
                    errors
                })
            })
            .collect();
        Load {
            ok,
            failed,
            stop,
            tasks,
        }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the loops; returns (successes, failures, the failures' errors).
    async fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let errors = join_all(self.tasks)
            .await
            .into_iter()
            .flat_map(|r| r.unwrap())
            .collect();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            errors,
        )
    }
}

/// Waits, polling, until `cond` holds.
async fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_is_replaced_and_the_other_keeps_serving() {
    let server = Server::new(guests::SYNC_GUEST)
        .arg("--workers=2")
        .start()
        .await;
    let before = server.wait_for_workers(2, Duration::from_secs(10));
    let clients = 8;
    let load = Load::start(&server.client(), clients, "/");
    eventually("requests flowing", Duration::from_secs(5), || {
        load.ok() > 50
    })
    .await;

    let victim = before[0];
    server.signal_pid(victim, "KILL");
    let killed_at = Instant::now();
    eventually("a replacement worker", Duration::from_secs(5), || {
        let pids = server.worker_pids();
        pids.len() == 2 && !pids.contains(&victim)
    })
    .await;
    let replacement = *server
        .worker_pids()
        .iter()
        .find(|p| !before.contains(p))
        .unwrap();
    server.wait_for_workers(2, Duration::from_secs(5));
    let replaced_after = killed_at.elapsed();
    let served_before = load.ok();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, failed, errors) = load.finish().await;

    // Typically well under a second; 3 s leaves room for a loaded 2-core machine and
    // still fails a replacement that waits for a health check (5 s) or a backoff.
    assert!(
        replaced_after < Duration::from_secs(3),
        "the replacement was ready after {replaced_after:?}"
    );
    assert!(ok > served_before, "requests stopped after the kill");
    // At most the requests in flight on the killed worker fail: one per client.
    assert!(
        failed <= clients as u64,
        "{failed} requests failed: {errors:?}"
    );
    assert!(server.has_log(&[&format!("pid={victim}")]) && server.has_log(&["killed by SIGKILL"]));
    assert!(server.has_log(&[&format!("worker ready pid={replacement}")]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_twenty_slow_requests_across_workers() {
    let mut server = Server::new(guests::ASYNC_GUEST)
        .arg("--workers=2")
        .arg("--graceful-timeout=10s")
        .start()
        .await;
    server.wait_for_workers(2, Duration::from_secs(10));
    let client = server.client().fresh_connections();
    let in_flight =
        tokio::spawn(async move { join_all((0..20).map(|_| client.get("/sleep?ms=1000"))).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    server.signal("TERM");
    let replies = in_flight.await.unwrap();
    let statuses: Vec<u16> = replies.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(statuses, vec![200; 20]);
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("the master exits after the drain");
    assert!(status.success(), "{status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_replaces_every_worker_without_failing_a_request() {
    let server = Server::new(guests::SYNC_GUEST)
        .arg("--workers=2")
        .start()
        .await;
    let before: HashSet<u32> = server
        .wait_for_workers(2, Duration::from_secs(10))
        .into_iter()
        .collect();
    let load = Load::start(&server.client(), 4, "/");
    eventually("requests flowing", Duration::from_secs(5), || {
        load.ok() > 50
    })
    .await;
    server.signal("HUP");
    eventually("every worker replaced", Duration::from_secs(15), || {
        let now: HashSet<u32> = server.worker_pids().into_iter().collect();
        now.len() == 2 && now.is_disjoint(&before)
    })
    .await;
    server.wait_for_workers(2, Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, failed, errors) = load.finish().await;
    assert_eq!(
        failed, 0,
        "failed requests during the rolling restart: {errors:?}"
    );
    assert!(ok > 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_retire_after_max_requests_without_failing_a_request() {
    let server = Server::new(guests::ASYNC_GUEST)
        .arg("--workers=2")
        .arg("--max-requests=50")
        .arg("--max-requests-jitter=10")
        .start()
        .await;
    let before: HashSet<u32> = server
        .wait_for_workers(2, Duration::from_secs(10))
        .into_iter()
        .collect();
    let load = Load::start(&server.client(), 4, "/");
    eventually(
        "both first workers retired",
        Duration::from_secs(20),
        || {
            let now: HashSet<u32> = server.worker_pids().into_iter().collect();
            now.is_disjoint(&before) && load.ok() > 300
        },
    )
    .await;
    let (ok, failed, errors) = load.finish().await;
    assert_eq!(
        failed, 0,
        "failed requests while workers retired: {errors:?}"
    );
    assert!(ok > 300);
    assert!(server.has_log(&["reached --max-requests"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_loop_hangs_is_killed_and_replaced() {
    let server = Server::new(guests::SYNC_GUEST)
        .arg("--timeout-worker-healthcheck=1s")
        .start()
        .await;
    let [hung] = server.wait_for_workers(1, Duration::from_secs(10))[..] else {
        unreachable!()
    };
    // SIGSTOP freezes the whole worker, its loop included: no more heartbeats.
    server.signal_pid(hung, "STOP");
    eventually("the hung worker replaced", Duration::from_secs(5), || {
        let pids = server.worker_pids();
        pids.len() == 1 && pids[0] != hung
    })
    .await;
    server.wait_for_workers(1, Duration::from_secs(5));
    assert_eq!(server.get("/").await.status, 200);
    assert!(server.has_log(&["stopped reporting; killing it"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttin_and_ttou_add_and_remove_a_worker() {
    let server = Server::new(guests::HELLO_ASYNC).start().await;
    server.wait_for_workers(1, Duration::from_secs(10));
    server.signal("TTIN");
    eventually("two workers", Duration::from_secs(10), || {
        server.worker_pids().len() == 2
    })
    .await;
    server.wait_for_workers(2, Duration::from_secs(10));
    server.signal("TTOU");
    eventually("one worker", Duration::from_secs(10), || {
        server.worker_pids().len() == 1
    })
    .await;
    assert_eq!(server.get("/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_broken_component_keeps_the_running_workers_serving() {
    // An operator overwrites the component with garbage, or a build leaves it half
    // written, and sends SIGHUP: the new worker fails to start, the old ones serve
    // on and not a request fails; with the file fixed, the next SIGHUP reloads.
    let dir = temp_dir("hup-broken");
    let file = dir.join("app.wasm");
    let good = std::fs::read(guests::SYNC_GUEST).unwrap();
    std::fs::write(&file, &good).unwrap();
    let server = Server::new(file.to_str().unwrap())
        .arg("--workers=2")
        .start()
        .await;
    let before: HashSet<u32> = server
        .wait_for_workers(2, Duration::from_secs(10))
        .into_iter()
        .collect();
    let load = Load::start(&server.client(), 4, "/");
    eventually("requests flowing", Duration::from_secs(5), || {
        load.ok() > 50
    })
    .await;
    let broken: [(&str, Vec<u8>); 2] = [
        ("garbage", b"this is not a component".to_vec()),
        ("half written", good[..good.len() / 2].to_vec()),
    ];
    for (n, (what, bytes)) in broken.iter().enumerate() {
        std::fs::write(&file, bytes).unwrap();
        server.signal("HUP");
        let failures = server
            .wait_for_metric(
                "wasmloop_worker_start_failures_total",
                |v| v > n as f64,
                Duration::from_secs(15),
            )
            .await;
        assert_eq!(failures, Some(n as f64 + 1.0), "{what}: {}", server.log());
        assert!(
            server.has_log(&["keep serving what they loaded"]),
            "{what}: {}",
            server.log()
        );
        let now: HashSet<u32> = server.worker_pids().into_iter().collect();
        assert_eq!(now, before, "{what}: the running workers were replaced");
        let reply = server.get("/").await;
        assert_eq!(reply.text(), "hello from sync\n", "{what}");
    }
    std::fs::write(&file, &good).unwrap();
    server.signal("HUP");
    eventually("every worker replaced", Duration::from_secs(15), || {
        let now: HashSet<u32> = server.worker_pids().into_iter().collect();
        now.len() == 2 && now.is_disjoint(&before)
    })
    .await;
    let (ok, failed, errors) = load.finish().await;
    assert_eq!(failed, 0, "failed requests: {errors:?}");
    assert!(ok > 100);
    assert_eq!(server.get("/").await.status, 200, "the master stopped");
}

#[tokio::test]
async fn a_worker_that_fails_at_start_up_stops_the_master() {
    let start = Instant::now();
    let (status, output) = Server::new("/nonexistent/handler.wasm")
        .arg("--workers=2")
        .start_expecting_failure();
    assert!(!status.success());
    assert!(
        output.contains("failed to read /nonexistent/handler.wasm"),
        "{output}"
    );
    assert!(output.contains("failed at start-up"), "{output}");
    // No respawn storm: the master gave up at the first failure.
    assert!(output.matches("worker started").count() <= 2, "{output}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

/// The environment a worker was started with.
fn worker_environ(server: &Running) -> Vec<String> {
    let pid = server.worker_pids()[0];
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap()
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

#[tokio::test]
async fn workers_capture_no_error_backtraces_unless_the_operator_asks() {
    // RUST_BACKTRACE=1 (kept for panics) would otherwise make every store's drop
    // capture a backtrace inside Wasmtime: 8% of a worker's CPU on small requests.
    let server = Server::new(guests::ASYNC_GUEST)
        .wrapped_in(&["env", "--unset=RUST_LIB_BACKTRACE", "RUST_BACKTRACE=1"])
        .start()
        .await;
    let environ = worker_environ(&server);
    assert!(
        environ.contains(&"RUST_LIB_BACKTRACE=0".to_string()),
        "{environ:?}"
    );
    assert!(
        environ.contains(&"RUST_BACKTRACE=1".to_string()),
        "{environ:?}"
    );
    let asked = Server::new(guests::ASYNC_GUEST)
        .wrapped_in(&["env", "RUST_LIB_BACKTRACE=1"])
        .start()
        .await;
    assert!(worker_environ(&asked).contains(&"RUST_LIB_BACKTRACE=1".to_string()));
    assert_eq!(asked.get("/").await.status, 200);
}

/// Puts `bytes` at `path` the way a build does: written beside it, then renamed over.
fn replace_file(path: &std::path::Path, bytes: &[u8]) {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Waits until `GET /` answers `body` (each on a new connection, as the load does:
/// an idle keep-alive connection to a worker being replaced may be closed under it).
async fn until_serving(server: &Running, body: &str, timeout: Duration) {
    let end = Instant::now() + timeout;
    let client = server.client().fresh_connections();
    loop {
        if client.get("/").await.text() == body {
            return;
        }
        assert!(
            Instant::now() < end,
            "never served {body:?}:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_a_rebuilt_component_in_without_failing_a_request() {
    let dir = temp_dir("reload");
    let file = dir.join("app.wasm");
    std::fs::copy(guests::SYNC_GUEST, &file).unwrap();
    let server = Server::new(file.to_str().unwrap())
        .arg("--reload")
        .arg("--workers=2")
        .arg("--compiler=auto")
        .start()
        .await;
    let load = Load::start(&server.client(), 4, "/");
    eventually("requests flowing", Duration::from_secs(5), || {
        load.ok() > 50
    })
    .await;

    // A new build of the component: served within seconds, on the fast tier first.
    replace_file(&file, &std::fs::read(guests::ASYNC_GUEST).unwrap());
    until_serving(&server, "hello from async\n", Duration::from_secs(30)).await;
    assert!(
        server.has_log(&["reload: the component changed"]),
        "{}",
        server.log()
    );
    // A broken one (a build that failed half way) keeps the running version.
    let before = server.wait_for_workers(2, Duration::from_secs(30));
    replace_file(&file, b"not a component");
    assert!(
        server
            .wait_for_log(&["keep serving what they loaded"], Duration::from_secs(30))
            .is_some(),
        "{}",
        server.log()
    );
    assert_eq!(
        server.worker_pids(),
        before,
        "the running workers were replaced"
    );
    assert_eq!(
        server.client().fresh_connections().get("/").await.text(),
        "hello from async\n"
    );
    // And the next good one goes in.
    replace_file(&file, &std::fs::read(guests::SYNC_GUEST).unwrap());
    until_serving(&server, "hello from sync\n", Duration::from_secs(30)).await;

    let (ok, failed, errors) = load.finish().await;
    assert_eq!(failed, 0, "failed requests: {errors:?}");
    assert!(ok > 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_build_runs_the_build_when_a_source_changes() {
    // The "build" copies the component its source names: a source edit picks which.
    let dir = temp_dir("reload-build");
    let (src, file) = (dir.join("src"), dir.join("app.wasm"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(dir.join("target")).unwrap();
    std::fs::write(src.join("which"), guests::SYNC_GUEST).unwrap();
    std::fs::copy(guests::SYNC_GUEST, &file).unwrap();
    let build = format!(
        "test \"$(cat {src}/which)\" != fail && cp \"$(cat {src}/which)\" {file}",
        src = src.display(),
        file = file.display()
    );
    let server = Server::new(file.to_str().unwrap())
        .arg("--reload")
        .arg(&format!("--reload-build={build}"))
        .arg(&format!("--reload-dir={}", dir.display()))
        .start()
        .await;
    // A write under an ignored directory builds nothing.
    std::fs::write(dir.join("target").join("out.o"), "object").unwrap();
    std::fs::write(src.join("which"), guests::ASYNC_GUEST).unwrap();
    until_serving(&server, "hello from async\n", Duration::from_secs(30)).await;
    assert_eq!(
        server.log().matches("reload: a source changed").count(),
        1,
        "{}",
        server.log()
    );
    // A failing build says so and changes nothing.
    std::fs::write(src.join("which"), "fail").unwrap();
    assert!(
        server
            .wait_for_log(&["reload: the build failed"], Duration::from_secs(30))
            .is_some(),
        "{}",
        server.log()
    );
    assert_eq!(
        server.client().fresh_connections().get("/").await.text(),
        "hello from async\n"
    );
}

#[tokio::test]
async fn reload_is_refused_where_there_is_no_component_to_watch() {
    let dir = temp_dir("reload-refused");
    let (status, output) = Server::registry(&dir)
        .arg("--reload")
        .start_expecting_failure();
    assert!(!status.success());
    assert!(
        output.contains("--reload watches the component"),
        "{output}"
    );
}
