//! `wasmloop doctor`: asks a running server's admin listener for the doctor's report
//! and prints it for a person (or as JSON). The rules themselves are in
//! [`crate::doctor`]; this is only the client that shows them.

use anyhow::{Context as _, bail};
use http::{Method, StatusCode};

use crate::cli::Connection;
use crate::doctor;

/// Arguments of `wasmloop doctor`.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Print the report as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// The server to examine and the admin token (`/doctor` asks for it; without
    /// --token or WASMLOOP_TOKEN, WASMLOOP_ADMIN_TOKEN is used).
    #[command(flatten)]
    pub connection: Connection,
}

/// `wasmloop doctor`: fetches `/doctor` from the admin listener and prints it.
pub fn run(args: &DoctorArgs) -> anyhow::Result<()> {
    let mut conn = args.connection.clone();
    if conn.token.is_none() {
        conn.token = std::env::var("WASMLOOP_ADMIN_TOKEN").ok();
    }
    let (status, value) = conn.call(Method::GET, "/doctor", None)?;
    if status == StatusCode::UNAUTHORIZED {
        bail!(
            "the server asks for the admin token: pass --token or set WASMLOOP_ADMIN_TOKEN ({})",
            value["error"].as_str().unwrap_or("401")
        );
    }
    if !status.is_success() {
        bail!("the server answered {status}: {value}");
    }
    if args.json {
        println!("{value}");
        return Ok(());
    }
    let report: doctor::Report =
        serde_json::from_value(value).context("the server's /doctor answer is not a report")?;
    print!("{}", doctor::render(&report));
    Ok(())
}
