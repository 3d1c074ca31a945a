//! The HTTP front door of a worker: one request from hyper to a response, in stages
//! that [`Server::handle`] calls in order: route (the request id and the app for its
//! host and path), admit ([`crate::worker::admission`]: the worker's, tenant's and
//! app's limits, and the body limit before any guest runs), dispatch (to the loop or
//! the pool), await the response head under the deadline, answer. Every failure
//! becomes a short status response through [`RequestError::classify`]; the access log
//! line ([`crate::worker::access_log`]) is written once the guest's store is gone.

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use http::header::{CONTENT_LENGTH, HOST, HeaderName, HeaderValue, USER_AGENT};
use http::uri::{Authority, Scheme};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use tokio::sync::oneshot;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::KeepRequestId;
use crate::metrics::recorder::Recorder;
use crate::metrics::{Gauges, Snapshot};
use crate::model::mode::Mode;
use crate::model::proxies::TrustedProxies;
use crate::model::route::strip_root_path;
use crate::runtime::error::RequestError;
use crate::telemetry::traces::RequestSpan;
use crate::worker::access_log::{AccessLog, error_response, header_value, plain};
use crate::worker::admission::{Admission, Refusal, Slots, Worker};
use crate::worker::app::App;
use crate::worker::body::{self, RequestBody, ResponseBody};
use crate::worker::proxy;
use crate::worker::routes::RouteTable;
use crate::worker::run::on_loop;
use crate::worker::run::on_pool::{Job, Pool};
use crate::worker::run::{self, Outcome, RunContext};

/// The far end of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// Its address; none on a unix-socket listener.
    pub addr: Option<SocketAddr>,
    /// Whether it speaks TLS to us.
    pub tls: bool,
}

/// Limits the front door applies before a guest runs.
#[derive(Debug, Clone)]
pub struct FrontDoor {
    /// Largest request body, in bytes.
    pub max_body: u64,
    /// Requests in flight on this worker.
    pub limit_concurrency: usize,
    /// Bytes of guest memory this worker's requests may grow to together.
    pub memory: Arc<Slots>,
    /// The proxies whose forwarding headers name the client.
    pub proxies: TrustedProxies,
    /// Whose `X-Request-Id` is kept as the request's id.
    pub keep_request_id: KeepRequestId,
    /// Whether the access log shows the query string.
    pub log_query: bool,
    /// `--root-path`: the prefix a proxy mounts the server under (`/api`).
    pub root_path: Option<String>,
}

/// A worker's request handling: the route table, the pool, and the worker's
/// in-flight count. Lives on the loop thread.
pub struct Server {
    table: RefCell<Rc<RouteTable>>,
    pool: Option<Pool>,
    front: FrontDoor,
    in_flight: Rc<Cell<usize>>,
    ids: RequestIds,
    /// Requests after which this worker asks to be replaced (`--max-requests`).
    quota: Option<u64>,
    quota_reached: tokio::sync::Notify,
    recorder: Arc<Recorder>,
}

impl Server {
    pub fn new(
        table: RouteTable,
        pool: Option<Pool>,
        front: FrontDoor,
        recorder: Arc<Recorder>,
    ) -> Rc<Server> {
        Rc::new(Server {
            table: RefCell::new(Rc::new(table)),
            pool,
            front,
            recorder,
            in_flight: Rc::new(Cell::new(0)),
            ids: RequestIds::new(),
            quota: None,
            quota_reached: tokio::sync::Notify::new(),
        })
    }

    /// Like [`Server::new`], for a worker that retires after `quota` requests.
    pub fn with_quota(
        table: RouteTable,
        pool: Option<Pool>,
        front: FrontDoor,
        recorder: Arc<Recorder>,
        quota: u64,
    ) -> Rc<Server> {
        let mut server =
            Rc::into_inner(Server::new(table, pool, front, recorder)).expect("just made");
        server.quota = Some(quota);
        Rc::new(server)
    }

    /// Requests received so far.
    pub fn served(&self) -> u64 {
        self.ids.next.get()
    }

    /// Resolves once the worker has received its quota of requests.
    pub async fn quota_reached(&self) {
        if self.quota.is_none() {
            std::future::pending::<()>().await;
        }
        self.quota_reached.notified().await;
    }

    /// The route table requests are matched against now.
    pub fn table(&self) -> Rc<RouteTable> {
        self.table.borrow().clone()
    }

    /// Swaps in a new route table. Requests in flight keep the app they started with.
    /// Drops the instances kept past their app's idle timeout, and counts them.
    pub fn reap_idle_instances(&self) {
        for app in self.table().apps.values() {
            let ended = app.instances.reap();
            if !ended.is_empty() {
                self.recorder.instances_ended(&app.name, &ended);
            }
        }
    }

    /// Forgets the metric series of apps `keep` refuses (no longer deployed).
    pub fn retain_apps(&self, keep: impl Fn(&str) -> bool) {
        self.recorder.retain_apps(keep);
    }

    pub fn set_table(&self, table: RouteTable) {
        *self.table.borrow_mut() = Rc::new(table);
    }

    /// Requests in flight on this worker.
    pub fn in_flight(&self) -> usize {
        self.in_flight.get()
    }

    /// This worker's metrics, with the gauges read now.
    pub fn snapshot(&self) -> Snapshot {
        let (threads, busy, queued) = self
            .pool
            .as_ref()
            .map_or((0, 0, 0), |p| (p.threads(), p.busy(), p.queued()));
        self.recorder.snapshot(Gauges {
            in_flight: self.in_flight.get() as u64,
            pool_threads: threads as u64,
            pool_busy: busy as u64,
            pool_queued: queued as u64,
            ..Gauges::default()
        })
    }

    /// Records how late the loop ran a timer.
    pub fn loop_lag(&self, lag: Duration) {
        self.recorder.loop_lag(lag);
    }

    /// Gives the pool back for an orderly stop (its threads are joined off the loop).
    pub fn take_pool(self: Rc<Self>) -> Option<Pool> {
        Rc::into_inner(self).and_then(|s| s.pool)
    }

    /// Serves one request; never fails (errors become responses). The stages, in
    /// order: route, admit, check the head, dispatch to the loop or the pool, await
    /// the response head under the deadline, then answer and finish in the background.
    pub async fn handle(
        self: Rc<Self>,
        mut req: Request<Incoming>,
        local: Authority,
        peer: Peer,
    ) -> Result<Response<ResponseBody>, Infallible> {
        let start = Instant::now();
        let span = RequestSpan::start(req.headers(), req.method().as_str(), SystemTime::now());
        let client = proxy::resolve(&self.front.proxies, peer.addr, req.headers_mut());
        let kept_id = match self.front.keep_request_id {
            KeepRequestId::Always => request_id(req.headers()),
            KeepRequestId::Proxies if self.front.proxies.trusts_peer(peer.addr.map(|a| a.ip())) => {
                request_id(req.headers())
            }
            _ => None,
        };
        let mounted_at = match &self.front.root_path {
            Some(root) => unmount(&mut req, root),
            None => None,
        };
        let (app, mut log) = self.route(&req, start, kept_id);
        let trace = span.as_ref().map(RequestSpan::parent);
        log.span = span;
        if let Some(original) = mounted_at {
            // The log shows what the client asked for.
            log.path = original;
        }
        log.client = client.address;
        // The guest is given the id the log and the response carry.
        req.headers_mut()
            .insert(X_REQUEST_ID, header_value(&log.id));
        let Some(app) = app else {
            return Ok(log.finish_with(plain(StatusCode::NOT_FOUND, "no_app")));
        };
        if has_dot_segments(req.uri().path()) {
            return Ok(log.finish_with(plain(StatusCode::BAD_REQUEST, "bad_path")));
        }
        let worker = Worker {
            in_flight: &self.in_flight,
            limit_concurrency: self.front.limit_concurrency,
            memory: &self.front.memory,
        };
        let mut admission = match Admission::admit(
            worker,
            app.limits.max_memory as u64,
            app.tenant_slots.as_deref(),
            &app.slots,
        ) {
            Ok(admission) => admission,
            Err(refusal) => return Ok(self.refuse(&app, log, refusal)),
        };
        if let Some(len) = content_length(&req)
            && len > self.front.max_body
        {
            return Ok(log.refuse(RequestError::BodyTooLarge {
                limit: self.front.max_body,
            }));
        }
        let req = match with_absolute_uri(req, &local, peer.tls || client.https) {
            Ok(req) => req,
            Err(cause) => return Ok(log.finish_with(plain(StatusCode::BAD_REQUEST, cause))),
        };
        let ctx = RunContext {
            id: log.id.clone(),
            deadline: start + app.timeout,
            cancel: CancellationToken::new(),
            trace,
        };
        let too_large = Arc::new(AtomicBool::new(false));
        let req = req.map(|b| {
            RequestBody::new(
                b,
                self.front.max_body,
                too_large.clone(),
                ctx.cancel.clone(),
            )
        });
        // Dropping the guard (the client left, or the body is done) cancels the run.
        let cancel_on_drop = ctx.cancel.clone().drop_guard();
        let (reply, pending) = run::channel();
        if let Err(e) = self.dispatch(&app, req, &ctx, reply, &mut admission) {
            return Ok(log.refuse(e));
        }
        let head = match self.await_head(pending.head, &ctx).await {
            _ if too_large.load(Ordering::Relaxed) => Err(RequestError::BodyTooLarge {
                limit: self.front.max_body,
            }),
            head => head,
        };
        Ok(answer(
            head,
            pending.done,
            ctx,
            cancel_on_drop,
            log,
            admission,
        ))
    }

    /// Route: the app for the request's host and path, and its access log line.
    fn route(
        &self,
        req: &Request<Incoming>,
        start: Instant,
        kept_id: Option<String>,
    ) -> (Option<Arc<App>>, AccessLog) {
        let id = kept_id.unwrap_or_else(|| self.ids.next());
        if self.quota == Some(self.served()) {
            self.quota_reached.notify_one();
        }
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| req.headers().get(HOST)?.to_str().ok())
            .unwrap_or("");
        let app = self.table().find(host, req.uri().path()).cloned();
        let log = AccessLog {
            id,
            method: req.method().to_string(),
            path: req.uri().path().to_string(),
            query: match req.uri().query() {
                Some(query) if self.front.log_query => query.to_string(),
                Some(_) => "<redacted>".to_string(),
                None => String::new(),
            },
            host: host.to_string(),
            http: version_name(req.version()),
            user_agent: req
                .headers()
                .get(USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string(),
            trace_id: trace_id(req.headers()),
            mode: app.as_ref().map(|a| a.mode()),
            compiler: app.as_ref().map(|a| a.compiler),
            client: String::new(),
            start,
            app: app.as_ref().map_or_else(|| "-".into(), |a| a.name.clone()),
            version: app.as_ref().map_or(0, |a| a.version),
            recorder: self.recorder.clone(),
            tenant: app.as_ref().and_then(|a| a.tenant.clone()),
            span: None,
        };
        (app, log)
    }

    /// Answers a request admission refused, and counts why.
    fn refuse(&self, app: &App, log: AccessLog, refusal: Refusal) -> Response<ResponseBody> {
        self.recorder.rejected(&app.name, refusal.label);
        log.refuse(refusal.error())
    }

    /// Dispatch: starts the run on the loop, or queues it for the pool; or says why
    /// the pool cannot take it (counted here).
    fn dispatch(
        &self,
        app: &Arc<App>,
        req: Request<RequestBody>,
        ctx: &RunContext,
        reply: run::Reply,
        admission: &mut Admission,
    ) -> Result<(), RequestError> {
        match (&self.pool, app.mode()) {
            (_, Mode::Loop) => {
                on_loop::spawn(app.clone(), req, ctx.clone(), reply);
                Ok(())
            }
            (Some(pool), Mode::Pool) => {
                if let Err(refusal) = admission.take_pool_share(app.tenant_slots.as_deref()) {
                    self.recorder.rejected(&app.name, refusal.label);
                    return Err(refusal.error());
                }
                let job = Job {
                    app: app.clone(),
                    req,
                    ctx: ctx.clone(),
                    reply,
                    queued_at: Instant::now(),
                };
                pool.submit(job).inspect_err(|_| {
                    self.recorder.rejected(&app.name, "pool_full");
                })
            }
            (None, Mode::Pool) => Err(RequestError::Host(anyhow::anyhow!(
                "pool mode without a pool"
            ))),
        }
    }

    /// Await head: the guest's response head, or why there is none, by the deadline.
    async fn await_head(&self, head: oneshot::Receiver<run::Head>, ctx: &RunContext) -> run::Head {
        match tokio::time::timeout_at(ctx.deadline.into(), head).await {
            Ok(Ok(head)) => head,
            // The run ended without a word: a bug, not the guest's doing.
            Ok(Err(_)) => Err(RequestError::Host(anyhow::anyhow!(
                "the request's run ended without a reply"
            ))),
            // Deadline: the pool job may be stuck in a host call; cancel it and answer now.
            Err(_) => {
                ctx.cancel.cancel();
                Err(RequestError::Timeout)
            }
        }
    }
}

/// Answer and finish: the response to send (the guest's, or the error's), with its
/// request id. In the background, the admission waits for the store to be gone, and
/// the log line for the body's end too (it tells the bytes sent); a run still going at the deadline has its response cut (see
/// [`body::CancelOnAbort`]), and so has a response still unsent then.
fn answer(
    head: run::Head,
    done: oneshot::Receiver<Outcome>,
    ctx: RunContext,
    cancel_on_drop: DropGuard,
    log: AccessLog,
    admission: Admission,
) -> Response<ResponseBody> {
    let (mut response, head_error) = match head {
        Ok(response) => (response, None),
        Err(e) => (error_response(&e, &log.id), Some(e)),
    };
    response
        .headers_mut()
        .insert("x-request-id", header_value(&log.id));
    let status = response.status();
    let (parts, body) = response.into_parts();
    let length = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .or_else(|| http_body::Body::size_hint(&body).exact());
    let (body, abort) = body::CancelOnAbort::new(body, cancel_on_drop, length);
    let body = body.boxed_unsync();
    let deadline = ctx.deadline;
    tokio::task::spawn_local(async move {
        let mut log = log;
        let mut done = done;
        let outcome = tokio::select! {
            outcome = &mut done => outcome,
            () = tokio::time::sleep_until(deadline.into()) => {
                abort.abort();
                done.await
            }
        };
        let outcome = outcome.unwrap_or_default();
        // The store is gone: its memory and slot go back before the body ends.
        drop(admission);
        // The run is over, but a client that stopped reading may leave the rest of
        // the response waiting in the body: the deadline covers the body too.
        tokio::select! {
            biased;
            () = abort.ended() => {}
            () = tokio::time::sleep_until(deadline.into()) => abort.abort(),
        }
        log.finish(
            status,
            &outcome,
            head_error.as_ref().or(outcome.error.as_ref()),
            abort.sent(),
        );
    });
    Response::from_parts(parts, body)
}

fn content_length(req: &Request<Incoming>) -> Option<u64> {
    req.headers()
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A well-formed incoming `X-Request-Id`: one value of 1-128 characters, each a
/// letter, a digit or one of `-_.:/+=@~` (so it cannot break a log line or a header).
fn request_id(headers: &http::HeaderMap) -> Option<String> {
    let mut values = headers.get_all(X_REQUEST_ID).iter();
    let value = values.next()?.to_str().ok()?;
    let ok = values.next().is_none()
        && (1..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@~".contains(&b));
    ok.then(|| value.to_string())
}

/// The trace id of a valid W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`, ids not
/// all zero), for the access log; the guest gets the header as sent.
fn trace_id(headers: &http::HeaderMap) -> String {
    let Some(value) = headers.get("traceparent").and_then(|v| v.to_str().ok()) else {
        return String::new();
    };
    let parts: Vec<&str> = value.trim().split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let valid = parts.len() >= 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1].bytes().any(|b| b != b'0')
        && parts[2].bytes().any(|b| b != b'0')
        && (parts[0] != "00" || parts.len() == 4);
    if valid {
        parts[1].to_string()
    } else {
        String::new()
    }
}

fn version_name(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_11 => "1.1",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "?",
    }
}

/// Whether a path has `.` or `..` segments, which proxies in front may resolve
/// differently than the route table does: refused rather than guessed at.
fn has_dot_segments(path: &str) -> bool {
    path.split('/').any(|segment| {
        [".", "..", "%2e", "%2e%2e", ".%2e", "%2e."]
            .iter()
            .any(|dots| segment.eq_ignore_ascii_case(dots))
    })
}

/// Gives the URI a scheme and authority (from Host, else the listener's address), as
/// wasi:http requests carry them. A Host header that is not a valid authority, or one
/// that disagrees with an absolute-form URI, is a 400, whose cause this returns.
/// Takes `root` (`--root-path`) off the request's path when it starts with it, and
/// tells the guest where it is mounted (`x-forwarded-prefix`). Returns the path as
/// the client sent it when it was rewritten.
fn unmount(req: &mut Request<Incoming>, root: &str) -> Option<String> {
    if let Ok(value) = HeaderValue::from_str(root) {
        req.headers_mut().insert(proxy::X_FORWARDED_PREFIX, value);
    }
    let path = req.uri().path();
    let rest = strip_root_path(path, root)?;
    let path_and_query = match req.uri().query() {
        Some(query) => format!("{rest}?{query}"),
        None => rest.to_string(),
    };
    let original = path.to_string();
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    *req.uri_mut() = Uri::from_parts(parts).ok()?;
    Some(original)
}

fn with_absolute_uri(
    req: Request<Incoming>,
    local: &Authority,
    https: bool,
) -> Result<Request<Incoming>, &'static str> {
    if let Some(authority) = req.uri().authority() {
        let agrees = req.headers().get(HOST).is_none_or(|host| {
            host.to_str()
                .is_ok_and(|h| h.eq_ignore_ascii_case(authority.as_str()))
        });
        return if agrees {
            Ok(req)
        } else {
            Err("host_mismatch")
        };
    }
    let authority = match req.headers().get(HOST) {
        None => local.clone(),
        Some(host) => match host.to_str().ok().and_then(|h| h.parse::<Authority>().ok()) {
            Some(authority) => authority,
            None => return Err("bad_host_header"),
        },
    };
    let (mut parts, body) = req.into_parts();
    let mut uri = parts.uri.into_parts();
    uri.scheme = Some(if https { Scheme::HTTPS } else { Scheme::HTTP });
    uri.authority = Some(authority);
    if uri.path_and_query.is_none() {
        uri.path_and_query = Some("/".parse().expect("`/` is a valid path"));
    }
    parts.uri = Uri::from_parts(uri).map_err(|_| "bad_uri")?;
    Ok(Request::from_parts(parts, body))
}

/// Request ids: a random per-worker base plus a counter, as 16 hex digits.
struct RequestIds {
    base: u64,
    next: Cell<u64>,
}

impl RequestIds {
    fn new() -> RequestIds {
        use std::hash::{BuildHasher, RandomState};
        let base = RandomState::new().hash_one(std::process::id());
        RequestIds {
            base,
            next: Cell::new(0),
        }
    }

    fn next(&self) -> String {
        let n = self.next.get();
        self.next.set(n + 1);
        format!("{:016x}", self.base.wrapping_add(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn only_a_well_formed_request_id_is_kept() {
        let id = |v: &str| request_id(&headers(&[("x-request-id", v)]));
        assert_eq!(
            id("abc-123_x.y:z/+=@~").as_deref(),
            Some("abc-123_x.y:z/+=@~")
        );
        assert_eq!(id(&"a".repeat(128)).map(|s| s.len()), Some(128));
        for bad in [
            "",
            "has space",
            "quote\"",
            "semi;colon",
            "ü",
            &"a".repeat(129),
        ] {
            assert_eq!(id(bad), None, "{bad:?}");
        }
        // Two values: which one would be meant? Neither.
        let two = headers(&[("x-request-id", "a"), ("x-request-id", "b")]);
        assert_eq!(request_id(&two), None);
        assert_eq!(request_id(&headers(&[])), None);
    }

    #[test]
    fn a_trace_id_comes_from_a_valid_traceparent_only() {
        let t = |v: &str| trace_id(&headers(&[("traceparent", v)]));
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(t(good), "4bf92f3577b34da6a3ce929d0e0e4736");
        // A later version may carry more fields.
        assert_eq!(
            t("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f35-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert_eq!(t(bad), "", "{bad}");
        }
    }
}
