//! The native baseline: hyper on a tokio current-thread runtime (one core, like one
//! wasmloop worker) answering what the hello examples answer, with the same headers
//! and chunked framing, so that only the sandbox differs.
//!
//! `native-hello 127.0.0.1:0` prints `listening on http://ADDR` like wasmloop.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

type Chunk = Result<Frame<Bytes>, Infallible>;

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
                let service = service_fn(move |_req| {
                    n.set(n.get() + 1);
                    let id = format!("{:016x}", n.get());
                    async move {
                        // A one-item stream has no known length: hyper sends it
                        // chunked, as it does the guests' bodies.
                        let body = StreamBody::new(futures::stream::iter([Chunk::Ok(
                            Frame::data(Bytes::from_static(b"Hello, world!\n")),
                        )]));
                        let response = http::Response::builder()
                            .header("content-type", "text/plain")
                            .header("x-request-id", id)
                            .body(body)
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
