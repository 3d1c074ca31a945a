//! Which HTTP a connection speaks, and serving it: HTTP/2 when the client opens with
//! HTTP/2's connection preface (prior knowledge in clear text, or after TLS with ALPN
//! `h2`), HTTP/1.1 otherwise, each with hyper's settings from [`Http::new`]; and
//! [`detach_head`], which frees hyper's read buffer of a request that holds it.
//!
//! This replaces hyper-util's `auto` connection, which handed hyper the bytes it had
//! read to tell the protocol on their own: hyper then read the rest of the first
//! request head in a second read and grew its read buffer from 8 to 16 KiB for it,
//! for the life of the connection. Here hyper's first read gets those bytes with
//! whatever else has arrived: 4 KiB less per keep-alive HTTP/1.1 connection (a
//! thousand idle connections after one request each: 17.5 against 13.5 MiB).

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What every HTTP/2 connection starts with (RFC 9113, section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a connection's error is.
pub type ConnError = Box<dyn StdError + Send + Sync>;

/// hyper's settings for both protocols.
#[derive(Clone, Debug)]
pub struct Http {
    h1: http1::Builder,
    h2: http2::Builder<LocalExec>,
}

impl Http {
    /// The settings every connection of a worker is served with (the fuzz target
    /// `front_door` serves its input with them too): the largest request head in
    /// bytes, the most header fields, and how long a head may take to arrive. Its
    /// connections must run inside a `LocalSet`: HTTP/2 streams are spawned with
    /// `spawn_local`.
    pub fn new(max_header_size: usize, max_headers: usize, header_read: Duration) -> Http {
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            .header_read_timeout(header_read)
            .max_buf_size(max_header_size)
            .max_headers(max_headers)
            .keep_alive(true);
        let mut h2 = http2::Builder::new(LocalExec);
        h2.timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(max_header_size).unwrap_or(u32::MAX))
            .max_concurrent_streams(256);
        Http { h1, h2 }
    }

    /// Serves `io` with `service`: the connection reads the first bytes to tell the
    /// protocols apart, then hands them, and the rest, to hyper.
    pub fn serve<I, S>(self: &Rc<Self>, io: I, service: S) -> Connection<I, S>
    where
        I: AsyncRead + Unpin,
        S: HttpService<Incoming>,
    {
        Connection {
            http: self.clone(),
            state: State::Detecting {
                io: Rewind::new(io),
                service,
            },
        }
    }
}

/// One connection being served; resolves when it ends.
pub struct Connection<I, S: HttpService<Incoming>> {
    http: Rc<Http>,
    state: State<I, S>,
}

type H1<I, S> = http1::Connection<TokioIo<Rewind<I>>, S>;
type H2<I, S> = http2::Connection<TokioIo<Rewind<I>>, S, LocalExec>;

enum State<I, S: HttpService<Incoming>> {
    /// Reading the first bytes, up to the length of HTTP/2's preface.
    Detecting {
        io: Rewind<I>,
        service: S,
    },
    Http1(Pin<Box<H1<I, S>>>),
    Http2(Pin<Box<H2<I, S>>>),
    /// Ended, or told to stop before it chose a protocol.
    Done,
}

impl<I, S: HttpService<Incoming>> Connection<I, S> {
    /// Whether the connection has not yet sent enough to tell its protocol.
    pub fn is_detecting(&self) -> bool {
        matches!(self.state, State::Detecting { .. })
    }
}

impl<I, S, B> Connection<I, S>
where
    I: AsyncRead + AsyncWrite + Unpin + 'static,
    S: HttpService<Incoming, ResBody = B> + Unpin,
    S::Future: 'static,
    S::Error: Into<ConnError>,
    B: Body + 'static,
    B::Error: Into<ConnError>,
{
    /// Stops taking requests: those in flight finish, then the connection ends. One
    /// that has not chosen a protocol yet ends at once.
    pub fn graceful_shutdown(&mut self) {
        match &mut self.state {
            State::Detecting { .. } => self.state = State::Done,
            State::Http1(conn) => conn.as_mut().graceful_shutdown(),
            State::Http2(conn) => conn.as_mut().graceful_shutdown(),
            State::Done => {}
        }
    }
}

impl<I, S, B> Future for Connection<I, S>
where
    I: AsyncRead + AsyncWrite + Unpin + 'static,
    S: HttpService<Incoming, ResBody = B> + Unpin,
    S::Future: 'static,
    S::Error: Into<ConnError>,
    B: Body + 'static,
    B::Error: Into<ConnError>,
{
    type Output = Result<(), ConnError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            let ended = match &mut this.state {
                State::Detecting { io, .. } => {
                    let http2 = ready!(io.poll_detect(cx))?;
                    let State::Detecting { io, service } =
                        std::mem::replace(&mut this.state, State::Done)
                    else {
                        unreachable!("matched just above")
                    };
                    let io = TokioIo::new(io);
                    this.state = if http2 {
                        State::Http2(Box::pin(this.http.h2.serve_connection(io, service)))
                    } else {
                        State::Http1(Box::pin(this.http.h1.serve_connection(io, service)))
                    };
                    continue;
                }
                State::Http1(conn) => ready!(conn.as_mut().poll(cx)),
                State::Http2(conn) => ready!(conn.as_mut().poll(cx)),
                State::Done => return Poll::Ready(Ok(())),
            };
            // hyper's connection is freed now, not when the task ends.
            this.state = State::Done;
            return Poll::Ready(ended.map_err(Into::into));
        }
    }
}

/// Gives an HTTP/1.x request's URI and header values a buffer of their own, of their
/// size, so that hyper's read buffer is free again. hyper parses a head in place: the
/// URI and every header value are slices of the connection's read buffer (8 KiB), which
/// then stays alive as long as the request does, and hyper's next read (it reads on
/// while a request runs, to notice a client that leaves) allocates another 8 KiB.
/// Called before hyper's next read, it lets that read reuse the first buffer: one
/// allocation of the head's size instead of 8 KiB more per request in flight. HTTP/2
/// heads are decoded into buffers of hyper's own and are left as they are.
pub fn detach_head<B>(req: &mut http::Request<B>) {
    if req.version() >= http::Version::HTTP_2 {
        return;
    }
    let origin_form = req.uri().scheme().is_none() && req.uri().authority().is_none();
    let uri_len = match req.uri().path_and_query() {
        Some(pq) if origin_form => pq.as_str().len(),
        _ => 0,
    };
    let len = uri_len + req.headers().values().map(|v| v.len()).sum::<usize>();
    let mut own = Vec::with_capacity(len);
    if uri_len > 0
        && let Some(pq) = req.uri().path_and_query()
    {
        own.extend_from_slice(pq.as_str().as_bytes());
    }
    for value in req.headers().values() {
        own.extend_from_slice(value.as_bytes());
    }
    let own = bytes::Bytes::from(own);
    // Each piece was valid where it came from, so each is valid again here.
    if uri_len > 0 {
        if let Ok(uri) = http::Uri::from_maybe_shared(own.slice(..uri_len)) {
            *req.uri_mut() = uri;
        }
    } else if let Ok(uri) = http::Uri::try_from(req.uri().to_string()) {
        // Absolute form (a request for a proxy) or `*`: rare, copied as text.
        *req.uri_mut() = uri;
    }
    let mut at = uri_len;
    for value in req.headers_mut().values_mut() {
        let end = at + value.len();
        if let Ok(mut detached) = http::HeaderValue::from_maybe_shared(own.slice(at..end)) {
            detached.set_sensitive(value.is_sensitive());
            *value = detached;
        }
        at = end;
    }
}

/// Runs hyper's background tasks (HTTP/2 streams) on the current loop.
#[derive(Clone, Copy, Debug)]
pub struct LocalExec;

impl<F: Future + 'static> hyper::rt::Executor<F> for LocalExec {
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

/// A stream whose first bytes, read to tell the protocol, are read again by hyper.
pub struct Rewind<I> {
    inner: I,
    prefix: [u8; H2_PREFACE.len()],
    /// Bytes of `prefix` read from `inner`.
    len: u8,
    /// Bytes of `prefix` hyper has read back.
    pos: u8,
}

impl<I: AsyncRead + Unpin> Rewind<I> {
    fn new(inner: I) -> Rewind<I> {
        Rewind {
            inner,
            prefix: [0; H2_PREFACE.len()],
            len: 0,
            pos: 0,
        }
    }

    /// Reads until the bytes so far are HTTP/2's whole preface (`true`), stop
    /// matching it, or the client closes (`false`: hyper's HTTP/1.1 makes the answer,
    /// or ends quietly on an empty connection).
    fn poll_detect(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        loop {
            let len = usize::from(self.len);
            if self.prefix[..len] != H2_PREFACE[..len] {
                return Poll::Ready(Ok(false));
            }
            if len == H2_PREFACE.len() {
                return Poll::Ready(Ok(true));
            }
            let mut buf = ReadBuf::new(&mut self.prefix[len..]);
            ready!(Pin::new(&mut self.inner).poll_read(cx, &mut buf))?;
            let read = buf.filled().len();
            if read == 0 {
                return Poll::Ready(Ok(false));
            }
            // At most the preface's 24 bytes in all.
            self.len += read as u8;
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let (pos, len) = (usize::from(self.pos), usize::from(self.len));
        if pos < len {
            let n = (len - pos).min(buf.remaining());
            buf.put_slice(&self.prefix[pos..pos + n]);
            self.pos += n as u8;
            // With what else has arrived: a request read in two pieces, a few bytes
            // and then the rest, made hyper grow its 8 KiB read buffer to 16 KiB
            // for the second, for the life of the connection. An error or the end
            // is seen by the next read.
            if buf.remaining() > 0 {
                let _ = Pin::new(&mut self.inner).poll_read(cx, buf);
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    /// A client whose bytes arrive in the given pieces, one per read.
    struct Pieces(std::collections::VecDeque<Vec<u8>>);

    impl AsyncRead for Pieces {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if let Some(mut piece) = self.0.pop_front() {
                let n = piece.len().min(buf.remaining());
                buf.put_slice(&piece[..n]);
                if n < piece.len() {
                    self.0.push_front(piece.split_off(n));
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    /// What detection says of a client sending `pieces`, and what a reader of the
    /// rewound stream gets.
    async fn detect(pieces: &[&[u8]]) -> (bool, Vec<u8>) {
        let mut rewind = Rewind::new(Pieces(pieces.iter().map(|p| p.to_vec()).collect()));
        let http2 = std::future::poll_fn(|cx| rewind.poll_detect(cx))
            .await
            .unwrap();
        let mut all = Vec::new();
        rewind.read_to_end(&mut all).await.unwrap();
        (http2, all)
    }

    #[tokio::test]
    async fn the_preface_tells_http2_and_every_byte_reaches_hyper() {
        let h2 = [H2_PREFACE.as_slice(), b"\0\0\0\x04\0\0\0\0\0"].concat();
        assert_eq!(detect(&[&h2]).await, (true, h2.clone()));
        // In pieces, split anywhere, the last one past the preface.
        assert_eq!(
            detect(&[b"P", b"RI * HT", b"TP/2.0\r\n\r", &h2[17..]]).await,
            (true, h2)
        );
        // hyper's first read gets the bytes read to tell the protocol and the rest
        // of what has arrived, in one piece.
        let mut rewind = Rewind::new(Pieces(
            [&b"GET "[..], b"/ HTTP/1.1\r\n\r\n"]
                .map(<[u8]>::to_vec)
                .into(),
        ));
        assert!(
            !std::future::poll_fn(|cx| rewind.poll_detect(cx))
                .await
                .unwrap()
        );
        let mut first = [0; 64];
        let n = rewind.read(&mut first).await.unwrap();
        assert_eq!(&first[..n], b"GET / HTTP/1.1\r\n\r\n");
        for http1 in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"PRI / HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r",
            b"P",
            b"",
        ] {
            assert_eq!(detect(&[http1]).await, (false, http1.to_vec()), "{http1:?}");
        }
    }

    /// A request parsed as hyper parses one: its URI and header values slices of
    /// `head`.
    fn parsed_from(head: &bytes::Bytes, version: http::Version) -> http::Request<()> {
        let text = std::str::from_utf8(head).unwrap();
        let slice = |part: &str| {
            let at = text.find(part).unwrap();
            head.slice(at..at + part.len())
        };
        let mut req = http::Request::builder()
            .version(version)
            .uri(http::Uri::from_maybe_shared(slice("/a/b?c=d%20e")).unwrap())
            .body(())
            .unwrap();
        for (name, value) in [("x-many", "one"), ("x-many", "two"), ("x-secret", "s3cr3t")] {
            let value = http::HeaderValue::from_maybe_shared(slice(value)).unwrap();
            req.headers_mut().append(name, value);
        }
        req.headers_mut()
            .get_mut("x-secret")
            .unwrap()
            .set_sensitive(true);
        req
    }

    #[test]
    fn a_detached_head_is_the_same_and_holds_nothing_of_the_read_buffer() {
        let head = bytes::Bytes::from(b"GET /a/b?c=d%20e HTTP/1.1 one two s3cr3t".to_vec());
        let mut req = parsed_from(&head, http::Version::HTTP_11);
        let before = format!("{req:?}");
        assert!(!head.is_unique(), "the request holds slices of it");
        detach_head(&mut req);
        assert!(head.is_unique(), "the request still holds a slice of it");
        assert_eq!(format!("{req:?}"), before);
        let many: Vec<_> = req.headers().get_all("x-many").iter().collect();
        assert_eq!(many, ["one", "two"]);
        assert!(req.headers()["x-secret"].is_sensitive());
        assert_eq!(req.uri().query(), Some("c=d%20e"));

        // Absolute form (a proxy's request): the same, and nothing held either.
        let head = bytes::Bytes::from(b"http://example.com:8080/a/b?c=d%20e".to_vec());
        let mut req = http::Request::new(());
        *req.uri_mut() = http::Uri::from_maybe_shared(head.clone()).unwrap();
        detach_head(&mut req);
        assert!(head.is_unique());
        assert_eq!(req.uri(), "http://example.com:8080/a/b?c=d%20e");

        // `OPTIONS *`, a CONNECT's authority form, and the root path with no headers.
        for form in ["*", "example.com:443", "/"] {
            let head = bytes::Bytes::copy_from_slice(form.as_bytes());
            let mut req = http::Request::new(());
            *req.uri_mut() = http::Uri::from_maybe_shared(head.clone()).unwrap();
            detach_head(&mut req);
            assert!(head.is_unique(), "{form}");
            assert_eq!(req.uri(), form);
        }
    }

    #[test]
    fn an_http2_head_is_left_as_it_is() {
        let head = bytes::Bytes::from(b"GET /a/b?c=d%20e HTTP/2 one two s3cr3t".to_vec());
        let mut req = parsed_from(&head, http::Version::HTTP_2);
        detach_head(&mut req);
        assert!(!head.is_unique(), "HTTP/2 heads are not copied");
    }
}
