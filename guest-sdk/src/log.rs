//! Logging macros. A line goes to the guest's stderr with its level first; the host
//! logs it at that level, tagged with the request id (and tenant and app), next to the
//! request's access-log line.

/// Logs at error level: `wasmloop_sdk::error!("upstream said {status}")`.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::__private::log("ERROR", ::core::format_args!($($arg)*)) };
}

/// Logs at warn level: `wasmloop_sdk::warn!("slow upstream: {ms} ms")`.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::__private::log("WARN", ::core::format_args!($($arg)*)) };
}

/// Logs at info level: `wasmloop_sdk::info!("created user {id}")`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::__private::log("INFO", ::core::format_args!($($arg)*)) };
}

/// Logs at debug level (shown with `--log-level debug`).
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::__private::log("DEBUG", ::core::format_args!($($arg)*)) };
}

/// Writes one log line; a failed write is dropped rather than panicking the handler.
pub(crate) fn write(level: &str, message: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let line = format!("{level} {message}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}
