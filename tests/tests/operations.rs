//! Day-to-day operation as a Uvicorn or Gunicorn user meets it: two development
//! servers side by side with default flags, listen errors that name their flag, logs
//! that are all JSON when asked for JSON, and route forms that mean one thing.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wasmloop_tests::{HttpClient, Running, Server, binary, guests, temp_dir};

/// `wasmloop serve ARGS` as an operator types it: no flag added.
fn serve(args: &[&str]) -> Child {
    Command::new(binary())
        .arg("serve")
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("WASMLOOP_ADMIN_LISTEN")
        .env_remove("WASMLOOP_LISTEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("failed to start wasmloop")
}

/// Reads the child's stderr until `done` holds for a line (or 20 s pass); returns
/// the lines so far. The rest of the stream is left in the child.
fn read_until(child: &mut Child, done: impl Fn(&str) -> bool) -> Vec<String> {
    let stderr = child.stderr.as_mut().expect("stderr is piped");
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        let last = done(&line);
        lines.push(line);
        if last || Instant::now() > deadline {
            break;
        }
    }
    lines
}

fn stop(mut child: Child) -> Vec<String> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let stderr = child.stderr.take().expect("stderr is piped");
    let lines = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .collect();
    let _ = child.wait();
    lines
}

/// `ADDR` of the first line `WHAT http://ADDR`.
fn address(lines: &[String], what: &str) -> Option<String> {
    lines.iter().find_map(|l| {
        l.strip_prefix(what)?
            .strip_prefix(" http://")
            .map(str::to_string)
    })
}

#[tokio::test]
async fn two_servers_with_default_flags_run_side_by_side() {
    // Serving a component, the admin listener takes a free port and says which;
    // the main listener is the operator's choice (here any free port too).
    let mut one = serve(&["--listen=127.0.0.1:0", guests::SYNC_GUEST]);
    let mut two = serve(&["--listen=127.0.0.1:0", guests::SYNC_GUEST]);
    let mut admins = Vec::new();
    for child in [&mut one, &mut two] {
        let lines = read_until(child, |l| l.starts_with("listening on"));
        let main = address(&lines, "listening on").expect("listening");
        let admin = address(&lines, "admin listening on").expect("an admin listener");
        assert!(
            !admin.ends_with(":0") && !admin.ends_with(":9090"),
            "{admin}"
        );
        let client = HttpClient::new(main.parse().unwrap());
        assert_eq!(client.get("/").await.text(), "hello from sync\n");
        let admin_client = HttpClient::new(admin.parse().unwrap());
        assert_eq!(admin_client.get("/livez").await.status, 200);
        admins.push(admin);
    }
    assert_ne!(admins[0], admins[1]);
    stop(one);
    stop(two);
}

#[tokio::test]
async fn an_address_in_use_names_the_flag_and_the_way_out() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    for (flag, args) in [
        (
            "--admin-listen",
            [
                "--listen=127.0.0.1:0".to_string(),
                format!("--admin-listen=127.0.0.1:{port}"),
            ],
        ),
        (
            "--listen",
            [
                format!("--listen=127.0.0.1:{port}"),
                "--admin-listen=127.0.0.1:0".to_string(),
            ],
        ),
    ] {
        let output = Command::new(binary())
            .arg("serve")
            .args(&args)
            .arg(guests::SYNC_GUEST)
            .stdin(Stdio::null())
            .output()
            .expect("failed to run wasmloop");
        let output = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.contains("failed to"), "{flag}: {output}");
        assert!(
            output.contains(&format!("127.0.0.1:{port} ({flag})")),
            "{flag}: {output}"
        );
        assert!(
            output.contains(&format!("give {flag}=127.0.0.1:0")),
            "{flag}: {output}"
        );
    }
}

#[tokio::test]
async fn json_logs_are_json_line_by_line() {
    let mut child = serve(&[
        "--listen=127.0.0.1:0",
        "--admin-listen=127.0.0.1:0",
        "--log-format=json",
        "--workers=2",
        guests::SYNC_GUEST,
    ]);
    let lines = read_until(&mut child, |l| {
        serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v["message"] == "listening on")
    });
    let listening: serde_json::Value =
        serde_json::from_str(lines.last().unwrap()).unwrap_or_else(|e| panic!("{e}: {lines:?}"));
    let address = listening["address"]
        .as_str()
        .expect("the address")
        .to_string();
    let client = HttpClient::new(address.strip_prefix("http://").unwrap().parse().unwrap());
    for path in ["/", "/trap", "/nowhere"] {
        client.get(path).await;
    }
    let mut all = lines;
    all.extend(stop(child));
    assert!(all.len() > 5, "{all:?}");
    for line in &all {
        let record: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(record["level"].is_string(), "{line}");
    }
    let admin = all
        .iter()
        .find(|l| l.contains("admin listening on"))
        .unwrap();
    let admin: serde_json::Value = serde_json::from_str(admin).unwrap();
    assert!(
        admin["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("http://127.0.0.1:")),
        "{admin}"
    );
}

#[tokio::test]
async fn a_route_means_one_thing_or_is_refused() {
    let dir = temp_dir("route-forms");
    let server = Server::registry(&dir).start().await;
    let token = server.create_tenant("acme", "{}").await;
    // A bare word could be the path /api or the host api: refused, with both forms.
    let out = server.cli(&token, &["deploy", guests::SYNC_GUEST, "--route", "api"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("\"/api\"") && stderr.contains("\"api/\""),
        "{stderr}"
    );
    // The same through the API.
    let reply = server
        .deploy(&token, "sync", guests::SYNC_GUEST, "route=api")
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(
        reply.text().contains("has no \\\"/\\\""),
        "{}",
        reply.text()
    );
    // A host with a port never matches (requests match on the name): refused.
    let out = server.cli(
        &token,
        &[
            "deploy",
            guests::SYNC_GUEST,
            "--host",
            "127.0.0.1:8080",
            "--route",
            "/x",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("without a port"), "{stderr}");
    // Nothing was deployed by the refused forms; the meant ones work.
    for (args, host, path) in [
        (&["--route", "/count"][..], None, "/count"),
        (
            &["--host", "127.0.0.1", "--route", "/sleep"][..],
            None,
            "/sleep?ms=1",
        ),
        (&["--route", "acme.test/"][..], Some("acme.test"), "/"),
    ] {
        let out = server.cli(
            &token,
            &[
                &[
                    "deploy",
                    guests::SYNC_GUEST,
                    "--app",
                    &format!("a{}", path.len()),
                ][..],
                args,
            ]
            .concat(),
        );
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let reply = match host {
            Some(host) => server.get_host(host, path).await,
            None => server.get(path).await,
        };
        assert_eq!(reply.status, 200, "{args:?}: {}", reply.text());
    }
}

#[tokio::test]
async fn the_pid_file_names_the_master_and_goes_with_it() {
    let dir = temp_dir("pid-file");
    let pid_file = dir.join("wasmloop.pid");
    let mut child = serve(&[
        "--listen=127.0.0.1:0",
        "--admin-listen=off",
        "-w",
        "2",
        &format!("--pid={}", pid_file.display()),
        "--no-access-log",
        guests::SYNC_GUEST,
    ]);
    let lines = read_until(&mut child, |l| l.starts_with("listening on"));
    let main = address(&lines, "listening on").expect("listening");
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .expect("the pid file exists once the server serves")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, child.id());
    // `-w 2`: two workers, children of the master.
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    assert_eq!(children.split_whitespace().count(), 2, "{children}");
    let client = HttpClient::new(main.parse().unwrap());
    for _ in 0..3 {
        assert_eq!(client.get("/").await.status, 200);
    }
    assert_eq!(client.get("/trap").await.status, 500);
    let rest = stop(child);
    assert!(!pid_file.exists(), "the pid file outlived the master");
    let all = [lines, rest].concat();
    assert!(
        !all.iter().any(|l| l.contains("wasmloop::access")),
        "--no-access-log: {all:?}"
    );
}

/// `GET path` with `headers`, which must answer 200.
async fn get_with(server: &Running, path: &str, headers: &[(&str, &str)]) -> wasmloop_tests::Reply {
    let mut req = http::Request::get(format!("http://{}{path}", server.addr));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let reply = server
        .client()
        .request(
            req.body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply
}

/// `GET /whoami` with `headers`: the guest's view of the client.
async fn whoami(server: &Running, headers: &[(&str, &str)]) -> String {
    get_with(server, "/whoami", headers)
        .await
        .text()
        .trim()
        .to_string()
}

#[tokio::test]
async fn proxy_headers_count_only_from_trusted_proxies() {
    let forwarded = [
        ("x-forwarded-for", "203.0.113.7, 127.0.0.1"),
        ("x-forwarded-proto", "https"),
        ("x-real-ip", "6.6.6.6"),
    ];
    // The tests' client is 127.0.0.1, the default trusted proxy: the client is the
    // address before it, over https; the guest sees the chain and x-real-ip.
    let server = Server::new(guests::SYNC_GUEST).start().await;
    assert_eq!(
        whoami(&server, &forwarded).await,
        "x-real-ip=203.0.113.7 x-forwarded-for=203.0.113.7, 127.0.0.1 forwarded=- scheme=https"
    );
    // RFC 7239's Forwarded, with a port and IPv6 brackets.
    assert_eq!(
        whoami(
            &server,
            &[("forwarded", r#"for="[2001:db8::7]:4711";proto=https"#)]
        )
        .await,
        r#"x-real-ip=2001:db8::7 x-forwarded-for=- forwarded=for="[2001:db8::7]:4711";proto=https scheme=https"#
    );
    // Without forwarding headers: the peer.
    assert_eq!(
        whoami(&server, &[]).await,
        "x-real-ip=127.0.0.1 x-forwarded-for=- forwarded=- scheme=http"
    );
    assert!(
        server
            .wait_for_log(
                &["client=\"203.0.113.7\"", "path=\"/whoami\""],
                Duration::from_secs(10)
            )
            .is_some(),
        "{}",
        server.log()
    );

    // A peer that is not a trusted proxy cannot name another client, to the guest or
    // the log: its forwarding headers are gone and x-real-ip is its own address.
    let server = Server::new(guests::SYNC_GUEST)
        .arg("--forwarded-allow-ips=10.0.0.0/8")
        .start()
        .await;
    assert_eq!(
        whoami(&server, &forwarded).await,
        "x-real-ip=127.0.0.1 x-forwarded-for=- forwarded=- scheme=http"
    );
    // So with the headers off.
    let server = Server::new(guests::SYNC_GUEST)
        .arg("--no-proxy-headers")
        .start()
        .await;
    assert_eq!(
        whoami(&server, &forwarded).await,
        "x-real-ip=127.0.0.1 x-forwarded-for=- forwarded=- scheme=http"
    );
    // A list that is not one is refused at start.
    let (status, output) = Server::new(guests::SYNC_GUEST)
        .arg("--forwarded-allow-ips=10.0.0.0/8,proxy.internal")
        .start_expecting_failure();
    assert!(!status.success());
    assert!(
        output.contains("\"proxy.internal\" is not an IP address"),
        "{output}"
    );
}

/// `GET /request-id` with `headers`: the id the guest was given, and the response's.
async fn request_id(server: &Running, headers: &[(&str, &str)]) -> (String, String) {
    let reply = get_with(server, "/request-id?token=s3cret", headers).await;
    let header = reply.headers["x-request-id"].to_str().unwrap().to_string();
    (reply.text().trim().to_string(), header)
}

#[tokio::test]
async fn request_ids_are_kept_from_trusted_proxies_and_the_access_log_says_who_asked() {
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    // The tests' client is 127.0.0.1, a trusted proxy by default: its well-formed id
    // is the request's id, for the guest, the response and the log.
    let server = Server::new(guests::SYNC_GUEST).start().await;
    let (guest, header) = request_id(
        &server,
        &[
            ("x-request-id", "lb-7f3a:42"),
            ("user-agent", "probe/1.0"),
            ("traceparent", traceparent),
        ],
    )
    .await;
    assert_eq!(
        (guest.as_str(), header.as_str()),
        ("lb-7f3a:42", "lb-7f3a:42")
    );
    let line = server
        .wait_for_log(
            &["id=\"lb-7f3a:42\"", "wasmloop::access"],
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("no access line\n{}", server.log()));
    for field in [
        "path=\"/request-id\"",
        "query=\"token=s3cret\"",
        "http=\"1.1\"",
        "user_agent=\"probe/1.0\"",
        "trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"",
        "client=\"127.0.0.1\"",
    ] {
        assert!(line.contains(field), "{field}: {line}");
    }
    assert!(
        line.contains(&format!("host=\"{}\"", server.addr)),
        "{line}"
    );
    // A malformed one (it could break a log line or a header) is replaced, and the
    // guest sees the new one, not the client's.
    for bad in ["has space", "x\"y", &"a".repeat(129)] {
        let (guest, header) = request_id(&server, &[("x-request-id", bad)]).await;
        assert_ne!(guest, bad);
        assert_eq!(guest, header);
        assert_eq!(guest.len(), 16, "{guest}");
    }

    // From a peer that is not a trusted proxy, or with keeping off: a new id.
    for flags in [
        &["--forwarded-allow-ips=10.0.0.0/8"][..],
        &["--keep-request-id=never"][..],
    ] {
        let mut server = Server::new(guests::SYNC_GUEST);
        for flag in flags {
            server = server.arg(flag);
        }
        let server = server.arg("--no-access-log-query").start().await;
        let (guest, header) = request_id(&server, &[("x-request-id", "chosen-by-client")]).await;
        assert_ne!(guest, "chosen-by-client", "{flags:?}");
        assert_eq!(guest, header);
        let line = server
            .wait_for_log(
                &[&format!("id=\"{guest}\""), "wasmloop::access"],
                Duration::from_secs(10),
            )
            .unwrap_or_else(|| panic!("no access line\n{}", server.log()));
        assert!(line.contains("query=\"<redacted>\""), "{line}");
        assert!(!server.log().contains("s3cret"), "{flags:?}");
    }
    // Any client's id, when the operator says so.
    let server = Server::new(guests::SYNC_GUEST)
        .arg("--forwarded-allow-ips=10.0.0.0/8")
        .arg("--keep-request-id=always")
        .start()
        .await;
    let (guest, _) = request_id(&server, &[("x-request-id", "chosen-by-client")]).await;
    assert_eq!(guest, "chosen-by-client");
}

#[tokio::test]
async fn a_config_file_sets_what_flags_do_not_and_workers_keep_what_the_master_read() {
    let dir = temp_dir("config-file");
    let file = dir.join("wasmloop.toml");
    std::fs::write(
        &file,
        "max-body = \"1K\"\nvar = [\"GREETING=from the file\"]\nno-access-log = true\n\
         compiler = \"winch\"\nworkers = 3\n",
    )
    .unwrap();
    // The harness gives --compiler=cranelift and --workers=1 on the command line:
    // those win.
    let server = Server::new(guests::SYNC_GUEST)
        .arg(&format!("--config={}", file.display()))
        .start()
        .await;
    server.wait_for_workers(1, Duration::from_secs(30));
    assert_eq!(
        server.get("/config?key=GREETING").await.text(),
        "from the file"
    );
    let big = server
        .send(http::Method::POST, "/echo", vec![b'x'; 2048])
        .await;
    assert_eq!(big.status, 413, "max-body from the file");
    assert!(server.has_log(&["compiler=cranelift"]), "{}", server.log());
    assert!(!server.has_log(&["compiler=winch"]), "{}", server.log());
    // Workers started later (a reload) serve what the master read, not the file as
    // it is now.
    std::fs::write(&file, "var = [\"GREETING=edited\"]\n").unwrap();
    let before = server.worker_pids();
    server.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.worker_pids().iter().any(|p| before.contains(p)) {
        assert!(Instant::now() < deadline, "{}", server.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.wait_for_workers(1, Duration::from_secs(30));
    assert_eq!(
        server.get("/config?key=GREETING").await.text(),
        "from the file"
    );
    assert!(
        !server.log().contains("wasmloop::access"),
        "no-access-log from the file: {}",
        server.log()
    );

    // Mistakes are named, and nothing starts.
    for (text, says) in [
        ("wrokers = 2\n", "unknown setting `wrokers`"),
        ("workers = \"many\"\n", "--workers"),
        ("workers = [\n", "not valid TOML"),
    ] {
        std::fs::write(&file, text).unwrap();
        let (status, output) = Server::new(guests::SYNC_GUEST)
            .arg(&format!("--config={}", file.display()))
            .start_expecting_failure();
        assert_eq!(status.code(), Some(2), "{text}: {output}");
        assert!(output.contains(says), "{text}: {output}");
    }
}

/// One raw HTTP/1.0 GET over a unix socket (so the body is not chunked); returns the
/// status line and the body.
fn get_over_unix(
    path: &std::path::Path,
    target: &str,
    headers: &[(&str, &str)],
) -> (String, String) {
    use std::io::{Read as _, Write as _};
    let mut stream = std::os::unix::net::UnixStream::connect(path).expect("the socket accepts");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut request = format!("GET {target} HTTP/1.0\r\nhost: app.test\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, body.to_string())
}

#[tokio::test]
async fn every_listener_named_is_served_and_a_unix_socket_goes_with_the_server() {
    let dir = temp_dir("listeners");
    let socket = dir.join("app.sock");
    // --listen (the harness's), a second TCP listener by -b, and a unix socket.
    let mut server = Server::new(guests::SYNC_GUEST)
        .arg("-b=127.0.0.1:0")
        .arg(&format!("--uds={}", socket.display()))
        .start()
        .await;
    let unix_line = format!("listening on unix:{}", socket.display());
    assert!(server.has_log(&[&unix_line]), "{}", server.log());
    let log = server.log();
    let tcp: Vec<std::net::SocketAddr> = log
        .lines()
        .filter_map(|l| l.strip_prefix("listening on http://"))
        .map(|a| a.parse().expect("an address"))
        .collect();
    assert_eq!(tcp.len(), 2, "{log}");
    assert_ne!(tcp[0], tcp[1]);
    for addr in &tcp {
        assert_eq!(
            HttpClient::new(*addr).get("/").await.text(),
            "hello from sync\n"
        );
    }

    // Over the socket: the peer has no address (none for the guest, `unix` in the
    // log); as a local process it is a trusted proxy by default.
    let (status, body) = tokio::task::spawn_blocking({
        let socket = socket.clone();
        move || get_over_unix(&socket, "/whoami", &[])
    })
    .await
    .unwrap();
    assert_eq!(status, "HTTP/1.0 200 OK", "{body}");
    assert_eq!(
        body.trim(),
        "x-real-ip=- x-forwarded-for=- forwarded=- scheme=http"
    );
    assert!(
        server.has_log(&["client=\"unix\"", "path=\"/whoami\""]),
        "{}",
        server.log()
    );
    let (_, body) = tokio::task::spawn_blocking({
        let socket = socket.clone();
        move || {
            get_over_unix(
                &socket,
                "/whoami",
                &[
                    ("x-forwarded-for", "203.0.113.9"),
                    ("x-forwarded-proto", "https"),
                ],
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(
        body.trim(),
        "x-real-ip=203.0.113.9 x-forwarded-for=203.0.113.9 forwarded=- scheme=https"
    );

    // The socket file is the server's: removed when it stops.
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(30)).is_some());
    assert!(!socket.exists(), "the socket file outlived the server");
}

#[tokio::test]
async fn a_socket_file_is_replaced_only_when_nobody_listens_on_it() {
    let dir = temp_dir("stale-socket");
    let path = dir.join("app.sock");
    let uds = format!("--uds={}", path.display());

    // A live socket (another server) is refused, and left alone.
    let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let (status, output) = Server::new(guests::SYNC_GUEST)
        .arg(&uds)
        .start_expecting_failure();
    assert!(!status.success());
    assert!(output.contains("another server listens there"), "{output}");
    assert!(path.exists());
    // The same file after a crash (nobody listens): replaced, and served.
    drop(live);
    let server = Server::new(guests::SYNC_GUEST).arg(&uds).start().await;
    let (status, _) = tokio::task::spawn_blocking(move || get_over_unix(&path, "/", &[]))
        .await
        .unwrap();
    assert_eq!(status, "HTTP/1.0 200 OK");
    drop(server);

    // A file that is not a socket is never removed.
    let file = dir.join("notes.txt");
    std::fs::write(&file, "keep me").unwrap();
    let (status, output) = Server::new(guests::SYNC_GUEST)
        .arg(&format!("-b=unix:{}", file.display()))
        .start_expecting_failure();
    assert!(!status.success());
    assert!(output.contains("exists and is not a socket"), "{output}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");

    // One listener named twice is a mistake; two free ports are not.
    let (status, output) = Server::new(guests::SYNC_GUEST)
        .arg(&uds)
        .arg(&format!("--bind=unix:{}", dir.join("app.sock").display()))
        .start_expecting_failure();
    assert!(!status.success());
    assert!(
        output.contains("named twice (--bind, then --uds)"),
        "{output}"
    );
}

#[tokio::test]
async fn a_socket_handed_over_by_descriptor_is_served() {
    use command_fds::{CommandFdExt as _, FdMapping};
    // A process manager binds the socket and starts the server with it as fd 7.
    let bound = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = bound.local_addr().unwrap();
    let mut command = Command::new(binary());
    command
        .args(["serve", "--fd=7", "--admin-listen=off", "--workers=2"])
        .arg(guests::SYNC_GUEST)
        .env_remove("RUST_LOG")
        .env_remove("WASMLOOP_LISTEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .fd_mappings(vec![FdMapping {
            parent_fd: bound.into(),
            child_fd: 7,
        }])
        .unwrap();
    let mut child = command.spawn().expect("wasmloop starts");
    let lines = read_until(&mut child, |l| l.starts_with("listening on"));
    assert_eq!(
        address(&lines, "listening on"),
        Some(addr.to_string()),
        "{lines:?}"
    );
    let client = HttpClient::new(addr);
    for _ in 0..10 {
        assert_eq!(client.get("/").await.text(), "hello from sync\n");
    }
    stop(child);

    // A descriptor that is not there, or a standard stream, is refused with a reason.
    for (fd, says) in [("--fd=50", "no descriptor 50"), ("--fd=1", "3 or more")] {
        let output = Command::new(binary())
            .args(["serve", fd, "--admin-listen=off"])
            .arg(guests::SYNC_GUEST)
            .stdin(Stdio::null())
            .output()
            .expect("wasmloop runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains(says),
            "{fd}: {stderr}"
        );
    }
}

#[tokio::test]
async fn a_root_path_is_taken_off_and_told_to_the_guest() {
    let server = Server::new(guests::SYNC_GUEST)
        .arg("--root-path=/api")
        .start()
        .await;
    let text = |reply: wasmloop_tests::Reply| reply.text().trim().to_string();
    // Under the prefix: the guest sees the rest, and where it is mounted.
    assert_eq!(
        text(server.get("/api/where/items?id=7").await),
        "path=/where/items?id=7 prefix=/api"
    );
    assert_eq!(text(server.get("/api").await), "hello from sync");
    // Already stripped by the proxy: served as is, still told the prefix.
    assert_eq!(
        text(server.get("/where/x").await),
        "path=/where/x prefix=/api"
    );
    // A whole segment only: /apiary is not under /api.
    assert_eq!(server.get("/apiary").await.status, 404);
    // Dot segments cannot climb out of the mount.
    assert_eq!(server.get("/api/../where").await.status, 400);
    // The log shows what the client asked for.
    assert!(
        server.has_log(&["path=\"/api/where/items\""]),
        "{}",
        server.log()
    );

    // Without --root-path a client cannot claim a mount point.
    let server = Server::new(guests::SYNC_GUEST)
        .arg("--forwarded-allow-ips=10.0.0.0/8")
        .start()
        .await;
    let reply = get_with(&server, "/where", &[("x-forwarded-prefix", "/evil")]).await;
    assert_eq!(reply.text().trim(), "path=/where prefix=-");

    // A prefix that is not a clean path is refused at start.
    let (status, output) = Server::new(guests::SYNC_GUEST)
        .arg("--root-path=api/")
        .start_expecting_failure();
    assert!(!status.success());
    assert!(output.contains("--root-path"), "{output}");
}

/// The `bytes=N` of the access line that contains every one of `parts`.
fn logged_bytes(server: &Running, parts: &[&str]) -> u64 {
    let line = server
        .wait_for_log(parts, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no line with {parts:?}:\n{}", server.log()));
    line.split_whitespace()
        .find_map(|f| f.strip_prefix("bytes="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no bytes= in {line}"))
}

#[tokio::test]
async fn the_access_log_says_how_many_bytes_each_response_sent() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    for (mode, guest) in [("pool", guests::SYNC_GUEST), ("loop", guests::ASYNC_GUEST)] {
        let server = Server::new(guest).arg("--timeout=60s").start().await;
        assert_eq!(server.get("/big?kb=64").await.body.len(), 64 << 10);
        assert_eq!(
            logged_bytes(&server, &["path=\"/big\""]),
            64 << 10,
            "{mode}"
        );
        // Streamed without a length: counted as it went out.
        assert_eq!(server.get("/stream?mb=3").await.body.len(), 3 << 20);
        assert_eq!(
            logged_bytes(&server, &["path=\"/stream\"", "query=\"mb=3\""]),
            3 << 20,
            "{mode}"
        );
        // HEAD sends no body.
        let head = server.send(http::Method::HEAD, "/big?kb=8", "").await;
        assert_eq!(head.status, 200);
        assert_eq!(logged_bytes(&server, &["method=\"HEAD\""]), 0, "{mode}");
        // A response the front door makes itself.
        assert_eq!(server.get("/a/../b").await.text(), "bad_path\n");
        assert_eq!(logged_bytes(&server, &["path=\"/a/../b\""]), 9, "{mode}");
        // A client that leaves mid-body: what was handed over before it left, and the
        // line is still written.
        let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(b"GET /stream?mb=1024 HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut read = 0;
        while read < 1 << 20 {
            read += stream.read(&mut buf).await.unwrap();
        }
        drop(stream);
        let cut = logged_bytes(&server, &["query=\"mb=1024\""]);
        assert!(
            (1 << 20..1 << 30).contains(&cut),
            "{mode}: {cut} bytes logged for a client that read 1 MiB of 1 GiB"
        );
    }
}
