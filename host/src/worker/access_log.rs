//! The access log and the request metrics: one line and one count per request, written
//! when the guest's store is gone (the fuel it used is known) and the response body
//! has ended (the bytes sent are known); and the short responses the front door makes
//! itself (errors, refusals, bad requests).

use std::sync::Arc;
use std::time::Instant;

use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};
use opentelemetry::KeyValue;

use crate::metrics::recorder::{Finished, Recorder};
use crate::model::compiler::Compiler;
use crate::model::mode::Mode;
use crate::runtime::error::{Fault, RequestError};
use crate::telemetry::traces::RequestSpan;
use crate::worker::body::{self, ResponseBody};
use crate::worker::run::Outcome;
use crate::worker::run::reply::Fate;

/// What the access log line says about a request.
pub struct AccessLog {
    pub id: String,
    pub method: String,
    pub path: String,
    /// The query string (`<redacted>` with `--no-access-log-query`), empty if none.
    pub query: String,
    /// The host the request named (authority or `Host`).
    pub host: String,
    /// The HTTP version: `1.1`, `2`...
    pub http: &'static str,
    pub user_agent: String,
    /// The trace id of a valid W3C `traceparent`, empty if none.
    pub trace_id: String,
    pub mode: Option<Mode>,
    /// The compiler of the code that served it (`winch` on the baseline tier).
    pub compiler: Option<Compiler>,
    /// The client's address (see worker/proxy.rs).
    pub client: String,
    pub start: Instant,
    pub app: Arc<str>,
    pub version: u64,
    pub recorder: Arc<Recorder>,
    /// The tenant whose app it is (none when serving one component or a manifest).
    pub tenant: Option<Arc<str>>,
    /// Its span, with `--otlp-traces`: ended with the line.
    pub span: Option<RequestSpan>,
}

impl AccessLog {
    /// Answers a request refused before any guest ran, and logs it.
    pub fn refuse(mut self, err: RequestError) -> Response<ResponseBody> {
        let response = error_response(&err, &self.id);
        let bytes = body_size(&response);
        self.finish(response.status(), &Outcome::default(), Some(&err), bytes);
        response
    }

    /// Logs and returns a response the front door made itself (a bad request).
    pub fn finish_with(mut self, mut response: Response<ResponseBody>) -> Response<ResponseBody> {
        response
            .headers_mut()
            .insert("x-request-id", header_value(&self.id));
        let bytes = body_size(&response);
        self.finish(response.status(), &Outcome::default(), None, bytes);
        response
    }

    /// Counts the request and writes the access log line (`bytes`: of the response
    /// body, as sent): warn for the guest's and client's failures, error for the
    /// host's.
    pub fn finish(
        &mut self,
        status: StatusCode,
        outcome: &Outcome,
        error: Option<&RequestError>,
        bytes: u64,
    ) {
        let duration = self.start.elapsed();
        let fuel = outcome.fuel_used;
        self.recorder.request(&Finished {
            app: &self.app,
            mode: self.mode,
            status: status.as_u16(),
            duration,
            fuel,
            cause: error.map(RequestError::cause),
            forced_yields: outcome.forced_yields,
            guest_time: outcome.guest_time,
            instance: (outcome.instance != Fate::default())
                .then_some((outcome.instance.created, outcome.instance.retired)),
            instantiate_time: outcome.instantiate_time,
        });
        if let Some(span) = self.span.take() {
            self.end_span(span, status, outcome, error, bytes);
        }
        let duration_ms = (duration.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
        let mode = self.mode.map_or_else(|| "-".to_string(), |m| m.to_string());
        let compiler = self
            .compiler
            .map_or_else(|| "-".to_string(), |c| c.to_string());
        let (client, query, host, http, user_agent, trace_id) = (
            &self.client,
            &self.query,
            &self.host,
            self.http,
            &self.user_agent,
            &self.trace_id,
        );
        let (id, method, path, app, version, status) = (
            &self.id,
            &self.method,
            &self.path,
            &*self.app,
            self.version,
            status.as_u16(),
        );
        match error {
            None => tracing::info!(
                target: "wasmloop::access", id, client, host, method, path, query, http, status, bytes, app, version, %mode, %compiler, duration_ms, fuel, user_agent, trace_id, "request"
            ),
            Some(err) if err.classify().2 == Fault::Host => tracing::error!(
                target: "wasmloop::access", id, client, host, method, path, query, http, status, bytes, app, version, %mode, %compiler, duration_ms, fuel, user_agent, trace_id,
                cause = err.cause(), error = %err, "request"
            ),
            Some(err) => tracing::warn!(
                target: "wasmloop::access", id, client, host, method, path, query, http, status, bytes, app, version, %mode, %compiler, duration_ms, fuel, user_agent, trace_id,
                cause = err.cause(), error = %err, "request"
            ),
        }
    }
}

/// The length of a body the front door made (whole, in memory).
fn body_size(response: &Response<ResponseBody>) -> u64 {
    http_body::Body::size_hint(response.body())
        .exact()
        .unwrap_or(0)
}

impl AccessLog {
    /// Ends the request's span with what the log line says, in OpenTelemetry's HTTP
    /// names where there is one and `wasmloop.*` for the rest.
    fn end_span(
        &self,
        span: RequestSpan,
        status: StatusCode,
        outcome: &Outcome,
        error: Option<&RequestError>,
        bytes: u64,
    ) {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let mut attributes = vec![
            KeyValue::new("http.request.method", self.method.clone()),
            KeyValue::new("url.path", self.path.clone()),
            KeyValue::new("http.response.status_code", i64::from(status.as_u16())),
            KeyValue::new("http.response.body.size", int(bytes)),
            KeyValue::new("network.protocol.version", self.http),
            KeyValue::new("server.address", self.host.clone()),
            KeyValue::new("client.address", self.client.clone()),
            KeyValue::new("wasmloop.request_id", self.id.clone()),
            KeyValue::new("wasmloop.app", self.app.to_string()),
            KeyValue::new("wasmloop.version", int(self.version)),
            KeyValue::new("wasmloop.fuel", int(outcome.fuel_used)),
            KeyValue::new("wasmloop.queue_wait_ms", ms(outcome.queue_wait)),
            KeyValue::new("wasmloop.guest_time_ms", ms(outcome.guest_time)),
        ];
        if !self.query.is_empty() {
            attributes.push(KeyValue::new("url.query", self.query.clone()));
        }
        if !self.user_agent.is_empty() {
            attributes.push(KeyValue::new(
                "user_agent.original",
                self.user_agent.clone(),
            ));
        }
        if let Some(tenant) = &self.tenant {
            attributes.push(KeyValue::new("wasmloop.tenant", tenant.to_string()));
        }
        if let Some(mode) = self.mode {
            attributes.push(KeyValue::new("wasmloop.mode", mode.to_string()));
        }
        if let Some(compiler) = self.compiler {
            attributes.push(KeyValue::new("wasmloop.compiler", compiler.to_string()));
        }
        let name = match &*self.app {
            "-" => self.method.clone(),
            app => format!("{} {app}", self.method),
        };
        span.end(name, attributes, error.map(RequestError::cause));
    }
}

pub fn plain(status: StatusCode, cause: &str) -> Response<ResponseBody> {
    let mut response = Response::new(body::full(format!("{cause}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The response for an error: its status, its cause code as the body, Retry-After
/// when trying again later can help.
pub fn error_response(err: &RequestError, id: &str) -> Response<ResponseBody> {
    let (status, cause, _) = err.classify();
    let mut response = plain(status, cause);
    if matches!(err, RequestError::Overloaded(_)) {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
        .headers_mut()
        .insert("x-request-id", header_value(id));
    response
}

pub fn header_value(id: &str) -> HeaderValue {
    HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}
