//! Running one request on a guest. Both execution paths, loop and pool, hand the
//! server the head and then the outcome ([`reply`]), and share here what they do
//! alike: a request's store (fresh, or a kept instance's: [`Lease`]), its fuel
//! account, and a 0.2 guest's response outparam turned into the head. Apps whose 0.3
//! instances serve several requests at once run through [`concurrent`]. The server
//! owns what happens next.

pub mod concurrent;
pub mod instances;
pub mod lanes;
pub mod on_loop;
pub mod on_pool;
pub mod pump;
pub mod reply;

pub use reply::{Head, Outcome, Pending, Reply, RunContext, answer_unanswered, channel};

use std::time::Duration;

use http_body_util::BodyExt as _;
use wasmtime::Store;

use crate::runtime::error::RequestError;
use crate::runtime::sandbox::Sandbox;
use crate::worker::app::App;
use crate::worker::body::BoxError;
use crate::worker::run::instances::{Instance, Kept};
use crate::worker::run::reply::Fate;

/// A fresh store for one request of `app`, or the error that says why there is none.
/// Its outbound requests' timeouts are capped at the request's deadline.
pub fn new_store(app: &App, ctx: &RunContext) -> Result<Store<Sandbox>, RequestError> {
    let mut store = Sandbox::store(&app.engine, &app.limits, &app.name, &ctx.id)
        .map_err(|e| RequestError::Host(e.into()))?;
    store.data_mut().set_deadline(ctx.deadline);
    store.data_mut().set_trace(ctx.trace.clone());
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
    pub fn new(app: &App, ctx: &RunContext) -> Result<Lease, RequestError> {
        if let Some(kept) = app.instances.take() {
            let mut store = kept.store;
            store.data_mut().next_request(&ctx.id, ctx.deadline);
            store.data_mut().set_trace(ctx.trace.clone());
            store
                .set_fuel(app.limits.fuel)
                .map_err(|e| RequestError::Host(e.into()))?;
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

/// The scheme the guest is told: `https` when the connection is TLS or a trusted
/// proxy says the client used it (the front door put it in the URI).
pub fn scheme_of<B>(
    req: &http::Request<B>,
) -> wasmtime_wasi_http::p2::bindings::http::types::Scheme {
    use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
    if req.uri().scheme() == Some(&http::uri::Scheme::HTTPS) {
        Scheme::Https
    } else {
        Scheme::Http
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
