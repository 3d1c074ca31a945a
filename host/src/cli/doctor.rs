//! `wasmloop doctor`: asks a running server's admin listener for the doctor's report
//! and prints it for a person (or as JSON). The rules themselves are in
//! [`crate::doctor`]; this is only the client that shows them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};

use crate::doctor;

/// Arguments of `wasmloop doctor`.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// The admin listener of the server to examine.
    #[arg(long, env = "WASMLOOP_ADMIN", default_value = "http://127.0.0.1:9090")]
    pub admin: String,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// The admin token, which `/doctor` asks for.
    #[arg(long, env = "WASMLOOP_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A PEM file of CA certificates to trust for an https admin listener.
    #[arg(long, env = "WASMLOOP_CACERT")]
    pub cacert: Option<PathBuf>,
}

/// `wasmloop doctor`: fetches `/doctor` from `admin` and prints it.
pub fn run(args: &DoctorArgs) -> anyhow::Result<()> {
    let admin = &args.admin;
    let url: http::Uri = format!("{}/doctor", admin.trim_end_matches('/'))
        .parse()
        .with_context(|| format!("{admin} is not a URL"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let body = runtime.block_on(async {
        let client = crate::tls::cli_client::<Full<Bytes>>(args.cacert.as_deref())?;
        let mut req = http::Request::get(url.clone());
        if let Some(token) = &args.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req.body(Full::new(Bytes::new()))?;
        let response = tokio::time::timeout(Duration::from_secs(10), client.request(req))
            .await
            .with_context(|| format!("{url} did not answer within 10 s"))?
            .with_context(|| {
                format!("failed to reach {url}; is the server running with --admin-listen?")
            })?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::ensure!(
            status != http::StatusCode::UNAUTHORIZED,
            "{url} asks for the admin token: pass --token or set WASMLOOP_ADMIN_TOKEN"
        );
        anyhow::ensure!(status.is_success(), "{url} answered {status}");
        anyhow::Ok(body)
    })?;
    if args.json {
        println!("{}", String::from_utf8_lossy(&body));
        return Ok(());
    }
    let report: doctor::Report =
        serde_json::from_slice(&body).context("the server's /doctor answer is not a report")?;
    print!("{}", doctor::render(&report));
    Ok(())
}
