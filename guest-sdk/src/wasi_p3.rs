//! The async style's side of WASI: wasi:http 0.3 (the `wasip3` crate). Converts an
//! incoming request into a [`Request`], turns a [`Response`] into a wasi response whose
//! body a spawned task writes, and sends outgoing requests for [`fetch`](crate::fetch()).
//! Nothing here blocks: every wait is an `.await` the host can schedule around.

use std::future::poll_fn;

use http::{HeaderMap, StatusCode};
use wasip3::http::types::{
    self as wasi, ErrorCode, Fields, Request as WasiRequest, Response as WasiResponse, Scheme,
};
use wasip3::wit_bindgen::{self, StreamReader, StreamWriter};
use wasip3::{wit_future, wit_stream};

use crate::body::Inner;
use crate::error::FetchError;
use crate::{Body, IntoResponse, Request, Response};

/// Serves one request with `handler`: the body of the macro-generated export.
pub async fn serve<F>(request: WasiRequest, handler: F) -> Result<WasiResponse, ErrorCode>
where
    F: AsyncFnOnce(Request) -> Response,
{
    let response = match incoming_request(request).await {
        Ok(request) => handler(request).await,
        Err(message) => (StatusCode::BAD_REQUEST, message).into_response(),
    };
    Ok(outgoing_response(response))
}

async fn incoming_request(request: WasiRequest) -> Result<Request, String> {
    let mut uri = http::Uri::builder();
    if let Some(scheme) = request.get_scheme() {
        let scheme = match scheme {
            Scheme::Http => "http".to_string(),
            Scheme::Https => "https".to_string(),
            Scheme::Other(other) => other,
        };
        uri = uri.scheme(scheme.as_str());
    }
    if let Some(authority) = request.get_authority() {
        uri = uri.authority(authority);
    }
    let uri = uri
        .path_and_query(request.get_path_with_query().unwrap_or_else(|| "/".into()))
        .build()
        .map_err(|e| format!("invalid request URI: {e}"))?;
    let mut builder = Request::builder()
        .method(method_from_wasi(request.get_method())?)
        .uri(uri);
    if let Some(headers) = builder.headers_mut() {
        *headers = crate::convert::header_map(request.get_headers().copy_all());
    }
    let (_, done) = wit_future::new(|| Ok(()));
    let (contents, trailers) = WasiRequest::consume_body(request, done);
    let bytes = contents.collect().await;
    let whole = bytes.is_empty()
        && builder
            .method_ref()
            .zip(builder.headers_ref())
            .is_some_and(|(method, headers)| empty_body_is_whole(method, headers));
    if !whole {
        trailers
            .await
            .map_err(|e| format!("failed to read the body: {e:?}"))?;
    }
    builder
        .body(Body::from(bytes))
        .map_err(|e| format!("invalid request: {e}"))
}

/// Whether a request body that ended with no bytes is whole without asking its
/// trailers future, which is where a failed body (a client gone mid-upload) would say
/// so. Reading that future costs the guest a turn through the host's event loop (the
/// host copies its `result<_, error-code>` in from a task of its own), a tenth of a
/// hello's CPU and, on a busy instance, milliseconds of waiting. Skipped only where
/// the request's framing says its body is empty: `Content-Length: 0`, or no length
/// and no `Transfer-Encoding` on a method whose body has no defined meaning. A request
/// that may carry a body (a POST with no length can be an HTTP/2 upload cut short
/// before its first byte) still waits for the verdict, so an upload that stopped
/// early is never passed off as an empty one.
fn empty_body_is_whole(method: &http::Method, headers: &HeaderMap) -> bool {
    use http::Method;
    use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
    if headers.contains_key(TRANSFER_ENCODING) {
        return false;
    }
    let mut lengths = headers.get_all(CONTENT_LENGTH).iter();
    match (lengths.next(), lengths.next()) {
        (Some(length), None) => length.as_bytes() == b"0",
        (Some(_), Some(_)) => false,
        (None, _) => matches!(
            *method,
            Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
        ),
    }
}

fn outgoing_response(response: Response) -> WasiResponse {
    let (mut parts, body) = response.into_parts();
    crate::body::set_content_length(&mut parts, &body);
    let (contents, trailers) = body_stream(body);
    let (outgoing, _sent) = WasiResponse::new(fields(&parts.headers), contents, trailers);
    // `http::StatusCode` is always 100..=999, which wasi accepts.
    let _ = outgoing.set_status_code(parts.status.as_u16());
    outgoing
}

type Trailers = wit_bindgen::FutureReader<Result<Option<wasi::Trailers>, ErrorCode>>;

/// The wasi body for `body`: `None` when empty, else a stream a spawned task fills
/// while the host reads it.
fn body_stream(body: Body) -> (Option<StreamReader<u8>>, Trailers) {
    let (trailers_tx, trailers) = wit_future::new(|| Ok(None));
    if body.is_empty() {
        drop(trailers_tx);
        return (None, trailers);
    }
    let (mut writer, reader) = wit_stream::new();
    wit_bindgen::spawn(async move {
        write_body(&mut writer, body).await;
        drop(writer);
        drop(trailers_tx);
    });
    (Some(reader), trailers)
}

/// Writes `body`, stopping early when the reader has gone (the client left).
async fn write_body(writer: &mut StreamWriter<u8>, body: Body) {
    match body.0 {
        Inner::Empty => {}
        Inner::Full(bytes) => {
            writer.write_all(Vec::from(bytes)).await;
        }
        Inner::Iter(chunks) => {
            for chunk in chunks {
                if !writer.write_all(Vec::from(chunk)).await.is_empty() {
                    return;
                }
            }
        }
        Inner::Stream(mut chunks) => {
            while let Some(chunk) = poll_fn(|cx| chunks.as_mut().poll_next(cx)).await {
                if !writer.write_all(Vec::from(chunk)).await.is_empty() {
                    return;
                }
            }
        }
    }
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

/// Sends `request` over wasi:http 0.3's client and reads the whole response.
pub async fn fetch(request: Request) -> Result<Response, FetchError> {
    let target = request.uri().to_string();
    let fail = |message: String| FetchError::new(&target, message, false);
    let (parts, body) = request.into_parts();
    let authority = parts.uri.authority().ok_or_else(|| {
        fail("the URI has no host; give an absolute URI such as http://host/path".into())
    })?;
    let (contents, trailers) = body_stream(body);
    let (outgoing, _sent) = WasiRequest::new(fields(&parts.headers), contents, trailers, None);
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

    let incoming = wasip3::http::client::send(outgoing)
        .await
        .map_err(|e| error_code(&target, e))?;
    let status = StatusCode::from_u16(incoming.get_status_code())
        .map_err(|e| fail(format!("invalid status: {e}")))?;
    let headers = crate::convert::header_map(incoming.get_headers().copy_all());
    let (_, done) = wit_future::new(|| Ok(()));
    let (contents, trailers) = WasiResponse::consume_body(incoming, done);
    let bytes = contents.collect().await;
    trailers.await.map_err(|e| error_code(&target, e))?;
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

fn error_code(target: &str, code: ErrorCode) -> FetchError {
    let denied = matches!(code, ErrorCode::HttpRequestDenied);
    FetchError::new(target, format!("{code:?}"), denied)
}

#[cfg(test)]
mod tests {
    use http::Method;
    use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};

    use super::*;

    fn headers(pairs: &[(http::header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), value.parse().unwrap());
        }
        map
    }

    #[test]
    fn an_empty_body_is_whole_only_where_the_framing_says_so() {
        let none = headers(&[]);
        // No length on a method whose body means nothing: nothing was sent.
        for method in [Method::GET, Method::HEAD, Method::DELETE, Method::OPTIONS] {
            assert!(empty_body_is_whole(&method, &none), "{method}");
        }
        // No length on a method that carries content: it may be an upload cut short.
        for method in [Method::POST, Method::PUT, Method::PATCH] {
            assert!(!empty_body_is_whole(&method, &none), "{method}");
        }
        let custom = Method::from_bytes(b"PROPFIND").unwrap();
        assert!(!empty_body_is_whole(&custom, &none));
        // A declared empty body is whole for any method.
        let zero = headers(&[(CONTENT_LENGTH, "0")]);
        assert!(empty_body_is_whole(&Method::POST, &zero));
        // A declared body that did not come, a chunked one, or a doubtful length.
        for framing in [
            headers(&[(CONTENT_LENGTH, "5")]),
            headers(&[(CONTENT_LENGTH, "00")]),
            headers(&[(CONTENT_LENGTH, "0"), (CONTENT_LENGTH, "0")]),
            headers(&[(TRANSFER_ENCODING, "chunked")]),
            headers(&[(CONTENT_LENGTH, "0"), (TRANSFER_ENCODING, "chunked")]),
        ] {
            assert!(!empty_body_is_whole(&Method::GET, &framing), "{framing:?}");
            assert!(!empty_body_is_whole(&Method::PUT, &framing), "{framing:?}");
        }
    }
}
