//! What running one request hands back to the server, in two steps: the response
//! head (or the error that replaced it) as soon as the guest sets it, and the
//! outcome (fuel used, any error after the head, what became of its instance) once
//! the guest's store is done with it; and the request's identity and bounds the run
//! gets. Apart from [`super`] so that the instance bookkeeping can name them without
//! depending on the app.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::runtime::error::RequestError;
use crate::telemetry::traces::Parent;
use crate::worker::body::ResponseBody;

/// The guest's response head with its streaming body, or why there is none.
pub type Head = Result<http::Response<ResponseBody>, RequestError>;

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
    /// Time it waited for a pool thread.
    pub queue_wait: Duration,
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
    /// The request's span, for its outbound calls' spans (with `--otlp-traces`).
    pub trace: Option<Parent>,
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

/// Why an instance was dropped: the `cause` label of
/// `wasmloop_instances_retired_total`.
pub type Retired = &'static str;

/// What became of the instance a request ran on, for the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fate {
    /// The instance was made for this request.
    pub created: bool,
    /// It was dropped after it, why, and how many requests it served.
    pub retired: Option<(Retired, u64)>,
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
