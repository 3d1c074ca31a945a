//! Running a request on the event loop: the path for async (wasi:http 0.3) handlers,
//! and for 0.2 handlers an operator moved there with `--mode loop`.
//!
//! Each request gets its own store, so a guest that yields frees the thread without
//! holding up other requests. The store yields to tokio at every epoch tick through a
//! `yield_now` future (the plain epoch yield starves tokio's timers on a current-thread
//! runtime), its fuel is its CPU budget, and the deadline and client cancellation end
//! it from outside. A 0.3 response body only makes progress while its store's
//! `run_concurrent` is driven, so the task that owns the store pumps the body into a
//! channel the server writes from, and drops the store when the body is done.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::Request;
use tokio::sync::oneshot;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpView as _;

use crate::runtime::component::HandlerPre;
use crate::runtime::error::RequestError;
use crate::runtime::sandbox::Sandbox;
use crate::worker::app::App;
use crate::worker::body::RequestBody;
use crate::worker::run::concurrent;
use crate::worker::run::instances::Instance;
use crate::worker::run::pump::send_and_pump;
use crate::worker::run::{
    Head, Lease, Outcome, OutparamResult, Reply, RunContext, answer_unanswered, fuel_used,
    outparam_head, scheme_of,
};

/// Starts the request as a task on the current loop (a `LocalSet`). The head and the
/// outcome arrive through `reply`.
pub fn spawn(app: Arc<App>, req: Request<RequestBody>, ctx: RunContext, reply: Reply) {
    if app.instances.concurrent()
        && let HandlerPre::Service(pre) = &app.handler.pre
    {
        let pre = pre.clone();
        return concurrent::spawn(app, pre, req, ctx, reply);
    }
    tokio::task::spawn_local(async move {
        let Reply { head, done } = reply;
        let mut head = Some(head);
        let mut outcome = run(&app, req, &ctx, &mut head).await;
        answer_unanswered(head, &mut outcome);
        let _ = done.send(outcome);
    });
}

async fn run(
    app: &App,
    req: Request<RequestBody>,
    ctx: &RunContext,
    head: &mut Option<oneshot::Sender<Head>>,
) -> Outcome {
    let mut lease = match Lease::new(app, ctx) {
        Ok(lease) => lease,
        Err(error) => return Outcome::failed(error),
    };
    if lease.fresh() {
        lease.store.epoch_deadline_callback(|mut cx| {
            cx.data_mut().forced_yields += 1;
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ))
        });
    }
    lease.store.set_epoch_deadline(1);

    let Lease {
        store,
        instance,
        instantiate_time,
        ..
    } = &mut lease;
    let made = Made {
        instance,
        took: instantiate_time,
    };
    let drive = async {
        match &app.handler.pre {
            HandlerPre::Service(pre) => drive_service(pre, store, made, req, head).await,
            HandlerPre::ProxyAsync(pre) => drive_proxy(pre, store, made, req, head).await,
            HandlerPre::ProxySync(_) => Err(RequestError::Host(anyhow::anyhow!(
                "a sync handler was sent to the loop"
            ))),
        }
    };
    let mut guest_time = Duration::ZERO;
    let drive = Timed::new(drive, &mut guest_time);
    let result = tokio::select! {
        // The run first: a response done as the front door ends the run is done.
        biased;
        r = tokio::time::timeout_at(ctx.deadline.into(), drive) => r.unwrap_or(Err(RequestError::Timeout)),
        // The client went away: nobody will read what the guest makes. (The front
        // door also cancels at the deadline: that is a timeout.)
        () = ctx.cancel.cancelled() => Err(if Instant::now() >= ctx.deadline {
            RequestError::Timeout
        } else {
            RequestError::ClientGone
        }),
    };
    let (fuel_used, forced_yields) = (
        fuel_used(app, &lease.store),
        lease.store.data().forced_yields,
    );
    let error = result.err();
    let instantiate_time = lease.instantiate_time;
    let instance = lease.finish(app, error.as_ref(), ctx.cancel.is_cancelled());
    Outcome {
        fuel_used,
        error,
        forced_yields,
        guest_time,
        instance,
        instantiate_time,
        queue_wait: Duration::ZERO,
    }
}

/// The run's instance, made on first use if the lease has none, and the time making
/// it took.
struct Made<'a> {
    instance: &'a mut Option<Instance>,
    took: &'a mut Duration,
}

/// Adds up the time spent inside a future's polls: for a guest's run on the loop,
/// the time it held the loop thread.
struct Timed<'t, F> {
    inner: Pin<Box<F>>,
    total: &'t mut Duration,
}

impl<'t, F> Timed<'t, F> {
    fn new(inner: F, total: &'t mut Duration) -> Self {
        Timed {
            inner: Box::pin(inner),
            total,
        }
    }
}

impl<F: Future> Future for Timed<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let start = Instant::now();
        let poll = self.inner.as_mut().poll(cx);
        *self.total += start.elapsed();
        poll
    }
}

fn guest_error(store: &Store<Sandbox>) -> impl Fn(wasmtime::Error) -> RequestError + '_ {
    // Cancellation is handled outside the guest on the loop: an interrupt here is never it.
    move |e| RequestError::from_guest(e, store.data().memory_refused(), false)
}

/// wasi:http 0.3: `handle` under `run_concurrent`, then the body pumped while the
/// store's event loop is still driven.
async fn drive_service(
    pre: &wasmtime_wasi_http::p3::bindings::ServicePre<Sandbox>,
    store: &mut Store<Sandbox>,
    made: Made<'_>,
    req: Request<RequestBody>,
    head: &mut Option<oneshot::Sender<Head>>,
) -> Result<(), RequestError> {
    if made.instance.is_none() {
        let started = Instant::now();
        let service = pre
            .instantiate_async(&mut *store)
            .await
            .map_err(guest_error(store))?;
        *made.took = started.elapsed();
        *made.instance = Some(Instance::Service(service));
    }
    let Some(Instance::Service(service)) = made.instance else {
        return Err(RequestError::Host(anyhow::anyhow!(
            "a kept instance of another kind"
        )));
    };
    let (req, req_io) =
        wasmtime_wasi_http::p3::Request::from_http(store.data_mut().http().hooks, req);
    let result = store
        .run_concurrent(async |acc| -> wasmtime::Result<Result<(), RequestError>> {
            let response = match service.handle(acc, req).await? {
                Ok(response) => response,
                Err(code) => {
                    return Ok(Err(RequestError::GuestError(format!(
                        "handler returned {code:?}"
                    ))));
                }
            };
            let response = acc.with(|mut a| response.into_http(&mut a, req_io))?;
            let (parts, guest_body) = response.into_parts();
            let Some(tx) = head.take() else {
                return Ok(Ok(()));
            };
            Ok(send_and_pump(parts, guest_body, tx).await)
        })
        .await;
    match result {
        Ok(Ok(inner)) => inner,
        Ok(Err(e)) | Err(e) => Err(guest_error(store)(e)),
    }
}

/// wasi:http 0.2 with async entry points: `handle` sets the head through the
/// response outparam while the call goes on writing the body.
async fn drive_proxy(
    pre: &wasmtime_wasi_http::p2::bindings::ProxyPre<Sandbox>,
    store: &mut Store<Sandbox>,
    made: Made<'_>,
    req: Request<RequestBody>,
    head: &mut Option<oneshot::Sender<Head>>,
) -> Result<(), RequestError> {
    if made.instance.is_none() {
        let started = Instant::now();
        let proxy = pre
            .instantiate_async(&mut *store)
            .await
            .map_err(guest_error(store))?;
        *made.took = started.elapsed();
        *made.instance = Some(Instance::Proxy(proxy));
    }
    let Some(Instance::Proxy(proxy)) = made.instance else {
        return Err(RequestError::Host(anyhow::anyhow!(
            "a kept instance of another kind"
        )));
    };
    let (tx, rx) = oneshot::channel();
    let data = store.data_mut();
    let req = data
        .http()
        .new_incoming_request(scheme_of(&req), req)
        .map_err(|e| RequestError::Host(e.into()))?;
    let out = data
        .http()
        .new_response_outparam(tx)
        .map_err(|e| RequestError::Host(e.into()))?;
    let mut rx = Some(rx);
    // The head arrives while the call goes on writing the body. The call may also end
    // (a trap) without one, while the store still holds the outparam's sender.
    let result = {
        let call = proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut *store, req, out);
        tokio::pin!(call);
        loop {
            tokio::select! {
                result = &mut call => break result,
                set = async { rx.as_mut().expect("the branch runs only while rx is set").await }, if rx.is_some() => {
                    rx = None;
                    forward_head(head, set);
                }
            }
        }
    };
    if let Some(mut rx) = rx
        && let Ok(set) = rx.try_recv()
    {
        forward_head(head, Ok(set));
    }
    result.map_err(guest_error(store))?;
    if head.is_some() {
        return Err(RequestError::GuestError(
            "handler returned without setting a response".into(),
        ));
    }
    Ok(())
}

/// Passes what a 0.2 guest set on its response outparam on as the head.
fn forward_head(
    head: &mut Option<oneshot::Sender<Head>>,
    set: Result<OutparamResult, oneshot::error::RecvError>,
) {
    let Ok(set) = set else {
        return; // dropped unset: the call's result says why
    };
    if let Some(head) = head.take() {
        let _ = head.send(outparam_head(set));
    }
}
