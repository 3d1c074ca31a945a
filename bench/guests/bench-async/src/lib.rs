//! The benchmark routes as an `async fn` handler (wasi:http 0.3: wasmloop's loop):
//!
//! | route | answers | after |
//! |---|---|---|
//! | `/` | `Hello, world!\n` | nothing |
//! | `/sleep` | `slept\n` | an awaited 10 ms timer |
//! | `/cpu` | `done\n` | 2 ms of computing |
//! | `/spin?ms=N` | `done\n` | N ms of computing without awaiting (default 50) |

use std::time::Duration;

use bench_work::{millis, spin};
use wasmloop_sdk::{Request, handler, sleep};

#[handler]
async fn bench(req: Request) -> &'static str {
    match req.uri().path() {
        "/sleep" => {
            sleep(Duration::from_millis(10)).await;
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
