//! The bounded thread pool that runs sync (wasi:http 0.2) handlers.
//!
//! Plain OS threads, never runtime threads: Wasmtime's sync WASI calls
//! `Handle::block_on` internally and panics inside a tokio context. A job waits in a
//! bounded queue; when the queue is full the server answers 503 at once instead of
//! letting requests pile up. Each job gets a fresh store with its fuel, its memory
//! limit, and an epoch callback that traps it at the deadline or when the client has
//! gone. The head reaches the loop through a channel as soon as the guest sets it; the
//! guest keeps writing the body from the pool thread. Pool threads run at a lower
//! priority (`--pool-nice`) than the loop thread, so a saturated pool cannot starve the
//! loop on a busy core.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::Context as _;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use http::Request;
use tokio::sync::oneshot;
use wasmtime::UpdateDeadline;
use wasmtime_wasi_http::WasiHttpView as _;

use crate::metrics::recorder::Recorder;
use crate::runtime::component::HandlerPre;
use crate::runtime::error::RequestError;
use crate::runtime::sandbox::StopWaiting;
use crate::worker::app::App;
use crate::worker::body::RequestBody;
use crate::worker::run::instances::Instance;
use crate::worker::run::{
    Head, Lease, Outcome, Reply, RunContext, answer_unanswered, fuel_used, outparam_head, scheme_of,
};

/// One request waiting for, or running on, a pool thread.
pub struct Job {
    pub app: Arc<App>,
    pub req: Request<RequestBody>,
    pub ctx: RunContext,
    pub reply: Reply,
    /// When the job was submitted, for the queue-wait metric.
    pub queued_at: Instant,
}

/// The pool's threads and the queue in front of them.
pub struct Pool {
    queue: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    busy: Arc<AtomicUsize>,
    /// Jobs admitted and not finished: running plus waiting. Admission counts here
    /// rather than on the channel, whose buffer also holds jobs that a thread is
    /// just waking up to take.
    admitted: Arc<AtomicUsize>,
    capacity: usize,
    threads_started: usize,
}

impl Pool {
    /// Starts `threads` threads behind a queue of `queue` waiting jobs.
    pub fn start(
        threads: usize,
        queue: usize,
        nice: i32,
        recorder: Arc<Recorder>,
    ) -> anyhow::Result<Pool> {
        let capacity = threads + queue;
        let (tx, rx) = crossbeam_channel::bounded::<Job>(capacity);
        let busy = Arc::new(AtomicUsize::new(0));
        let admitted = Arc::new(AtomicUsize::new(0));
        let handles = (0..threads)
            .map(|i| {
                let (rx, busy, admitted) = (rx.clone(), busy.clone(), admitted.clone());
                let recorder = recorder.clone();
                std::thread::Builder::new()
                    .name(format!("wasmloop-pool-{i}"))
                    .spawn(move || {
                        lower_priority(nice);
                        work(rx, busy, admitted, &recorder)
                    })
                    .context("failed to start a pool thread")
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Pool {
            queue: Some(tx),
            threads: handles,
            busy,
            admitted,
            capacity,
            threads_started: threads,
        })
    }

    /// Hands a job to the pool; refuses at once when every thread is busy and the
    /// queue is full.
    pub fn submit(&self, job: Job) -> Result<(), RequestError> {
        let queue = self
            .queue
            .as_ref()
            .ok_or(RequestError::Overloaded("the pool is shutting down"))?;
        // Only the loop thread submits, so a check and a later add cannot race past
        // the capacity; the pool threads only ever lower the count.
        if self.admitted.load(Ordering::Acquire) >= self.capacity {
            return Err(RequestError::Overloaded(
                "every pool thread is busy and the queue is full",
            ));
        }
        self.admitted.fetch_add(1, Ordering::AcqRel);
        queue.try_send(job).map_err(|e| {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            match e {
                TrySendError::Full(_) => RequestError::Overloaded("the pool's queue is full"),
                TrySendError::Disconnected(_) => {
                    RequestError::Overloaded("the pool is shutting down")
                }
            }
        })
    }

    /// The pool's threads.
    pub fn threads(&self) -> usize {
        self.threads_started
    }

    /// Threads running a job right now.
    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::Relaxed)
    }

    /// Jobs waiting for a thread.
    pub fn queued(&self) -> usize {
        self.admitted
            .load(Ordering::Relaxed)
            .saturating_sub(self.busy())
    }

    /// Lets the threads finish what they hold and waits for them until `deadline`;
    /// returns whether they all finished. A thread blocked in a long host call is
    /// left behind (it ends with the process). Blocks: call it off the loop, once
    /// the server has stopped.
    #[expect(clippy::disallowed_methods, reason = "runs after the loop has stopped")]
    pub fn shutdown(mut self, deadline: Instant) -> bool {
        self.queue = None;
        while self.threads.iter().any(|t| !t.is_finished()) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        true
    }
}

/// Gives this thread a higher nice value than the loop's, so that on a busy core the
/// scheduler runs the loop first: pool threads computing flat out would otherwise
/// take turns with the loop thread and delay every loop request by many time slices.
fn lower_priority(nice: i32) {
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), nice) {
        tracing::warn!("failed to set the pool thread's nice value to {nice}: {e}");
    }
}

fn work(
    queue: Receiver<Job>,
    busy: Arc<AtomicUsize>,
    admitted: Arc<AtomicUsize>,
    recorder: &Recorder,
) {
    while let Ok(job) = queue.recv() {
        busy.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let waited = started.saturating_duration_since(job.queued_at);
        run(job);
        recorder.pool_job(waited, started.elapsed());
        busy.fetch_sub(1, Ordering::Relaxed);
        admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

fn run(job: Job) {
    let Job {
        app,
        req,
        ctx,
        reply,
        queued_at,
    } = job;
    let Reply { head, done } = reply;
    let waited = queued_at.elapsed();
    if ctx.cancel.is_cancelled() {
        return; // the client left while the job was queued
    }
    if Instant::now() >= ctx.deadline {
        let _ = head.send(Err(RequestError::Timeout));
        let _ = done.send(Outcome::default());
        return;
    }
    // The outparam callback and this thread both may answer; whoever comes first does.
    let head = Arc::new(Mutex::new(Some(head)));
    let mut outcome = call(&app, req, &ctx, head.clone());
    outcome.queue_wait = waited;
    let unanswered = head.lock().unwrap_or_else(PoisonError::into_inner).take();
    answer_unanswered(unanswered, &mut outcome);
    let _ = done.send(outcome);
}

fn call(
    app: &App,
    req: Request<RequestBody>,
    ctx: &RunContext,
    head: Arc<Mutex<Option<oneshot::Sender<Head>>>>,
) -> Outcome {
    let HandlerPre::ProxySync(pre) = &app.handler.pre else {
        let error = RequestError::Host(anyhow::anyhow!("an async handler was sent to the pool"));
        return Outcome::failed(error);
    };
    let mut lease = match Lease::new(app, ctx) {
        Ok(lease) => lease,
        Err(error) => return Outcome::failed(error),
    };
    let deadline = ctx.deadline;
    let cancel = ctx.cancel.clone();
    let Lease {
        store,
        instance,
        instantiate_time,
        ..
    } = &mut lease;
    store.data_mut().stop_waiting = Some(StopWaiting {
        deadline,
        cancel: cancel.clone(),
    });
    store.epoch_deadline_callback(move |_| {
        if cancel.is_cancelled() || Instant::now() >= deadline {
            Err(wasmtime::Trap::Interrupt.into())
        } else {
            Ok(UpdateDeadline::Continue(1))
        }
    });
    store.set_epoch_deadline(1);

    let started = Instant::now();
    let result = (|| -> wasmtime::Result<()> {
        if instance.is_none() {
            let started = Instant::now();
            *instance = Some(Instance::ProxySync(pre.instantiate(&mut *store)?));
            *instantiate_time = started.elapsed();
        }
        let Some(Instance::ProxySync(proxy)) = instance else {
            wasmtime::bail!("a kept instance of another kind");
        };
        let http = store.data_mut();
        let req = http.http().new_incoming_request(scheme_of(&req), req)?;
        let out = http
            .http()
            .new_response_outparam_from_callback(move |set| {
                if let Some(head) = head.lock().unwrap_or_else(PoisonError::into_inner).take() {
                    let _ = head.send(outparam_head(set));
                }
            })?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut *store, req, out)
    })();
    let fuel_used = fuel_used(app, &lease.store);
    // The front door cancels the run at the deadline too: that is a timeout.
    let client_left = ctx.cancel.is_cancelled() && Instant::now() < deadline;
    let error = result
        .err()
        .map(|e| RequestError::from_guest(e, lease.store.data().memory_refused(), client_left));
    let guest_time = started.elapsed();
    let instantiate_time = lease.instantiate_time;
    let instance = lease.finish(app, error.as_ref(), ctx.cancel.is_cancelled());
    Outcome {
        fuel_used,
        error,
        forced_yields: 0,
        guest_time,
        instance,
        instantiate_time,
        queue_wait: std::time::Duration::ZERO,
    }
}
