//! Timers for `async fn` handlers. A plain `fn` handler sleeps with
//! `std::thread::sleep`, which holds its pool thread; an `async fn` awaits [`sleep`],
//! which holds nothing while it waits.

use std::time::Duration;

/// Waits for `duration` without blocking the host's loop: other requests run meanwhile.
///
/// ```no_run
/// # async fn f() {
/// wasmloop_sdk::sleep(std::time::Duration::from_millis(10)).await;
/// # }
/// ```
pub async fn sleep(duration: Duration) {
    let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
    wasip3::clocks::monotonic_clock::wait_for(nanos).await;
}
