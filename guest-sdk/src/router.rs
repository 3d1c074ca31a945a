//! [`Router`]: dispatches a request by method and path pattern to a handler function,
//! answering `404 Not Found` and `405 Method Not Allowed` (with `Allow`) itself. Path
//! matching is `matchit`'s (axum's matcher): `/users/{id}`, `/files/{*path}`.

use std::future::Future;
use std::pin::Pin;

use http::Method;
use http::header::{ALLOW, HeaderValue};

use crate::request::Params;
use crate::response::text_response;
use crate::{IntoResponse, Request, Response, StatusCode};

/// Routes requests to handlers by method and path.
///
/// Routes may be plain functions or `async fn`s. A router used in an `async fn`
/// handler ([`Router::handle_async`]) runs both; one used in a plain `fn` handler
/// ([`Router::handle`]) runs plain functions, since nothing there can wait.
///
/// ```
/// use wasmloop_sdk::{Body, Request, RequestExt, Router, StatusCode};
///
/// fn router() -> Router {
///     Router::new()
///         .get("/", |_req: Request| "home\n")
///         .get("/users/{id}", |req: Request| format!("user {}\n", req.param("id").unwrap()))
///         .post("/users", |_req: Request| StatusCode::CREATED)
/// }
///
/// let get = |path: &str| router().handle(Request::get(path).body(Body::empty()).unwrap());
/// assert_eq!(get("/users/7").body().as_bytes(), b"user 7\n");
/// assert_eq!(get("/nope").status(), StatusCode::NOT_FOUND);
///
/// let delete = Request::delete("/users").body(Body::empty()).unwrap();
/// let response = router().handle(delete);
/// assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
/// assert_eq!(response.headers()["allow"], "POST");
/// ```
#[derive(Default)]
pub struct Router {
    paths: matchit::Router<usize>,
    routes: Vec<PathRoutes>,
    fallback: Option<Route>,
}

struct PathRoutes {
    pattern: String,
    methods: Vec<(Method, Route)>,
}

/// A route's handler, in one of the two calling conventions.
#[doc(hidden)]
pub enum Route {
    Sync(Box<dyn Fn(Request) -> Response>),
    Async(Box<dyn Fn(Request) -> ResponseFuture>),
}

/// What an `async fn` route returns, boxed so routes of different types fit one table.
#[doc(hidden)]
pub type ResponseFuture = Pin<Box<dyn Future<Output = Response>>>;

/// A function the [`Router`] can call: `fn(Request) -> impl IntoResponse` or
/// `async fn(Request) -> impl IntoResponse`. `M` tells the two apart; it is inferred.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be used as a route",
    label = "a route takes a `Request` and returns something that implements `IntoResponse`",
    note = "routes look like `fn(Request) -> impl IntoResponse` or `async fn(Request) -> impl IntoResponse`"
)]
pub trait Handler<M>: 'static {
    #[doc(hidden)]
    fn into_route(self) -> Route;
}

/// Markers telling the two kinds of [`Handler`] apart.
#[doc(hidden)]
pub mod marker {
    #[derive(Debug)]
    pub enum Blocking {}
    #[derive(Debug)]
    pub enum Awaiting {}
}

impl<F, R> Handler<marker::Blocking> for F
where
    F: Fn(Request) -> R + 'static,
    R: IntoResponse,
{
    fn into_route(self) -> Route {
        Route::Sync(Box::new(move |req| self(req).into_response()))
    }
}

impl<F, Fut, R> Handler<marker::Awaiting> for F
where
    F: Fn(Request) -> Fut + 'static,
    Fut: Future<Output = R> + 'static,
    R: IntoResponse,
{
    fn into_route(self) -> Route {
        Route::Async(Box::new(move |req| {
            let future = self(req);
            Box::pin(async move { future.await.into_response() })
        }))
    }
}

enum Matched<'a> {
    Route(&'a Route),
    NotFound,
    MethodNotAllowed(String),
}

impl Router {
    /// A router with no routes: every request is a 404.
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes `method` requests for paths matching `pattern` to `handler`.
    ///
    /// Patterns are literal segments, `{name}` parameters (one segment) and a final
    /// `{*name}` catch-all (the rest of the path). A `HEAD` request is served by the
    /// `GET` route when it has no route of its own.
    ///
    /// # Panics
    ///
    /// If the pattern is malformed, or if it conflicts with a pattern already routed
    /// (`/users/{id}` and `/users/{name}`), or if this method and pattern are routed
    /// twice: these are mistakes in the program, not in a request.
    pub fn route<M>(mut self, method: Method, pattern: &str, handler: impl Handler<M>) -> Self {
        let existing = self.routes.iter().position(|r| r.pattern == pattern);
        let index = match existing {
            Some(index) => index,
            None => {
                let index = self.routes.len();
                if let Err(e) = self.paths.insert(pattern, index) {
                    panic!("cannot route {pattern:?}: {e}");
                }
                self.routes.push(PathRoutes {
                    pattern: pattern.to_string(),
                    methods: Vec::new(),
                });
                index
            }
        };
        let methods = &mut self.routes[index].methods;
        assert!(
            !methods.iter().any(|(m, _)| *m == method),
            "{method} {pattern:?} is routed twice"
        );
        methods.push((method, handler.into_route()));
        self
    }

    /// Routes `GET` (and `HEAD`) requests for `pattern`.
    pub fn get<M>(self, pattern: &str, handler: impl Handler<M>) -> Self {
        self.route(Method::GET, pattern, handler)
    }

    /// Routes `POST` requests for `pattern`.
    pub fn post<M>(self, pattern: &str, handler: impl Handler<M>) -> Self {
        self.route(Method::POST, pattern, handler)
    }

    /// Routes `PUT` requests for `pattern`.
    pub fn put<M>(self, pattern: &str, handler: impl Handler<M>) -> Self {
        self.route(Method::PUT, pattern, handler)
    }

    /// Routes `PATCH` requests for `pattern`.
    pub fn patch<M>(self, pattern: &str, handler: impl Handler<M>) -> Self {
        self.route(Method::PATCH, pattern, handler)
    }

    /// Routes `DELETE` requests for `pattern`.
    pub fn delete<M>(self, pattern: &str, handler: impl Handler<M>) -> Self {
        self.route(Method::DELETE, pattern, handler)
    }

    /// Serves requests no route matches with `handler` instead of a plain 404.
    pub fn fallback<M>(mut self, handler: impl Handler<M>) -> Self {
        self.fallback = Some(handler.into_route());
        self
    }

    /// Answers `request` from a plain `fn` handler. An `async fn` route cannot run
    /// here: it answers 500 and logs why.
    pub fn handle(&self, mut request: Request) -> Response {
        match self.dispatch(&mut request) {
            Some(Route::Sync(handler)) => handler(request),
            Some(Route::Async(_)) => {
                crate::error!(
                    "{} {}: an async route cannot run in a sync handler; make the handler `async fn` and call `Router::handle_async`",
                    request.method(),
                    request.uri().path()
                );
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
            None => self.refusal(&request),
        }
    }

    /// Answers `request` from an `async fn` handler; runs both kinds of route.
    pub async fn handle_async(&self, mut request: Request) -> Response {
        match self.dispatch(&mut request) {
            Some(Route::Sync(handler)) => handler(request),
            Some(Route::Async(handler)) => handler(request).await,
            None => self.refusal(&request),
        }
    }

    /// Finds the route for `request` and stores its path parameters in it; `None`
    /// when the answer is a 404 or 405 (see [`Router::refusal`]).
    fn dispatch(&self, request: &mut Request) -> Option<&Route> {
        let (matched, params) = self.find(request.method(), request.uri().path());
        request.extensions_mut().insert(params);
        match matched {
            Matched::Route(route) => Some(route),
            Matched::NotFound => self.fallback.as_ref(),
            Matched::MethodNotAllowed(_) => None,
        }
    }

    fn refusal(&self, request: &Request) -> Response {
        match self.find(request.method(), request.uri().path()).0 {
            Matched::MethodNotAllowed(allow) => {
                let mut response =
                    text_response(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
                if let Ok(allow) = HeaderValue::try_from(allow) {
                    response.headers_mut().insert(ALLOW, allow);
                }
                response
            }
            _ => text_response(StatusCode::NOT_FOUND, "Not Found\n"),
        }
    }

    fn find(&self, method: &Method, path: &str) -> (Matched<'_>, Params) {
        let Ok(found) = self.paths.at(path) else {
            return (Matched::NotFound, Params::default());
        };
        let params = Params(
            found
                .params
                .iter()
                .map(|(k, v)| (k.to_string(), percent_decode(v)))
                .collect(),
        );
        let methods = &self.routes[*found.value].methods;
        let route = methods
            .iter()
            .find(|(m, _)| m == method)
            .or_else(|| {
                (method == Method::HEAD)
                    .then(|| methods.iter().find(|(m, _)| m == Method::GET))
                    .flatten()
            })
            .map(|(_, route)| route);
        match route {
            Some(route) => (Matched::Route(route), params),
            None => {
                let mut allow: Vec<&str> = methods.iter().map(|(m, _)| m.as_str()).collect();
                if allow.contains(&"GET") && !allow.contains(&"HEAD") {
                    allow.push("HEAD");
                }
                (Matched::MethodNotAllowed(allow.join(", ")), params)
            }
        }
    }
}

/// Decodes `%XX` escapes; a value that does not decode to UTF-8 is kept as it came.
fn percent_decode(value: &str) -> String {
    if !value.contains('%') {
        return value.to_string();
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&hi), Some(&lo)) if hex(hi).is_some() && hex(lo).is_some() => {
                out.push((hex(hi).unwrap_or(0) * 16 + hex(lo).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Body, RequestExt};

    fn request(method: Method, path: &str) -> Request {
        Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap()
    }

    fn router() -> Router {
        Router::new()
            .get("/", |_: Request| "root")
            .get("/users/{id}", |req: Request| {
                format!("get {}", req.param("id").unwrap())
            })
            .delete("/users/{id}", |req: Request| {
                format!("delete {}", req.param("id").unwrap())
            })
            .get("/users/{id}/posts/{post}", |req: Request| {
                format!(
                    "{} {}",
                    req.param("id").unwrap(),
                    req.param("post").unwrap()
                )
            })
            .get("/files/{*path}", |req: Request| {
                req.param("path").unwrap().to_string()
            })
            .get("/users/me", |_: Request| "me")
    }

    fn body(response: Response) -> (StatusCode, String) {
        let status = response.status();
        (status, response.body().as_str().unwrap().to_string())
    }

    #[test]
    fn routes_by_method_and_pattern() {
        let r = router();
        assert_eq!(
            body(r.handle(request(Method::GET, "/"))),
            (StatusCode::OK, "root".into())
        );
        assert_eq!(body(r.handle(request(Method::GET, "/users/7"))).1, "get 7");
        assert_eq!(
            body(r.handle(request(Method::DELETE, "/users/7"))).1,
            "delete 7"
        );
        assert_eq!(body(r.handle(request(Method::GET, "/users/me"))).1, "me");
        assert_eq!(
            body(r.handle(request(Method::GET, "/users/7/posts/9"))).1,
            "7 9"
        );
        assert_eq!(
            body(r.handle(request(Method::GET, "/files/a/b/c.txt"))).1,
            "a/b/c.txt"
        );
    }

    #[test]
    fn parameters_are_percent_decoded_and_queries_ignored() {
        let r = router();
        assert_eq!(
            body(r.handle(request(Method::GET, "/users/ada%20lovelace?x=1"))).1,
            "get ada lovelace"
        );
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%ff"), "%ff");
    }

    #[test]
    fn unknown_paths_are_404_and_unknown_methods_405_with_allow() {
        let r = router();
        assert_eq!(
            r.handle(request(Method::GET, "/nope")).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            r.handle(request(Method::GET, "/users/7/")).status(),
            StatusCode::NOT_FOUND
        );
        let refused = r.handle(request(Method::POST, "/users/7"));
        assert_eq!(refused.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(refused.headers()[ALLOW], "GET, DELETE, HEAD");
    }

    #[test]
    fn head_falls_back_to_get() {
        assert_eq!(
            body(router().handle(request(Method::HEAD, "/users/1"))).1,
            "get 1"
        );
    }

    #[test]
    fn fallback_replaces_the_404() {
        let r = Router::new().fallback(|_: Request| (StatusCode::IM_A_TEAPOT, "teapot"));
        assert_eq!(
            r.handle(request(Method::GET, "/x")).status(),
            StatusCode::IM_A_TEAPOT
        );
    }

    #[test]
    fn an_async_route_in_a_sync_handler_is_a_500_not_a_hang() {
        async fn later(_: Request) -> &'static str {
            "later"
        }
        let r = Router::new().get("/", later);
        assert_eq!(
            r.handle(request(Method::GET, "/")).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    #[should_panic(expected = "routed twice")]
    fn routing_the_same_method_and_pattern_twice_panics() {
        let _ = Router::new()
            .get("/a", |_: Request| "1")
            .get("/a", |_: Request| "2");
    }

    #[test]
    #[should_panic(expected = "cannot route")]
    fn conflicting_patterns_panic() {
        let _ = Router::new()
            .get("/a/{x}", |_: Request| "1")
            .get("/a/{y}", |_: Request| "2");
    }
}
