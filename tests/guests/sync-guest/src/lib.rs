//! A wasi:http 0.2 guest with a sync `incoming-handler.handle` export: the host runs
//! it on the thread pool. Each path is one behaviour the end-to-end tests need.
//!
//! | path | behaviour |
//! |---|---|
//! | `/` | `hello from sync`, with a `content-length` |
//! | `/sleep?ms=N` | blocks the calling thread for N ms, then answers |
//! | `/spin?ms=N&chunk=C` | burns CPU for N ms without yielding, in chunks of C loop rounds between clock reads (default 1000) |
//! | `/forever` | loops forever (ends on the fuel or time limit) |
//! | `/trap` | panics |
//! | `/alloc` | allocates until memory runs out |
//! | `/echo` | answers with the request body |
//! | `/big?kb=N` | answers with N KiB of `x` |
//! | `/stream?mb=N` | streams N MiB of `x`, each 4 KiB write made when it is written |
//! | `/recurse` | recurses without end: a stack overflow |
//! | `/fuel?n=N` | runs N iterations of a fixed loop (fuel calibration) |
//! | `/config?key=K` | the value of configuration variable K (wasi:config), or 404 |
//! | `/fetch?to=HOST:PORT` | GETs `http://HOST:PORT/upstream` and answers with its body, or 502 and the error |
//! | `/fetch?to=HOST:PORT&timeout_s=N` | the same with every timeout of the request set to N s |
//! | `/whoami` | `x-real-ip=.. x-forwarded-for=.. forwarded=.. scheme=..`: what the host told the guest of the client (`-` when absent) |
//! | `/request-id` | the `x-request-id` the guest was given |
//! | `/where...` (any path under it) | `path=.. prefix=..`: the path and query the guest got, and its `x-forwarded-prefix` (`-` when absent) |
//! | `/count` | `N ID`: how many requests this instance has counted, this one included, and a random id of the instance (state kept across requests when the host reuses the instance) |

use wasip2::clocks::monotonic_clock;
use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Handler;

/// A random id of this instance, made on first use.
fn instance_id() -> u64 {
    use std::hash::BuildHasher as _;
    static ID: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *ID.get_or_init(|| std::collections::hash_map::RandomState::new().hash_one(0u8))
}

/// Requests this instance has served (see `/count`).
static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// wasi:config, the standard interface for configuration variables.
mod config {
    wit_bindgen::generate!({
        inline: r#"
            package wasi:config@0.2.0-rc.1;
            interface store {
                variant error { upstream(string), io(string) }
                get: func(key: string) -> result<option<string>, error>;
                get-all: func() -> result<list<tuple<string, string>>, error>;
            }
            world imports { import store; }
        "#,
        world: "imports",
    });
}

wasip2::http::proxy::export!(Handler);

fn query(path: &str, key: &str) -> Option<u64> {
    let (_, q) = path.split_once('?')?;
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

fn query_str<'a>(path: &'a str, key: &str) -> Option<&'a str> {
    let (_, q) = path.split_once('?')?;
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// A blocking GET over wasi:http's outgoing handler, with every timeout set to
/// `timeout_s` seconds if given.
fn fetch(authority: &str, timeout_s: Option<u64>) -> Result<Vec<u8>, String> {
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{OutgoingRequest, RequestOptions, Scheme};
    let request = OutgoingRequest::new(Fields::new());
    request
        .set_scheme(Some(&Scheme::Http))
        .map_err(|()| "bad scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|()| "bad authority")?;
    request
        .set_path_with_query(Some("/upstream"))
        .map_err(|()| "bad path")?;
    let options = timeout_s.map(|s| {
        let options = RequestOptions::new();
        let ns = s * 1_000_000_000;
        let _ = options.set_connect_timeout(Some(ns));
        let _ = options.set_first_byte_timeout(Some(ns));
        let _ = options.set_between_bytes_timeout(Some(ns));
        options
    });
    let pending = outgoing_handler::handle(request, options).map_err(|e| format!("{e:?}"))?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or("no response")?
        .map_err(|()| "response taken twice")?
        .map_err(|e| format!("{e:?}"))?;
    let body = response.consume().map_err(|()| "no body")?;
    let stream = body.stream().map_err(|()| "no body stream")?;
    let mut bytes = Vec::new();
    while let Ok(chunk) = stream.blocking_read(64 * 1024) {
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    respond_with(out, status, body, &[]);
}

/// `respond` with a declared `content-length`, as SDK guests send it.
fn respond_sized(out: ResponseOutparam, status: u16, body: &[u8]) {
    let length = body.len().to_string().into_bytes();
    respond_with(out, status, body, &[("content-length", length)]);
}

fn respond_with(out: ResponseOutparam, status: u16, body: &[u8], extra: &[(&str, Vec<u8>)]) {
    let mut fields = vec![("content-type".to_string(), b"text/plain".to_vec())];
    fields.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let headers = Fields::from_list(&fields).unwrap();
    let resp = OutgoingResponse::new(headers);
    resp.set_status_code(status).unwrap();
    let outgoing = resp.body().unwrap();
    ResponseOutparam::set(out, Ok(resp));
    let stream = outgoing.write().unwrap();
    for chunk in body.chunks(4096) {
        stream.blocking_write_and_flush(chunk).unwrap();
    }
    drop(stream);
    OutgoingBody::finish(outgoing, None).unwrap();
}

fn read_body(req: IncomingRequest) -> Vec<u8> {
    let body = req.consume().unwrap();
    let stream = body.stream().unwrap();
    let mut buf = Vec::new();
    while let Ok(chunk) = stream.blocking_read(64 * 1024) {
        buf.extend_from_slice(&chunk);
    }
    buf
}

/// Recursion without a base case, with a frame the optimizer must keep.
#[expect(unconditional_recursion, reason = "the stack overflow is the point")]
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 32]);
    recurse(depth + 1).wrapping_add(frame[depth as usize % 32])
}

/// A loop the optimizer cannot remove, used to burn a known amount of work.
fn work(iterations: u64) -> u64 {
    let mut x: u64 = 1;
    for i in 0..iterations {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    x
}

impl Guest for Handler {
    fn handle(req: IncomingRequest, out: ResponseOutparam) {
        let path = req.path_with_query().unwrap_or_default();
        let route = path.split('?').next().unwrap_or("");
        match route {
            "/" => respond_sized(out, 200, b"hello from sync\n"),
            "/sleep" => {
                let ms = query(&path, "ms").unwrap_or(100);
                monotonic_clock::subscribe_duration(ms * 1_000_000).block();
                respond(out, 200, format!("slept {ms} ms\n").as_bytes());
            }
            "/spin" => {
                let ms = query(&path, "ms").unwrap_or(100);
                let chunk = query(&path, "chunk").unwrap_or(1000);
                let end = monotonic_clock::now() + ms * 1_000_000;
                while monotonic_clock::now() < end {
                    work(chunk);
                }
                respond(out, 200, format!("spun {ms} ms\n").as_bytes());
            }
            "/forever" => loop {
                work(1_000_000);
            },
            "/trap" => panic!("the guest asked to trap"),
            "/alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            where_ if where_.starts_with("/where") => {
                let prefix = req.headers().get("x-forwarded-prefix").first().map_or_else(
                    || "-".to_string(),
                    |v| String::from_utf8_lossy(v).into_owned(),
                );
                respond(
                    out,
                    200,
                    format!("path={path} prefix={prefix}\n").as_bytes(),
                );
            }
            "/whoami" => {
                // What the host says of the client: its x-real-ip, the forwarding
                // headers it let through, and the scheme of the request's URI.
                let headers = req.headers();
                let get = |name: &str| {
                    let values: Vec<String> = headers
                        .get(name)
                        .iter()
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .collect();
                    if values.is_empty() {
                        "-".to_string()
                    } else {
                        values.join(",")
                    }
                };
                let scheme = match req.scheme() {
                    Some(wasip2::http::types::Scheme::Https) => "https",
                    Some(wasip2::http::types::Scheme::Http) => "http",
                    _ => "-",
                };
                let text = format!(
                    "x-real-ip={} x-forwarded-for={} forwarded={} scheme={scheme}\n",
                    get("x-real-ip"),
                    get("x-forwarded-for"),
                    get("forwarded"),
                );
                respond(out, 200, text.as_bytes());
            }
            "/request-id" => {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .first()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_else(|| "-".into());
                respond(out, 200, format!("{id}\n").as_bytes());
            }
            "/count" => {
                let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                respond(out, 200, format!("{n} {}\n", instance_id()).as_bytes());
            }
            "/echo" => {
                let body = read_body(req);
                respond(out, 200, &body);
            }
            "/big" => {
                let kb = query(&path, "kb").unwrap_or(1024) as usize;
                respond(out, 200, &vec![b'x'; kb * 1024]);
            }
            "/stream" => {
                let mb = query(&path, "mb").unwrap_or(1);
                let resp = OutgoingResponse::new(Fields::new());
                let outgoing = resp.body().unwrap();
                ResponseOutparam::set(out, Ok(resp));
                let stream = outgoing.write().unwrap();
                let chunk = [b'x'; 4096];
                for _ in 0..mb * 256 {
                    if stream.blocking_write_and_flush(&chunk).is_err() {
                        return; // the reader went away
                    }
                }
                drop(stream);
                OutgoingBody::finish(outgoing, None).unwrap();
            }
            "/recurse" => respond(out, 200, format!("{}\n", recurse(0)).as_bytes()),
            "/fuel" => {
                let n = query(&path, "n").unwrap_or(1_000_000);
                respond(out, 200, format!("{}\n", work(n)).as_bytes());
            }
            "/config" => {
                match config::wasi::config::store::get(query_str(&path, "key").unwrap_or("")) {
                    Ok(Some(value)) => respond(out, 200, value.as_bytes()),
                    Ok(None) => respond(out, 404, b"no such variable\n"),
                    Err(e) => respond(out, 500, format!("{e:?}\n").as_bytes()),
                }
            }
            "/fetch" => match fetch(
                query_str(&path, "to").unwrap_or(""),
                query(&path, "timeout_s"),
            ) {
                Ok(body) => respond(out, 200, &body),
                Err(e) => respond(out, 502, format!("fetch failed: {e}\n").as_bytes()),
            },
            _ => respond(out, 404, b"not found\n"),
        }
    }
}
