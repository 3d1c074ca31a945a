//! Reading a [`Request`]: [`RequestExt`] adds body, JSON, query and path-parameter
//! accessors to `http::Request<Body>`, each failing with an [`Error`] that is already
//! the right response (400, 415). [`Params`] are the path parameters the
//! [`Router`](crate::Router) matched.

use http::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;

use crate::{Error, Request, StatusCode};

/// Path parameters matched by the [`Router`](crate::Router), in pattern order,
/// percent-decoded. Stored in the request's extensions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(pub(crate) Vec<(String, String)>);

impl Params {
    /// The value of parameter `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// All parameters, in pattern order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Accessors for the parts of a [`Request`] a handler reads most.
///
/// ```
/// use serde::Deserialize;
/// use wasmloop_sdk::{Body, Request, RequestExt};
///
/// #[derive(Deserialize)]
/// struct Page {
///     page: u32,
///     #[serde(default)]
///     q: String,
/// }
///
/// let req = Request::post("/search?page=2&q=wasm%20loop")
///     .header("content-type", "application/json")
///     .body(Body::from(r#"{"tags": ["fast"]}"#))
///     .unwrap();
/// let page: Page = req.query().unwrap();
/// assert_eq!((page.page, page.q.as_str()), (2, "wasm loop"));
/// let body: serde_json::Value = req.json().unwrap();
/// assert_eq!(body["tags"][0], "fast");
/// ```
pub trait RequestExt {
    /// The body as UTF-8 text; `400` if it is not.
    fn text(&self) -> Result<&str, Error>;

    /// The body parsed as JSON into `T`; `415` if the request says its body is not
    /// JSON, `400` (with serde's reason) if it does not parse.
    fn json<T: DeserializeOwned>(&self) -> Result<T, Error>;

    /// The query string parsed into `T` (`serde_urlencoded`); `400` if it does not
    /// parse. A missing query string parses as empty.
    fn query<T: DeserializeOwned>(&self) -> Result<T, Error>;

    /// Path parameter `name` matched by the [`Router`](crate::Router).
    fn param(&self, name: &str) -> Option<&str>;

    /// All path parameters matched by the [`Router`](crate::Router).
    fn params(&self) -> &Params;
}

static NO_PARAMS: Params = Params(Vec::new());

impl RequestExt for Request {
    fn text(&self) -> Result<&str, Error> {
        self.body()
            .as_str()
            .ok_or_else(|| Error::bad_request("the request body is not UTF-8 text"))
    }

    fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        if let Some(content_type) = self.headers().get(CONTENT_TYPE) {
            let essence = content_type
                .to_str()
                .unwrap_or("")
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if essence != "application/json" && !essence.ends_with("+json") {
                return Err(Error::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "expected a JSON body (content-type: application/json)",
                ));
            }
        }
        serde_json::from_slice(self.body().as_bytes())
            .map_err(|e| Error::bad_request(format!("invalid JSON body: {e}")))
    }

    fn query<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_urlencoded::from_str(self.uri().query().unwrap_or(""))
            .map_err(|e| Error::bad_request(format!("invalid query string: {e}")))
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.params().get(name)
    }

    fn params(&self) -> &Params {
        self.extensions().get::<Params>().unwrap_or(&NO_PARAMS)
    }
}
