//! The admin API's answers: JSON bodies, errors as `{"error": "..."}` with the status
//! that says whose fault it is, and [`Refused`], the error side of every handler's
//! `Result`, which `?` builds from registry, deploy and model errors.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

use crate::deploy::compile::DeployError;
use crate::model::Invalid;
use crate::model::quota::OverQuota;
use crate::registry::RegistryError;

/// An answer of the admin API.
pub type Reply = Response<Full<Bytes>>;

/// A request the API refuses, with the answer that says why (boxed: it travels up
/// through every `?`).
#[derive(Debug)]
pub struct Refused(pub Box<Reply>);

impl Refused {
    pub fn new(reply: Reply) -> Refused {
        Refused(Box::new(reply))
    }
}

/// What every handler returns: its answer, or the refusal.
pub type Answer = Result<Reply, Refused>;

impl From<RegistryError> for Refused {
    fn from(e: RegistryError) -> Self {
        Refused::new(registry_error(e))
    }
}

impl From<DeployError> for Refused {
    fn from(e: DeployError) -> Self {
        Refused::new(deploy_error(e))
    }
}

impl From<OverQuota> for Refused {
    fn from(e: OverQuota) -> Self {
        Refused::new(over_quota(&e))
    }
}

impl From<Invalid> for Refused {
    fn from(e: Invalid) -> Self {
        Refused::new(error(StatusCode::BAD_REQUEST, e))
    }
}

/// A refusal with `status` and `message`.
pub fn refuse(status: StatusCode, message: impl std::fmt::Display) -> Refused {
    Refused::new(error(status, message))
}

pub fn reply(status: StatusCode, body: serde_json::Value) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

pub fn error(status: StatusCode, message: impl std::fmt::Display) -> Reply {
    reply(status, json!({ "error": message.to_string() }))
}

pub fn registry_error(e: RegistryError) -> Reply {
    match e {
        RegistryError::NotFound(what) => error(StatusCode::NOT_FOUND, format!("{what} not found")),
        RegistryError::Conflict(message) => error(StatusCode::CONFLICT, message),
        RegistryError::Invalid(message) => error(StatusCode::BAD_REQUEST, message),
        RegistryError::OverQuota(e) => over_quota(&e),
        RegistryError::Unavailable(message) => {
            tracing::warn!("registry: {message}");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the registry is unreachable; nothing was changed, try again later (apps already deployed keep serving)",
            )
        }
        RegistryError::Storage(e) => {
            tracing::error!("registry: {e:#}");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the registry failed; see the server log",
            )
        }
    }
}

/// 403, as Kubernetes answers a request over a resource quota: the quota's name and
/// value in the message and as fields.
pub fn over_quota(e: &OverQuota) -> Reply {
    reply(
        StatusCode::FORBIDDEN,
        json!({ "error": e.to_string(), "quota": e.quota, "limit": e.limit }),
    )
}

pub fn deploy_error(e: DeployError) -> Reply {
    let status = match &e {
        DeployError::Invalid(_) => StatusCode::BAD_REQUEST,
        DeployError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        DeployError::Unprocessable(_) | DeployError::Uncompilable(_) => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        DeployError::Busy { retry_after, .. } => {
            let mut response = error(StatusCode::SERVICE_UNAVAILABLE, &e);
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from(*retry_after),
            );
            return response;
        }
        DeployError::Storage(e) => {
            // The log gets the whole chain; the tenant the cause, not the server's paths.
            tracing::error!("deploy: {e:#}");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "the server could not store the upload ({}); nothing was stored or changed",
                    e.root_cause()
                ),
            );
        }
    };
    error(status, e)
}

pub fn no_content() -> Reply {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// A 401 whose message says which kind of token the call needs and what was wrong
/// with the one sent (if any).
pub fn unauthorized(message: &str) -> Reply {
    let mut response = error(StatusCode::UNAUTHORIZED, message);
    response.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer"),
    );
    response
}
