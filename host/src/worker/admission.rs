//! Admission: whether a routed request may start, decided before any guest runs and
//! answered at once when not (503 `overloaded` with `Retry-After`). Three levels are
//! checked in order, each with its own counter: the worker's `--limit-concurrency`,
//! the tenant's slots on this worker, the app's own limit; a pool request also takes
//! one of its tenant's pool-thread slots. What a request takes it holds, in its
//! [`Admission`], until its run is over and its log line written.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::runtime::error::RequestError;

/// A counter with a ceiling, taken per request and given back by the guard.
#[derive(Debug)]
pub struct Slots {
    used: AtomicU64,
    max: u64,
}

impl Slots {
    pub fn new(max: u64) -> Slots {
        Slots {
            used: AtomicU64::new(0),
            max,
        }
    }

    /// Takes a slot, or `None` when all are taken.
    pub fn try_take(self: &Arc<Self>) -> Option<SlotGuard> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            if used >= self.max {
                return None;
            }
            match self.used.compare_exchange_weak(
                used,
                used + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(SlotGuard(self.clone())),
                Err(now) => used = now,
            }
        }
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

/// Gives its slot back when dropped.
#[derive(Debug)]
pub struct SlotGuard(Arc<Slots>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What one tenant may hold on one worker.
#[derive(Debug)]
pub struct TenantSlots {
    /// Requests in flight.
    pub in_flight: Arc<Slots>,
    /// Pool threads (running or queued for one).
    pub pool: Arc<Slots>,
}

/// Counts a request in flight until dropped.
pub struct InFlight(Rc<Cell<usize>>);

impl InFlight {
    pub fn enter(count: &Rc<Cell<usize>>) -> InFlight {
        count.set(count.get() + 1);
        InFlight(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// Why admission refused a request: the metric label and the cause the client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The `reason` label of `wasmloop_rejected_total`.
    pub label: &'static str,
    pub message: &'static str,
}

impl Refusal {
    pub fn error(self) -> RequestError {
        RequestError::Overloaded(self.message)
    }
}

/// Everything a request holds while it runs; dropping it gives all of it back.
pub struct Admission {
    _in_flight: InFlight,
    _tenant: Option<SlotGuard>,
    _app: SlotGuard,
    pool: Option<SlotGuard>,
}

impl Admission {
    /// Takes the worker's, the tenant's and the app's slots for a request, or says
    /// which level refused (and takes nothing).
    pub fn admit(
        in_flight: &Rc<Cell<usize>>,
        limit_concurrency: usize,
        tenant: Option<&TenantSlots>,
        app: &Arc<Slots>,
    ) -> Result<Admission, Refusal> {
        if in_flight.get() >= limit_concurrency {
            return Err(Refusal {
                label: "concurrency_limit",
                message: "the worker is at --limit-concurrency",
            });
        }
        let tenant = match tenant {
            Some(slots) => Some(slots.in_flight.try_take().ok_or(Refusal {
                label: "tenant_limit",
                message: "the tenant is at its limit of requests in flight",
            })?),
            None => None,
        };
        let app_slot = app.try_take().ok_or(Refusal {
            label: "app_limit",
            message: "the app is at its limit of requests in flight",
        })?;
        Ok(Admission {
            _in_flight: InFlight::enter(in_flight),
            _tenant: tenant,
            _app: app_slot,
            pool: None,
        })
    }

    /// Takes one of the tenant's pool-thread slots, for a request bound for the pool.
    pub fn take_pool_share(&mut self, tenant: Option<&TenantSlots>) -> Result<(), Refusal> {
        if let Some(slots) = tenant {
            self.pool = Some(slots.pool.try_take().ok_or(Refusal {
                label: "tenant_pool_share",
                message: "the tenant holds its share of the pool's threads",
            })?);
        }
        Ok(())
    }
}
