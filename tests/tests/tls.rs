//! TLS on both listeners (`--ssl-certfile`, `--ssl-keyfile`) and https in the CLI
//! (`--cacert`): a certificate made for the test, a client that trusts only it.

use std::path::PathBuf;
use std::sync::Arc;

use http_body_util::BodyExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use wasmloop_tests::{ADMIN_TOKEN, Running, Server, guests, temp_dir};

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM files:
/// `(certfile, keyfile)`.
fn certificate(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("a certificate");
    std::fs::create_dir_all(dir).unwrap();
    let (certfile, keyfile) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&certfile, cert.cert.pem()).unwrap();
    std::fs::write(&keyfile, cert.signing_key.serialize_pem()).unwrap();
    (certfile, keyfile)
}

fn client_config(certfile: &std::path::Path, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(certfile).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// One request over TLS to `addr`: the negotiated protocol, the status and the body.
async fn get_tls(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    path: &str,
    token: Option<&str>,
) -> (Option<Vec<u8>>, u16, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("the TLS handshake");
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let io = hyper_util::rt::TokioIo::new(tls);
    let mut req = http::Request::get(format!("https://localhost:{}{path}", addr.port()));
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let response = if alpn.as_deref() == Some(b"h2") {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .unwrap();
        tokio::spawn(conn);
        sender.send_request(req).await.unwrap()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        sender.send_request(req).await.unwrap()
    };
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (alpn, status, String::from_utf8_lossy(&body).into_owned())
}

async fn tls_server(dir: &std::path::Path, server: Server) -> Running {
    let (certfile, keyfile) = certificate(dir);
    server
        .arg(&format!("--ssl-certfile={}", certfile.display()))
        .arg(&format!("--ssl-keyfile={}", keyfile.display()))
        .start()
        .await
}

#[tokio::test]
async fn both_listeners_speak_tls_only() {
    let dir = temp_dir("tls-serve");
    let server = tls_server(&dir, Server::new(guests::SYNC_GUEST)).await;
    let certfile = dir.join("cert.pem");
    let admin = server.admin.expect("an admin listener");
    assert!(
        server.has_log(&["listening on https://"]),
        "{}",
        server.log()
    );

    // HTTP/2 and HTTP/1.1 by ALPN on the public listener.
    for (alpn, expected) in [
        (&[b"h2".as_slice()][..], b"h2".as_slice()),
        (&[b"http/1.1".as_slice()][..], b"http/1.1".as_slice()),
    ] {
        let (got, status, body) =
            get_tls(server.addr, client_config(&certfile, alpn), "/", None).await;
        assert_eq!(got.as_deref(), Some(expected));
        assert_eq!((status, body.as_str()), (200, "hello from sync\n"));
    }
    // The guest is told the scheme the client used.
    let (_, status, whoami) = get_tls(
        server.addr,
        client_config(&certfile, &[b"http/1.1"]),
        "/whoami",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(whoami.trim_end().ends_with("scheme=https"), "{whoami}");
    // The admin listener: probes, and /metrics with the token.
    let admin_tls = client_config(&certfile, &[b"http/1.1"]);
    assert_eq!(
        get_tls(admin, admin_tls.clone(), "/livez", None).await.1,
        200
    );
    assert_eq!(
        get_tls(admin, admin_tls.clone(), "/metrics", None).await.1,
        401
    );
    let (_, status, metrics) = get_tls(admin, admin_tls, "/metrics", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200);
    // Always there (the request above may not have reached the master yet).
    assert!(metrics.contains("wasmloop_workers "), "{metrics}");

    // Plain HTTP to a TLS listener gets no HTTP answer.
    for addr in [server.addr, admin] {
        let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
        plain
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            plain.read_to_end(&mut answer),
        )
        .await;
        assert!(
            !answer.starts_with(b"HTTP/"),
            "{addr}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    // A handshake that never comes is dropped at the head-read timeout.
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let closed =
        tokio::time::timeout(std::time::Duration::from_secs(15), silent.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a silent TLS connection stayed open"
    );
}

#[tokio::test]
async fn the_cli_deploys_over_https_trusting_a_given_ca() {
    let dir = temp_dir("tls-cli");
    let server = tls_server(&dir, Server::registry(&dir.join("data"))).await;
    let admin = server.admin.expect("an admin listener");
    let certfile = dir.join("cert.pem");
    let cli = |args: &[&str], cacert: Option<&std::path::Path>| {
        let mut command = std::process::Command::new(wasmloop_tests::binary());
        command
            .args(args)
            .env(
                "WASMLOOP_SERVER",
                format!("https://localhost:{}", admin.port()),
            )
            .env("WASMLOOP_TOKEN", ADMIN_TOKEN)
            .env("WASMLOOP_CLI_CONFIG", "/dev/null");
        if let Some(ca) = cacert {
            command.arg(format!("--cacert={}", ca.display()));
        }
        command.output().expect("the CLI runs")
    };
    // Without the CA the certificate is not trusted, and nothing happens.
    let refused = cli(&["tenant", "create", "acme"], None);
    assert!(!refused.status.success());
    let created = cli(&["tenant", "create", "acme"], Some(&certfile));
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let listed = cli(&["tenant", "list"], Some(&certfile));
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "acme");
}
