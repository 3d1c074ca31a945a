//! What the host tells operators as it runs: logging (`tracing` to stderr, as text or
//! JSON, through a non-blocking writer so that a slow stderr never stalls the event
//! loop), and request [`traces`] over OTLP when asked for.

pub mod traces;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `level`; without
/// `access_log` the per-request lines are off whatever the level. Keep the returned
/// guard alive: dropping it flushes what is buffered.
pub fn init(level: &str, format: LogFormat, access_log: bool) -> anyhow::Result<WorkerGuard> {
    let mut filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.is_empty() => EnvFilter::try_new(spec)?,
        _ => EnvFilter::try_new(level)?,
    };
    if !access_log {
        filter = filter.add_directive("wasmloop::access=off".parse()?);
    }
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.with_ansi(false).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(guard)
}
