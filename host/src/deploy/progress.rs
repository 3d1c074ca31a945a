//! A deploy's steps as they happen, for a client that asks for them with `Accept:
//! application/x-ndjson`: the answer is `200` at once and then one JSON object per
//! line per step (`received`, `compiled`, `live`, then `done` with what a plain deploy
//! answers, or `failed` with the status and error it would have had, and with tiers
//! `optimized` when the Cranelift code serves). The deploy goes on if the client
//! leaves; a plain deploy (no such `Accept`) answers once, as before.

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use serde_json::Value;
use tokio::sync::mpsc;

/// The media type of a deploy's steps.
pub const NDJSON: &str = "application/x-ndjson";

/// A response body of the admin listener: whole, or a stream of steps.
pub type AdminBody = BoxBody<Bytes, Infallible>;

/// Whether the request asks for the steps as they happen.
pub fn wanted(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let media = t.split(';').next().unwrap_or_default();
            media.trim().eq_ignore_ascii_case(NDJSON)
        })
}

/// Where a deploy reports its steps; reports nothing for a plain deploy.
#[derive(Clone, Default)]
pub struct Progress(Option<mpsc::UnboundedSender<Value>>);

impl Progress {
    /// A sink and the `200` response that streams what it is sent, a line each.
    pub fn streaming() -> (Progress, Response<AdminBody>) {
        let (tx, rx) = mpsc::unbounded_channel::<Value>();
        let lines = futures_util::stream::unfold(rx, |mut rx| async move {
            let step = rx.recv().await?;
            let line = Bytes::from(format!("{step}\n"));
            Some((Ok::<_, Infallible>(Frame::data(line)), rx))
        });
        let mut response = Response::new(StreamBody::new(lines).boxed());
        *response.status_mut() = StatusCode::OK;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(NDJSON),
        );
        (Progress(Some(tx)), response)
    }

    /// Reports one step (dropped when nobody listens any more).
    pub fn step(&self, step: Value) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(step);
        }
    }

    /// Whether a client asked for the steps.
    pub fn streaming_to_client(&self) -> bool {
        self.0.as_ref().is_some_and(|tx| !tx.is_closed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_wanted_in_any_accept_form_that_names_them() {
        let wants = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append(http::header::ACCEPT, v.parse().unwrap());
            }
            wanted(&headers)
        };
        assert!(wants(&["application/x-ndjson"]));
        assert!(wants(&["application/json, application/x-ndjson;q=0.9"]));
        assert!(wants(&["text/html", " application/x-ndjson "]));
        assert!(!wants(&[]));
        assert!(!wants(&["application/json"]));
        assert!(!wants(&["*/*"]));
        assert!(!wants(&["application/x-ndjsonl"]));
        assert!(wants(&["Application/X-NDJSON; q=1"]));
    }
}
