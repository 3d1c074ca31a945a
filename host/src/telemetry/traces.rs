//! Traces: OpenTelemetry spans exported over OTLP/HTTP (binary protobuf), opt-in
//! with `--otlp-traces` and configured by the standard `OTEL_*` variables
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` or `..._TRACES_ENDPOINT`, `..._HEADERS`,
//! `..._TIMEOUT`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_BSP_*`).
//!
//! One server span per request ([`RequestSpan`]), a child of the request's W3C
//! `traceparent` when it has a valid one, ended when the access log line is written;
//! one client span per outbound request a guest makes ([`OutboundSpan`]), whose
//! `traceparent` the upstream receives. Spans are exported by the SDK's batch
//! processor on its own thread: ending one on the loop only queues it (and drops it
//! when the queue is full), so the loop never waits for the collector.

use std::sync::OnceLock;
use std::time::SystemTime;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, Span};

static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Keeps the exporter running; dropping it exports what is queued and stops it
/// (blocking: drop it off the loop).
pub struct Exporter(SdkTracerProvider);

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Err(e) = self.0.shutdown() {
            tracing::warn!("exporting the last spans failed: {e}");
        }
    }
}

/// Starts exporting spans (once per process).
pub fn init() -> anyhow::Result<Exporter> {
    // The exporter's HTTP client speaks TLS with rustls, with the provider the rest of
    // the host uses.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()
        .map_err(|e| anyhow::anyhow!("failed to start the OTLP trace exporter: {e}"))?;
    let named = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES")
            .is_ok_and(|attributes| attributes.contains("service.name="));
    let mut resource = opentelemetry_sdk::Resource::builder();
    if !named {
        resource = resource.with_service_name("wasmloop");
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "wasmloop");
    if TRACER.set(tracer).is_err() {
        anyhow::bail!("traces were started twice");
    }
    Ok(Exporter(provider))
}

/// The context a request's outbound calls are children of.
#[derive(Debug, Clone)]
pub struct Parent(Context);

/// A request's server span, from the moment the request arrived.
pub struct RequestSpan(Span);

impl RequestSpan {
    /// Starts the span of a request that arrived at `start` with `headers` (a child
    /// of their `traceparent` when valid); `None` when traces are off.
    pub fn start(headers: &http::HeaderMap, method: &str, start: SystemTime) -> Option<Self> {
        let tracer = TRACER.get()?;
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        let span = tracer
            .span_builder(method.to_string())
            .with_kind(SpanKind::Server)
            .with_start_time(start)
            .start_with_context(tracer, &parent);
        Some(RequestSpan(span))
    }

    /// The context for the request's outbound calls.
    pub fn parent(&self) -> Parent {
        Parent(Context::new().with_remote_span_context(self.0.span_context().clone()))
    }

    /// Ends the span now, named `name`, with `attributes`; an error span when
    /// `error` names a cause (with `error.type`).
    pub fn end(mut self, name: String, attributes: Vec<KeyValue>, error: Option<&'static str>) {
        self.0.update_name(name);
        self.0.set_attributes(attributes);
        if let Some(cause) = error {
            self.0.set_attribute(KeyValue::new("error.type", cause));
            self.0.set_status(Status::error(cause));
        }
        self.0.end();
    }
}

/// The client span of one outbound request.
pub struct OutboundSpan(Span);

impl OutboundSpan {
    /// Starts the span of an outbound request under `parent`, and puts its
    /// `traceparent` in the request's headers.
    pub fn start<B>(parent: &Parent, request: &mut http::Request<B>) -> Option<Self> {
        let tracer = TRACER.get()?;
        let uri = request.uri();
        let mut attributes = vec![
            KeyValue::new("http.request.method", request.method().to_string()),
            KeyValue::new("url.full", without_query(uri)),
        ];
        if let Some(host) = uri.host() {
            attributes.push(KeyValue::new("server.address", host.to_string()));
        }
        if let Some(port) = uri.port_u16() {
            attributes.push(KeyValue::new("server.port", i64::from(port)));
        }
        let span = tracer
            .span_builder(request.method().to_string())
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(tracer, &parent.0);
        let cx = Context::new().with_remote_span_context(span.span_context().clone());
        TraceContextPropagator::new()
            .inject_context(&cx, &mut HeaderInjector(request.headers_mut()));
        Some(OutboundSpan(span))
    }

    /// Ends the span: the upstream answered `status`, or the request failed with
    /// `error` (a short cause: `denied`, the Wasi error's name).
    pub fn end(mut self, outcome: Result<u16, String>) {
        match outcome {
            Ok(status) => {
                self.0.set_attribute(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status),
                ));
                if status >= 500 {
                    self.0.set_status(Status::error(status.to_string()));
                }
            }
            Err(error) => {
                self.0
                    .set_attribute(KeyValue::new("error.type", error.clone()));
                self.0.set_status(Status::error(error));
            }
        }
        self.0.end();
    }
}

/// The URI without its query (which may carry credentials).
fn without_query(uri: &http::Uri) -> String {
    let text = uri.to_string();
    match text.split_once('?') {
        Some((before, _)) => before.to_string(),
        None => text,
    }
}
