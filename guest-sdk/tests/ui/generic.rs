use wasmloop_sdk::{IntoResponse, Request, handler};

#[handler]
fn hello<R: IntoResponse + Default>(_req: Request) -> R {
    R::default()
}

fn main() {}
