//! The admin listener, served by the master: `/metrics` (Prometheus text for all
//! workers; a tenant's token sees its own apps' series), `/doctor` (the doctor's
//! report as JSON), both behind a bearer token; `/healthz` (every fault, for people
//! and monitors), `/livez` and `/readyz` (for orchestrators), open and saying
//! nothing secret; and the deploy API under `/v1`. It is as hardened as the public
//! listener ([`AdminGuard`]). It owns the
//! master's metric view, [`AdminState`]: the latest snapshot of every worker and a
//! minute of history for the doctor's window.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use subtle::ConstantTimeEq as _;
use tokio::net::TcpListener;

use crate::deploy::context::DeployContext;
use crate::deploy::reply::{Refused, unauthorized};
use crate::doctor::{self, Facts};
use crate::metrics::exposition::{Aggregate, MasterFacts};
use crate::metrics::{Counters, Snapshot};
use crate::registry::follow::Health;

/// How far back the doctor looks.
pub const WINDOW: Duration = Duration::from_secs(60);
/// How often the history takes a sample.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// What the admin endpoints read, updated by the master as reports arrive.
#[derive(Debug)]
pub struct AdminState {
    pub aggregate: Aggregate,
    pub master: MasterFacts,
    pub facts: Facts,
    /// Merged counters, one sample a second, oldest first, covering [`WINDOW`].
    history: VecDeque<(Instant, Counters)>,
    /// Why the node should not get traffic yet (or any more); `None` when ready.
    pub not_ready: Option<String>,
    /// Since when, and why, a shared registry does not answer.
    pub registry_down: Option<(Instant, String)>,
}

/// The state shared by the master and the admin connections.
pub type SharedState = Arc<Mutex<AdminState>>;

/// Locks the shared state. A panic while it was held (a bug) leaves counters that
/// may be one update off, which is better than an admin listener that stops
/// answering: the lock is taken back and the poisoning logged.
pub fn lock(state: &SharedState) -> MutexGuard<'_, AdminState> {
    state.lock().unwrap_or_else(|poisoned| {
        tracing::error!("the admin state's lock was poisoned by a panic; carrying on");
        state.clear_poison();
        poisoned.into_inner()
    })
}

impl AdminState {
    pub fn new(facts: Facts, master: MasterFacts) -> AdminState {
        AdminState {
            aggregate: Aggregate::default(),
            master,
            facts,
            history: VecDeque::from([(Instant::now(), Counters::default())]),
            not_ready: Some("starting".into()),
            registry_down: None,
        }
    }

    /// Records what the registry's listener learned: that it answers again, or that
    /// it does not and why.
    pub fn registry_health(&mut self, health: Health) {
        match health {
            Health::Up => {
                if let Some((since, _)) = self.registry_down.take() {
                    tracing::info!(
                        down_ms = since.elapsed().as_millis() as u64,
                        "the registry answers again; catching up"
                    );
                }
                self.master.registry_up = true;
            }
            Health::Down(why) => {
                match &mut self.registry_down {
                    None => {
                        tracing::warn!(
                            "the registry is unreachable, serving what this node has: {why}"
                        );
                        self.master.registry_outages += 1;
                        self.registry_down = Some((Instant::now(), why));
                    }
                    Some((_, last)) => *last = why,
                }
                self.master.registry_up = false;
            }
        }
    }

    /// Forgets the series of apps `keep` refuses, in the totals and the history.
    pub fn retain_apps(&mut self, keep: impl Fn(&str) -> bool) {
        self.aggregate.retain_apps(&keep);
        for (_, counters) in &mut self.history {
            counters.retain_apps(&keep);
        }
    }

    /// Takes a history sample if one is due; called from the master's tick.
    pub fn sample(&mut self) {
        let now = Instant::now();
        if self
            .history
            .back()
            .is_some_and(|(at, _)| now.duration_since(*at) < SAMPLE_EVERY)
        {
            return;
        }
        self.history
            .push_back((now, self.aggregate.merged().counters));
        while self
            .history
            .get(1)
            .is_some_and(|(at, _)| now.duration_since(*at) >= WINDOW)
        {
            self.history.pop_front();
        }
    }

    /// The doctor's report over the window (or since start, when younger).
    pub fn doctor(&self) -> doctor::Report {
        let now: Snapshot = self.aggregate.merged();
        let (since, before) = self
            .history
            .front()
            .map_or((Instant::now(), Counters::default()), |(at, c)| {
                (*at, c.clone())
            });
        let mut facts = self.facts.clone();
        facts.workers = self.master.workers;
        facts.cores = self.master.cores;
        doctor::diagnose(&before, &now, since.elapsed(), &facts)
    }
}

/// The deploy API, for a server that serves a registry: empty until the registry
/// is open (a node waiting for its database answers `/v1` with 503 meanwhile).
#[derive(Clone, Default)]
pub struct ApiSlot {
    registry_mode: bool,
    api: Arc<OnceLock<Arc<DeployContext>>>,
}

impl ApiSlot {
    /// A slot for a server with a registry, to be filled by [`ApiSlot::open`].
    pub fn registry() -> ApiSlot {
        ApiSlot {
            registry_mode: true,
            api: Arc::default(),
        }
    }

    /// The registry is open: serve the API.
    pub fn open(&self, api: Arc<DeployContext>) {
        let _ = self.api.set(api);
    }
}

/// What the admin listener protects itself with: the same head-read timeout as the
/// public listener, one request per connection (nothing idles), a cap on open
/// connections, and the token that `/metrics` and `/doctor` ask for when the server
/// has no registry (with one, its admin and tenant tokens count).
#[derive(Clone)]
pub struct AdminGuard {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    /// `--admin-token-file` / `WASMLOOP_ADMIN_TOKEN`, when the operator set one.
    pub token: Option<Arc<str>>,
    /// TLS, when the operator gave a certificate.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Serves the admin endpoints until the task is dropped; the `/v1` API too when the
/// server serves a registry.
pub async fn serve(listener: TcpListener, state: SharedState, api: ApiSlot, guard: AdminGuard) {
    let slots = Arc::new(tokio::sync::Semaphore::new(guard.max_connections));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        // Over the cap, a connection is closed at once: a flood of idle sockets
        // cannot keep probes and deploys out for long.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let (state, api, guard) = (state.clone(), api.clone(), guard.clone());
        tokio::spawn(async move {
            match guard.tls.clone() {
                None => serve_connection(stream, state, api, guard).await,
                Some(acceptor) => {
                    let handshake = guard.header_read_timeout;
                    if let Ok(Ok(stream)) =
                        tokio::time::timeout(handshake, acceptor.accept(stream)).await
                    {
                        serve_connection(stream, state, api, guard).await;
                    }
                }
            }
            drop(slot);
        });
    }
}

/// One request on one connection, its head read under the timeout.
async fn serve_connection<S>(stream: S, state: SharedState, api: ApiSlot, guard: AdminGuard)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let timeout = guard.header_read_timeout;
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (state, api, guard) = (state.clone(), api.clone(), guard.clone());
        async move {
            // A deploy that asks for its steps gets them as they happen.
            if let Some(ctx) = api.api.get()
                && let Some(app) = crate::deploy::api::wants_progress(&req)
            {
                return Ok::<_, Infallible>(crate::deploy::api::deploy_with_progress(
                    req, app, ctx,
                ));
            }
            Ok(route(req, &state, &api, &guard).await.map(BodyExt::boxed))
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn route(
    req: Request<Incoming>,
    state: &SharedState,
    api: &ApiSlot,
    guard: &AdminGuard,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if path.starts_with("/v1/") {
        let reply = match (api.api.get(), api.registry_mode) {
            (Some(api), _) => crate::deploy::api::handle(req, api).await,
            (None, true) => Some(reply_text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is waiting for its registry; try again shortly\n",
            )),
            (None, false) => None,
        };
        return reply.unwrap_or_else(|| {
            reply_text(
                StatusCode::NOT_FOUND,
                "the admin API serves deploys when the server runs without a component (serve --data-dir DIR)\n",
            )
        });
    }
    let reader = match path {
        "/metrics" | "/doctor" => match reader(&req, api, guard).await {
            Ok(reader) => reader,
            Err(refusal) => return refusal,
        },
        _ => Reader::Operator,
    };
    respond(&req, state, &reader)
}

/// Who reads `/metrics` or `/doctor`.
enum Reader {
    /// The operator (or anyone, on a server without tenants and without a token).
    Operator,
    /// A tenant, who sees its own apps' series only.
    Tenant(String),
}

/// Checks the bearer token of a `/metrics` or `/doctor` request.
async fn reader(
    req: &Request<Incoming>,
    api: &ApiSlot,
    guard: &AdminGuard,
) -> Result<Reader, Response<Full<Bytes>>> {
    let token = crate::deploy::api::bearer(req);
    let configured = |t: &str| {
        guard
            .token
            .as_deref()
            .is_some_and(|c| bool::from(c.as_bytes().ct_eq(t.as_bytes())))
    };
    if token.as_deref().is_some_and(configured) {
        return Ok(Reader::Operator);
    }
    match (api.api.get(), api.registry_mode) {
        (Some(ctx), _) => {
            if token.as_deref().is_some_and(|t| ctx.is_admin_token(t)) {
                return Ok(Reader::Operator);
            }
            if token.is_none() {
                return Err(unauthorized(
                    "this call needs the admin token (every series) or a tenant token \
                     (that tenant's series): send `Authorization: Bearer TOKEN`",
                ));
            }
            match ctx.tenant(token).await {
                Ok(tenant) => Ok(Reader::Tenant(tenant.name)),
                Err(Refused(reply)) => Err(*reply),
            }
        }
        (None, true) => Err(reply_text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is waiting for its registry; try again shortly\n",
        )),
        (None, false) if guard.token.is_none() => Ok(Reader::Operator),
        (None, false) => Err(unauthorized(
            "this listener needs the admin token (--admin-token-file or WASMLOOP_ADMIN_TOKEN \
             of `wasmloop serve`): send `Authorization: Bearer TOKEN`",
        )),
    }
}

fn respond(req: &Request<Incoming>, state: &SharedState, reader: &Reader) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        );
    }
    let state = lock(state);
    match (req.uri().path(), reader) {
        ("/metrics", Reader::Operator) => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.aggregate.encode(&state.master),
        ),
        ("/metrics", Reader::Tenant(tenant)) => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.aggregate.encode_tenant(tenant),
        ),
        // The doctor speaks of the whole node: the operator's.
        ("/doctor", Reader::Tenant(_)) => reply_text(
            StatusCode::FORBIDDEN,
            "/doctor describes the whole server: it needs the admin token\n",
        ),
        ("/doctor", Reader::Operator) => match serde_json::to_string_pretty(&state.doctor()) {
            Ok(json) => reply(StatusCode::OK, "application/json", json),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("{e}\n"),
            ),
        },
        // For orchestrators: alive as long as the master answers at all.
        ("/livez", _) => reply_text(StatusCode::OK, "ok\n"),
        // For load balancers: registry loaded and workers serving.
        ("/readyz", _) => match &state.not_ready {
            None => reply_text(StatusCode::OK, "ready\n"),
            Some(why) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        // For people and monitors: every fault, or ok.
        ("/healthz", _) => {
            let mut faults = Vec::new();
            if let Some(why) = &state.not_ready {
                faults.push(format!("not ready: {why}"));
            }
            if let Some((since, why)) = &state.registry_down {
                faults.push(format!(
                    "registry unreachable for {} s (serving what this node has): {why}",
                    since.elapsed().as_secs()
                ));
            }
            if faults.is_empty() {
                reply_text(StatusCode::OK, "ok\n")
            } else {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    faults.join("\n") + "\n",
                )
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /doctor, /healthz, /livez or /readyz\n".into(),
        ),
    }
}

fn reply_text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    reply(status, "text/plain", body.to_string())
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    response
}
