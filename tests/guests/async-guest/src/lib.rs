//! A wasi:http 0.3 guest with an async `handler.handle` export: the host runs it on
//! the event loop. Each path is one behaviour the end-to-end tests need.
//!
//! | path | behaviour |
//! |---|---|
//! | `/` | `hello from async`, with a `content-length` |
//! | `/sleep?ms=N` | awaits an N ms timer, then answers |
//! | `/spin?ms=N` | burns CPU for N ms without awaiting |
//! | `/forever` | loops forever without awaiting |
//! | `/hang` | awaits a one-hour timer: a request that never completes in practice |
//! | `/trap` | panics |
//! | `/alloc` | allocates until memory runs out |
//! | `/hold?mb=N&ms=M` | fills N MiB of memory, then awaits an M ms timer holding it |
//! | `/count?ms=M` | `N ID`: how many requests this instance has counted, this one included, and a random id of the instance (state kept across requests when the host reuses the instance); with `ms`, answers after waiting M ms |
//! | `/keep?mb=N` | fills N MiB of memory and keeps it for the instance's life |
//! | `/echo` | answers with the request body |
//! | `/headers?ms=M` | after an M ms wait (default none), the path with query it was given and then each header as `name: value`, a line each, in order; bytes outside printable ASCII escaped (`\xe9`) |
//! | `/big?kb=N` | streams N KiB of `x` in 16 KiB chunks |
//! | `/stream?mb=N` | streams N MiB of `x`, each 64 KiB chunk made when it is written |
//! | `/recurse` | recurses without end: a stack overflow |
//! | `/fetch?to=HOST:PORT` | GETs `http://HOST:PORT/upstream` and answers with its body, or 502 and the error |

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use wasip3::clocks::monotonic_clock;
use wasip3::http::types::{ErrorCode, Fields, Request, Response};
use wasip3::{wit_bindgen, wit_future, wit_stream};

struct Handler;

/// Requests this instance has served (see `/count`).
static COUNT: AtomicU64 = AtomicU64::new(0);
/// A random id of this instance, made on first use.
fn instance_id() -> u64 {
    use std::hash::BuildHasher as _;
    static ID: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *ID.get_or_init(|| std::collections::hash_map::RandomState::new().hash_one(0u8))
}

/// Memory `/keep` holds for the instance's life.
static KEPT: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

wasip3::http::service::export!(Handler);

fn query(path: &str, key: &str) -> Option<u64> {
    let (_, q) = path.split_once('?')?;
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

/// Builds a response whose body is written by a spawned task, chunk by chunk.
fn respond(status: u16, chunks: Vec<Vec<u8>>) -> Result<Response, ErrorCode> {
    respond_with(status, chunks, &[])
}

/// `text` with a declared `content-length`, as SDK guests send it.
fn text_sized(status: u16, body: &str) -> Result<Response, ErrorCode> {
    let length = body.len().to_string().into_bytes();
    respond_with(
        status,
        vec![body.as_bytes().to_vec()],
        &[("content-length", length)],
    )
}

fn respond_with(
    status: u16,
    chunks: Vec<Vec<u8>>,
    extra: &[(&str, Vec<u8>)],
) -> Result<Response, ErrorCode> {
    let mut fields = vec![("content-type".to_string(), b"text/plain".to_vec())];
    fields.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let headers = Fields::from_list(&fields).map_err(|_| ErrorCode::InternalError(None))?;
    let (mut body_tx, body_rx) = wit_stream::new();
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    let (response, _sent) = Response::new(headers, Some(body_rx), trailers_rx);
    response
        .set_status_code(status)
        .map_err(|_| ErrorCode::InternalError(None))?;
    wit_bindgen::spawn(async move {
        for chunk in chunks {
            if !body_tx.write_all(chunk).await.is_empty() {
                return; // the reader went away
            }
        }
        drop(body_tx);
        drop(trailers_tx);
    });
    Ok(response)
}

fn text(status: u16, body: impl Into<String>) -> Result<Response, ErrorCode> {
    respond(status, vec![body.into().into_bytes()])
}

fn query_str<'a>(path: &'a str, key: &str) -> Option<&'a str> {
    let (_, q) = path.split_once('?')?;
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// An awaited GET over wasi:http 0.3's client.
async fn fetch(authority: &str) -> Result<Vec<u8>, String> {
    use wasip3::http::types::{Request as OutRequest, Scheme};
    let (_, trailers) = wit_future::new(|| Ok(None));
    let (request, _sent) = OutRequest::new(Fields::new(), None, trailers, None);
    request
        .set_scheme(Some(&Scheme::Http))
        .map_err(|()| "bad scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|()| "bad authority")?;
    request
        .set_path_with_query(Some("/upstream"))
        .map_err(|()| "bad path")?;
    let response = wasip3::http::client::send(request)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let (_, result) = wit_future::new(|| Ok(()));
    let (body, _trailers) = Response::consume_body(response, result);
    Ok(body.collect().await)
}

/// Recursion without a base case, with a frame the optimizer must keep.
#[expect(unconditional_recursion, reason = "the stack overflow is the point")]
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 32]);
    recurse(depth + 1).wrapping_add(frame[depth as usize % 32])
}

fn work(iterations: u64) -> u64 {
    let mut x: u64 = 1;
    for i in 0..iterations {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    x
}

impl wasip3::exports::http::handler::Guest for Handler {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let path = request.get_path_with_query().unwrap_or_default();
        let route = path.split('?').next().unwrap_or("").to_string();
        match route.as_str() {
            "/" => text_sized(200, "hello from async\n"),
            "/sleep" => {
                let ms = query(&path, "ms").unwrap_or(100);
                monotonic_clock::wait_for(ms * 1_000_000).await;
                text(200, format!("slept {ms} ms\n"))
            }
            "/spin" => {
                let ms = query(&path, "ms").unwrap_or(100);
                let end = monotonic_clock::now() + ms * 1_000_000;
                while monotonic_clock::now() < end {
                    work(1000);
                }
                text(200, format!("spun {ms} ms\n"))
            }
            "/forever" => loop {
                work(1_000_000);
            },
            "/hang" => {
                monotonic_clock::wait_for(3600 * 1_000_000_000).await;
                text(200, "an hour later\n")
            }
            "/trap" => panic!("the guest asked to trap"),
            "/alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "/hold" => {
                let mb = query(&path, "mb").unwrap_or(1) as usize;
                let hoard = vec![1u8; mb << 20];
                monotonic_clock::wait_for(query(&path, "ms").unwrap_or(1000) * 1_000_000).await;
                text(
                    200,
                    format!("held {} MiB\n", std::hint::black_box(&hoard).len() >> 20),
                )
            }
            "/count" => {
                let n = COUNT.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(ms) = query(&path, "ms") {
                    monotonic_clock::wait_for(ms * 1_000_000).await;
                }
                if let Some(ms) = query(&path, "spin") {
                    let end = monotonic_clock::now() + ms * 1_000_000;
                    while monotonic_clock::now() < end {
                        work(1000);
                    }
                }
                text(200, format!("{n} {}\n", instance_id()))
            }
            "/keep" => {
                let mb = query(&path, "mb").unwrap_or(1) as usize;
                let mut kept = KEPT.lock().unwrap();
                kept.push(vec![1u8; mb << 20]);
                text(
                    200,
                    format!(
                        "keeping {} MiB\n",
                        kept.iter().map(Vec::len).sum::<usize>() >> 20
                    ),
                )
            }
            "/headers" => {
                if let Some(ms) = query(&path, "ms") {
                    monotonic_clock::wait_for(ms * 1_000_000).await;
                }
                let mut out = format!("{path}\n");
                for (name, value) in request.get_headers().copy_all() {
                    out.push_str(&format!("{name}: {}\n", value.escape_ascii()));
                }
                text(200, out)
            }
            "/echo" => {
                let (_, result_rx) = wit_future::new(|| Ok(()));
                let (body, _trailers) = Request::consume_body(request, result_rx);
                let bytes = body.collect().await;
                respond(200, vec![bytes])
            }
            "/big" => {
                let kb = query(&path, "kb").unwrap_or(1024) as usize;
                let chunks = (0..kb.div_ceil(16))
                    .map(|i| vec![b'x'; (kb - i * 16).min(16) * 1024])
                    .collect();
                respond(200, chunks)
            }
            "/stream" => {
                let mb = query(&path, "mb").unwrap_or(1);
                let (mut body_tx, body_rx) = wit_stream::new();
                let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
                let (response, _sent) = Response::new(Fields::new(), Some(body_rx), trailers_rx);
                wit_bindgen::spawn(async move {
                    for _ in 0..mb * 16 {
                        if !body_tx.write_all(vec![b'x'; 64 << 10]).await.is_empty() {
                            return; // the reader went away
                        }
                    }
                    drop(body_tx);
                    drop(trailers_tx);
                });
                Ok(response)
            }
            "/recurse" => text(200, format!("{}\n", recurse(0))),
            "/fetch" => match fetch(query_str(&path, "to").unwrap_or("")).await {
                Ok(body) => respond(200, vec![body]),
                Err(e) => text(502, format!("fetch failed: {e}\n")),
            },
            _ => text(404, "not found\n"),
        }
    }
}
