//! The concurrent instances (lanes) of one app version, as the app holds them, and
//! what the dispatcher and a lane's task share ([`super::concurrent`] runs them).
//! Apart from that task so the app can hold its lanes without a cycle of imports.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use http::Request;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::worker::body::RequestBody;
use crate::worker::run::reply::{Reply, Retired, RunContext};

/// Epoch ticks in a row at which a lane's guest was still computing before the
/// lane is hot (gets no new requests).
pub(super) const HOT_AFTER_TICKS: u32 = 2;

/// The concurrent instances of one app version.
#[derive(Default)]
pub struct Lanes {
    /// Lanes that may take requests (closed ones leave at the next dispatch).
    pub(super) live: Mutex<Vec<Arc<Lane>>>,
    /// Lanes that ended without a request to report it: why, and requests served.
    pub(super) ended: Arc<Mutex<Vec<(Retired, u64)>>>,
    /// Cancelled when the app version is dropped: its idle lanes end.
    pub(super) gone: CancellationToken,
}

impl Drop for Lanes {
    fn drop(&mut self) {
        self.gone.cancel();
    }
}

impl Lanes {
    /// The lanes that ended by themselves since the last call.
    pub fn take_ended(&self) -> Vec<(Retired, u64)> {
        std::mem::take(&mut *self.ended.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Lanes open for requests now.
    pub fn open(&self) -> usize {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.iter().filter(|lane| lane.open.load(Relaxed)).count()
    }
}

/// One instance's shared state, between the dispatcher and its task.
pub(super) struct Lane {
    pub(super) jobs: mpsc::UnboundedSender<Job>,
    /// Requests sent to it and not finished.
    pub(super) in_flight: AtomicU32,
    /// Requests sent to it in all.
    pub(super) assigned: AtomicU64,
    /// Requests it may be sent in all (picked from the contract's range).
    pub(super) budget: u64,
    /// Whether it takes new requests.
    pub(super) open: AtomicBool,
    /// Epoch ticks in a row at which one of its guests was preempted.
    pub(super) ticks: AtomicU32,
}

impl Lane {
    pub(super) fn takes(&self, max_concurrent: u32) -> bool {
        self.open.load(Relaxed)
            && self.in_flight.load(Relaxed) < max_concurrent
            && self.ticks.load(Relaxed) < HOT_AFTER_TICKS
    }

    pub(super) fn close(&self) {
        self.open.store(false, Relaxed);
    }
}

/// A request on its way to a lane.
pub(super) struct Job {
    pub(super) req: Request<RequestBody>,
    pub(super) ctx: RunContext,
    pub(super) reply: Reply,
}
