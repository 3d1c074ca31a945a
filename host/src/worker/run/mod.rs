//! What running one request on a guest hands back to the server, in two steps: the
//! response head (or the error that replaced it) as soon as the guest sets it, and the
//! outcome (fuel used, any error after the head) once the guest's store is dropped.
//! Both execution paths, loop and pool, speak this; the server owns what happens next.

pub mod on_loop;
pub mod on_pool;

use std::time::{Duration, Instant};

use http::Response;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::runtime::error::RequestError;
use crate::worker::body::ResponseBody;

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
