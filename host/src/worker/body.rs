//! Body types between hyper and the guests: the request body with its size limit,
//! and the response body, streamed from a channel that the guest's driver feeds.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::{Buf as _, Bytes};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use http_body_util::combinators::UnsyncBoxBody;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Errors a response body can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response the server writes.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// A complete, short response body (errors, cause codes).
pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// The request body handed to a guest. It ends with `HttpRequestBodySize` once more
/// than `limit` bytes arrived and raises a flag the server reads to answer 413. It
/// ends with `ConnectionTerminated` once `stop` is cancelled (the request's deadline
/// passed or its client left), so a guest waiting on a slow upload is woken rather
/// than kept, with its pool thread, for as long as the client dribbles.
pub struct RequestBody {
    inner: hyper::body::Incoming,
    remaining: u64,
    limit: u64,
    exceeded: Arc<AtomicBool>,
    stop: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl RequestBody {
    pub fn new(
        inner: hyper::body::Incoming,
        limit: u64,
        exceeded: Arc<AtomicBool>,
        stop: CancellationToken,
    ) -> Self {
        RequestBody {
            inner,
            remaining: limit,
            limit,
            exceeded,
            stop: Box::pin(stop.cancelled_owned()),
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.stop.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::ConnectionTerminated)));
        }
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        Poll::Ready(match frame {
            None => None,
            Some(Err(e)) => Some(Err(e.into())),
            Some(Ok(frame)) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                if len > self.remaining {
                    self.exceeded.store(true, Ordering::Relaxed);
                    self.remaining = 0;
                    Some(Err(wasmtime_wasi_http::Error::HttpRequestBodySize(Some(
                        self.limit,
                    ))))
                } else {
                    self.remaining -= len;
                    Some(Ok(frame))
                }
            }
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What a [`ChannelBody`]'s channel carries: `Some(frame)` for each frame, then `None`
/// once the body is complete.
type Item = Option<Result<Frame<Bytes>, BoxError>>;

/// Feeds a [`ChannelBody`].
pub type FrameSender = mpsc::Sender<Item>;

/// A response body: the frames that were ready before the head was sent, then, when
/// the body goes on, frames fed through a channel, so that whoever drives the guest
/// (the loop task that owns the store) keeps pumping while hyper writes.
///
/// The sender ends a complete body with `None`. A channel that closes without it (the
/// guest trapped, ran out of time) is an error, so hyper cuts the connection instead of
/// passing a truncated body off as a whole one. The channel is made only for a body
/// that goes on past its head (tokio allocates a 3 KiB block for each), not for one
/// that is complete at once, nor while a request waits for its guest.
#[derive(Default)]
pub struct ChannelBody {
    /// Frames that were ready before the head was sent.
    ready: std::collections::VecDeque<Frame<Bytes>>,
    rx: Option<mpsc::Receiver<Item>>,
    /// The sender's end marker arrived (or was preloaded).
    ended: bool,
    /// Nothing more will be returned.
    complete: bool,
}

impl ChannelBody {
    /// Opens the channel the rest of the body comes through. A small bound gives
    /// backpressure: a slow client slows the guest instead of filling memory.
    pub fn open(&mut self) -> FrameSender {
        let (tx, rx) = mpsc::channel(4);
        self.rx = Some(rx);
        tx
    }

    /// Queues a frame that is already there, ahead of anything sent later.
    pub fn preload(&mut self, frame: Frame<Bytes>) {
        self.ready.push_back(frame);
    }

    /// Marks the body complete after the preloaded frames: nothing will be sent.
    pub fn preload_end(&mut self) {
        self.ended = true;
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.complete {
            return Poll::Ready(None);
        }
        if let Some(frame) = self.ready.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if self.ended {
            self.complete = true;
            return Poll::Ready(None);
        }
        let Some(rx) = &mut self.rx else {
            self.complete = true;
            return Poll::Ready(Some(Err("the response body was cut short".into())));
        };
        Poll::Ready(match ready!(rx.poll_recv(cx)) {
            Some(Some(frame)) => Some(frame),
            Some(None) => {
                self.complete = true;
                None
            }
            None => {
                self.complete = true;
                Some(Err("the response body was cut short".into()))
            }
        })
    }

    fn is_end_stream(&self) -> bool {
        self.complete || (self.ended && self.ready.is_empty())
    }

    fn size_hint(&self) -> SizeHint {
        if self.ended {
            let len: u64 = self
                .ready
                .iter()
                .filter_map(|f| f.data_ref())
                .map(|d| d.len() as u64)
                .sum();
            SizeHint::with_exact(len)
        } else {
            SizeHint::default()
        }
    }
}

/// A body that keeps `guard` alive until the body is done or dropped.
pub struct WithGuard<B, G> {
    inner: B,
    _guard: G,
}

impl<B, G> WithGuard<B, G> {
    pub fn new(inner: B, guard: G) -> Self {
        WithGuard {
            inner,
            _guard: guard,
        }
    }
}

impl<B: Body + Unpin, G: Unpin> Body for WithGuard<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that cancels its request's run when dropped before its end (the
/// client went away mid-response, so the guest producing it can stop), and that the
/// front door can end from outside with its [`AbortHandle`].
///
/// Ending it from outside is for the deadline: hyper stops polling a body while a
/// client that stopped reading leaves its buffers full, so only dropping the body
/// from elsewhere reaches a pool guest blocked writing to it. Its write then fails and
/// its thread is free.
pub struct CancelOnAbort<B> {
    shared: Arc<Mutex<Abortable<B>>>,
    ended: Arc<tokio::sync::Notify>,
}

struct Abortable<B> {
    inner: Option<B>,
    guard: Option<tokio_util::sync::DropGuard>,
    aborted: bool,
    /// The body told hyper it has nothing more to send, or sent all of the length
    /// its head declared: hyper may drop it then without polling its end, and that
    /// is not a client going away.
    complete: bool,
    /// The length the response's head declares (hyper stops writing there).
    length: Option<u64>,
    /// Data bytes sent so far.
    sent: u64,
}

/// Ends a [`CancelOnAbort`] body and cancels its run, unless it already ended.
pub struct AbortHandle<B> {
    shared: Arc<Mutex<Abortable<B>>>,
    ended: Arc<tokio::sync::Notify>,
}

impl<B> AbortHandle<B> {
    pub fn abort(&self) {
        let (inner, guard) = {
            let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            if shared.inner.is_none() {
                return;
            }
            shared.aborted = true;
            (shared.inner.take(), shared.guard.take())
        };
        // Dropped outside the lock: dropping the body may run the guest's side.
        drop((inner, guard));
    }

    /// Data bytes of the body handed to hyper so far.
    pub fn sent(&self) -> u64 {
        self.shared.lock().unwrap_or_else(|e| e.into_inner()).sent
    }

    /// Waits until the body was sent whole, or dropped (the client left, or
    /// [`AbortHandle::abort`]).
    pub async fn ended(&self) {
        let ended = self.ended.notified();
        if self
            .shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .inner
            .is_none()
        {
            return;
        }
        ended.await;
    }
}

impl<B> CancelOnAbort<B> {
    /// `inner` with the guard that cancels its run, for a response whose head
    /// declares `length` bytes (`Content-Length`), if it does.
    pub fn new(
        inner: B,
        guard: tokio_util::sync::DropGuard,
        length: Option<u64>,
    ) -> (Self, AbortHandle<B>) {
        let shared = Arc::new(Mutex::new(Abortable {
            inner: Some(inner),
            guard: Some(guard),
            aborted: false,
            complete: false,
            length,
            sent: 0,
        }));
        let ended = Arc::new(tokio::sync::Notify::new());
        (
            CancelOnAbort {
                shared: shared.clone(),
                ended: ended.clone(),
            },
            AbortHandle { shared, ended },
        )
    }
}

impl<B> Drop for CancelOnAbort<B> {
    /// Hyper dropped the body before its end (the client left): end the run. The
    /// abort handle shares this state, so the guard would not drop with the body.
    /// A body that said it was complete is not cut: hyper drops such a body once it
    /// has written it, without polling for the end.
    fn drop(&mut self) {
        let (inner, guard, complete) = {
            let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            (shared.inner.take(), shared.guard.take(), shared.complete)
        };
        match guard {
            Some(guard) if complete => {
                guard.disarm();
            }
            guard => drop(guard),
        }
        drop(inner);
        self.ended.notify_one();
    }
}

impl<B> Body for CancelOnAbort<B>
where
    B: Body + Unpin,
    B::Error: From<&'static str>,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let Some(inner) = shared.inner.as_mut() else {
            return Poll::Ready(
                shared
                    .aborted
                    .then(|| Err("the response ran past its deadline".into())),
            );
        };
        let frame = ready!(Pin::new(inner).poll_frame(cx));
        if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
            shared.sent += data.map_or(0, |d| d.remaining() as u64);
            shared.complete |= shared.length.is_some_and(|length| shared.sent >= length);
        }
        if frame.is_none() {
            shared.inner = None;
            if let Some(guard) = shared.guard.take() {
                guard.disarm();
            }
            self.ended.notify_one();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let end = shared.inner.as_ref().is_none_or(|b| b.is_end_stream()) && !shared.aborted;
        shared.complete |= end;
        end
    }

    fn size_hint(&self) -> SizeHint {
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared
            .inner
            .as_ref()
            .map_or_else(SizeHint::default, |b| b.size_hint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use tokio_util::sync::CancellationToken;

    type Inner =
        http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

    fn body(text: &'static str) -> (CancelOnAbort<Inner>, AbortHandle<Inner>, CancellationToken) {
        let cancel = CancellationToken::new();
        let inner = Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed_unsync();
        let (body, abort) = CancelOnAbort::new(inner, cancel.clone().drop_guard(), None);
        (body, abort, cancel)
    }

    #[tokio::test]
    async fn a_body_sent_whole_has_ended_and_does_not_cancel_its_run() {
        let (body, abort, cancel) = body("hello");
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
        abort.ended().await;
        abort.abort();
        assert!(!cancel.is_cancelled());
    }

    #[tokio::test]
    async fn a_body_dropped_after_it_said_it_was_complete_does_not_cancel_its_run() {
        // What hyper does with a body of known length: it writes the data, asks
        // whether the body has ended, and drops it without polling for the end.
        let (mut body, abort, cancel) = body("hello");
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "hello");
        assert!(body.is_end_stream());
        drop(body);
        abort.ended().await;
        assert!(
            !cancel.is_cancelled(),
            "a complete response counted as a client gone"
        );
        // Asked before the end, the answer is no, and a drop then still cancels.
        let (mut body, _abort, cancel) = body_of_two_frames();
        let _first = body.frame().await.unwrap().unwrap();
        assert!(!body.is_end_stream());
        drop(body);
        assert!(cancel.is_cancelled());
    }

    fn body_of_two_frames() -> (CancelOnAbort<Inner>, AbortHandle<Inner>, CancellationToken) {
        let cancel = CancellationToken::new();
        let frames = futures_util::stream::iter([
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(Bytes::from("one"))),
            Ok(Frame::data(Bytes::from("two"))),
        ]);
        let inner = http_body_util::StreamBody::new(frames).boxed_unsync();
        let (body, abort) = CancelOnAbort::new(inner, cancel.clone().drop_guard(), None);
        (body, abort, cancel)
    }

    #[tokio::test]
    async fn a_body_dropped_after_the_length_its_head_declared_does_not_cancel_its_run() {
        // Hyper stops writing at the declared Content-Length and drops the body, even
        // if the guest has not sent its end yet.
        let (mut body, _abort, cancel) = body_of_two_frames();
        body.shared.lock().unwrap().length = Some(6);
        let _one = body.frame().await.unwrap().unwrap();
        let _two = body.frame().await.unwrap().unwrap();
        drop(body);
        assert!(
            !cancel.is_cancelled(),
            "a complete response counted as a client gone"
        );
        // Dropped short of it, the run is cancelled.
        let (mut body, _abort, cancel) = body_of_two_frames();
        body.shared.lock().unwrap().length = Some(6);
        let _one = body.frame().await.unwrap().unwrap();
        drop(body);
        assert!(cancel.is_cancelled());
    }

    #[tokio::test]
    async fn an_aborted_body_ends_with_an_error_and_cancels_its_run() {
        let (body, abort, cancel) = body("never sent");
        abort.abort();
        abort.ended().await;
        assert!(cancel.is_cancelled());
        let err = body.collect().await.expect_err("an error, not the body");
        assert_eq!(err.to_string(), "the response ran past its deadline");
    }

    #[tokio::test]
    async fn a_body_dropped_unsent_has_ended_and_cancels_its_run() {
        let (body, abort, cancel) = body("dropped");
        let waiting = tokio::spawn(async move { abort.ended().await });
        tokio::task::yield_now().await;
        drop(body);
        waiting.await.unwrap();
        assert!(cancel.is_cancelled());
    }
}
