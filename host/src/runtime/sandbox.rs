//! What one request's `Store` holds, and the limits set on it.
//!
//! Every request gets a fresh store: WASI with no files, no environment and no sockets,
//! wasi:http whose outbound requests go only where [`outbound`] allows, a
//! memory limiter that remembers when it refused a grow (so the error can be called
//! `memory_limit` rather than a trap), and the request's fuel. How the store is then
//! driven (preempted on the loop, or under a trapping deadline on the pool) is left
//! to `worker/run/`.
//!
//! One thing the pool needs from here: the epoch deadline only interrupts WebAssembly
//! code, and a sync guest blocked in a host call (`wasi:io/poll`, a blocking stream
//! read or write, a splice) would hold its pool thread long after its request was
//! answered. [`bound_blocking_calls`] makes every such wait end at the request's
//! deadline, or when its client leaves, with the same trap; and an outbound request's
//! own timeouts are capped at what is left of the request's deadline, on both paths.

use std::sync::Arc;
use std::time::Instant;

use crate::metrics::recorder::{LiveInstance, outbound_denied};
use crate::runtime::guest_output::GuestOutput;
use crate::runtime::outbound::{self, AddressPolicy};
use crate::telemetry::traces::{OutboundSpan, Parent};
use tokio_util::sync::CancellationToken;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store, StoreContextMut, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};
use wasmtime_wasi_io::bindings::wasi::io::poll as async_poll;
use wasmtime_wasi_io::bindings::wasi::io::streams as async_streams;
use wasmtime_wasi_io::poll::DynPollable;
use wasmtime_wasi_io::streams::{DynInputStream, DynOutputStream, StreamResult};

/// The limits every request's store runs under.
#[derive(Clone)]
pub struct Limits {
    /// Fuel the request may burn.
    pub fuel: u64,
    /// Bytes of linear memory one instance may reach.
    pub max_memory: usize,
    /// Hosts (`host` or `host:port`) guests may send requests to.
    pub allow_outbound: Arc<[String]>,
    /// Addresses they may not reach whatever the hosts resolve to.
    pub addresses: Arc<AddressPolicy>,
    /// What the guest reads through wasi:config.
    pub vars: Arc<WasiConfigVariables>,
}

/// The data of one request's store.
pub struct Sandbox {
    wasi: WasiCtx,
    /// The guest's stdout and stderr, retagged when the store serves another request.
    output: [GuestOutput; 2],
    http: WasiHttpCtx,
    table: ResourceTable,
    memory: MemoryLimiter,
    outbound: OutboundPolicy,
    vars: Arc<WasiConfigVariables>,
    /// Times the guest was made to yield at an epoch tick.
    pub forced_yields: u64,
    /// When blocking waits must end (pool stores; see [`bound_blocking_calls`]).
    pub stop_waiting: Option<StopWaiting>,
    _live: LiveInstance,
}

/// When a request's blocking host calls must give up: its deadline, or its client
/// gone (the token is cancelled).
#[derive(Clone)]
pub struct StopWaiting {
    pub deadline: Instant,
    pub cancel: CancellationToken,
}

impl StopWaiting {
    /// Resolves with the trap to raise, at the deadline or when the client leaves.
    async fn reached(self) -> wasmtime::Error {
        tokio::select! {
            () = tokio::time::sleep_until(self.deadline.into()) => {}
            () = self.cancel.cancelled() => {}
        }
        Trap::Interrupt.into()
    }
}

impl Sandbox {
    /// A store for one request, with its fuel and memory limit already set.
    /// The guest's stdout and stderr go to the log, tagged with `request_id` and `app`.
    pub fn store(
        engine: &Engine,
        limits: &Limits,
        app: &Arc<str>,
        request_id: &str,
    ) -> wasmtime::Result<Store<Sandbox>> {
        let id: Arc<str> = request_id.into();
        let mut wasi = WasiCtx::builder();
        let output = [
            GuestOutput::new(id.clone(), app.clone(), "stdout"),
            GuestOutput::new(id.clone(), app.clone(), "stderr"),
        ];
        wasi.stdout(output[0].clone())
            .stderr(output[1].clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let sandbox = Sandbox {
            wasi: wasi.build(),
            output,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            memory: MemoryLimiter {
                max: limits.max_memory,
                refused: false,
                reached: 0,
            },
            outbound: OutboundPolicy {
                allow: limits.allow_outbound.clone(),
                addresses: limits.addresses.clone(),
                request_id: id.clone(),
                app: app.clone(),
                deadline: None,
                trace: None,
            },
            vars: limits.vars.clone(),
            forced_yields: 0,
            stop_waiting: None,
            _live: LiveInstance::new(),
        };
        let mut store = Store::new(engine, sandbox);
        store.limiter(|s| &mut s.memory);
        store.set_fuel(limits.fuel)?;
        Ok(store)
    }

    /// wasi:config for this store: the app's variables.
    pub fn config(&mut self) -> WasiConfig<'_> {
        WasiConfig::from(&*self.vars)
    }

    /// The span the guest's outbound requests are children of (the newest request's,
    /// in a store serving several at once); none without `--otlp-traces`.
    pub fn set_trace(&mut self, parent: Option<Parent>) {
        self.outbound.trace = parent;
    }

    /// The request's deadline: outbound requests' timeouts are capped at what is left
    /// of it.
    pub fn set_deadline(&mut self, deadline: Instant) {
        self.outbound.deadline = Some(deadline);
    }

    /// Readies a store that served a request for the next one, `request_id` with
    /// `fuel` until `deadline`: its output tagged anew, its counters cleared. What
    /// the guest keeps in its memory stays: that is the point of reuse.
    pub fn next_request(&mut self, request_id: &str, deadline: Instant) {
        let id: Arc<str> = request_id.into();
        for stream in &self.output {
            stream.next_request(id.clone());
        }
        self.outbound.request_id = id;
        self.outbound.deadline = Some(deadline);
        self.forced_yields = 0;
        self.memory.refused = false;
        self.stop_waiting = None;
    }

    /// Readies a store that serves several requests at once for one more,
    /// `request_id` until `deadline`: its output is tagged with the newest request,
    /// its outbound calls end by the latest deadline; its counters go on.
    pub fn join_request(&mut self, request_id: &str, deadline: Instant) {
        let id: Arc<str> = request_id.into();
        for stream in &self.output {
            stream.next_request(id.clone());
        }
        self.outbound.request_id = id;
        self.outbound.deadline = self.outbound.deadline.max(Some(deadline));
    }

    /// The most linear memory the instance has reached, in bytes.
    pub fn memory_reached(&self) -> usize {
        self.memory.reached
    }

    /// Whether the memory limiter refused a grow during this request.
    pub fn memory_refused(&self) -> bool {
        self.memory.refused
    }
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Sandbox {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// The `wasi:io` interfaces the sync WASI linker defines (0.2.x imports of any patch
/// release resolve to them).
const WASI_IO_POLL: &str = "wasi:io/poll@0.2.12";
const WASI_IO_STREAMS: &str = "wasi:io/streams@0.2.12";

/// Runs one blocking host call of a sync guest on WASI's runtime, ended by `stop`
/// with [`Trap::Interrupt`] (which the pool reports as `timeout`, or the client gone).
fn until_stopped<T>(
    stop: Option<StopWaiting>,
    call: impl Future<Output = wasmtime::Result<T>>,
) -> wasmtime::Result<T> {
    wasmtime_wasi::runtime::in_tokio(async move {
        let Some(stop) = stop else {
            return call.await;
        };
        tokio::select! {
            done = call => done,
            trap = stop.reached() => Err(trap),
        }
    })
}

/// A blocking stream call's result as the guest sees it: a stream error becomes a
/// resource in the guest's table (or a trap, for the errors that trap).
type GuestStreamResult<T> = wasmtime::Result<(Result<T, async_streams::StreamError>,)>;

/// Hands a stream call's result to the guest, converting its error as WASI does.
fn to_guest<T>(table: &mut ResourceTable, result: StreamResult<T>) -> GuestStreamResult<T> {
    match result {
        Ok(value) => Ok((Ok(value),)),
        Err(e) => Ok((Err(async_streams::Host::convert_stream_error(table, e)?),)),
    }
}

/// The store's stop and its table, for one host call.
fn stop_and_table<'a>(
    store: &'a mut StoreContextMut<'_, Sandbox>,
) -> (Option<StopWaiting>, &'a mut ResourceTable) {
    let sandbox = store.data_mut();
    (sandbox.stop_waiting.clone(), &mut sandbox.table)
}

/// Replaces, in a sync linker, every `wasi:io` call that can wait with the same call
/// ended by the store's [`StopWaiting`]: `poll`, `pollable.block`, and the streams'
/// `blocking-read`, `blocking-skip`, `blocking-write-and-flush`,
/// `blocking-write-zeroes-and-flush`, `blocking-flush` and `blocking-splice`. Every
/// other blocking wait of a sync guest (clock sleeps, an outbound response, a body
/// chunk) is built on one of these.
pub fn bound_blocking_calls(linker: &mut Linker<Sandbox>) -> anyhow::Result<()> {
    use async_streams::{HostInputStream as In, HostOutputStream as Out};
    type Input = Resource<DynInputStream>;
    type Output = Resource<DynOutputStream>;
    linker.allow_shadowing(true);
    let mut poll = linker.instance(WASI_IO_POLL)?;
    poll.func_wrap(
        "[method]pollable.block",
        |mut store: StoreContextMut<'_, Sandbox>, (pollable,): (Resource<DynPollable>,)| {
            let (stop, table) = stop_and_table(&mut store);
            until_stopped(stop, async_poll::HostPollable::block(table, pollable))
        },
    )?;
    poll.func_wrap(
        "poll",
        |mut store: StoreContextMut<'_, Sandbox>, (pollables,): (Vec<Resource<DynPollable>>,)| {
            let (stop, table) = stop_and_table(&mut store);
            until_stopped(stop, async_poll::Host::poll(table, pollables)).map(|r| (r,))
        },
    )?;
    let mut streams = linker.instance(WASI_IO_STREAMS)?;
    streams.func_wrap(
        "[method]input-stream.blocking-read",
        |mut store: StoreContextMut<'_, Sandbox>, (stream, len): (Input, u64)| {
            let (stop, table) = stop_and_table(&mut store);
            let read = until_stopped(stop, async {
                Ok(In::blocking_read(table, stream, len).await)
            })?;
            to_guest(table, read)
        },
    )?;
    streams.func_wrap(
        "[method]input-stream.blocking-skip",
        |mut store: StoreContextMut<'_, Sandbox>, (stream, len): (Input, u64)| {
            let (stop, table) = stop_and_table(&mut store);
            let skipped = until_stopped(stop, async {
                Ok(In::blocking_skip(table, stream, len).await)
            })?;
            to_guest(table, skipped)
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-write-and-flush",
        |mut store: StoreContextMut<'_, Sandbox>, (stream, bytes): (Output, Vec<u8>)| {
            let (stop, table) = stop_and_table(&mut store);
            let written = until_stopped(stop, async {
                Ok(Out::blocking_write_and_flush(table, stream, bytes).await)
            })?;
            to_guest(table, written)
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-write-zeroes-and-flush",
        |mut store: StoreContextMut<'_, Sandbox>, (stream, len): (Output, u64)| {
            let (stop, table) = stop_and_table(&mut store);
            let written = until_stopped(stop, async {
                Ok(Out::blocking_write_zeroes_and_flush(table, stream, len).await)
            })?;
            to_guest(table, written)
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-flush",
        |mut store: StoreContextMut<'_, Sandbox>, (stream,): (Output,)| {
            let (stop, table) = stop_and_table(&mut store);
            let flushed =
                until_stopped(stop, async { Ok(Out::blocking_flush(table, stream).await) })?;
            to_guest(table, flushed)
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-splice",
        |mut store: StoreContextMut<'_, Sandbox>, (dest, src, len): (Output, Input, u64)| {
            let (stop, table) = stop_and_table(&mut store);
            let spliced = until_stopped(stop, async {
                Ok(Out::blocking_splice(table, dest, src, len).await)
            })?;
            to_guest(table, spliced)
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Refuses any grow past `max` with an error (which traps the guest), and notes it;
/// remembers the most memory granted.
struct MemoryLimiter {
    max: usize,
    refused: bool,
    reached: usize,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.refused = true;
            wasmtime::bail!(
                "memory limit reached: {desired} bytes asked, {} allowed",
                self.max
            );
        }
        self.reached = self.reached.max(desired);
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        // A grow the instance allocator refused (it is sized from the same limit).
        self.refused = true;
        Err(error)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a million is far past any real handler.
        Ok(desired <= 1_000_000)
    }
}

/// Lets outbound wasi:http requests through only to the hosts the app may reach, and
/// only to addresses the floor allows ([`outbound`]). A refused request fails inside
/// the guest with `HTTP-request-denied`; nothing is sent. The log line says which
/// request, app and address, and why.
#[derive(Clone)]
struct OutboundPolicy {
    allow: Arc<[String]>,
    addresses: Arc<AddressPolicy>,
    request_id: Arc<str>,
    app: Arc<str>,
    /// The request's deadline, which caps each outbound request's timeouts.
    deadline: Option<Instant>,
    /// The request's span, which each outbound request's span is a child of.
    trace: Option<Parent>,
}

impl OutboundPolicy {
    fn deny(&self, uri: &http::Uri, reason: &'static str, addr: Option<std::net::SocketAddr>) {
        outbound_denied(&self.app, reason);
        let addr = addr.map(|a| a.to_string()).unwrap_or_default();
        tracing::warn!(
            id = %self.request_id, app = %self.app, %uri, %reason, %addr,
            "outbound request denied: {}",
            match reason {
                "not_listed" => "host not in the app's allowed hosts (within --allow-outbound)",
                "own_listener" => "the address is one of this server's own listeners",
                _ => "the address is not a public one (open a range with --allow-outbound-net)",
            }
        );
    }
}

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        drop(fut);
        let mut request = request;
        let uri = request.uri().clone();
        let span = self
            .trace
            .as_ref()
            .and_then(|parent| OutboundSpan::start(parent, &mut request));
        if !outbound::listed(&self.allow, &uri) {
            self.deny(&uri, "not_listed", None);
            if let Some(span) = span {
                span.end(Err("denied".into()));
            }
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        let (addresses, denial) = (self.addresses.clone(), self.clone());
        let options = match self.deadline {
            Some(deadline) => Some(outbound::cap_timeouts(
                options,
                deadline.saturating_duration_since(Instant::now()),
            )),
            None => options,
        };
        Box::new(async move {
            use http_body_util::BodyExt;
            let sent = outbound::send(request, options, addresses).await;
            if let Some(span) = span {
                span.end(match &sent {
                    Ok((response, _)) => Ok(response.status().as_u16()),
                    Err(Ok(_)) => Err("denied".into()),
                    // The error's variant (`ConnectionRefused`, `DnsError`...).
                    Err(Err(e)) => Err(format!("{e:?}")
                        .split(|c: char| !c.is_alphanumeric() && c != '_')
                        .next()
                        .unwrap_or_default()
                        .to_string()),
                });
            }
            match sent {
                Ok((response, io)) => Ok((
                    response.map(BodyExt::boxed_unsync),
                    Box::new(io) as Box<dyn Future<Output = _> + Send>,
                )),
                Err(Ok(denied)) => {
                    denial.deny(&uri, denied.reason, Some(denied.addr));
                    Err(wasmtime_wasi_http::Error::HttpRequestDenied)
                }
                Err(Err(e)) => Err(e),
            }
        })
    }
}
