//! The native baseline: hyper on a tokio current-thread runtime (one core, like one
//! wasmloop worker) answering what the benchmark handlers answer (bench/guests), with
//! the same headers and framing, so that only the sandbox differs:
//!
//! | route | answers | after |
//! |---|---|---|
//! | `/` | `Hello, world!\n` | nothing |
//! | `/sleep` | `slept\n` | an awaited 10 ms timer |
//! | `/cpu` | `done\n` | 2 ms of computing (on the loop: there is no pool) |
//! | `/spin?ms=N` | `done\n` | N ms of computing (default 50) |
//!
//! `native-hello 127.0.0.1:0` prints `listening on http://ADDR` like wasmloop.

use std::convert::Infallible;

use std::time::Duration;

use bench_work::{millis, spin};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".into());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        eprintln!("listening on http://{}", listener.local_addr()?);
        let mut next_id: u64 = 0;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            next_id += 1 << 20;
            let base = next_id;
            tokio::task::spawn_local(async move {
                let n = std::cell::Cell::new(base);
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    n.set(n.get() + 1);
                    let id = format!("{:016x}", n.get());
                    async move {
                        let body: &'static [u8] = match req.uri().path() {
                            "/sleep" => {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                b"slept\n"
                            }
                            "/cpu" => {
                                spin(Duration::from_millis(2));
                                b"done\n"
                            }
                            "/spin" => {
                                spin(Duration::from_millis(millis(req.uri().query())));
                                b"done\n"
                            }
                            _ => b"Hello, world!\n",
                        };
                        let response = http::Response::builder()
                            .header("content-type", "text/plain; charset=utf-8")
                            .header("x-request-id", id)
                            .body(Full::new(Bytes::from_static(body)))
                            .expect("a valid response");
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
