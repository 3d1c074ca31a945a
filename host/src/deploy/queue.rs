//! The node's compile capacity: at most `--compile-concurrency` compile children at
//! once, one at a time per tenant, and at most `--compile-queue` deploys waiting for
//! a turn, each for at most `--compile-queue-timeout`. A deploy that finds the queue
//! full, or waits past the timeout, is refused with 503 and `Retry-After`; nothing of
//! it is kept. Compiles the node needs for itself (an app another node deployed, an
//! artifact to rebuild) wait for a turn without a bound: refusing them would leave an
//! app unserved.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};

use crate::deploy::compile::DeployError;

/// The seconds a refused deploy is told to wait before it tries again.
const RETRY_AFTER: u64 = 2;

/// The node's compile slots, and the per-tenant turns in front of them.
pub struct CompileQueue {
    slots: Arc<Semaphore>,
    slots_total: usize,
    /// Deploys waiting for their tenant's turn or a slot.
    waiting: AtomicUsize,
    max_waiting: usize,
    wait_timeout: Duration,
    tenants: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A turn to compile: the slot, and the tenant's turn, held until dropped.
#[derive(Debug)]
pub struct Turn {
    _slot: OwnedSemaphorePermit,
    _tenant: Option<OwnedMutexGuard<()>>,
}

/// Counts a deploy as waiting until dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl CompileQueue {
    pub fn new(concurrency: usize, max_waiting: usize, wait_timeout: Duration) -> CompileQueue {
        let slots_total = concurrency.max(1);
        CompileQueue {
            slots: Arc::new(Semaphore::new(slots_total)),
            slots_total,
            waiting: AtomicUsize::new(0),
            max_waiting,
            wait_timeout,
            tenants: Mutex::new(HashMap::new()),
        }
    }

    /// The default concurrency: half the cores (at least one), leaving the others to
    /// the workers that serve traffic meanwhile.
    pub fn default_concurrency() -> usize {
        (std::thread::available_parallelism().map_or(1, |n| n.get()) / 2).max(1)
    }

    /// Compile children running now.
    pub fn running(&self) -> usize {
        self.slots_total - self.slots.available_permits()
    }

    /// Deploys waiting for a turn now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// A turn for a deploy of `tenant`: after the tenant's earlier deploy is done and
    /// a slot is free. Refused (503) when the queue is full or the wait too long.
    pub async fn deploy_turn(&self, tenant: &str) -> Result<Turn, DeployError> {
        let busy = |why: String| DeployError::Busy {
            message: why,
            retry_after: RETRY_AFTER,
        };
        let lock = self
            .tenants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(tenant.to_string())
            .or_default()
            .clone();
        // A turn free right now is taken without queueing.
        if let Ok(tenant_turn) = lock.clone().try_lock_owned()
            && let Ok(slot) = self.slots.clone().try_acquire_owned()
        {
            return Ok(Turn {
                _slot: slot,
                _tenant: Some(tenant_turn),
            });
        }
        let now = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.waiting);
        if now >= self.max_waiting {
            drop(lock);
            self.forget_idle_tenants();
            return Err(busy(format!(
                "the server is compiling other deploys and {now} more are waiting (its --compile-queue); nothing was stored, try again later"
            )));
        }
        let turn = async move {
            let tenant = lock.lock_owned().await;
            let slot = self.slots.clone().acquire_owned().await;
            (tenant, slot)
        };
        let waited = tokio::time::timeout(self.wait_timeout, turn).await;
        self.forget_idle_tenants();
        let (tenant_turn, slot) = waited.map_err(|_| {
            busy(format!(
                "waited {} s for a turn to compile (its --compile-queue-timeout); nothing was stored, try again later",
                self.wait_timeout.as_secs()
            ))
        })?;
        let slot = slot.map_err(|_| busy("the server is stopping".into()))?;
        Ok(Turn {
            _slot: slot,
            _tenant: Some(tenant_turn),
        })
    }

    /// A turn for a compile the node needs for itself: waits for a slot, unbounded.
    pub async fn node_turn(&self) -> anyhow::Result<Turn> {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| anyhow::anyhow!("the server is stopping"))?;
        Ok(Turn {
            _slot: slot,
            _tenant: None,
        })
    }

    /// Drops the turn locks no deploy holds or waits for, so the map does not grow
    /// with every tenant that ever deployed.
    fn forget_idle_tenants(&self) {
        self.tenants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, lock| Arc::strong_count(lock) > 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_queue_bounds_slots_waiters_and_one_turn_per_tenant() {
        let queue = Arc::new(CompileQueue::new(1, 2, Duration::from_millis(100)));
        let first = queue.deploy_turn("a").await.unwrap();
        assert_eq!(queue.running(), 1);
        // Same tenant: waits for the first, and times out while it is held.
        let same = queue.deploy_turn("a").await;
        assert!(matches!(same, Err(DeployError::Busy { .. })), "{same:?}");
        // Another tenant: no slot free, times out too.
        assert!(queue.deploy_turn("b").await.is_err());
        // Two waiting fill the queue; a third is refused at once.
        let (q1, q2) = (queue.clone(), queue.clone());
        let w1 = tokio::spawn(async move { q1.deploy_turn("c").await.is_ok() });
        let w2 = tokio::spawn(async move { q2.deploy_turn("d").await.is_ok() });
        tokio::task::yield_now().await;
        while queue.waiting() < 2 {
            tokio::task::yield_now().await;
        }
        let started = std::time::Instant::now();
        let full = queue.deploy_turn("e").await;
        assert!(started.elapsed() < Duration::from_millis(50));
        match full {
            Err(DeployError::Busy { message, .. }) => assert!(message.contains("--compile-queue")),
            other => panic!("{other:?}"),
        }
        drop(first);
        // The freed slot goes to the waiting deploys in turn.
        let got = [w1.await.unwrap(), w2.await.unwrap()];
        assert!(got.iter().any(|ok| *ok), "{got:?}");
        assert_eq!(queue.waiting(), 0);
        assert_eq!(queue.running(), 0);
        queue.forget_idle_tenants();
        assert!(queue.tenants.lock().unwrap().is_empty());
    }
}
