use wasmloop_sdk::{Request, handler};

#[handler(path = "/")]
fn hello(_req: Request) -> &'static str {
    "hello"
}

fn main() {}
