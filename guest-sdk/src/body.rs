//! [`Body`]: the bytes of a request or response. Request bodies arrive buffered (the host
//! caps them with `--max-body`); response bodies are either buffered or produced
//! piece by piece while they are sent. Writing them to the host is the export glue's
//! job (`export.rs`), not this module's.

use std::fmt;
use std::pin::Pin;

use bytes::Bytes;
use futures_core::Stream;

/// The body of a [`Request`](crate::Request) or [`Response`](crate::Response).
///
/// A request body is the whole body the client sent, already read. A response body can
/// be given whole, or streamed for large responses: [`Body::from_chunks`] produces chunks
/// as they are written (works in both handler styles), [`Body::from_stream`] awaits
/// them (`async fn` handlers only).
///
/// ```
/// use wasmloop_sdk::Body;
///
/// let whole = Body::from("Hello, world!\n");
/// assert_eq!(whole.as_bytes(), b"Hello, world!\n");
///
/// // A 1 MiB response written 64 KiB at a time, never held in memory at once.
/// let chunks = Body::from_chunks((0..16).map(|_| vec![b'x'; 64 * 1024]));
/// assert!(chunks.is_streaming());
/// ```
#[derive(Default)]
pub struct Body(pub(crate) Inner);

#[derive(Default)]
pub(crate) enum Inner {
    #[default]
    Empty,
    Full(Bytes),
    Iter(Box<dyn Iterator<Item = Bytes>>),
    Stream(Pin<Box<dyn Stream<Item = Bytes>>>),
}

impl Body {
    /// An empty body.
    pub fn empty() -> Self {
        Self(Inner::Empty)
    }

    /// A body produced chunk by chunk while it is written to the client.
    pub fn from_chunks<I, C>(chunks: I) -> Self
    where
        I: IntoIterator<Item = C>,
        I::IntoIter: 'static,
        C: Into<Bytes> + 'static,
    {
        Self(Inner::Iter(Box::new(chunks.into_iter().map(Into::into))))
    }

    /// A body whose chunks are awaited while it is written to the client, for
    /// `async fn` handlers. A sync handler cannot wait: there, the stream is polled
    /// once per chunk and the body ends at the first chunk that is not ready.
    pub fn from_stream<S, C>(chunks: S) -> Self
    where
        S: Stream<Item = C> + 'static,
        C: Into<Bytes>,
    {
        Self(Inner::Stream(Box::pin(StreamInto(Box::pin(chunks)))))
    }

    /// The bytes of a buffered body: every request body, and response bodies built
    /// from bytes or text. A streaming body has none here and returns an empty slice.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Inner::Full(bytes) => bytes,
            _ => &[],
        }
    }

    /// The body as UTF-8 text, or `None` if it is not valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(self.as_bytes()).ok()
    }

    /// Whether the body is produced while it is sent ([`Body::from_chunks`] or
    /// [`Body::from_stream`]).
    pub fn is_streaming(&self) -> bool {
        matches!(self.0, Inner::Iter(_) | Inner::Stream(_))
    }

    /// The body's length, when it is known before it is sent.
    pub fn len(&self) -> Option<usize> {
        match &self.0 {
            Inner::Empty => Some(0),
            Inner::Full(bytes) => Some(bytes.len()),
            _ => None,
        }
    }

    /// Whether the body is known to be empty.
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Inner::Empty => f.write_str("Body::empty()"),
            Inner::Full(bytes) => f.debug_tuple("Body").field(bytes).finish(),
            Inner::Iter(_) => f.write_str("Body::from_chunks(..)"),
            Inner::Stream(_) => f.write_str("Body::from_stream(..)"),
        }
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        if bytes.is_empty() {
            Self(Inner::Empty)
        } else {
            Self(Inner::Full(bytes))
        }
    }
}

impl From<Vec<u8>> for Body {
    fn from(bytes: Vec<u8>) -> Self {
        Bytes::from(bytes).into()
    }
}

impl From<&'static [u8]> for Body {
    fn from(bytes: &'static [u8]) -> Self {
        Bytes::from_static(bytes).into()
    }
}

impl From<String> for Body {
    fn from(text: String) -> Self {
        Bytes::from(text).into()
    }
}

impl From<&'static str> for Body {
    fn from(text: &'static str) -> Self {
        Bytes::from_static(text.as_bytes()).into()
    }
}

impl From<()> for Body {
    fn from((): ()) -> Self {
        Self::empty()
    }
}

/// Declares a buffered body's length, so clients get `content-length` instead of a
/// chunked body; statuses that carry no body are left alone.
pub(crate) fn set_content_length(parts: &mut http::response::Parts, body: &Body) {
    let bodyless = parts.status.is_informational()
        || parts.status == http::StatusCode::NO_CONTENT
        || parts.status == http::StatusCode::NOT_MODIFIED;
    if let (Some(len), false) = (body.len(), bodyless) {
        parts
            .headers
            .entry(http::header::CONTENT_LENGTH)
            .or_insert_with(|| http::HeaderValue::from(len));
    }
}

/// Maps a stream's items into [`Bytes`] without pulling in `futures-util`. The inner
/// stream is boxed so that it can be polled through a safe `Pin::as_mut`.
struct StreamInto<S>(Pin<Box<S>>);

impl<S, C> Stream for StreamInto<S>
where
    S: Stream<Item = C>,
    C: Into<Bytes>,
{
    type Item = Bytes;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Bytes>> {
        self.0
            .as_mut()
            .poll_next(cx)
            .map(|item| item.map(Into::into))
    }
}
