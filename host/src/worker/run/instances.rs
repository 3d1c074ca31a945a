//! Instances kept for the next request of the same app version, when the app's reuse
//! contract says `serial` ([`crate::model::reuse`]); with `concurrent`, a 0.3
//! handler's instances serve several requests at once ([`super::concurrent`]) and
//! other handlers' are kept here as with `serial`. Each [`crate::worker::app::App`]
//! (one tenant, one app, one version) has its own [`Instances`], so an instance never
//! crosses tenants, apps or versions; a deploy or rollback makes a new `App`, and the
//! old one's kept instances go with it once its last request ends.
//!
//! A run takes a kept instance (or makes a fresh one), and afterwards either gives it
//! back or retires it, saying why ([`Retired`]): a request that failed in any way
//! (trap, fuel, memory, deadline, client gone: its guest may be mid-task), its
//! request budget spent, its memory past the high-water mark. Idle ones are dropped
//! after the idle timeout by [`Instances::reap`], which the worker calls every second.
//!
//! A kept instance holds the memory it reached (plus the per-request overhead) of the
//! worker's memory budget and of its tenant's share, as a request in flight does: an
//! instance that cannot is retired (`memory_budget`), so instances kept for reuse
//! never let a tenant hold more memory than admission would let it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use wasmtime::Store;
use wasmtime_wasi_http::{p2, p3};

use crate::model::reuse::{Reuse, ReuseMode};
use crate::runtime::error::RequestError;
use crate::runtime::sandbox::Sandbox;
use crate::worker::admission::{REQUEST_OVERHEAD, SlotGuard, Slots};
use crate::worker::run::lanes::Lanes;
use crate::worker::run::reply::Retired;

/// An instantiated handler, in the calling convention of its store.
pub enum Instance {
    Service(p3::bindings::Service),
    Proxy(p2::bindings::Proxy),
    ProxySync(p2::bindings::sync::Proxy),
}

/// A store with its instance, between requests.
pub struct Kept {
    pub store: Store<Sandbox>,
    pub instance: Instance,
    /// Requests it served so far.
    pub served: u64,
    /// Requests it may serve in all (picked from the contract's range).
    pub budget: u64,
    idle_since: Instant,
    /// Its memory, held of the budgets while it is idle.
    held: Vec<SlotGuard>,
}

/// Instances a worker keeps idle for reuse, across all its apps. The engine's
/// pooling allocator has this many instance slots on top of those for requests in
/// flight, so kept instances never take the slot a fresh request needs.
pub const KEPT_PER_WORKER: u32 = 256;

/// The kept instances of one app version.
pub struct Instances {
    reuse: Reuse,
    idle: Mutex<Vec<Kept>>,
    /// The worker's [`KEPT_PER_WORKER`] slots, one held by each idle instance.
    kept: Arc<Slots>,
    /// The memory budgets an idle instance holds its memory of.
    budgets: Vec<Arc<Slots>>,
    /// The instances serving several requests at once (`concurrent`, 0.3 handlers).
    pub lanes: Lanes,
}

impl Instances {
    pub fn new(reuse: Reuse, kept: Arc<Slots>, budgets: Vec<Arc<Slots>>) -> Instances {
        Instances {
            reuse,
            idle: Mutex::new(Vec::new()),
            kept,
            budgets,
            lanes: Lanes::default(),
        }
    }

    /// The app's reuse contract.
    pub fn contract(&self) -> &Reuse {
        &self.reuse
    }

    /// Whether requests of this app share an instance while they run (0.3 handlers).
    pub fn concurrent(&self) -> bool {
        self.reuse.mode == ReuseMode::Concurrent
    }

    /// Holds what an idle instance that reached `memory` bytes keeps of the worker's:
    /// a kept slot, and its memory of each budget; or says why it cannot be kept.
    pub fn hold(&self, memory: u64) -> Result<Vec<SlotGuard>, Retired> {
        let mut held = Vec::with_capacity(1 + self.budgets.len());
        held.push(self.kept.try_take().ok_or("kept_limit")?);
        let need = memory.saturating_add(REQUEST_OVERHEAD);
        for budget in &self.budgets {
            held.push(budget.try_take_n(need).ok_or("memory_budget")?);
        }
        Ok(held)
    }

    /// Whether an instance that reached `memory` bytes is past the high-water mark.
    pub fn past_high_water(&self, memory: u64) -> bool {
        self.reuse
            .memory_high_water
            .is_some_and(|high| memory > high)
    }

    /// Whether requests of this app reuse instances.
    pub fn reuses(&self) -> bool {
        self.reuse.mode != ReuseMode::None
    }

    /// The most recently used idle instance that has not idled too long (the others
    /// stay for [`Instances::reap`]).
    pub fn take(&self) -> Option<Kept> {
        if !self.reuses() {
            return None;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let mut kept = idle.pop()?;
        if kept.idle_since.elapsed() < self.reuse.idle_timeout() {
            // The request that takes it holds its own admission.
            kept.held.clear();
            return Some(kept);
        }
        idle.push(kept); // the freshest idled too long, and so did the rest: reap them
        None
    }

    /// A fresh instance's request budget, picked from the contract's range (one
    /// request when the app does not reuse instances).
    pub fn budget(&self) -> u64 {
        if !self.reuses() {
            return 1;
        }
        let mut random = [0u8; 8];
        let _ = getrandom::fill(&mut random);
        self.reuse.pick_max_requests(u64::from_le_bytes(random))
    }

    /// After a request on `kept` that ended with `error`: keeps the instance for the
    /// next request, or says why it is retired (and drops it).
    pub fn finish(
        &self,
        mut kept: Kept,
        error: Option<&RequestError>,
        cancelled: bool,
    ) -> Option<(Retired, u64)> {
        kept.served += 1;
        let retired = if !self.reuses() {
            Some("single_use")
        } else if let Some(error) = error {
            Some(error.cause())
        } else if cancelled {
            Some("client_gone")
        } else if kept.served >= kept.budget {
            Some("max_requests")
        } else if self.past_high_water(kept.store.data().memory_reached() as u64) {
            Some("memory_high_water")
        } else {
            None
        };
        if let Some(cause) = retired {
            return Some((cause, kept.served));
        }
        match self.hold(kept.store.data().memory_reached() as u64) {
            Ok(held) => kept.held = held,
            Err(cause) => return Some((cause, kept.served)),
        }
        kept.idle_since = Instant::now();
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(kept);
        None
    }

    /// Drops the instances idle longer than the timeout; returns why each instance
    /// that ended without a request to report it ended, and how many requests it
    /// had served (with those the concurrent instances ended by themselves).
    pub fn reap(&self) -> Vec<(Retired, u64)> {
        let timeout = self.reuse.idle_timeout();
        let mut ended = self.lanes.take_ended();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|kept| {
            let keep = kept.idle_since.elapsed() < timeout;
            if !keep {
                ended.push(("idle_timeout", kept.served));
            }
            keep
        });
        ended
    }

    /// Idle instances kept now.
    pub fn idle(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Kept {
    /// A store and its instance that served `served` requests of its `budget`.
    pub fn new(store: Store<Sandbox>, instance: Instance, served: u64, budget: u64) -> Kept {
        Kept {
            store,
            instance,
            served,
            budget,
            idle_since: Instant::now(),
            held: Vec::new(),
        }
    }
}
