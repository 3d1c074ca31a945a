//! The end-to-end test harness: start the real `wasmloop` binary on 127.0.0.1:0, read
//! the bound address from its stderr, talk HTTP to it, read its log, signal it.
//!
//! ```no_run
//! # async fn demo() {
//! use wasmloop_tests::{Server, guests};
//! let server = Server::new(guests::ASYNC_GUEST).arg("--threads=1").start().await;
//! let reply = server.get("/").await;
//! assert_eq!(reply.status, 200);
//! # }
//! ```

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub mod otlp;
pub mod pg;
pub mod python;

/// Paths of the guest components, built from source by build.rs.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

/// The `wasmloop` binary of this build (target/<profile>/wasmloop), refused when it
/// is older than the host's sources.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("tests run from target/<profile>/deps");
    let bin = profile_dir.join("wasmloop");
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} is missing; run `cargo test --workspace`", bin.display()));
    let built = built
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let sources: u64 = env!("WASMLOOP_HOST_SOURCES_MTIME").parse().unwrap_or(0);
    assert!(
        built >= sources,
        "{} is older than host/src; run `cargo test --workspace` (or `cargo build -p wasmloop` first)",
        bin.display()
    );
    bin
}

/// The admin token every registry-mode test server is started with.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

/// A fresh, empty directory under the target directory for one test's data.
pub fn temp_dir(name: &str) -> PathBuf {
    let mut random = [0u8; 8];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").expect("urandom"),
        &mut random,
    )
    .expect("random bytes");
    let dir = PathBuf::from(guests::TARGET_DIR)
        .join("test-data")
        .join(format!("{name}-{}", u64::from_le_bytes(random)));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a test data directory");
    dir
}

/// Settings for a server about to start.
pub struct Server {
    component: Option<String>,
    args: Vec<String>,
    /// A command the binary runs under (`unshare ...`), its path and arguments last.
    wrapper: Vec<String>,
    /// Environment variables set for the server.
    env: Vec<(String, String)>,
}

impl Server {
    /// A server that will serve `component` on 127.0.0.1:0.
    pub fn new(component: &str) -> Server {
        Server {
            component: Some(component.to_string()),
            args: Vec::new(),
            wrapper: Vec::new(),
            env: Vec::new(),
        }
    }

    /// A server for deployed apps, keeping them in `data_dir`, with [`ADMIN_TOKEN`].
    pub fn registry(data_dir: &std::path::Path) -> Server {
        Server {
            component: None,
            args: vec![format!("--data-dir={}", data_dir.display())],
            wrapper: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Tests run side by side: each server's admin listener takes a free port too.
    /// And one compiler, unless the test names one: with tiers (`--compiler auto`,
    /// serving a component) the app is replaced by its optimized tier a moment after
    /// start, which tests that follow instances or fuel would see (tests/tiers.rs
    /// tests the tiers themselves).
    fn default_admin_listener(&mut self) {
        if !self.args.iter().any(|a| a.starts_with("--admin-listen")) {
            self.args.push("--admin-listen=127.0.0.1:0".into());
        }
        if !self.args.iter().any(|a| a.starts_with("--compiler")) {
            self.args.push("--compiler=cranelift".into());
        }
    }

    /// Adds one command-line argument (`--threads=2`).
    pub fn arg(mut self, arg: &str) -> Server {
        self.args.push(arg.to_string());
        self
    }

    /// Sets an environment variable for the server (`OTEL_SERVICE_NAME=...`).
    pub fn env(mut self, key: &str, value: &str) -> Server {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Runs the binary under `command` (which must end by exec'ing its last
    /// arguments, so that the server keeps the child's pid).
    pub fn wrapped_in(mut self, command: &[&str]) -> Server {
        self.wrapper = command.iter().map(|c| c.to_string()).collect();
        self
    }

    /// Starts the binary and waits until it prints `listening on http://ADDR`. One
    /// worker process unless the test asks for `--workers`.
    pub async fn start(self) -> Running {
        self.launch().ready()
    }

    /// Starts the binary without waiting for it to serve.
    pub fn launch(mut self) -> Launched {
        if !self.args.iter().any(|a| a.starts_with("--workers")) {
            self.args.push("--workers=1".into());
        }
        self.default_admin_listener();
        let mut command = match self.wrapper.split_first() {
            None => Command::new(binary()),
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary());
                command
            }
        };
        let mut child = command
            .arg("serve")
            .arg("--listen=127.0.0.1:0")
            .args(&self.args)
            .args(&self.component)
            .env_remove("RUST_LOG")
            .env("WASMLOOP_ADMIN_TOKEN", ADMIN_TOKEN)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("failed to start wasmloop");
        let log = Arc::new(Log::default());
        let stderr = child.stderr.take().expect("stderr is piped");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.push(line);
            }
            sink.close();
        });
        Launched {
            child: Some(child),
            log,
        }
    }

    /// Runs the binary to completion, expecting it to fail at start-up; returns its
    /// exit status and output.
    pub fn start_expecting_failure(mut self) -> (ExitStatus, String) {
        self.default_admin_listener();
        let output = Command::new(binary())
            .arg("serve")
            .arg("--listen=127.0.0.1:0")
            .args(&self.args)
            .args(&self.component)
            .env("WASMLOOP_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdin(Stdio::null())
            .output()
            .expect("failed to run wasmloop");
        (
            output.status,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

/// A server started but perhaps not serving yet. Killed when dropped.
pub struct Launched {
    /// Taken by [`Launched::ready`], which hands it to [`Running`].
    child: Option<Child>,
    log: Arc<Log>,
}

/// `ADDR` of `http://ADDR` or `https://ADDR`.
fn after_scheme(url: &str) -> &str {
    url.strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url)
}

impl Launched {
    /// The admin listener's address, once printed (within 60 s).
    pub fn admin(&self) -> SocketAddr {
        let line = self.log.wait_for(
            |l| l.starts_with("admin listening on http"),
            Duration::from_secs(60),
        );
        let Some(line) = line else {
            panic!("no admin listener; the output:\n{}", self.log.text());
        };
        after_scheme(&line["admin listening on ".len()..])
            .parse()
            .expect("the printed admin address parses")
    }

    /// Waits until a log line contains every one of `parts`.
    pub fn wait_for_log(&self, parts: &[&str], timeout: Duration) -> Option<String> {
        self.log
            .wait_for(|l| parts.iter().all(|p| l.contains(p)), timeout)
    }

    /// Waits (up to 60 s) until the server prints `listening on http://ADDR`.
    pub fn ready(mut self) -> Running {
        let line = self.log.wait_for(
            |l| l.starts_with("listening on http"),
            Duration::from_secs(60),
        );
        let Some(line) = line else {
            panic!("wasmloop did not start; its output:\n{}", self.log.text());
        };
        let addr: SocketAddr = after_scheme(&line["listening on ".len()..])
            .parse()
            .expect("the printed address parses");
        let admin = self
            .log
            .wait_for(|l| l.starts_with("admin listening on http"), Duration::ZERO)
            .map(|l| {
                after_scheme(&l["admin listening on ".len()..])
                    .parse()
                    .expect("the printed admin address parses")
            });
        let child = self.child.take().expect("ready is called once");
        Running {
            child,
            addr,
            admin,
            log: self.log.clone(),
            client: HttpClient::new(addr),
        }
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A running server. Killed when dropped.
pub struct Running {
    child: Child,
    pub addr: SocketAddr,
    /// The admin listener, unless started with `--admin-listen=off`.
    pub admin: Option<SocketAddr>,
    log: Arc<Log>,
    client: HttpClient,
}

/// An HTTP client bound to one server; cheap to clone into tasks.
#[derive(Clone)]
pub struct HttpClient {
    addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// What a request got back.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// From sending the request to the end of the body.
    pub elapsed: Duration,
}

/// What a client can see of a reply, minus what differs per request: the status,
/// `content-type`, `x-custom`, `allow`, and the body as text.
pub type Visible = (u16, Option<String>, Option<String>, Option<String>, String);

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; `null` when it is not JSON (an assertion on it then fails
    /// showing what it got).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }

    /// The parts two styles of one app must answer alike (tests/sdk.rs,
    /// tests/python_sdk.rs).
    pub fn visible(&self) -> Visible {
        let header = |name: &str| {
            self.headers
                .get(name)
                .map(|v| v.to_str().unwrap_or("<binary>").to_string())
        };
        (
            self.status.as_u16(),
            header("content-type"),
            header("x-custom"),
            header("allow"),
            self.text(),
        )
    }
}

impl HttpClient {
    /// A client for the server at `addr`.
    pub fn new(addr: SocketAddr) -> HttpClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        HttpClient {
            addr,
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// The same client, opening a new connection for every request: what a failure
    /// counts then is requests, not keep-alive connections a worker dropped.
    pub fn fresh_connections(&self) -> HttpClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        HttpClient {
            addr: self.addr,
            client,
        }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, Bytes::new()).await
    }

    /// Sends a request with `body` (Content-Length set).
    pub async fn send(&self, method: Method, path: &str, body: impl Into<Bytes>) -> Reply {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .body(Full::new(body.into()))
            .expect("a valid request");
        self.request(req).await
    }

    /// Sends any request; panics if the connection fails.
    pub async fn request(&self, req: Request<Full<Bytes>>) -> Reply {
        self.try_request(req).await.expect("the request failed")
    }

    /// Sends any request; errors are the client's (connection refused, reset, ...).
    pub async fn try_request(&self, req: Request<Full<Bytes>>) -> Result<Reply, String> {
        let start = Instant::now();
        let response = self
            .client
            .request(req)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("{e:?}"))?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
            elapsed: start.elapsed(),
        })
    }
}

impl HttpClient {
    /// GET `path` and read the body frame by frame without keeping it; `progress` is
    /// called with the bytes read so far after every frame. Returns the status and the
    /// body's length: for bodies too large to hold.
    pub async fn get_counting(
        &self,
        path: &str,
        mut progress: impl FnMut(u64),
    ) -> Result<(StatusCode, u64), String> {
        let req = Request::get(format!("http://{}{path}", self.addr))
            .body(Full::new(Bytes::new()))
            .expect("a valid request");
        let response = self
            .client
            .request(req)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let status = response.status();
        let mut body = response.into_body();
        let mut read = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("after {read} bytes: {e:?}"))?;
            if let Some(data) = frame.data_ref() {
                read += data.len() as u64;
                progress(read);
            }
        }
        Ok((status, read))
    }
}

/// The text of one `/metrics` scrape: values read from it belong together.
#[derive(Debug, Clone)]
pub struct Metrics(pub String);

impl Metrics {
    /// The value of `series`, written `name{labels}` exactly as exposed (labels in
    /// their exposed order), or `None` when absent.
    pub fn get(&self, series: &str) -> Option<f64> {
        self.0
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }
}

/// A plain HTTP server on 127.0.0.1:0 standing in for what guests call out to. It
/// answers every request with `upstream saw PATH` and counts the connections it
/// accepted, so a test can tell that a refused call never left the host.
pub struct Upstream {
    pub addr: SocketAddr,
    connections: Arc<std::sync::atomic::AtomicUsize>,
}

impl Upstream {
    /// Binds and starts serving on the current runtime.
    pub async fn start() -> Upstream {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        |req: http::Request<hyper::body::Incoming>| async move {
                            let body = format!("upstream saw {}", req.uri().path());
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::from(body),
                            )))
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream { addr, connections }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Running {
    /// GET `path` from the admin listener, as the operator (with [`ADMIN_TOKEN`], which
    /// `/metrics` and `/doctor` ask for; the probes need none).
    pub async fn admin_get(&self, path: &str) -> Reply {
        self.admin_get_with(path, Some(ADMIN_TOKEN)).await
    }

    /// GET `path` from the admin listener with `token`, or with none.
    pub async fn admin_get_with(&self, path: &str, token: Option<&str>) -> Reply {
        let admin = self.admin.expect("the server has an admin listener");
        let mut req = Request::get(format!("http://{admin}{path}"));
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        HttpClient::new(admin)
            .request(req.body(Full::new(Bytes::new())).expect("a valid request"))
            .await
    }

    /// Sends a request to the admin API with `token` (if any).
    pub async fn api(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: impl Into<Bytes>,
        content_type: &str,
    ) -> Reply {
        let admin = self.admin.expect("the server has an admin listener");
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{admin}{path}"))
            .header("content-type", content_type);
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        HttpClient::new(admin)
            .request(req.body(Full::new(body.into())).expect("a valid request"))
            .await
    }

    /// Creates tenant `name` with the admin token; returns its token.
    pub async fn create_tenant(&self, name: &str, limits: &str) -> String {
        let body = format!(r#"{{"name": "{name}", "limits": {limits}}}"#);
        let reply = self
            .api(
                Method::POST,
                "/v1/tenants",
                Some(ADMIN_TOKEN),
                body,
                "application/json",
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        let value: serde_json::Value = serde_json::from_slice(&reply.body).expect("JSON");
        value["token"].as_str().expect("a token").to_string()
    }

    /// Deploys the component at `wasm` as `app` with settings in `query`.
    pub async fn deploy(&self, token: &str, app: &str, wasm: &str, query: &str) -> Reply {
        let bytes = std::fs::read(wasm).expect("the component");
        self.api(
            Method::POST,
            &format!("/v1/apps/{app}/versions?{query}"),
            Some(token),
            bytes,
            "application/wasm",
        )
        .await
    }

    /// Asserts that `token` can neither see nor change `app`, another tenant's: its
    /// versions, an activation and a delete all answer 404, as if it did not exist.
    pub async fn assert_hidden(&self, app: &str, token: &str) {
        for (method, path, body) in [
            (Method::GET, format!("/v1/apps/{app}/versions"), ""),
            (
                Method::POST,
                format!("/v1/apps/{app}/activate"),
                r#"{"version": 1}"#,
            ),
            (Method::DELETE, format!("/v1/apps/{app}"), ""),
        ] {
            let reply = self
                .api(method.clone(), &path, Some(token), body, "application/json")
                .await;
            assert_eq!(reply.status, 404, "{method} {path}: {}", reply.text());
        }
    }

    /// Runs the `wasmloop` CLI against this server's admin listener with `token`.
    pub fn cli(&self, token: &str, args: &[&str]) -> std::process::Output {
        let admin = self.admin.expect("the server has an admin listener");
        Command::new(binary())
            .args(args)
            .env("WASMLOOP_SERVER", format!("http://{admin}"))
            .env("WASMLOOP_TOKEN", token)
            .env("WASMLOOP_CLI_CONFIG", "/dev/null")
            .output()
            .expect("failed to run the wasmloop CLI")
    }

    /// One scrape of `/metrics`.
    pub async fn metrics(&self) -> Metrics {
        Metrics(self.admin_get("/metrics").await.text())
    }

    /// The value of one series in a fresh scrape of `/metrics`; see [`Metrics::get`].
    pub async fn metric(&self, series: &str) -> Option<f64> {
        self.metrics().await.get(series)
    }

    /// Waits until `series` satisfies `pred` (metrics reach the master once a second).
    pub async fn wait_for_metric(
        &self,
        series: &str,
        pred: impl Fn(f64) -> bool,
        timeout: Duration,
    ) -> Option<f64> {
        let scrape = self
            .wait_for_metrics(|m| m.get(series).is_some_and(&pred), timeout)
            .await;
        scrape.get(series)
    }

    /// Waits for one scrape of `/metrics` that satisfies `pred`, for conditions over
    /// several series that must hold at the same moment; returns the last scrape.
    pub async fn wait_for_metrics(
        &self,
        pred: impl Fn(&Metrics) -> bool,
        timeout: Duration,
    ) -> Metrics {
        let deadline = Instant::now() + timeout;
        loop {
            let metrics = self.metrics().await;
            if pred(&metrics) || Instant::now() >= deadline {
                return metrics;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (up to `timeout`) until nothing a request held is still held: no live
    /// instance, nothing in flight, no pool thread busy. Returns the last scrape when
    /// that never happens.
    pub async fn released(&self, timeout: Duration) -> Result<(), String> {
        let idle = |m: &Metrics| {
            m.get("wasmloop_instances_live") == Some(0.0)
                && m.get("wasmloop_requests_in_flight") == Some(0.0)
                && m.get("wasmloop_pool_threads_busy").unwrap_or(0.0) == 0.0
        };
        let metrics = self.wait_for_metrics(idle, timeout).await;
        if idle(&metrics) {
            Ok(())
        } else {
            Err(metrics.0)
        }
    }

    /// Runs `wasmloop doctor` against this server; returns its output.
    pub fn doctor(&self) -> String {
        let admin = self.admin.expect("the server has an admin listener");
        let output = Command::new(binary())
            .args(["doctor", "--server"])
            .arg(admin.to_string())
            .env("WASMLOOP_CLI_CONFIG", "/dev/null")
            .env("WASMLOOP_ADMIN_TOKEN", ADMIN_TOKEN)
            .output()
            .expect("failed to run wasmloop doctor");
        assert!(
            output.status.success(),
            "doctor failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// GET `path` with a Host header.
    pub async fn get_host(&self, host: &str, path: &str) -> Reply {
        let req = Request::get(format!("http://{}{path}", self.addr))
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .expect("a valid request");
        self.client().request(req).await
    }

    /// A client for this server that can move into a task.
    pub fn client(&self) -> HttpClient {
        self.client.clone()
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> Reply {
        self.client.get(path).await
    }

    /// Sends a request with `body` (Content-Length set).
    pub async fn send(&self, method: Method, path: &str, body: impl Into<Bytes>) -> Reply {
        self.client.send(method, path, body).await
    }

    /// Sends `method path` with a chunked body of `len` bytes (so only the server's
    /// count finds out its size) on a connection of its own, closed after the answer,
    /// and returns the answer's status line.
    pub async fn send_chunked(&self, method: Method, path: &str, len: usize) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(self.client.addr())
            .await
            .expect("connect");
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\
             Transfer-Encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        for chunk in vec![b'a'; len].chunks(512) {
            request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            request.extend_from_slice(chunk);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"0\r\n\r\n");
        // The server may answer and close before it has read it all.
        let _ = stream.write_all(&request).await;
        let mut response = Vec::new();
        let read = stream.read_to_end(&mut response);
        let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
        let response = String::from_utf8_lossy(&response);
        response.lines().next().unwrap_or_default().to_string()
    }

    /// For a server started with `--max-body=1KiB` on an SDK test app whose
    /// `PUT /shout` logs `shout of N bytes` for every body it is given: a chunked
    /// body under the limit reaches the handler whole, and one the host cuts off at
    /// the limit (only the host's count finds out) reaches it not at all. `who`
    /// names the app in failures.
    pub async fn assert_cut_upload_never_handled(&self, who: &str) {
        assert_eq!(
            self.send_chunked(Method::PUT, "/shout", 600).await,
            "HTTP/1.1 200 OK",
            "{who}"
        );
        assert!(
            self.wait_for_log(&["shout of 600 bytes"], Duration::from_secs(10))
                .is_some(),
            "{who}: {}",
            self.log()
        );
        let status = self.send_chunked(Method::PUT, "/shout", 4096).await;
        assert!(status.starts_with("HTTP/1.1 413"), "{who}: {status}");
        // The run is over (and its guest's lines written) once its access line is.
        assert!(
            self.wait_for_log(&["status=413"], Duration::from_secs(10))
                .is_some(),
            "{who}: {}",
            self.log()
        );
        let log = self.log();
        let given: Vec<&str> = log.lines().filter(|l| l.contains("shout of")).collect();
        assert_eq!(given.len(), 1, "{who}: the handler was given {given:#?}");
    }

    /// The `compiler=` of the access lines for requests that named `host` (every
    /// access line with `None`), in order.
    pub fn compilers(&self, host: Option<&str>) -> Vec<String> {
        let host = host.map(|h| format!("host=\"{h}\""));
        self.log()
            .lines()
            .filter(|l| l.contains("wasmloop::access"))
            .filter(|l| host.as_ref().is_none_or(|h| l.contains(h)))
            .filter_map(|l| l.split("compiler=").nth(1))
            .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
            .collect()
    }

    /// Sends `GET /` with `Host: host` in a loop until `stop` is set; returns every
    /// status.
    pub fn load_host(
        self: &Arc<Self>,
        host: &'static str,
        stop: &Arc<std::sync::atomic::AtomicBool>,
    ) -> tokio::task::JoinHandle<Vec<u16>> {
        let (server, stop) = (self.clone(), stop.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                statuses.push(server.get_host(host, "/").await.status.as_u16());
            }
            statuses
        })
    }

    /// Everything the server wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.text()
    }

    /// Whether a log line contains every one of `parts`, waiting up to 5 s for it:
    /// log lines go through a non-blocking writer and may trail the event they tell.
    pub fn has_log(&self, parts: &[&str]) -> bool {
        self.wait_for_log(parts, Duration::from_secs(5)).is_some()
    }

    /// Waits until a log line contains every one of `parts`; returns that line.
    pub fn wait_for_log(&self, parts: &[&str], timeout: Duration) -> Option<String> {
        self.log
            .wait_for(|l| parts.iter().all(|p| l.contains(p)), timeout)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `KILL`, ...) to one of the workers.
    pub fn signal_pid(&self, pid: u32, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "kill -{name} {pid} failed"
        );
    }

    /// Sends a signal by name (`TERM`, `KILL`, ...) to the master.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{name} failed");
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Lines where the host itself panicked (a guest's own panic message, which the
    /// host logs as guest output, is not one).
    pub fn host_panics(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("panicked") && !l.contains("wasmloop::guest"))
            .map(str::to_string)
            .collect()
    }

    /// The master's worker processes (its children), from /proc.
    pub fn worker_pids(&self) -> Vec<u32> {
        let pid = self.pid();
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Waits until the master has `count` workers and every one of them reported
    /// ready in the log; returns their pids.
    pub fn wait_for_workers(&self, count: usize, timeout: Duration) -> Vec<u32> {
        let end = Instant::now() + timeout;
        loop {
            let pids = self.worker_pids();
            let log = self.log();
            let ready = pids
                .iter()
                .all(|p| log.contains(&format!("pid={p} boot_ms=")));
            if pids.len() == count && ready {
                return pids;
            }
            assert!(
                Instant::now() < end,
                "expected {count} ready workers, have {pids:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident memory of the worker processes together, in bytes (from /proc).
    pub fn rss_bytes(&self) -> u64 {
        self.worker_pids().iter().map(|&pid| rss_of(pid)).sum()
    }

    /// OS threads of the worker processes together (from /proc).
    pub fn worker_threads(&self) -> usize {
        self.worker_pids()
            .iter()
            .map(|pid| std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count()))
            .sum()
    }

    /// Open file descriptors of the master (from /proc).
    pub fn master_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map_or(0, |d| d.count())
    }

    /// Resident memory of the master, in bytes.
    pub fn master_rss_bytes(&self) -> u64 {
        rss_of(self.pid())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lines of a child's stderr, with a way to wait for one.
#[derive(Default)]
struct Log {
    state: Mutex<(Vec<String>, bool)>,
    changed: Condvar,
}

impl Log {
    fn push(&self, line: String) {
        self.state.lock().unwrap().0.push(line);
        self.changed.notify_all();
    }

    fn close(&self) {
        self.state.lock().unwrap().1 = true;
        self.changed.notify_all();
    }

    fn text(&self) -> String {
        self.state.lock().unwrap().0.join("\n")
    }

    fn wait_for(&self, pred: impl Fn(&str) -> bool, timeout: Duration) -> Option<String> {
        let end = Instant::now() + timeout;
        let mut state = self.state.lock().unwrap();
        loop {
            if let Some(line) = state.0.iter().find(|l| pred(l)) {
                return Some(line.clone());
            }
            let now = Instant::now();
            if state.1 || now >= end {
                return None;
            }
            state = self.changed.wait_timeout(state, end - now).unwrap().0;
        }
    }
}

/// Resident memory of one process, in bytes.
fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    kb * 1024
}
