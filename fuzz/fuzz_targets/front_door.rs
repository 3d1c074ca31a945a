//! Bytes from a client in: a connection served by the worker's own HTTP settings and
//! front door (`http::Server::handle`, one sync app on a real pool) answers, refuses or
//! closes, and never panics, whatever arrives. Each input is one connection.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| wasmloop_fuzz::serve_connection(bytes));
