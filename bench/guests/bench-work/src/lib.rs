//! The work the benchmark handlers do, shared by the wasm handlers (bench-sync,
//! bench-async) and the native baseline (bench/src/bin/native-hello.rs), so every
//! system burns the same CPU for the same request.

use std::time::{Duration, Instant};

/// Computes for `duration` by the clock: the same 2 ms in every system, however fast
/// it runs the loop.
pub fn spin(duration: Duration) {
    let end = Instant::now() + duration;
    let mut x: u64 = 1;
    while Instant::now() < end {
        for i in 0..1000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
    }
}

/// The `ms=N` of a query string (default 50), for `/spin`.
pub fn millis(query: Option<&str>) -> u64 {
    query
        .and_then(|q| q.strip_prefix("ms="))
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(50)
}
