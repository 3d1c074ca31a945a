//! Soak: a mixed load on two workers for a while, with a worker killed (SIGKILL)
//! every 5 s while both run, and a new version deployed every 3 s. Zero failed requests except those
//! in flight on a killed worker, every deploy answered and applied, no worker exit
//! the test did not cause, and the master's memory and descriptors flat.
//!
//! `WASMLOOP_SOAK_SECS` sets the length: 20 s in the suite, 600 s for the run that
//! docs/reliability.md reports (after `cargo test --workspace --no-run`:
//! `WASMLOOP_SOAK_SECS=600 cargo test -p wasmloop-tests --test soak -- --nocapture`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wasmloop_tests::{HttpClient, Reply, Server, guests, temp_dir};

fn soak_length() -> Duration {
    let secs = std::env::var("WASMLOOP_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    Duration::from_secs(secs)
}

async fn get_host(client: &HttpClient, host: &str, path: &str) -> Result<Reply, String> {
    let req = http::Request::get(format!("http://{}{path}", client.addr()))
        .header("host", host)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    client.try_request(req).await
}

/// What the load saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    /// Connection errors: a request in flight on a worker that was killed.
    cut: AtomicU64,
    /// Anything else: a status the request should not have had.
    wrong: std::sync::Mutex<Vec<String>>,
}

#[tokio::test]
async fn mixed_load_with_worker_kills_and_deploys() {
    let length = soak_length();
    let dir = temp_dir("soak");
    let server = Server::registry(&dir)
        .arg("--workers=2")
        .arg("--timeout=10s")
        .start()
        .await;
    let token = server.create_tenant("soak", "{}").await;
    for (app, guest, query) in [
        (
            "pool",
            guests::SYNC_GUEST,
            "route=pool.test/&var=VERSION=v0",
        ),
        ("loop", guests::ASYNC_GUEST, "route=loop.test/"),
    ] {
        let reply = server.deploy(&token, app, guest, query).await;
        assert_eq!(reply.status, 201, "{}", reply.text());
    }

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    // (host, path, expected status): a sync config read, an awaited sleep, a bit of
    // computing on the pool, and a guest trap now and then.
    let mix: [(&str, &str, u16); 4] = [
        ("pool.test", "/config?key=VERSION", 200),
        ("loop.test", "/sleep?ms=5", 200),
        ("pool.test", "/spin?ms=2", 200),
        ("loop.test", "/trap", 500),
    ];
    let load: Vec<_> = (0..4)
        .map(|c| {
            // New connections each time: a keep-alive connection to a killed worker
            // is not a request that failed.
            let client = server.client().fresh_connections();
            let (stop, tally) = (stop.clone(), tally.clone());
            tokio::spawn(async move {
                let mut i = c;
                while !stop.load(Ordering::Relaxed) {
                    // The trap once in 16 requests.
                    let (host, path, expected) = mix[if i % 16 == 15 { 3 } else { i % 3 }];
                    i += 1;
                    match get_host(&client, host, path).await {
                        Ok(reply) if reply.status.as_u16() == expected => {
                            tally.ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(reply) => tally.wrong.lock().unwrap().push(format!(
                            "{host}{path}: {} {}",
                            reply.status,
                            reply.text().trim()
                        )),
                        Err(_) => {
                            tally.cut.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();

    let started = Instant::now();
    let mut survivors = server.worker_pids();
    let (mut kills, mut deploys) = (0u32, 0u32);
    let (mut next_kill, mut next_deploy) = (Duration::from_secs(5), Duration::from_secs(3));
    let mut samples = Vec::new();
    let mut next_sample = Duration::from_secs(2);
    while started.elapsed() < length {
        let now = started.elapsed();
        if now >= next_sample {
            samples.push((
                now,
                server.master_rss_bytes(),
                server.master_fds(),
                tally.ok.load(Ordering::Relaxed),
            ));
            next_sample += Duration::from_secs(1);
        }
        if now >= next_deploy {
            deploys += 1;
            let query = format!("route=pool.test/&var=VERSION=v{deploys}");
            let reply = server
                .deploy(&token, "pool", guests::SYNC_GUEST, &query)
                .await;
            assert_eq!(reply.status, 201, "deploy {deploys}: {}", reply.text());
            let applied = reply.json();
            assert_eq!(applied["workers_updated"], true, "deploy {deploys}");
            next_deploy += Duration::from_secs(3);
        }
        if now >= next_kill {
            // Kill only while both workers run, and one that was there at the last
            // kill (surely booted), so the other keeps serving. Nothing here may
            // block: the load runs on this same thread.
            let workers = server.worker_pids();
            if workers.len() == 2
                && let Some(&victim) = workers.iter().find(|p| survivors.contains(p))
            {
                server.signal_pid(victim, "KILL");
                kills += 1;
            }
            survivors = workers;
            next_kill += Duration::from_secs(5);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }

    server.wait_for_workers(2, Duration::from_secs(15));
    let restarts = server
        .wait_for_metric(
            "wasmloop_worker_restarts_total",
            |n| n >= f64::from(kills),
            Duration::from_secs(15),
        )
        .await;
    let (ok, cut) = (
        tally.ok.load(Ordering::Relaxed),
        tally.cut.load(Ordering::Relaxed),
    );
    let wrong = tally.wrong.lock().unwrap().clone();
    let (first, last) = (samples[0], samples[samples.len() - 1]);
    // Requests per second in the first and the last third: a server that degrades
    // (leaks, slows down, lets connections pile up) serves fewer later.
    let third = samples.len() / 3;
    let rate = |from: usize, to: usize| {
        (samples[to].3 - samples[from].3) as f64 / (samples[to].0 - samples[from].0).as_secs_f64()
    };
    let (early, late) = (
        rate(0, third),
        rate(samples.len() - 1 - third, samples.len() - 1),
    );
    eprintln!("soak: {early:.0} requests/s in the first third, {late:.0} in the last");
    eprintln!(
        "soak: {:?}, {ok} requests as expected, {cut} cut on {kills} killed workers, {} wrong, \
         {deploys} deploys; master RSS {} -> {} KiB, descriptors {} -> {}, restarts {restarts:?}",
        started.elapsed(),
        wrong.len(),
        first.1 >> 10,
        last.1 >> 10,
        first.2,
        last.2,
    );
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert!(
        late >= early / 3.0,
        "throughput fell from {early:.0}/s to {late:.0}/s"
    );
    // Four clients: at most four requests in flight on a worker when it is killed.
    assert!(
        cut <= 4 * u64::from(kills),
        "{cut} requests cut by {kills} kills"
    );
    assert!(ok > 100, "only {ok} requests ran");
    // Every restart was a kill of ours: no worker died or hung on its own.
    assert_eq!(restarts, Some(f64::from(kills)));
    // The master keeps one pipe pair per worker and the listeners: killed and
    // replaced workers must not leave descriptors or memory behind.
    assert!(
        last.2 <= first.2 + 2,
        "descriptors grew {} -> {}",
        first.2,
        last.2
    );
    assert!(
        last.1 <= first.1 + (16 << 20),
        "the master grew {} -> {} KiB",
        first.1 >> 10,
        last.1 >> 10
    );
}
