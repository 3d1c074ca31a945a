//! The sync style's side of WASI: wasi:http 0.2 (the `wasip2` crate). Converts an
//! incoming request into a [`Request`], writes a [`Response`] back, and sends outgoing
//! requests for [`fetch_sync`](crate::fetch_sync). Every call here may block the
//! calling instance, which is what a pool thread is for.

use std::task::{Context, Poll, Waker};

use http::{HeaderMap, StatusCode};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    self as wasi, ErrorCode, Fields, IncomingBody, IncomingRequest, InputStream, OutgoingBody,
    OutgoingRequest, OutgoingResponse, OutputStream, ResponseOutparam, Scheme,
};
use wasip2::io::streams::StreamError;

use crate::body::Inner;
use crate::error::FetchError;
use crate::{Body, IntoResponse, Request, Response};

/// Serves one request with `handler`: the body of the macro-generated export.
pub fn serve(
    request: IncomingRequest,
    out: ResponseOutparam,
    handler: impl FnOnce(Request) -> Response,
) {
    let response = match incoming_request(request) {
        Ok(request) => handler(request),
        Err(message) => (StatusCode::BAD_REQUEST, message).into_response(),
    };
    write_response(response, out);
}

fn incoming_request(request: IncomingRequest) -> Result<Request, String> {
    let mut uri = http::Uri::builder();
    if let Some(scheme) = request.scheme() {
        let scheme = match scheme {
            Scheme::Http => "http".to_string(),
            Scheme::Https => "https".to_string(),
            Scheme::Other(other) => other,
        };
        uri = uri.scheme(scheme.as_str());
    }
    if let Some(authority) = request.authority() {
        uri = uri.authority(authority);
    }
    let uri = uri
        .path_and_query(request.path_with_query().unwrap_or_else(|| "/".into()))
        .build()
        .map_err(|e| format!("invalid request URI: {e}"))?;
    let mut builder = Request::builder()
        .method(method_from_wasi(request.method())?)
        .uri(uri);
    if let Some(headers) = builder.headers_mut() {
        *headers = crate::convert::header_map(request.headers().entries());
    }
    let body = request
        .consume()
        .map_err(|()| "the request body was already taken".to_string())?;
    let bytes = read_to_end(&body)?;
    drop(IncomingBody::finish(body));
    builder
        .body(Body::from(bytes))
        .map_err(|e| format!("invalid request: {e}"))
}

fn read_to_end(body: &IncomingBody) -> Result<Vec<u8>, String> {
    let stream: InputStream = body
        .stream()
        .map_err(|()| "the request body stream was already taken".to_string())?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => return Ok(bytes),
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(format!("failed to read the body: {}", e.to_debug_string()));
            }
        }
    }
}

fn write_response(response: Response, out: ResponseOutparam) {
    let (mut parts, body) = response.into_parts();
    crate::body::set_content_length(&mut parts, &body);
    let outgoing = OutgoingResponse::new(fields(&parts.headers));
    // `http::StatusCode` is always 100..=999, which wasi accepts.
    let _ = outgoing.set_status_code(parts.status.as_u16());
    let Ok(outgoing_body) = outgoing.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(outgoing));
    if let Ok(stream) = outgoing_body.write() {
        // A write fails only when the client has gone: stop producing the body.
        let _ = write_body(&stream, body);
    }
    let _ = OutgoingBody::finish(outgoing_body, None);
}

/// Writes `body` to `stream`, producing streamed bodies chunk by chunk and flushing
/// after each so that the client sees them as they come.
fn write_body(stream: &OutputStream, body: Body) -> Result<(), StreamError> {
    match body.0 {
        Inner::Empty => Ok(()),
        Inner::Full(bytes) => write_all(stream, &bytes),
        Inner::Iter(chunks) => {
            for chunk in chunks {
                write_all(stream, &chunk)?;
            }
            Ok(())
        }
        Inner::Stream(mut chunks) => {
            let mut cx = Context::from_waker(Waker::noop());
            loop {
                match chunks.as_mut().poll_next(&mut cx) {
                    Poll::Ready(Some(chunk)) => write_all(stream, &chunk)?,
                    Poll::Ready(None) => return Ok(()),
                    Poll::Pending => {
                        crate::error!(
                            "a Body::from_stream waited in a sync handler, where nothing can wake it; the body ends here (use Body::from_chunks, or an async fn handler)"
                        );
                        return Ok(());
                    }
                }
            }
        }
    }
}

fn write_all(stream: &OutputStream, mut bytes: &[u8]) -> Result<(), StreamError> {
    while !bytes.is_empty() {
        let permit = stream.check_write()?;
        if permit == 0 {
            stream.subscribe().block();
            continue;
        }
        let n = usize::try_from(permit)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        stream.write(&bytes[..n])?;
        bytes = &bytes[n..];
    }
    stream.blocking_flush()
}

/// The `Fields` for `headers`, leaving out (and logging) any the host refuses, such as
/// hop-by-hop headers: a forbidden header is the handler's mistake, not the client's.
fn fields(headers: &HeaderMap) -> Fields {
    let fields = Fields::new();
    for (name, value) in headers {
        if let Err(e) = fields.append(name.as_str(), value.as_bytes()) {
            crate::warn!("header {name} left out: {e:?}");
        }
    }
    fields
}

crate::convert::methods!(wasi);

/// Sends `request` over wasi:http's outgoing handler and reads the whole response.
pub fn fetch(request: Request) -> Result<Response, FetchError> {
    let target = request.uri().to_string();
    let fail = |message: String| FetchError::new(&target, message, false);
    let (parts, body) = request.into_parts();
    let authority = parts.uri.authority().ok_or_else(|| {
        fail("the URI has no host; give an absolute URI such as http://host/path".into())
    })?;
    let outgoing = OutgoingRequest::new(fields(&parts.headers));
    outgoing
        .set_method(&method_to_wasi(&parts.method))
        .map_err(|()| fail("the method is not allowed".into()))?;
    let scheme = match parts.uri.scheme_str() {
        Some("https") => Scheme::Https,
        Some("http") | None => Scheme::Http,
        Some(other) => Scheme::Other(other.to_string()),
    };
    outgoing
        .set_scheme(Some(&scheme))
        .map_err(|()| fail("the scheme is not allowed".into()))?;
    outgoing
        .set_authority(Some(authority.as_str()))
        .map_err(|()| fail("the authority is not valid".into()))?;
    outgoing
        .set_path_with_query(parts.uri.path_and_query().map(|pq| pq.as_str()))
        .map_err(|()| fail("the path is not valid".into()))?;
    let outgoing_body = outgoing
        .body()
        .map_err(|()| fail("the request body was already taken".into()))?;

    let pending = outgoing_handler::handle(outgoing, None).map_err(|e| error_code(&target, e))?;
    if let Ok(stream) = outgoing_body.write() {
        write_body(&stream, body).map_err(|e| fail(format!("failed to send the body: {e:?}")))?;
    }
    OutgoingBody::finish(outgoing_body, None).map_err(|e| error_code(&target, e))?;

    pending.subscribe().block();
    let incoming = pending
        .get()
        .ok_or_else(|| fail("no response".into()))?
        .map_err(|()| fail("the response was taken twice".into()))?
        .map_err(|e| error_code(&target, e))?;
    let status = StatusCode::from_u16(incoming.status())
        .map_err(|e| fail(format!("invalid status: {e}")))?;
    let headers = crate::convert::header_map(incoming.headers().entries());
    let body = incoming
        .consume()
        .map_err(|()| fail("the response body was already taken".into()))?;
    let bytes = read_to_end(&body).map_err(fail)?;
    drop(IncomingBody::finish(body));
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

fn error_code(target: &str, code: ErrorCode) -> FetchError {
    let denied = matches!(code, ErrorCode::HttpRequestDenied);
    FetchError::new(target, format!("{code:?}"), denied)
}
