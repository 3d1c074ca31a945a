//! Admission: whether a routed request may start, decided before any guest runs and
//! answered at once when not (503 `overloaded` with `Retry-After`). The levels are
//! checked in order, each with its own counter: the worker's `--limit-concurrency`
//! and memory budget, the tenant's requests and memory on this worker, the app's own
//! limit; a pool request also takes one of its tenant's pool-thread slots. Memory is
//! counted at what a request may grow to (its app's `max_memory`, plus a fixed
//! [`REQUEST_OVERHEAD`]), so the requests admitted cannot together outgrow the
//! budget, whatever they do. What a request takes it holds, in its [`Admission`],
//! until its run is over and its log line written.

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
        self.try_take_n(1)
    }

    /// Takes `n` units (bytes of a budget), or `None` when fewer are left.
    pub fn try_take_n(self: &Arc<Self>, n: u64) -> Option<SlotGuard> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            if used.saturating_add(n) > self.max {
                return None;
            }
            match self.used.compare_exchange_weak(
                used,
                used + n,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(SlotGuard(self.clone(), n)),
                Err(now) => used = now,
            }
        }
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

/// Gives its units back when dropped.
#[derive(Debug)]
pub struct SlotGuard(Arc<Slots>, u64);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.0.used.fetch_sub(self.1, Ordering::AcqRel);
    }
}

/// What a request counts against the memory budgets beyond its linear memory: its
/// store, tables, stack and the host's buffers for it.
pub const REQUEST_OVERHEAD: u64 = 1 << 20;

/// The memory budget of one worker when the operator sets none: half of what the
/// machine has (or its cgroup allows, when less), divided among `workers`. Reads
/// `/proc` and `/sys/fs/cgroup`: call it at start-up.
#[expect(clippy::disallowed_methods, reason = "start-up, before the loop runs")]
pub fn default_memory_budget(workers: u64) -> u64 {
    let machine = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(4 << 30);
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    let total = cgroup.map_or(machine, |limit| limit.min(machine));
    total / 2 / workers.max(1)
}

/// What one tenant may hold on one worker.
#[derive(Debug)]
pub struct TenantSlots {
    /// Requests in flight.
    pub in_flight: Arc<Slots>,
    /// Pool threads (running or queued for one).
    pub pool: Arc<Slots>,
    /// Bytes of memory its requests in flight may grow to.
    pub memory: Arc<Slots>,
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
    _memory: SlotGuard,
    _tenant: Option<(SlotGuard, SlotGuard)>,
    _app: SlotGuard,
    pool: Option<SlotGuard>,
}

/// The worker's limits, and what one request needs of them.
pub struct Worker<'a> {
    pub in_flight: &'a Rc<Cell<usize>>,
    pub limit_concurrency: usize,
    /// The worker's memory budget, in bytes.
    pub memory: &'a Arc<Slots>,
}

impl Admission {
    /// Takes the worker's, the tenant's and the app's slots for a request that may
    /// grow to `memory` bytes, or says which level refused (and takes nothing).
    pub fn admit(
        worker: Worker<'_>,
        memory: u64,
        tenant: Option<&TenantSlots>,
        app: &Arc<Slots>,
    ) -> Result<Admission, Refusal> {
        if worker.in_flight.get() >= worker.limit_concurrency {
            return Err(Refusal {
                label: "concurrency_limit",
                message: "the worker is at --limit-concurrency",
            });
        }
        let need = memory.saturating_add(REQUEST_OVERHEAD);
        let worker_memory = worker.memory.try_take_n(need).ok_or(Refusal {
            label: "memory_budget",
            message: "the worker's memory budget is spent (--worker-memory-budget)",
        })?;
        let tenant = match tenant {
            Some(slots) => {
                let in_flight = slots.in_flight.try_take().ok_or(Refusal {
                    label: "tenant_limit",
                    message: "the tenant is at its limit of requests in flight",
                })?;
                let memory = slots.memory.try_take_n(need).ok_or(Refusal {
                    label: "tenant_memory_budget",
                    message: "the tenant's share of the memory budget is spent",
                })?;
                Some((in_flight, memory))
            }
            None => None,
        };
        let app_slot = app.try_take().ok_or(Refusal {
            label: "app_limit",
            message: "the app is at its limit of requests in flight",
        })?;
        Ok(Admission {
            _in_flight: InFlight::enter(worker.in_flight),
            _memory: worker_memory,
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

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn tenant(in_flight: u64, memory: u64) -> TenantSlots {
        TenantSlots {
            in_flight: Arc::new(Slots::new(in_flight)),
            pool: Arc::new(Slots::new(1)),
            memory: Arc::new(Slots::new(memory)),
        }
    }

    #[test]
    fn memory_is_counted_at_what_a_request_may_grow_to_and_given_back() {
        let count = Rc::new(Cell::new(0));
        let worker_memory = Arc::new(Slots::new(300 * MIB));
        let worker = || Worker {
            in_flight: &count,
            limit_concurrency: 100,
            memory: &worker_memory,
        };
        let (hog, calm) = (tenant(100, 150 * MIB), tenant(100, 150 * MIB));
        let app = Arc::new(Slots::new(u64::MAX));
        // 64 MiB + 1 MiB each: two fit in the hog's 150 MiB, the third does not.
        let first = Admission::admit(worker(), 64 * MIB, Some(&hog), &app).unwrap();
        let second = Admission::admit(worker(), 64 * MIB, Some(&hog), &app).unwrap();
        let refused = Admission::admit(worker(), 64 * MIB, Some(&hog), &app).err();
        assert_eq!(refused.map(|r| r.label), Some("tenant_memory_budget"));
        // A refusal takes nothing, at any level.
        assert_eq!(hog.in_flight.used(), 2);
        assert_eq!(worker_memory.used(), 130 * MIB);
        // The other tenant has its own share; the worker's budget bounds both.
        let calm_one = Admission::admit(worker(), 100 * MIB, Some(&calm), &app).unwrap();
        let over = Admission::admit(worker(), 100 * MIB, Some(&calm), &app).err();
        assert_eq!(over.map(|r| r.label), Some("memory_budget"));
        drop((first, second, calm_one));
        assert_eq!(worker_memory.used(), 0);
        assert_eq!((hog.memory.used(), calm.memory.used()), (0, 0));
        assert_eq!(count.get(), 0);
    }
}
