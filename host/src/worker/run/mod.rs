//! What running one request on a guest hands back to the server, in two steps: the
//! response head (or the error that replaced it) as soon as the guest sets it, and the
//! outcome (fuel used, any error after the head) once the guest's store is dropped.
//! Both execution paths, loop and pool, speak this, and share here what they do alike:
//! a request's store, its fuel account, a 0.2 guest's response outparam turned into
//! the head, and the error that becomes the response when no head was sent. The
//! server owns what happens next.

pub mod concurrent;
pub mod instances;
pub mod on_loop;
pub mod on_pool;

use std::time::{Duration, Instant};

use http::Response;
use http_body_util::BodyExt as _;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use wasmtime::Store;

use crate::runtime::error::RequestError;
use crate::runtime::sandbox::Sandbox;
use crate::worker::app::App;
use crate::worker::body::{BoxError, ResponseBody};
use crate::worker::run::instances::{Fate, Instance, Kept};

/// The guest's response head with its streaming body, or why there is none.
pub type Head = Result<Response<ResponseBody>, RequestError>;

/// How a request's run ended, sent when its store is gone.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Fuel the request burned.
    pub fuel_used: u64,
    /// What ended the run early, if anything.
    pub error: Option<RequestError>,
    /// Times the guest was preempted at an epoch tick (loop only).
    pub forced_yields: u64,
    /// Time the guest spent running: inside its polls on the loop, on its thread in
    /// the pool.
    pub guest_time: Duration,
    /// What became of its instance (counted for apps that reuse instances).
    pub instance: Fate,
    /// Time spent making its instance, when it got a fresh one.
    pub instantiate_time: Duration,
}

impl Outcome {
    /// A run that ended before the guest ran.
    pub fn failed(error: RequestError) -> Outcome {
        Outcome {
            error: Some(error),
            ..Outcome::default()
        }
    }
}

/// The request's identity and bounds, handed to the execution path.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// The `x-request-id` value.
    pub id: String,
    /// When the request must be done, body included.
    pub deadline: Instant,
    /// Cancelled when the client goes away or the response body is done.
    pub cancel: CancellationToken,
}

/// The execution path's side: where to send the head and the outcome.
pub struct Reply {
    pub head: oneshot::Sender<Head>,
    pub done: oneshot::Sender<Outcome>,
}

/// The server's side: where the head and the outcome arrive.
pub struct Pending {
    pub head: oneshot::Receiver<Head>,
    pub done: oneshot::Receiver<Outcome>,
}

/// A connected `Reply` and `Pending`.
pub fn channel() -> (Reply, Pending) {
    let (head_tx, head_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel();
    (
        Reply {
            head: head_tx,
            done: done_tx,
        },
        Pending {
            head: head_rx,
            done: done_rx,
        },
    )
}

/// A fresh store for one request of `app`, or the outcome that says why there is none.
/// Its outbound requests' timeouts are capped at the request's deadline.
pub fn new_store(app: &App, ctx: &RunContext) -> Result<Store<Sandbox>, Outcome> {
    let mut store = Sandbox::store(&app.engine, &app.limits, &app.name, &ctx.id)
        .map_err(|e| Outcome::failed(RequestError::Host(e.into())))?;
    store.data_mut().set_deadline(ctx.deadline);
    Ok(store)
}

/// The store a request runs in: one of `app`'s kept instances readied for this
/// request (its fuel refilled), else a fresh store whose instance the run makes.
pub struct Lease {
    pub store: Store<Sandbox>,
    pub instance: Option<Instance>,
    /// Time the run spent instantiating (zero with a kept instance).
    pub instantiate_time: Duration,
    served: u64,
    budget: u64,
}

impl Lease {
    pub fn new(app: &App, ctx: &RunContext) -> Result<Lease, Outcome> {
        if let Some(kept) = app.instances.take() {
            let mut store = kept.store;
            store.data_mut().next_request(&ctx.id, ctx.deadline);
            store
                .set_fuel(app.limits.fuel)
                .map_err(|e| Outcome::failed(RequestError::Host(e.into())))?;
            return Ok(Lease {
                store,
                instance: Some(kept.instance),
                instantiate_time: Duration::ZERO,
                served: kept.served,
                budget: kept.budget,
            });
        }
        Ok(Lease {
            store: new_store(app, ctx)?,
            instance: None,
            instantiate_time: Duration::ZERO,
            served: 0,
            budget: app.instances.budget(),
        })
    }

    /// Whether the run made a fresh instance.
    pub fn fresh(&self) -> bool {
        self.served == 0
    }

    /// Gives the instance back to `app` or retires it, after a run that ended with
    /// `error`; says which.
    /// Apps that do not reuse instances report nothing ([`Fate::default`]).
    pub fn finish(self, app: &App, error: Option<&RequestError>, cancelled: bool) -> Fate {
        if !app.instances.reuses() {
            return Fate::default();
        }
        let created = self.fresh();
        let retired = match self.instance {
            Some(instance) => app.instances.finish(
                Kept::new(self.store, instance, self.served, self.budget),
                error,
                cancelled,
            ),
            // It failed to instantiate: nothing was kept, nothing served.
            None => Some(("instantiation", 0)),
        };
        Fate { created, retired }
    }
}

/// The fuel a request's store burned of its app's budget.
pub fn fuel_used(app: &App, store: &Store<Sandbox>) -> u64 {
    app.limits
        .fuel
        .saturating_sub(store.get_fuel().unwrap_or(0))
}

/// What a wasi:http 0.2 guest sets on its response outparam.
pub type OutparamResult = Result<
    http::Response<wasmtime_wasi_http::p2::body::HyperOutgoingBody>,
    wasmtime_wasi_http::p2::bindings::http::types::ErrorCode,
>;

/// A 0.2 guest's response outparam as the head.
pub fn outparam_head(set: OutparamResult) -> Head {
    match set {
        Ok(response) => Ok(response.map(|b| b.map_err(BoxError::from).boxed_unsync())),
        Err(code) => Err(RequestError::GuestError(format!("handler set {code:?}"))),
    }
}

/// When the run ended without sending a head, its error (or, if it had none, the
/// guest's failure to respond) becomes the response, and is no longer the outcome's:
/// it is reported once, as the head's.
pub fn answer_unanswered(head: Option<oneshot::Sender<Head>>, outcome: &mut Outcome) {
    if let Some(head) = head {
        let err = outcome.error.take().unwrap_or_else(|| {
            RequestError::GuestError("handler returned without setting a response".into())
        });
        let _ = head.send(Err(err));
    }
}
