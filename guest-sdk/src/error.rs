//! [`Error`]: a handler error that becomes an HTTP response. Handlers return
//! `Result<T, Error>` and use `?` on anything that fails; the status and body the
//! client sees are decided here, details of unexpected failures go to the log. Also
//! [`FetchError`], why an outgoing request failed, which both WASI backends return.

use std::fmt;

use http::StatusCode;

use crate::Response;
use crate::response::{IntoResponse, text_response};

/// An error a handler returns, turned into a response by [`IntoResponse`].
///
/// Build one with a status and a message the client may read, or let `?` convert any
/// [`std::error::Error`]: that becomes a `500 Internal Server Error` (a failed
/// [`fetch`](crate::fetch()) becomes `502 Bad Gateway`) whose details are logged, not
/// sent to the client.
///
/// ```
/// use wasmloop_sdk::{Error, Request, RequestExt, StatusCode};
///
/// fn age(req: &Request) -> Result<u32, Error> {
///     let text = req.text()?;
///     text.trim()
///         .parse()
///         .map_err(|_| Error::bad_request("the body must be a number"))
/// }
///
/// let err = Error::new(StatusCode::CONFLICT, "that name is taken");
/// assert_eq!(err.status(), StatusCode::CONFLICT);
/// ```
pub struct Error {
    status: StatusCode,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    /// An error with `status` whose body is `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            source: None,
        }
    }

    /// `400 Bad Request` with `message`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// `404 Not Found` with `message`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// `500 Internal Server Error` with `message`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// The status the response will have.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message the response body will carry.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl<E> From<E> for Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn from(error: E) -> Self {
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(error);
        let status = if boxed.is::<FetchError>() {
            StatusCode::BAD_GATEWAY
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        Self {
            status,
            message: status.canonical_reason().unwrap_or("error").to_string(),
            source: Some(boxed),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("status", &self.status)
            .field("message", &self.message)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {source}", self.status),
            None => write!(f, "{}: {}", self.status, self.message),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        if let Some(source) = &self.source {
            crate::error!("{}: {source}", self.status);
        }
        text_response(self.status, format!("{}\n", self.message))
    }
}

/// Why a [`fetch()`](crate::fetch()) failed.
#[derive(Debug, Clone)]
pub struct FetchError {
    target: String,
    message: String,
    denied: bool,
}

impl FetchError {
    pub(crate) fn new(target: &str, message: String, denied: bool) -> Self {
        Self {
            target: target.to_string(),
            message,
            denied,
        }
    }

    /// Whether the host refused to send the request: its host is not one the
    /// operator allowed with `--allow-outbound`. Nothing was sent.
    pub fn is_denied(&self) -> bool {
        self.denied
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.denied {
            write!(
                f,
                "fetch {} refused by the host ({}): it only sends requests to the hosts its operator allowed",
                self.target, self.message
            )
        } else {
            write!(f, "fetch {} failed: {}", self.target, self.message)
        }
    }
}

impl std::error::Error for FetchError {}
