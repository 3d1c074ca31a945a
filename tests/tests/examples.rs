//! Every example in examples/ served by the real host and answered correctly (`hello`
//! and `hello-async` are covered by runtime.rs).

use std::time::{Duration, Instant};

use http::Method;
use wasmloop_tests::{Server, Upstream, guests};

#[tokio::test]
async fn json_api_routes_parses_and_answers_json() {
    let server = Server::new(guests::JSON_API).start().await;
    let reply = server.get("/users/1").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_eq!(reply.text(), r#"{"id":1,"name":"Ada","role":"admin"}"#);

    let reply = server.get("/users?role=member&limit=5").await;
    let users = reply.json();
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Alan", "Barbara"]);
    assert_eq!(
        server
            .get("/users?limit=1")
            .await
            .text()
            .matches("\"id\"")
            .count(),
        1
    );

    assert_eq!(server.get("/users/9").await.status, 404);
    assert_eq!(server.get("/users/nine").await.status, 400);
    assert_eq!(server.get("/users?limit=-1").await.status, 400);

    let create = |body: &'static str| {
        http::Request::post(format!("http://{}/users", server.client().addr()))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap()
    };
    let reply = server
        .client()
        .request(create(r#"{"name":"Grace","role":"admin"}"#))
        .await;
    assert_eq!(reply.status, 201);
    assert_eq!(reply.headers["location"], "/users/4");
    assert_eq!(reply.text(), r#"{"id":4,"name":"Grace","role":"admin"}"#);
    let reply = server
        .client()
        .request(create(r#"{"name":" ","role":"x"}"#))
        .await;
    assert_eq!(
        (reply.status.as_u16(), reply.text().as_str()),
        (422, "name must not be empty\n")
    );
    let reply = server.client().request(create("{not json")).await;
    assert_eq!(reply.status, 400);
    assert!(
        reply.text().starts_with("invalid JSON body"),
        "{}",
        reply.text()
    );

    let reply = server.send(Method::DELETE, "/users", "").await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.headers["allow"], "GET, POST, HEAD");
}

#[tokio::test]
async fn fetch_proxy_forwards_to_the_configured_upstream_only_when_allowed() {
    let upstream = Upstream::start().await;
    let addr = upstream.addr;
    let server = Server::new(guests::FETCH_PROXY)
        .arg(&format!("--var=UPSTREAM=http://{addr}"))
        .arg(&format!("--allow-outbound={addr}"))
        .arg("--allow-outbound-net=127.0.0.0/8")
        .start()
        .await;
    let reply = server.get("/some/path?x=1").await;
    assert_eq!(
        (reply.status.as_u16(), reply.text().as_str()),
        (200, "upstream saw /some/path")
    );
    assert!(server.has_log(&["mode=loop"]));
    assert_eq!(upstream.connections(), 1);

    let refused = Server::new(guests::FETCH_PROXY)
        .arg(&format!("--var=UPSTREAM=http://{addr}"))
        .start()
        .await;
    let reply = refused.get("/some/path").await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert!(
        reply.text().contains("refused by the host"),
        "{}",
        reply.text()
    );
    assert_eq!(
        upstream.connections(),
        1,
        "a refused call reached the upstream"
    );

    let unconfigured = Server::new(guests::FETCH_PROXY).start().await;
    let reply = unconfigured.get("/").await;
    assert_eq!(reply.status, 500);
    assert!(
        reply.text().contains("set the UPSTREAM variable"),
        "{}",
        reply.text()
    );
}

#[tokio::test]
async fn cpu_bound_computes_on_the_pool_and_runs_out_of_fuel() {
    let server = Server::new(guests::CPU_BOUND)
        .arg("--fuel=50000000")
        .start()
        .await;
    assert!(server.has_log(&["mode=pool"]));
    let reply = server.get("/primes?below=1000").await;
    assert_eq!(reply.text(), r#"{"below":1000,"primes":168}"#);
    assert_eq!(server.get("/primes?below=ten").await.status, 400);
    // Far past 5e7 units of fuel: the host ends it.
    let reply = server.get("/primes?below=100000000").await;
    assert_eq!(
        (reply.status.as_u16(), reply.text().as_str()),
        (503, "cpu_limit\n")
    );
    // And the next request is served as usual.
    assert_eq!(
        server.get("/primes?below=10").await.text(),
        r#"{"below":10,"primes":4}"#
    );
}

#[tokio::test]
async fn sleepy_keeps_many_requests_in_flight_on_one_thread() {
    let server = Server::new(guests::SLEEPY).start().await;
    assert!(server.has_log(&["mode=loop"]));
    let client = server.client().fresh_connections();
    let started = Instant::now();
    let requests = (0..50).map(|_| {
        let client = client.clone();
        tokio::spawn(async move { client.get("/?ms=400").await })
    });
    for request in requests.collect::<Vec<_>>() {
        let reply = request.await.unwrap();
        assert_eq!(reply.text(), "slept 400 ms\n");
    }
    // One after another they would take 20 s; in flight together, about 0.4 s.
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "50 sleeps took {elapsed:?}"
    );
    assert_eq!(server.get("/?ms=100000").await.status, 400);
}
