//! Where a guest's stdout and stderr go: into the log, a line at a time, tagged with
//! the request id, tenant and app, so a guest's `println!` and its panic message sit next to the
//! access log line of the request that printed them.
//!
//! A line that starts with a level (`ERROR `, `WARN `, `INFO `, `DEBUG `, as the SDK's
//! logging macros write) is logged at that level.
//!
//! Writes never fail: a guest that prints past the per-request budget loses the rest
//! of its output, not its request (Rust's `println!` panics when a write fails).

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes of output one request may log, per stream.
const BUDGET: usize = 64 * 1024;
/// Longest line logged as it is; longer lines are cut.
const MAX_LINE: usize = 4096;

/// One of a request's output streams.
#[derive(Clone)]
pub struct GuestOutput {
    inner: Arc<Mutex<Lines>>,
}

struct Lines {
    request_id: Arc<str>,
    /// `tenant/app` (registry mode) or the component's name.
    app: Arc<str>,
    stream: &'static str,
    partial: Vec<u8>,
    budget: usize,
}

impl GuestOutput {
    /// The stream named `stream` (`stdout`, `stderr`) of request `request_id` to `app`.
    pub fn new(request_id: Arc<str>, app: Arc<str>, stream: &'static str) -> GuestOutput {
        let lines = Lines {
            request_id,
            app,
            stream,
            partial: Vec::new(),
            budget: BUDGET,
        };
        GuestOutput {
            inner: Arc::new(Mutex::new(lines)),
        }
    }

    /// The instance serves another request: what it prints from now on is tagged
    /// with `request_id`, within a fresh budget (a partial line is logged first).
    pub fn next_request(&self, request_id: Arc<str>) {
        let mut lines = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if !lines.partial.is_empty() {
            lines.emit();
        }
        lines.request_id = request_id;
        lines.budget = BUDGET;
    }

    fn write_bytes(&self, bytes: &[u8]) {
        // A panic while the lock was held leaves at worst a partial line: keep logging.
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write(bytes);
    }
}

impl Lines {
    fn write(&mut self, bytes: &[u8]) {
        let kept = bytes.len().min(self.budget);
        self.budget -= kept;
        for &b in &bytes[..kept] {
            if b == b'\n' {
                self.emit();
            } else if self.partial.len() < MAX_LINE {
                self.partial.push(b);
            }
        }
    }

    fn emit(&mut self) {
        let line = String::from_utf8_lossy(&self.partial);
        let line = line.trim_end_matches('\r');
        let (id, stream) = (&*self.request_id, self.stream);
        let (tenant, app) = match self.app.split_once('/') {
            Some((tenant, app)) => (tenant, app),
            None => ("", &*self.app),
        };
        // The SDK's logging macros start a line with its level; anything else a guest
        // prints is logged at info.
        match line.split_once(' ') {
            Some(("ERROR", msg)) => {
                tracing::error!(target: "wasmloop::guest", id, tenant, app, stream, "{msg}")
            }
            Some(("WARN", msg)) => {
                tracing::warn!(target: "wasmloop::guest", id, tenant, app, stream, "{msg}")
            }
            Some(("DEBUG", msg)) => {
                tracing::debug!(target: "wasmloop::guest", id, tenant, app, stream, "{msg}")
            }
            Some(("INFO", msg)) => {
                tracing::info!(target: "wasmloop::guest", id, tenant, app, stream, "{msg}")
            }
            _ => tracing::info!(target: "wasmloop::guest", id, tenant, app, stream, "{line}"),
        }
        self.partial.clear();
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        if !self.partial.is_empty() {
            self.emit();
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_past_the_budget_is_dropped_without_an_error() {
        let mut out = GuestOutput::new("r1".into(), "app".into(), "stdout");
        for _ in 0..100 {
            assert!(OutputStream::write(&mut out, Bytes::from(vec![b'x'; 4096])).is_ok());
        }
        assert_eq!(out.inner.lock().unwrap().budget, 0);
    }

    #[test]
    fn long_lines_are_cut() {
        let out = GuestOutput::new("r1".into(), "app".into(), "stdout");
        out.write_bytes(&vec![b'y'; MAX_LINE * 2]);
        assert_eq!(out.inner.lock().unwrap().partial.len(), MAX_LINE);
    }
}
