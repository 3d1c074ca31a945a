//! What can end a request early, and the one function that turns it into a status code.
//!
//! Every failure is tagged by whose fault it is: the client's (a body too large), the
//! guest's (a trap, a limit it ran into) or the host's (overload, a bug). Guest limits
//! are their own variants so that operators can tell a busy handler from a broken one.
//! The body sent to the client is a short cause code and never a guest backtrace; the
//! full error goes to the log.

use http::StatusCode;

/// nginx's "client closed request": only ever logged, since nobody is there to read it.
const CLIENT_CLOSED_REQUEST: StatusCode = match StatusCode::from_u16(499) {
    Ok(status) => status,
    Err(_) => panic!("499 is a valid status code"),
};

/// Why a request did not get the guest's own response.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The request body is larger than `--max-body`.
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge { limit: u64 },
    /// The worker is at `--limit-concurrency`, or the pool's queue is full.
    #[error("over capacity: {0}")]
    Overloaded(&'static str),
    /// The guest used up its fuel (its CPU budget).
    #[error("guest ran out of fuel")]
    CpuLimit,
    /// The request ran past `--timeout`.
    #[error("request ran past its deadline")]
    Timeout,
    /// The guest asked for more memory than `--max-memory` allows.
    #[error("guest hit its memory limit")]
    MemoryLimit,
    /// The guest trapped or panicked.
    #[error("guest trapped: {0}")]
    GuestTrap(String),
    /// The guest finished without a response, or answered with a wasi:http error code.
    #[error("guest failed to respond: {0}")]
    GuestError(String),
    /// The client closed the connection before the response was done. Never sent;
    /// logged with nginx's 499.
    #[error("the client went away")]
    ClientGone,
    /// The request shared an instance (`reuse = concurrent`) that another request on
    /// it ended: a trap, its fuel spent, or a guest computing past its deadline.
    #[error("the instance it shared ended: {cause}")]
    InstanceLost { cause: &'static str },
    /// Something on the host's side went wrong.
    #[error("host error: {0:#}")]
    Host(anyhow::Error),
}

/// Whose fault a failure is; decides the log level and the metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Client,
    Guest,
    Host,
}

impl RequestError {
    /// The status code, the short cause sent as the body, and whose fault it is.
    pub fn classify(&self) -> (StatusCode, &'static str, Fault) {
        use RequestError::*;
        match self {
            BodyTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                Fault::Client,
            ),
            Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded", Fault::Host),
            CpuLimit => (StatusCode::SERVICE_UNAVAILABLE, "cpu_limit", Fault::Guest),
            Timeout => (StatusCode::SERVICE_UNAVAILABLE, "timeout", Fault::Guest),
            MemoryLimit => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "memory_limit",
                Fault::Guest,
            ),
            GuestTrap(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "guest_trap",
                Fault::Guest,
            ),
            GuestError(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "guest_error",
                Fault::Guest,
            ),
            ClientGone => (CLIENT_CLOSED_REQUEST, "client_gone", Fault::Client),
            InstanceLost { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "instance_lost",
                Fault::Guest,
            ),
            Host(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                Fault::Host,
            ),
        }
    }

    /// The short cause code (`cpu_limit`, `guest_trap`, ...).
    pub fn cause(&self) -> &'static str {
        self.classify().1
    }

    /// Turns an error out of Wasmtime into the variant that says why the guest stopped.
    /// `memory_refused` tells whether the store's limiter refused a grow, which Wasmtime
    /// reports as an ordinary error; `cancelled` whether the host interrupted the guest
    /// because its client left (an interrupt is otherwise the deadline).
    pub fn from_guest(err: wasmtime::Error, memory_refused: bool, cancelled: bool) -> Self {
        if memory_refused {
            return RequestError::MemoryLimit;
        }
        match err.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::OutOfFuel) => RequestError::CpuLimit,
            Some(wasmtime::Trap::Interrupt) if cancelled => RequestError::ClientGone,
            Some(wasmtime::Trap::Interrupt) => RequestError::Timeout,
            // The trap itself says what happened in one line; the wasm backtrace that
            // Wasmtime puts around it goes to the debug log.
            Some(trap) => {
                tracing::debug!(error = ?err, "guest trap");
                RequestError::GuestTrap(trap.to_string())
            }
            // Errors without a trap code (a host function that failed, a guest that
            // broke the component model's rules) are still the guest's doing.
            None => RequestError::GuestTrap(format!("{err:#}").replace('\n', " ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_limits_have_their_own_status_and_cause() {
        let fuel = RequestError::from_guest(wasmtime::Trap::OutOfFuel.into(), false, false);
        assert_eq!(fuel.classify().0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(fuel.cause(), "cpu_limit");
        let deadline = RequestError::from_guest(wasmtime::Trap::Interrupt.into(), false, false);
        let left = RequestError::from_guest(wasmtime::Trap::Interrupt.into(), false, true);
        assert_eq!(left.cause(), "client_gone");
        assert_eq!(deadline.cause(), "timeout");
        let unreachable =
            RequestError::from_guest(wasmtime::Trap::UnreachableCodeReached.into(), false, false);
        assert_eq!(
            unreachable.classify(),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "guest_trap",
                Fault::Guest
            )
        );
        let memory = RequestError::from_guest(wasmtime::format_err!("grow refused"), true, false);
        assert_eq!(memory.cause(), "memory_limit");
    }
}
