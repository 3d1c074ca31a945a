//! The guest SDK end to end: the same routes behind a plain `fn` handler (pool) and an
//! `async fn` handler (loop) answer every request the same way, and that way is right.

use std::time::Duration;

use http::Method;
use wasmloop_tests::{Running, Server, guests};

/// A request (method, path, content type, body) and the status and body it must get;
/// an empty expected body means "any reason, as long as there is one".
type Case = (
    Method,
    &'static str,
    Option<&'static str>,
    &'static [u8],
    u16,
    &'static str,
);

async fn start(guest: &str) -> Running {
    Server::new(guest).arg("--var=GREETING=hi").start().await
}

#[tokio::test]
async fn sync_and_async_handlers_answer_alike_and_right() {
    let (sync, async_) = tokio::join!(start(guests::SDK_SYNC), start(guests::SDK_ASYNC));
    assert!(sync.has_log(&["mode=pool"]) && async_.has_log(&["mode=loop"]));

    let json = "application/json";
    let text = "text/plain; charset=utf-8";
    // (method, path, content type, body) -> (status, body), plus headers checked below.
    let cases: &[Case] = &[
        (Method::GET, "/", None, b"", 200, "hello from the sdk\n"),
        (Method::GET, "/users/42", None, b"", 200, r#"{"id":42}"#),
        (
            Method::GET,
            "/users/abc",
            None,
            b"",
            400,
            "id must be a number\n",
        ),
        (
            Method::POST,
            "/greet",
            Some(json),
            br#"{"name":"ada","n":21}"#,
            200,
            r#"{"greeting":"hello ada","double":42}"#,
        ),
        (
            Method::POST,
            "/greet",
            Some("text/plain"),
            br#"{"name":"ada","n":21}"#,
            415,
            "expected a JSON body (content-type: application/json)\n",
        ),
        (
            Method::POST,
            "/greet",
            Some(json),
            br#"{"name":"ada"}"#,
            400,
            "",
        ),
        (Method::GET, "/add?a=2&b=40", None, b"", 200, "42\n"),
        (Method::GET, "/add?a=two&b=40", None, b"", 400, ""),
        (Method::GET, "/status/418", None, b"", 418, "status 418\n"),
        (Method::GET, "/headers", None, b"", 202, "<p>hi</p>"),
        (Method::GET, "/config/GREETING", None, b"", 200, "hi"),
        (Method::GET, "/config/UNSET", None, b"", 404, "Not Found\n"),
        (
            Method::GET,
            "/stream?chunks=3",
            None,
            b"",
            200,
            "chunk 0\nchunk 1\nchunk 2\n",
        ),
        (
            Method::GET,
            "/error",
            None,
            b"",
            400,
            "this route always fails\n",
        ),
        (Method::GET, "/no/such/route", None, b"", 404, "Not Found\n"),
        (Method::DELETE, "/", None, b"", 405, "Method Not Allowed\n"),
        (
            Method::PUT,
            "/shout",
            None,
            b"quiet please",
            200,
            "QUIET PLEASE",
        ),
        (
            Method::PUT,
            "/shout",
            None,
            b"\xff\xfe",
            400,
            "the request body is not UTF-8 text\n",
        ),
        (Method::GET, "/panic", None, b"", 500, "guest_trap\n"),
    ];
    for (method, path, content_type, body, status, expected) in cases {
        let mut replies = Vec::new();
        for server in [&sync, &async_] {
            let mut req = http::Request::builder()
                .method(method.clone())
                .uri(format!("http://{}{path}", server.client().addr()));
            if let Some(ct) = content_type {
                req = req.header("content-type", *ct);
            }
            let req = req
                .body(http_body_util::Full::new(bytes::Bytes::copy_from_slice(
                    body,
                )))
                .unwrap();
            replies.push(server.client().request(req).await);
        }
        let (a, b) = (replies[0].visible(), replies[1].visible());
        assert_eq!(a, b, "{method} {path}: the two styles differ");
        assert_eq!(a.0, *status, "{method} {path}: {a:?}");
        if !expected.is_empty() {
            assert_eq!(a.4, *expected, "{method} {path}");
        } else {
            assert!(
                !a.4.is_empty(),
                "{method} {path}: an error without a reason"
            );
        }
    }

    // Headers the SDK sets.
    for server in [&sync, &async_] {
        let reply = server.get("/headers").await;
        assert_eq!(reply.headers["content-type"], "text/html; charset=utf-8");
        assert_eq!(reply.headers["x-custom"], "yes");
        let reply = server.get("/").await;
        assert_eq!(reply.headers["content-type"], text);
        assert_eq!(reply.headers["content-length"], "19");
        assert_eq!(server.get("/users/1").await.headers["content-type"], json);
        assert_eq!(
            server.send(Method::DELETE, "/", "").await.headers["allow"],
            "GET, HEAD"
        );
    }
}

#[tokio::test]
async fn streamed_bodies_arrive_whole_in_both_styles() {
    for guest in [guests::SDK_SYNC, guests::SDK_ASYNC] {
        let server = start(guest).await;
        let reply = server.get("/stream?chunks=50000").await;
        assert_eq!(reply.status, 200, "{guest}");
        let lines: Vec<String> = reply.text().lines().map(str::to_string).collect();
        assert_eq!(lines.len(), 50000, "{guest}");
        assert_eq!(lines[49999], "chunk 49999", "{guest}");
        assert!(reply.headers.get("content-length").is_none(), "{guest}");
    }
}

#[tokio::test]
async fn log_macros_reach_the_host_log_at_their_level_with_the_request_id() {
    for guest in [guests::SDK_SYNC, guests::SDK_ASYNC] {
        let server = start(guest).await;
        let reply = server.get("/log").await;
        assert_eq!(reply.text(), "logged\n");
        let id = reply.headers["x-request-id"].to_str().unwrap().to_string();
        for (level, line) in [
            ("INFO", "sdk info line"),
            ("WARN", "sdk warn line"),
            ("ERROR", "sdk error line"),
        ] {
            let logged = server.wait_for_log(
                &[&format!("{level} wasmloop::guest"), line],
                Duration::from_secs(5),
            );
            let logged =
                logged.unwrap_or_else(|| panic!("{guest}: no {level} line\n{}", server.log()));
            assert!(logged.contains(&id), "{guest}: {logged}");
            // Tagged with the app (the component's name when serving one file).
            let app = std::path::Path::new(guest)
                .file_stem()
                .unwrap()
                .to_str()
                .unwrap();
            assert!(
                logged.contains(&format!("app=\"{app}\"")),
                "{guest}: {logged}"
            );
        }
        // Debug lines are below the default level.
        assert!(!server.log().contains("sdk debug line"), "{guest}");
    }
}

/// A body the host cuts off (past `--max-body`, sent chunked so that only the host's
/// count finds out) reaches neither style's handler as if it were the whole body: the
/// handler logs the size of every body it is given, and logs none for the cut one.
/// (The async style skips its trailers read for a bodiless request; not for this.)
#[tokio::test]
async fn an_upload_cut_short_never_reaches_the_handler_as_a_whole_body() {
    for guest in [guests::SDK_SYNC, guests::SDK_ASYNC] {
        let server = Server::new(guest).arg("--max-body=1KiB").start().await;
        server.assert_cut_upload_never_handled(guest).await;
    }
}
