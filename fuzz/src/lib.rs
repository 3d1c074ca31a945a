//! What the fuzz targets share: engines, a handler component, apps and a front door,
//! each built once per process. How to run the targets: fuzz/README.md.

use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::uri::Authority;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use wasmloop::metrics::recorder::Recorder;
use wasmloop::model::compiler::Compiler;
use wasmloop::model::mode::ModeChoice;
use wasmloop::runtime::engine::{self, EngineSizing};
use wasmloop::runtime::sandbox::Limits;
use wasmloop::worker::admission::Slots;
use wasmloop::worker::app::{App, Defaults};
use wasmloop::worker::front_door::{FrontDoor, Peer, Server};
use wasmloop::worker::http::{Http, detach_head};
use wasmloop::worker::routes::RouteTable;
use wasmloop::worker::run::on_pool::Pool;

/// A wasi:http 0.2 handler that returns without answering (the host answers 500):
/// the smallest component that goes through every step of serving a request.
const HANDLER: &str = r#"(component
    (import "wasi:http/types@0.2.0" (instance $types
        (export "incoming-request" (type (sub resource)))
        (export "response-outparam" (type (sub resource)))))
    (alias export $types "incoming-request" (type $request))
    (alias export $types "response-outparam" (type $outparam))
    (core module $m (func (export "handle") (param i32 i32)))
    (core instance $i (instantiate $m))
    (func $handle (param "request" (own $request)) (param "response-out" (own $outparam))
        (canon lift (core func $i "handle")))
    (instance $handler (export "handle" (func $handle)))
    (export "wasi:http/incoming-handler@0.2.0" (instance $handler)))"#;

/// The engine `wasmloop compile` uses.
pub fn compile_engine() -> &'static wasmtime::Engine {
    static ENGINE: OnceLock<wasmtime::Engine> = OnceLock::new();
    ENGINE.get_or_init(|| engine::build_for_compile(Compiler::Cranelift, None).expect("an engine"))
}

/// Small limits for trial instantiations, so a spinning start ends fast.
pub fn small_limits() -> Limits {
    Limits {
        fuel: 10_000_000,
        max_memory: 16 << 20,
        allow_outbound: Vec::new().into(),
        addresses: Default::default(),
        vars: Default::default(),
    }
}

fn defaults() -> Defaults {
    Defaults {
        fuel: 10_000_000,
        max_memory: 16 << 20,
        timeout: Duration::from_secs(1),
        allow_outbound: Vec::new(),
        addresses: Default::default(),
        vars: Vec::new(),
        mode: ModeChoice::Auto,
        limit_concurrency: 64,
        threads: 2,
        tenant_share: 0.5,
        memory_budget: 1 << 30,
        worker_memory: Arc::new(Slots::new(1 << 30)),
        kept_instances: Arc::new(Slots::new(0)),
        workers: 1,
        reuse: Default::default(),
        compiler: Compiler::Cranelift,
    }
}

/// Three apps of the handler above, named `a`, `b` and `c`, on a worker's engine.
pub fn apps() -> &'static [Arc<App>] {
    static APPS: OnceLock<Vec<Arc<App>>> = OnceLock::new();
    APPS.get_or_init(|| {
        let engine = engine::build(
            EngineSizing {
                loop_slots: 16,
                pool_slots: 4,
                kept_slots: 0,
                max_memory: 16 << 20,
            },
            Compiler::Cranelift,
        )
        .expect("an engine");
        let dir = std::env::temp_dir().join(format!("wasmloop-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let wasm = wat::parse_str(HANDLER).expect("valid WAT");
        ["a", "b", "c"]
            .iter()
            .map(|name| {
                let path = dir.join(format!("{name}.wasm"));
                std::fs::write(&path, &wasm).expect("the component written");
                Arc::new(
                    App::from_file(&engine, Compiler::Cranelift, &path, &defaults())
                        .expect("the app loads"),
                )
            })
            .collect()
    })
}

/// A worker's front door on a current-thread loop, serving app `a` for every path.
struct FrontDoorLoop {
    runtime: tokio::runtime::Runtime,
    server: Rc<Server>,
    http: Rc<Http>,
}

thread_local! {
    static FRONT: FrontDoorLoop = {
        let recorder = Arc::new(Recorder::default());
        let pool = Pool::start(2, 16, 0, recorder.clone()).expect("a pool");
        let server = Server::new(
            RouteTable::single(apps()[0].clone()),
            Some(pool),
            FrontDoor {
                max_body: 1 << 20,
                limit_concurrency: 64,
                memory: Arc::new(Slots::new(1 << 30)),
                proxies: Default::default(),
                keep_request_id: wasmloop::config::KeepRequestId::Always,
                log_query: true,
                root_path: Some("/mounted".into()),
            },
            recorder,
        );
        let http = Http::new(32 << 10, 100, Duration::from_secs(5));
        FrontDoorLoop {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime"),
            server,
            http: Rc::new(http),
        }
    };
}

/// Serves `bytes` as everything a client sent on one connection, then its end; reads
/// whatever the server answers.
pub fn serve_connection(bytes: &[u8]) {
    FRONT.with(|front| {
        let local = tokio::task::LocalSet::new();
        local.block_on(&front.runtime, async {
            let (client, server_side) = tokio::io::duplex(64 << 10);
            let server = front.server.clone();
            let authority: Authority = "127.0.0.1:8080".parse().expect("an authority");
            // As the worker's accept loop serves a connection: the head detached
            // from hyper's read buffer first.
            let service = hyper::service::service_fn(move |mut req| {
                detach_head(&mut req);
                server.clone().handle(
                    req,
                    authority.clone(),
                    Peer {
                        addr: Some(([127, 0, 0, 1], 40000).into()),
                        tls: false,
                    },
                )
            });
            let connection = front.http.serve(server_side, service);
            let (mut read, mut write) = tokio::io::split(client);
            let send = async {
                let _ = write.write_all(bytes).await;
                let _ = write.shutdown().await;
            };
            let receive = async {
                let mut answer = Vec::new();
                let _ = read.read_to_end(&mut answer).await;
            };
            let all = async { tokio::join!(connection, send, receive) };
            let _ = tokio::time::timeout(Duration::from_secs(10), all).await;
        });
    });
}
