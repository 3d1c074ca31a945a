//! [`Json`]: JSON in and out with serde.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::response::json_response;
use crate::{Error, IntoResponse, Request, RequestExt, Response, StatusCode};

/// A JSON body. As a return value it serializes `T` with
/// `content-type: application/json`; [`Json::from_request`] (or
/// [`RequestExt::json`]) parses one out of a request.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use wasmloop_sdk::{Body, IntoResponse, Json, Request};
///
/// #[derive(Serialize, Deserialize)]
/// struct User {
///     name: String,
/// }
///
/// let req = Request::post("/users").body(Body::from(r#"{"name":"ada"}"#)).unwrap();
/// let Json(user) = Json::<User>::from_request(&req).unwrap();
/// let response = Json(user).into_response();
/// assert_eq!(response.headers()["content-type"], "application/json");
/// assert_eq!(response.body().as_bytes(), br#"{"name":"ada"}"#);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> Json<T> {
    /// Parses the request's body; see [`RequestExt::json`] for the errors.
    pub fn from_request(request: &Request) -> Result<Self, Error> {
        request.json().map(Json)
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(bytes) => json_response(bytes),
            Err(e) => Error::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("failed to serialize the response: {e}"),
            )
            .into_response(),
        }
    }
}
