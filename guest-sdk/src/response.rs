//! [`IntoResponse`]: what a handler may return. Text, bytes, [`Json`](crate::Json),
//! [`Html`], a status, a full [`Response`], tuples adding a status and headers, and
//! `Result`/`Option` of those all become a [`Response`].

use bytes::Bytes;
use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};

use crate::{Body, Response};

/// Something a handler can return: it becomes the HTTP response.
///
/// ```
/// use wasmloop_sdk::{IntoResponse, StatusCode};
///
/// let response = (StatusCode::CREATED, [("location", "/users/7")], "created\n").into_response();
/// assert_eq!(response.status(), StatusCode::CREATED);
/// assert_eq!(response.headers()["location"], "/users/7");
/// assert_eq!(response.body().as_bytes(), b"created\n");
///
/// // `None` is a 404; `Err(e)` is `e`'s response.
/// let missing: Option<String> = None;
/// assert_eq!(missing.into_response().status(), StatusCode::NOT_FOUND);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be turned into an HTTP response",
    label = "a handler must return something that implements `IntoResponse`",
    note = "return text, bytes, `Json(..)`, a `StatusCode`, a `Response`, `(StatusCode, body)`, or a `Result<T, E>` where both implement `IntoResponse`"
)]
pub trait IntoResponse {
    /// Builds the response.
    fn into_response(self) -> Response;
}

/// A response with `status`, a plain-text content type and `body`.
pub(crate) fn text_response(status: StatusCode, body: impl Into<Body>) -> Response {
    with_content_type(status, "text/plain; charset=utf-8", body.into())
}

fn with_content_type(status: StatusCode, content_type: &'static str, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

impl IntoResponse for Response {
    fn into_response(self) -> Response {
        self
    }
}

impl<B: Into<Body>> IntoResponse for http::Response<B>
where
    B: NotBody,
{
    fn into_response(self) -> Response {
        self.map(Into::into)
    }
}

/// Bodies other than [`Body`] itself, so `http::Response<String>` and friends are
/// responses without overlapping `Response`'s own impl.
#[doc(hidden)]
pub trait NotBody {}
impl NotBody for String {}
impl NotBody for &'static str {}
impl NotBody for Vec<u8> {}
impl NotBody for &'static [u8] {}
impl NotBody for Bytes {}
impl NotBody for () {}

impl IntoResponse for Body {
    fn into_response(self) -> Response {
        Response::new(self)
    }
}

impl IntoResponse for &'static str {
    fn into_response(self) -> Response {
        text_response(StatusCode::OK, self)
    }
}

impl IntoResponse for String {
    fn into_response(self) -> Response {
        text_response(StatusCode::OK, self)
    }
}

impl IntoResponse for Vec<u8> {
    fn into_response(self) -> Response {
        with_content_type(StatusCode::OK, "application/octet-stream", self.into())
    }
}

impl IntoResponse for &'static [u8] {
    fn into_response(self) -> Response {
        with_content_type(StatusCode::OK, "application/octet-stream", self.into())
    }
}

impl IntoResponse for Bytes {
    fn into_response(self) -> Response {
        with_content_type(StatusCode::OK, "application/octet-stream", self.into())
    }
}

/// An empty `200 OK`.
impl IntoResponse for () {
    fn into_response(self) -> Response {
        Response::new(Body::empty())
    }
}

/// A response with this status and an empty body.
impl IntoResponse for StatusCode {
    fn into_response(self) -> Response {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = self;
        response
    }
}

/// `T`'s response with this status instead of its own.
impl<T: IntoResponse> IntoResponse for (StatusCode, T) {
    fn into_response(self) -> Response {
        let mut response = self.1.into_response();
        *response.status_mut() = self.0;
        response
    }
}

/// `T`'s response with this status and these headers added (replacing any of the
/// same name). A header that is not valid HTTP makes the response a 500.
impl<T, K, V, const N: usize> IntoResponse for (StatusCode, [(K, V); N], T)
where
    T: IntoResponse,
    K: AsRef<str>,
    V: AsRef<str>,
{
    fn into_response(self) -> Response {
        let (status, headers, inner) = self;
        let mut response = inner.into_response();
        *response.status_mut() = status;
        with_headers(response, headers)
    }
}

/// `T`'s response with these headers added (replacing any of the same name).
impl<T, K, V, const N: usize> IntoResponse for ([(K, V); N], T)
where
    T: IntoResponse,
    K: AsRef<str>,
    V: AsRef<str>,
{
    fn into_response(self) -> Response {
        let (headers, inner) = self;
        with_headers(inner.into_response(), headers)
    }
}

fn with_headers<K, V, const N: usize>(mut response: Response, headers: [(K, V); N]) -> Response
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    for (name, value) in headers {
        let (name, value) = (name.as_ref(), value.as_ref());
        match (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            (Ok(name), Ok(value)) => {
                response.headers_mut().insert(name, value);
            }
            _ => {
                crate::error!("the handler set an invalid header: {name:?}: {value:?}");
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
        }
    }
    response
}

/// `Ok`'s response or `Err`'s response.
impl<T: IntoResponse, E: IntoResponse> IntoResponse for Result<T, E> {
    fn into_response(self) -> Response {
        match self {
            Ok(ok) => ok.into_response(),
            Err(err) => err.into_response(),
        }
    }
}

/// `Some`'s response, or `404 Not Found`.
impl<T: IntoResponse> IntoResponse for Option<T> {
    fn into_response(self) -> Response {
        match self {
            Some(some) => some.into_response(),
            None => text_response(StatusCode::NOT_FOUND, "Not Found\n"),
        }
    }
}

/// An HTML response: `text/html; charset=utf-8`.
///
/// ```
/// use wasmloop_sdk::{Html, IntoResponse};
///
/// let response = Html("<h1>Hello</h1>").into_response();
/// assert_eq!(response.headers()["content-type"], "text/html; charset=utf-8");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Html<T>(pub T);

impl<T: Into<Body>> IntoResponse for Html<T> {
    fn into_response(self) -> Response {
        with_content_type(StatusCode::OK, "text/html; charset=utf-8", self.0.into())
    }
}

/// Builds a JSON response; used by [`Json`](crate::Json).
pub(crate) fn json_response(bytes: Vec<u8>) -> Response {
    with_content_type(StatusCode::OK, "application/json", bytes.into())
}
