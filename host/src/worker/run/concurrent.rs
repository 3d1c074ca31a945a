//! Instances that serve several requests at once: `reuse = concurrent` for wasi:http
//! 0.3 handlers on the loop ([`crate::model::reuse`]). Each such instance (a lane)
//! is a task on the loop that owns one store, runs `run_concurrent` for its whole
//! life, and starts each request sent to it as a concurrent `handle` call, with its
//! body pumped as on the fresh path ([`super::on_loop`]).
//!
//! Where a request goes ([`spawn`]): to the first lane of its app version that is
//! open, has fewer than `max_concurrent` requests and is not hot; else to a new lane.
//! A lane is hot while one of its guests computes without awaiting: the epoch
//! callback counts the ticks at which a guest of the store was preempted, and the
//! count is cleared whenever the lane's own loop runs again, which it can only do
//! when no guest holds the store. So a computing request never gets neighbours it
//! would stall; the neighbours it already has wait for it (each is answered at its
//! own deadline in any case), bounded by its deadline and the fuel, which the store
//! shares: each request adds its app's budget, and the store never holds more than
//! one budget per request in it. Fuel, preemptions and guest time are charged to the
//! request that ends, as what the store used since the previous one ended.
//!
//! A lane closes (takes no new requests, ends when its last one is done) when it
//! has been sent its request budget, when a request on it failed in any way (its
//! guest task may still run, or the instance may be poisoned), past the memory
//! high-water mark, or when its app version is gone; an idle lane ends after the
//! idle timeout, and holds, while idle, a kept slot and its memory of the budgets
//! as a serial instance does ([`super::instances`]). A guest that computes past the
//! deadlines of all the requests on its lane keeps the store from the lane's timers:
//! the lane's outer loop then drops the store, and every request still on it ends.
//! A trap ends the store too: a request alone on it gets the trap's error, several
//! get `instance_lost` with the trap's cause.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use http::Request;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use wasmtime::component::Accessor;
use wasmtime::{AsContextMut as _, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::p3::bindings::{Service, ServicePre};

use crate::runtime::error::RequestError;
use crate::runtime::sandbox::Sandbox;
use crate::worker::admission::SlotGuard;
use crate::worker::app::App;
use crate::worker::body::RequestBody;
use crate::worker::run::lanes::{Job, Lane};
use crate::worker::run::pump::send_and_pump;
use crate::worker::run::reply::{Fate, Retired};
use crate::worker::run::{Head, Outcome, Reply, RunContext, answer_unanswered, new_store};

/// How long past the last deadline of the requests on a lane a computing guest may
/// keep the store before the lane is dropped with every request on it. (Each
/// request's own timer answers it at its deadline whenever the guest awaits, and the
/// front door answers it then in any case.)
const DEADLINE_GRACE: Duration = Duration::from_millis(20);

/// Sends the request to one of `app`'s concurrent instances, or to a new one.
pub fn spawn(
    app: Arc<App>,
    pre: ServicePre<Sandbox>,
    req: Request<RequestBody>,
    ctx: RunContext,
    reply: Reply,
) {
    let lanes = &app.instances.lanes;
    let max_concurrent = app.instances.contract().max_concurrent;
    let mut job = Job { req, ctx, reply };
    {
        let mut live = lanes.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.retain(|lane| lane.open.load(Relaxed));
        if let Some(lane) = live.iter().find(|lane| lane.takes(max_concurrent)) {
            lane.in_flight.fetch_add(1, Relaxed);
            if lane.assigned.fetch_add(1, Relaxed) + 1 >= lane.budget {
                lane.close();
            }
            match lane.jobs.send(job) {
                Ok(()) => return,
                Err(mpsc::error::SendError(back)) => {
                    // Ended between its last request and now: not counted.
                    lane.close();
                    job = back;
                }
            }
        }
    }
    let (jobs, queue) = mpsc::unbounded_channel();
    let budget = app.instances.budget();
    let lane = Arc::new(Lane {
        jobs,
        in_flight: AtomicU32::new(1),
        assigned: AtomicU64::new(1),
        budget,
        open: AtomicBool::new(budget > 1),
        ticks: AtomicU32::new(0),
    });
    if budget > 1 {
        lanes
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(lane.clone());
    }
    tokio::task::spawn_local(run_lane(app, pre, lane, queue, job));
}

/// A request on the lane: where its head and outcome go, and its accounts.
struct Entry {
    head: Option<oneshot::Sender<Head>>,
    done: oneshot::Sender<Outcome>,
    deadline: Instant,
    /// The request the instance was made for.
    first: bool,
}

/// What the lane's task shares between its outer loop (which owns the store) and
/// the loop inside `run_concurrent`.
#[derive(Default)]
struct Shared {
    requests: RefCell<BTreeMap<u64, Entry>>,
    /// Time spent inside the store's polls, in all.
    guest_time: Cell<Duration>,
    /// Woken when a request joins the lane (its deadline is the one to watch).
    joined: Notify,
}

impl Shared {
    /// The deadline of the request on the lane that may run longest.
    fn latest_deadline(&self) -> Option<Instant> {
        self.requests.borrow().values().map(|e| e.deadline).max()
    }
}

/// How the lane's own loop ended: why, and the requests it served, unless its last
/// request already reported that with its outcome.
struct Ended(Option<(Retired, u64)>);

async fn run_lane(
    app: Arc<App>,
    pre: ServicePre<Sandbox>,
    lane: Arc<Lane>,
    mut queue: mpsc::UnboundedReceiver<Job>,
    first: Job,
) {
    let started = Instant::now();
    let shared = Rc::new(Shared::default());
    let mut store = match new_store(&app, &first.ctx) {
        Ok(store) => store,
        Err(error) => {
            return fail_all(&lane, &mut queue, first, Some(error), Duration::ZERO);
        }
    };
    let ticks = lane.clone();
    store.epoch_deadline_callback(move |mut cx| {
        cx.data_mut().forced_yields += 1;
        ticks.ticks.fetch_add(1, Relaxed);
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(tokio::task::yield_now()),
        ))
    });
    store.set_epoch_deadline(1);
    let made = tokio::select! {
        made = tokio::time::timeout_at(first.ctx.deadline.into(), pre.instantiate_async(&mut store)) => match made {
            Ok(Ok(service)) => Ok(service),
            Ok(Err(e)) => Err(RequestError::from_guest(e, store.data().memory_refused(), false)),
            Err(_) => Err(RequestError::Timeout),
        },
        () = first.ctx.cancel.cancelled() => Err(RequestError::ClientGone),
    };
    let instantiate_time = started.elapsed();
    // Instantiating is not serving: the lane is not hot for it.
    lane.ticks.store(0, Relaxed);
    let service = match made {
        Ok(service) => service,
        Err(error) => return fail_all(&lane, &mut queue, first, Some(error), instantiate_time),
    };
    let limits = Limits {
        fuel: app.limits.fuel,
        contract: *app.instances.contract(),
    };
    let gone = app.instances.lanes.gone.clone();
    let ended_list = app.instances.lanes.ended.clone();
    // From here the lane holds its app only through the requests on it, so an idle
    // lane of a replaced version ends when the version goes.
    let weak = Arc::downgrade(&app);
    drop((app, pre));
    let app = weak;

    let inner = {
        let (shared, lane) = (shared.clone(), lane.clone());
        async move |acc: &Accessor<Sandbox>| {
            serve(
                acc,
                &service,
                &lane,
                &shared,
                &mut queue,
                first,
                instantiate_time,
                &limits,
                &gone,
                &app,
            )
            .await
        }
    };
    let result = {
        let mut run = pin!(store.run_concurrent(inner));
        let guest_time = shared.clone();
        let mut run = std::future::poll_fn(move |cx| {
            let start = Instant::now();
            let poll = run.as_mut().poll(cx);
            guest_time
                .guest_time
                .set(guest_time.guest_time.get() + start.elapsed());
            poll
        });
        loop {
            let watch = shared.latest_deadline().map(|d| d + DEADLINE_GRACE);
            tokio::select! {
                result = &mut run => break result.map_err(|e| (e, false)),
                () = sleep_until(watch) => {
                    if watch.is_some_and(|at| Instant::now() >= at) {
                        break Err((wasmtime::format_err!("a guest computed past its request's deadline"), true));
                    }
                }
                () = shared.joined.notified() => {}
            }
        }
    };
    lane.close();
    match result {
        Ok(Ended(None)) => {}
        Ok(Ended(Some(ended))) => {
            ended_list
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(ended);
        }
        Err((error, past_deadline)) => {
            // The store is gone with every request still on it.
            let memory_refused = store.data().memory_refused();
            let served = lane.assigned.load(Relaxed);
            let requests = std::mem::take(&mut *shared.requests.borrow_mut());
            let alone = requests.len() == 1;
            let error = if past_deadline {
                RequestError::Timeout
            } else {
                RequestError::from_guest(error, memory_refused, false)
            };
            let cause = error.cause();
            let mut error = Some(error);
            let last = requests.len();
            for (i, (_, entry)) in requests.into_iter().enumerate() {
                let this = if past_deadline && Instant::now() >= entry.deadline {
                    RequestError::Timeout
                } else if alone {
                    error.take().unwrap_or(RequestError::InstanceLost { cause })
                } else {
                    RequestError::InstanceLost { cause }
                };
                let fate = Fate {
                    created: entry.first,
                    retired: (i + 1 == last).then_some((cause, served)),
                };
                finish_entry(entry, Some(this), fate, Accounts::default());
            }
        }
    }
    drop(store);
}

/// What the lane knows of its app, copied so an idle lane does not keep the app.
struct Limits {
    fuel: u64,
    contract: crate::model::reuse::Reuse,
}

/// Fuel, preemptions and guest time a request is charged: the store's since the
/// previous request on it ended.
#[derive(Default, Clone, Copy)]
struct Accounts {
    fuel_used: u64,
    forced_yields: u64,
    guest_time: Duration,
    instantiate_time: Duration,
}

/// Sleeps until `at`, or for ever.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The lane's own loop, inside `run_concurrent`: starts each request sent to it,
/// finishes each that ends, and decides when the lane ends.
#[expect(
    clippy::too_many_arguments,
    reason = "the lane task's parts, borrowed apart for the store's closure"
)]
async fn serve(
    acc: &Accessor<Sandbox>,
    service: &Service,
    lane: &Lane,
    shared: &Shared,
    queue: &mut mpsc::UnboundedReceiver<Job>,
    first: Job,
    instantiate_time: Duration,
    limits: &Limits,
    gone: &CancellationToken,
    app: &std::sync::Weak<App>,
) -> Ended {
    let mut running = FuturesUnordered::new();
    let mut next_key = 0u64;
    let mut charged = Charged {
        added: limits.fuel,
        ..Charged::default()
    };
    let mut pending = Some(first);
    let mut held: Vec<SlotGuard> = Vec::new();
    let mut made_for_first = Some(instantiate_time);
    let mut served = 0u64;
    // Why the lane closed, when it closed itself.
    let mut closed_by: Option<Retired> = None;
    loop {
        if let Some(job) = pending.take() {
            held.clear(); // the request holds its own admission
            let key = next_key;
            next_key += 1;
            let in_store = shared.requests.borrow().len() as u64 + 1;
            acc.with(|mut store| {
                let mut store = store.as_context_mut();
                let fuel = store.get_fuel().unwrap_or(0);
                let cap = limits.fuel.saturating_mul(in_store);
                let next = fuel.saturating_add(limits.fuel).min(cap).max(fuel);
                charged.added += next - fuel;
                let _ = store.set_fuel(next);
                store.data_mut().join_request(&job.ctx.id, job.ctx.deadline);
                store.data_mut().set_trace(job.ctx.trace.clone());
            });
            let Job { req, ctx, reply } = job;
            shared.requests.borrow_mut().insert(
                key,
                Entry {
                    head: Some(reply.head),
                    done: reply.done,
                    deadline: ctx.deadline,
                    first: made_for_first.is_some(),
                },
            );
            shared.joined.notify_one();
            let instantiate_time = made_for_first.take().unwrap_or_default();
            running.push(async move {
                let result = handle(acc, service, shared, key, req, &ctx).await;
                (key, result, instantiate_time)
            });
            continue;
        }
        let idle = running.is_empty();
        tokio::select! {
            biased;
            // Polled first at every turn of this loop, which only runs when no
            // guest holds the store: the lane's guests are not computing now.
            () = std::future::poll_fn(|_| {
                lane.ticks.store(0, Relaxed);
                Poll::<()>::Pending
            }) => {}
            Some((key, result, instantiate_time)) = running.next(), if !idle => {
                served += 1;
                let mut accounts = charged.take(acc, shared);
                accounts.instantiate_time = instantiate_time;
                let memory = acc.with(|mut store| store.get().memory_reached() as u64);
                let in_flight = lane.in_flight.fetch_sub(1, Relaxed) - 1;
                if closed_by.is_none() {
                    closed_by = match &result {
                        // Its guest task may still run, or the instance is poisoned.
                        Err(e) => Some(e.cause()),
                        Ok(()) if app.upgrade().is_some_and(|a| a.instances.past_high_water(memory)) => {
                            Some("memory_high_water")
                        }
                        Ok(()) => None,
                    };
                    if closed_by.is_some() {
                        lane.close();
                    }
                }
                let last = !lane.open.load(Relaxed) && in_flight == 0;
                let cause = closed_by.unwrap_or(if lane.assigned.load(Relaxed) >= lane.budget {
                    "max_requests"
                } else {
                    "closed"
                });
                let entry = shared.requests.borrow_mut().remove(&key);
                if let Some(entry) = entry {
                    let fate = Fate {
                        created: entry.first,
                        retired: last.then_some((cause, served)),
                    };
                    finish_entry(entry, result.err(), fate, accounts);
                }
                if last {
                    return Ended(None);
                }
                if in_flight == 0 {
                    // Idle: hold the memory it reached, as a kept instance does.
                    let hold = match app.upgrade() {
                        Some(app) => app.instances.hold(memory),
                        None => Err("version_gone"),
                    };
                    match hold {
                        Ok(guards) => held = guards,
                        Err(cause) => {
                            lane.close();
                            return Ended(Some((cause, served)));
                        }
                    }
                }
            }
            job = queue.recv() => match job {
                Some(job) => pending = Some(job),
                None => return Ended(Some(("closed", served))),
            },
            () = tokio::time::sleep(limits.contract.idle_timeout()), if idle && lane.in_flight.load(Relaxed) == 0 => {
                lane.close();
                return Ended(Some(("idle_timeout", served)));
            }
            () = gone.cancelled(), if idle && lane.in_flight.load(Relaxed) == 0 => {
                lane.close();
                return Ended(Some(("version_gone", served)));
            }
        }
    }
}

/// One request's run on the lane's instance: `handle` as a concurrent call, then its
/// body pumped, under the request's deadline and its client's cancellation.
async fn handle(
    acc: &Accessor<Sandbox>,
    service: &Service,
    shared: &Shared,
    key: u64,
    req: Request<RequestBody>,
    ctx: &RunContext,
) -> Result<(), RequestError> {
    let guest_error = |e: wasmtime::Error| {
        let refused = acc.with(|mut store| store.get().memory_refused());
        RequestError::from_guest(e, refused, false)
    };
    let work = async {
        // Boxed: the I/O future is 'static, but the 2024 capture rules tie its type to
        // the store's borrow.
        let (req, req_io) = acc.with(|mut store| {
            let (req, io) =
                wasmtime_wasi_http::p3::Request::from_http(store.get().http().hooks, req);
            let io: RequestIo = Box::pin(io);
            (req, io)
        });
        let response = match service.handle(acc, req).await {
            Ok(Ok(response)) => response,
            Ok(Err(code)) => {
                return Err(RequestError::GuestError(format!(
                    "handler returned {code:?}"
                )));
            }
            Err(e) => return Err(guest_error(e)),
        };
        let response = acc
            .with(|mut store| response.into_http(&mut store, req_io))
            .map_err(guest_error)?;
        let (parts, guest_body) = response.into_parts();
        let head = shared
            .requests
            .borrow_mut()
            .get_mut(&key)
            .and_then(|entry| entry.head.take());
        let Some(head) = head else {
            return Ok(());
        };
        send_and_pump(parts, guest_body, head).await
    };
    tokio::select! {
        // The work first: a response done as the front door ends the run is done.
        biased;
        result = tokio::time::timeout_at(ctx.deadline.into(), work) => result.unwrap_or(Err(RequestError::Timeout)),
        () = ctx.cancel.cancelled() => Err(if Instant::now() >= ctx.deadline {
            RequestError::Timeout
        } else {
            RequestError::ClientGone
        }),
    }
}

/// The store's fuel, preemptions and guest time charged to requests so far.
#[derive(Default)]
struct Charged {
    /// Fuel put into the store beyond its first budget.
    added: u64,
    fuel: u64,
    yields: u64,
    guest_time: Duration,
}

impl Charged {
    /// What the store used since the last request ended: the ending request's share.
    fn take(&mut self, acc: &Accessor<Sandbox>, shared: &Shared) -> Accounts {
        let (left, yields) = acc.with(|mut store| {
            let store = store.as_context_mut();
            (store.get_fuel().unwrap_or(0), store.data().forced_yields)
        });
        let fuel = self.added.saturating_sub(left);
        let guest_time = shared.guest_time.get();
        let accounts = Accounts {
            fuel_used: fuel.saturating_sub(self.fuel),
            forced_yields: yields.saturating_sub(self.yields),
            guest_time: guest_time.saturating_sub(self.guest_time),
            instantiate_time: Duration::ZERO,
        };
        (self.fuel, self.yields, self.guest_time) = (fuel, yields, guest_time);
        accounts
    }
}

/// Sends a request's outcome (and its error as the head, if no head went out).
fn finish_entry(mut entry: Entry, error: Option<RequestError>, instance: Fate, accounts: Accounts) {
    let mut outcome = Outcome {
        fuel_used: accounts.fuel_used,
        error,
        forced_yields: accounts.forced_yields,
        guest_time: accounts.guest_time,
        instance,
        instantiate_time: accounts.instantiate_time,
        queue_wait: Duration::ZERO,
    };
    answer_unanswered(entry.head.take(), &mut outcome);
    let _ = entry.done.send(outcome);
}

/// The instance could not be made: the request it was made for gets the error, and
/// those already sent to it are told the instance is lost.
fn fail_all(
    lane: &Lane,
    queue: &mut mpsc::UnboundedReceiver<Job>,
    first: Job,
    error: Option<RequestError>,
    instantiate_time: Duration,
) {
    lane.close();
    queue.close();
    let error = error.unwrap_or(RequestError::Host(anyhow::anyhow!(
        "the instance could not be made"
    )));
    let cause = error.cause();
    let mut outcome = Outcome {
        error: Some(error),
        instance: Fate {
            created: true,
            retired: Some(("instantiation", 0)),
        },
        instantiate_time,
        ..Outcome::default()
    };
    answer_unanswered(Some(first.reply.head), &mut outcome);
    let _ = first.reply.done.send(outcome);
    while let Ok(job) = queue.try_recv() {
        let mut outcome = Outcome::failed(RequestError::InstanceLost { cause });
        answer_unanswered(Some(job.reply.head), &mut outcome);
        let _ = job.reply.done.send(outcome);
    }
}

/// A 0.3 request's body I/O, resolved when the guest is done with it.
type RequestIo =
    std::pin::Pin<Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send + 'static>>;
