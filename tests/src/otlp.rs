//! A local OpenTelemetry collector for the tests: an OTLP/HTTP receiver
//! (`POST /v1/traces`, binary protobuf) that keeps every span it is sent, and an
//! upstream that keeps the `traceparent` of every request it answers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;

/// One span as received, with its resource's and its own attributes as text.
#[derive(Debug, Clone)]
pub struct Span {
    pub name: String,
    /// `SPAN_KIND_SERVER` is 2, `SPAN_KIND_CLIENT` 3.
    pub kind: i32,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub attributes: HashMap<String, String>,
    pub resource: HashMap<String, String>,
    /// `STATUS_CODE_ERROR` is 2.
    pub status_code: i32,
    pub duration: Duration,
}

impl Span {
    /// An attribute's value as text (`""` when absent).
    pub fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }
}

/// The receiver; it serves on the current runtime until dropped with the test.
pub struct Collector {
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
}

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(
    list: &[opentelemetry_proto::tonic::common::v1::KeyValue],
) -> HashMap<String, String> {
    list.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

impl Collector {
    pub async fn start() -> Collector {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let sink = spans.clone();
        let addr = serve(move |req| {
            let sink = sink.clone();
            async move {
                let path = req.uri().path().to_string();
                let body = req.into_body().collect().await.map(|b| b.to_bytes());
                let status = match body.map(ExportTraceServiceRequest::decode) {
                    Ok(Ok(export)) if path == "/v1/traces" => {
                        keep(&sink, export);
                        200
                    }
                    _ => 400,
                };
                let mut response = http::Response::new(Full::new(Bytes::new()));
                *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                response.headers_mut().insert(
                    "content-type",
                    http::HeaderValue::from_static("application/x-protobuf"),
                );
                response
            }
        })
        .await;
        Collector { addr, spans }
    }

    /// The endpoint to give the server (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits up to `timeout` for a span that satisfies `pred`.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&Span) -> bool) -> Option<Span> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(span) = self.spans.lock().unwrap().iter().find(|s| pred(s)) {
                return Some(span.clone());
            }
            if Instant::now() > end {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
}

fn keep(sink: &Mutex<Vec<Span>>, export: ExportTraceServiceRequest) {
    let mut spans = sink.lock().unwrap();
    for resource_spans in export.resource_spans {
        let resource = resource_spans
            .resource
            .as_ref()
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                spans.push(Span {
                    name: span.name,
                    kind: span.kind,
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: hex::encode(&span.parent_span_id),
                    attributes: attributes(&span.attributes),
                    resource: resource.clone(),
                    status_code: span.status.map_or(0, |s| s.code),
                    duration: Duration::from_nanos(
                        span.end_time_unix_nano
                            .saturating_sub(span.start_time_unix_nano),
                    ),
                });
            }
        }
    }
}

/// An upstream that answers `ok` and keeps the `traceparent` each request carried.
pub struct TracedUpstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl TracedUpstream {
    pub async fn start() -> TracedUpstream {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let addr = serve(move |req| {
            let parent = req
                .headers()
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string();
            sink.lock().unwrap().push(parent);
            async { http::Response::new(Full::new(Bytes::from_static(b"ok"))) }
        })
        .await;
        TracedUpstream { addr, seen }
    }

    /// The `traceparent` of each request so far (`-` when it had none).
    pub fn traceparents(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// Serves HTTP/1.1 on a free port of 127.0.0.1, answering each request with
/// `handle`, on the current runtime; returns the address.
async fn serve<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = http::Response<Full<Bytes>>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handle = handle.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let answer = handle(req);
                    async move { Ok::<_, std::convert::Infallible>(answer.await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}
