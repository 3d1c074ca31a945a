//! The benchmark routes as a plain `fn` handler (wasi:http 0.2: wasmloop's pool, and
//! what `wasmtime serve` runs):
//!
//! | route | answers | after |
//! |---|---|---|
//! | `/` | `Hello, world!\n` | nothing |
//! | `/sleep` | `slept\n` | a 10 ms sleep (holds the pool thread) |
//! | `/cpu` | `done\n` | 2 ms of computing |
//! | `/spin?ms=N` | `done\n` | N ms of computing (default 50) |

use std::time::Duration;

use bench_work::{millis, spin};
use wasmloop_sdk::{Request, handler};

#[handler]
fn bench(req: Request) -> &'static str {
    match req.uri().path() {
        "/sleep" => {
            std::thread::sleep(Duration::from_millis(10));
            "slept\n"
        }
        "/cpu" => {
            spin(Duration::from_millis(2));
            "done\n"
        }
        "/spin" => {
            spin(Duration::from_millis(millis(req.uri().query())));
            "done\n"
        }
        _ => "Hello, world!\n",
    }
}
