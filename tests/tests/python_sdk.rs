//! The Python SDK end to end: apps written the FastAPI way (tests/python-sdk/), built
//! with `python -m wasmloop build` by componentize-py from PyPI, served by the real
//! binary. The `def` app runs on the pool, the `async def` app on the loop, and both
//! answer every request alike; the seed's pitfall (an `async def` that computes) does
//! not stall its neighbours. Python components are large: they are served on Winch,
//! the fast compile tier.

use std::time::{Duration, Instant};

use http::Method;
use wasmloop_tests::python::{self, PythonApps};
use wasmloop_tests::{Reply, Running, Server, Upstream, temp_dir};

async fn serve(component: &str, flags: &[&str]) -> Running {
    let mut server = Server::new(component)
        .arg("--compiler=winch")
        .arg("--var=GREETING=hi");
    for flag in flags {
        server = server.arg(flag);
    }
    server.start().await
}

/// (method, path, content type, body) -> (status, content type, body).
type Case = (
    Method,
    &'static str,
    Option<&'static str>,
    &'static str,
    u16,
    &'static str,
    &'static str,
);

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

#[rustfmt::skip]
const CASES: &[Case] = &[
    (Method::GET, "/", None, "", 200, TEXT, "hello from the sdk\n"),
    (Method::GET, "/users/42", None, "", 200, JSON, r#"{"id":42}"#),
    (Method::GET, "/users/abc", None, "", 422, JSON,
        r#"{"detail":[{"type":"parsing","loc":["path","user_id"],"msg":"Input should be a valid integer","input":"abc"}]}"#),
    (Method::POST, "/greet", Some(JSON), r#"{"name":"ada","n":21}"#, 200, JSON,
        r#"{"greeting":"hello ada","double":42}"#),
    (Method::POST, "/greet", Some("application/json; charset=utf-8"), r#"{"name":"ada","n":1}"#, 200, JSON,
        r#"{"greeting":"hello ada","double":2}"#),
    (Method::POST, "/greet", Some("text/plain"), r#"{"name":"ada","n":21}"#, 415, JSON,
        r#"{"detail":"expected a JSON body (content-type: application/json)"}"#),
    (Method::POST, "/greet", Some(JSON), r#"{"name":"ada"}"#, 422, JSON,
        r#"{"detail":[{"type":"missing","loc":["body","n"],"msg":"Field required"}]}"#),
    (Method::POST, "/greet", Some(JSON), r#"{"name":"ada","n":"21"}"#, 422, JSON,
        r#"{"detail":[{"type":"type_error","loc":["body","n"],"msg":"Input should be an integer","input":"21"}]}"#),
    (Method::POST, "/greet", Some(JSON), r#"{"name":"#, 422, JSON, ""),
    (Method::POST, "/greet", Some(JSON), "", 422, JSON,
        r#"{"detail":[{"type":"missing","loc":["body"],"msg":"Field required"}]}"#),
    (Method::POST, "/items?dry_run=yes", Some(JSON), r#"{"a":[1,2]}"#, 201, JSON,
        r#"{"item":{"a":[1,2]},"dry_run":true}"#),
    (Method::POST, "/items?dry_run=maybe", Some(JSON), r#"{"a":1}"#, 422, JSON,
        r#"{"detail":[{"type":"parsing","loc":["query","dry_run"],"msg":"Input should be a valid boolean","input":"maybe"}]}"#),
    (Method::GET, "/add?a=2&b=40", None, "", 200, TEXT, "42\n"),
    (Method::GET, "/add?a=two&b=40", None, "", 422, JSON,
        r#"{"detail":[{"type":"parsing","loc":["query","a"],"msg":"Input should be a valid integer","input":"two"}]}"#),
    (Method::GET, "/add?a=2", None, "", 422, JSON,
        r#"{"detail":[{"type":"missing","loc":["query","b"],"msg":"Field required"}]}"#),
    (Method::GET, "/search", None, "", 200, JSON, r#"{"q":null,"limit":10,"tags":[]}"#),
    (Method::GET, "/search?q=caf%C3%A9&limit=2.5&tag=a&tag=b", None, "", 200, JSON,
        r#"{"q":"café","limit":2.5,"tags":["a","b"]}"#),
    (Method::GET, "/status/418", None, "", 418, TEXT, "status 418\n"),
    (Method::GET, "/headers", None, "", 202, "text/html; charset=utf-8", "<p>hi</p>"),
    (Method::GET, "/config/GREETING", None, "", 200, TEXT, "hi"),
    (Method::GET, "/config/UNSET", None, "", 404, JSON, r#"{"detail":"UNSET is not set"}"#),
    (Method::GET, "/stream?chunks=3", None, "", 200, TEXT, "chunk 0\nchunk 1\nchunk 2\n"),
    (Method::GET, "/error", None, "", 400, JSON, r#"{"detail":"this route always fails"}"#),
    (Method::GET, "/files/a/b%20c/d.txt", None, "", 200, JSON, r#"{"path":"a/b c/d.txt"}"#),
    (Method::GET, "/no/such/route", None, "", 404, JSON, r#"{"detail":"Not Found"}"#),
    (Method::DELETE, "/", None, "", 405, JSON, r#"{"detail":"Method Not Allowed"}"#),
    (Method::PUT, "/shout", None, "quiet please", 200, TEXT, "QUIET PLEASE"),
    (Method::GET, "/panic", None, "", 500, TEXT, "Internal Server Error"),
];

async fn send(
    server: &Running,
    method: &Method,
    path: &str,
    ct: Option<&str>,
    body: &[u8],
) -> Reply {
    let mut req = http::Request::builder()
        .method(method.clone())
        .uri(format!("http://{}{path}", server.addr));
    if let Some(ct) = ct {
        req = req.header("content-type", ct);
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::copy_from_slice(
            body,
        )))
        .unwrap();
    server.client().request(req).await
}

#[tokio::test]
async fn def_and_async_def_apps_answer_alike_and_right() {
    let Some(PythonApps { sync, async_, .. }) = python::apps() else {
        return;
    };
    let (sync, async_) = tokio::join!(serve(sync, &[]), serve(async_, &[]));
    assert!(sync.has_log(&["mode=pool"]), "{}", sync.log());
    assert!(async_.has_log(&["mode=loop"]), "{}", async_.log());

    for (method, path, ct, body, status, content_type, expected) in CASES {
        let a = send(&sync, method, path, *ct, body.as_bytes())
            .await
            .visible();
        let b = send(&async_, method, path, *ct, body.as_bytes())
            .await
            .visible();
        assert_eq!(a, b, "{method} {path}: the two styles differ");
        assert_eq!(a.0, *status, "{method} {path}: {a:?}");
        assert_eq!(
            a.1.as_deref(),
            Some(*content_type),
            "{method} {path}: {a:?}"
        );
        if expected.is_empty() {
            assert!(a.4.contains("json_invalid"), "{method} {path}: {a:?}");
        } else {
            assert_eq!(a.4, *expected, "{method} {path}");
        }
    }
    for server in [&sync, &async_] {
        let reply = server.get("/headers").await;
        assert_eq!(reply.headers["x-custom"], "yes");
        let reply = server.get("/").await;
        assert_eq!(reply.headers["content-length"], "19");
        let reply = server.send(Method::DELETE, "/", "").await;
        assert_eq!(reply.headers["allow"], "GET, HEAD");
        let reply = server.send(Method::HEAD, "/", "").await;
        assert_eq!((reply.status.as_u16(), reply.text()), (200, String::new()));
        let reply = server.get("/bytes").await;
        assert_eq!(reply.headers["content-type"], "application/octet-stream");
        assert_eq!(&reply.body[..], b"\x00\x01\xff");
        // A streamed body is not buffered: no length, all of it.
        let reply = server.get("/stream?chunks=20000").await;
        assert!(reply.headers.get("content-length").is_none());
        let lines: Vec<String> = reply.text().lines().map(str::to_string).collect();
        assert_eq!((lines.len(), lines[19999].as_str()), (20000, "chunk 19999"));
        // The client as the host resolved it (x-real-ip), and the scheme.
        assert_eq!(
            server.get("/whoami").await.text(),
            r#"{"method":"GET","client":"127.0.0.1","scheme":"http"}"#
        );
    }
    // The exception's traceback is in the host's log, not in the reply.
    for server in [&sync, &async_] {
        let logged = server.wait_for_log(
            &["RuntimeError: the handler failed"],
            Duration::from_secs(5),
        );
        assert!(
            logged.is_some_and(|l| l.contains("ERROR")),
            "{}",
            server.log()
        );
    }
}

#[tokio::test]
async fn a_computing_async_def_does_not_stall_its_neighbours() {
    let Some(apps) = python::apps() else {
        return;
    };
    // One worker, one loop: the seed's setting.
    let server = serve(&apps.async_, &["--workers=1"]).await;
    let client = server.client().fresh_connections();
    // sum(range(10**8)) without an await: seconds of CPU in CPython.
    let hog = tokio::spawn({
        let client = client.clone();
        async move { client.get("/spin?n=100000000").await }
    });
    // Once the hog is running on the loop, ask the fast route.
    server
        .wait_for_metric(
            "wasmloop_requests_in_flight",
            |n| n >= 1.0,
            Duration::from_secs(10),
        )
        .await
        .expect("the hog is in flight");
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let start = Instant::now();
        let reply = client.get("/").await;
        assert_eq!(reply.status, 200);
        slowest = slowest.max(start.elapsed());
        assert!(
            !hog.is_finished(),
            "the hog ended before its neighbours were served"
        );
    }
    eprintln!("fast route next to a computing async def: slowest of 10 {slowest:?}");
    // The hog ends on its own terms: done, or out of CPU budget.
    let hog = hog.await.unwrap();
    assert!(
        hog.status == 200 || (hog.status == 503 && hog.text().contains("cpu_limit")),
        "{} {}",
        hog.status,
        hog.text()
    );
}

#[tokio::test]
async fn a_def_route_looping_forever_ends_with_cpu_limit() {
    let Some(apps) = python::apps() else {
        return;
    };
    let server = serve(&apps.sync, &[]).await;
    let reply = server.get("/forever").await;
    assert_eq!(
        (reply.status.as_u16(), reply.text().trim()),
        (503, "cpu_limit")
    );
    // The pool thread is free again.
    assert_eq!(server.get("/").await.status, 200);
}

/// A body the host cuts off (here: past `--max-body`, sent chunked so that only the
/// host's count finds out) reaches neither style's app as if it were the whole body:
/// the app logs the size of every body it is given, and logs none for the cut one.
#[tokio::test]
async fn an_upload_cut_short_never_reaches_the_app_as_a_whole_body() {
    let Some(PythonApps { sync, async_, .. }) = python::apps() else {
        return;
    };
    for component in [sync, async_] {
        let server = serve(component, &["--max-body=1KiB"]).await;
        server.assert_cut_upload_never_handled(component).await;
    }
}

#[tokio::test]
async fn a_hundred_awaited_sleeps_share_one_worker() {
    let Some(apps) = python::apps() else {
        return;
    };
    let server = serve(&apps.async_, &["--workers=1"]).await;
    assert_eq!(server.get("/sleep?ms=1").await.text(), "slept\n");
    let start = Instant::now();
    let replies = futures::future::join_all((0..100).map(|_| {
        let client = server.client().fresh_connections();
        async move { client.get("/sleep?ms=1000").await }
    }))
    .await;
    let took = start.elapsed();
    for reply in &replies {
        assert_eq!(
            (reply.status.as_u16(), reply.text().as_str()),
            (200, "slept\n")
        );
    }
    eprintln!("100 concurrent 1 s sleeps on one worker: {took:?}");
    // One after another they would take 100 s; together, about one sleep plus each
    // request's own CPython start.
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[tokio::test]
async fn outbound_config_and_logging_from_both_styles() {
    let Some(apps) = python::apps() else {
        return;
    };
    let upstream = Upstream::start().await;
    let addr = upstream.addr;
    for component in [&apps.sync, &apps.async_] {
        let allow = format!("--allow-outbound={addr}");
        let server = serve(component, &[&allow, "--allow-outbound-net=127.0.0.0/8"]).await;
        let reply = server.get(&format!("/fetch?url=http://{addr}/up")).await;
        assert_eq!(
            (reply.status.as_u16(), reply.text().as_str()),
            (200, r#"{"status":200,"body":"upstream saw /up"}"#),
            "{component}"
        );
        // A host not listed: an exception the handler turns into 502, no connection.
        let before = upstream.connections();
        let reply = server.get("/fetch?url=http://example.org/").await;
        assert_eq!(reply.status, 502, "{component}: {}", reply.text());
        assert!(
            reply.text().contains("http request denied"),
            "{}",
            reply.text()
        );
        let reply = server.get("/fetch?url=ftp://x/").await;
        assert!(reply.text().contains("is not an http"), "{}", reply.text());
        assert_eq!(upstream.connections(), before);

        // logging: each level at the host's level, with the request id.
        let reply = server.get("/log").await;
        assert_eq!(reply.text(), "logged\n");
        let id = reply.headers["x-request-id"].to_str().unwrap().to_string();
        for (level, line) in [
            ("INFO", "sdk info line"),
            ("WARN", "sdk warn line"),
            ("ERROR", "sdk error line"),
        ] {
            let logged = server
                .wait_for_log(
                    &[&format!("{level} wasmloop::guest"), line],
                    Duration::from_secs(5),
                )
                .unwrap_or_else(|| panic!("{component}: no {level} line\n{}", server.log()));
            assert!(logged.contains(&id), "{logged}");
        }
        assert!(!server.log().contains("sdk debug line"));
    }
}

#[test]
fn the_build_explains_what_it_cannot_build() {
    let Some(apps) = python::apps() else {
        return;
    };
    let dir = temp_dir("python-build");
    let build = |source: &str| {
        std::fs::write(dir.join("app.py"), source).unwrap();
        let out = std::process::Command::new(&apps.python)
            .args(["-m", "wasmloop", "build"])
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{source}");
        assert!(!dir.join("app.wasm").exists());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let mixed = build(
        "from wasmloop import App\napp = App()\n\n@app.get('/a')\ndef a():\n    return 'a'\n\n\
         @app.get('/b')\nasync def b():\n    return 'b'\n",
    );
    assert!(
        mixed.contains("mixes `def` handlers (a) with `async def` handlers (b)"),
        "{mixed}"
    );
    assert!(mixed.contains("split the app"), "{mixed}");
    let empty = build("from wasmloop import App\napp = App()\n");
    assert!(empty.contains("no routes"), "{empty}");
    let none = build("x = 1\n");
    assert!(none.contains("no `app = wasmloop.App()`"), "{none}");
    let broken = build("from wasmloop import App\napp = App(\n");
    assert!(broken.contains("SyntaxError"), "{broken}");
    let unmatched = build(
        "from wasmloop import App\napp = App()\n\n@app.get('/u/{id}')\ndef u(name: str):\n    return name\n",
    );
    assert!(unmatched.contains("has no parameter for id"), "{unmatched}");
}

#[test]
fn the_sdk_unit_tests_pass() {
    let Some(apps) = python::apps() else {
        return;
    };
    let sdk = python::root().join("guest-sdk-python");
    let out = std::process::Command::new(&apps.python)
        .args(["-m", "unittest", "discover", "-s", "tests", "-v"])
        .current_dir(&sdk)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("OK"), "{log}");
}

#[tokio::test]
async fn wasmloop_new_writes_a_python_project_that_builds_and_serves() {
    let Some(apps) = python::apps() else {
        return;
    };
    let dir = temp_dir("python-new");
    let sdk = python::root().join("guest-sdk-python");
    let out = std::process::Command::new(wasmloop_tests::binary())
        .args([
            "new",
            "hello-py",
            "--lang",
            "python",
            "--async",
            "--sdk-path",
        ])
        .arg(&sdk)
        .current_dir(&dir)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("python -m wasmloop build"), "{said}");
    let project = dir.join("hello-py");
    for file in ["app.py", "requirements.txt", "README.md", ".gitignore"] {
        assert!(project.join(file).is_file(), "{file}");
    }
    // The environment of the fixture has this SDK: build as the README says.
    let wasm = project.join("app.wasm");
    python::build(&apps.python, &project, &wasm).unwrap();
    let server = serve(wasm.to_str().unwrap(), &[]).await;
    assert!(server.has_log(&["mode=loop"]), "{}", server.log());
    let reply = server.get("/hello/world?excited=true").await;
    assert_eq!(reply.text(), r#"{"greeting":"Hello, world!"}"#);
    assert_eq!(server.get("/items/-1").await.status, 404);
    assert!(
        server
            .wait_for_log(
                &["INFO wasmloop::guest", "greeting world"],
                Duration::from_secs(5)
            )
            .is_some(),
        "{}",
        server.log()
    );
}

/// A deployed Python app answers on Winch's code as soon as the deploy returns, and
/// moves to Cranelift's under load without a failed request (`--compiler auto`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_deploy_answers_on_the_baseline_tier_then_moves_to_cranelift() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let Some(apps) = python::apps() else {
        return;
    };
    let dir = temp_dir("python-tiers");
    let server = Arc::new(Server::registry(&dir).arg("--compiler=auto").start().await);
    let token = server.create_tenant("py", "{}").await;
    let started = Instant::now();
    let reply = server
        .deploy(&token, "app", &apps.sync, "route=py.test/")
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let deployed = reply.json();
    assert_eq!(
        (
            deployed["compiler"].as_str(),
            deployed["optimizing"].as_bool()
        ),
        (Some("winch"), Some(true)),
        "{deployed}"
    );
    let first = server.get_host("py.test", "/").await;
    assert_eq!(first.text(), "hello from the sdk\n");
    let first_response = started.elapsed();

    let stop = Arc::new(AtomicBool::new(false));
    let load = server.load_host("py.test", &stop);
    let live = server.wait_for_log(&["optimized tier live"], Duration::from_secs(120));
    assert!(live.is_some(), "{}", server.log());
    let optimized_live = started.elapsed();
    let seen = || server.compilers(Some("py.test"));
    let end = Instant::now() + Duration::from_secs(10);
    while seen().last().map(String::as_str) != Some("cranelift") && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let statuses = load.await.unwrap();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let seen = seen();
    let switch = seen
        .iter()
        .position(|c| c == "cranelift")
        .expect("the switch");
    assert!(
        switch > 0,
        "requests ran on the baseline tier first: {seen:?}"
    );
    assert!(seen[..switch].iter().all(|c| c == "winch"), "{seen:?}");
    assert!(seen[switch..].iter().all(|c| c == "cranelift"), "{seen:?}");
    eprintln!(
        "python deploy: first response {first_response:?} after the upload started, \
         optimized tier live after {optimized_live:?}, {} requests on winch",
        switch
    );
}
