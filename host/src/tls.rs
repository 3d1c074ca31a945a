//! TLS on the listeners (`--ssl-certfile`, `--ssl-keyfile`, Uvicorn's flags): the
//! certificate chain and key are read once, at start, into a rustls server
//! configuration that both the public listener (HTTP/2 and HTTP/1.1 by ALPN) and the
//! admin listener (HTTP/1.1) use. A handshake that does not finish within the
//! listener's head-read timeout is dropped, as a slow head would be. The CLI's side:
//! a client that trusts the web's roots and, with `--cacert`, a private CA.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Reads the certificate chain and key and makes an acceptor offering `alpn`.
pub fn acceptor(certfile: &Path, keyfile: &Path, alpn: &[&[u8]]) -> anyhow::Result<TlsAcceptor> {
    let certs = CertificateDer::pem_file_iter(certfile)
        .with_context(|| format!("failed to read the certificate {}", certfile.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", certfile.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{} holds no certificate",
        certfile.display()
    );
    let key = PrivateKeyDer::from_pem_file(keyfile)
        .with_context(|| format!("{} is not a PEM private key", keyfile.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("no TLS protocol versions")?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("the certificate and the key do not match")?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A client configuration trusting the web's roots and, if given, the CA in
/// `cafile` (for a server whose certificate a private CA signed).
pub fn client_config(cafile: Option<&Path>) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    };
    if let Some(cafile) = cafile {
        for cert in CertificateDer::pem_file_iter(cafile)
            .with_context(|| format!("failed to read the CA file {}", cafile.display()))?
        {
            let cert =
                cert.with_context(|| format!("{} is not a PEM certificate", cafile.display()))?;
            roots.add(cert).with_context(|| {
                format!("{} holds a certificate rustls refuses", cafile.display())
            })?;
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("no TLS protocol versions")?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// An HTTP client for the CLI that speaks `http://` and `https://`.
pub fn cli_client<B>(
    cafile: Option<&Path>,
) -> anyhow::Result<
    hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        B,
    >,
>
where
    B: http_body::Body + Send,
    B::Data: Send,
{
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_config(cafile)?)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https),
    )
}

/// ALPN of the public listener.
pub const PUBLIC_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];
/// ALPN of the admin listener.
pub const ADMIN_ALPN: &[&[u8]] = &[b"http/1.1"];
