use wasmloop_sdk::{Request, handler};

#[handler]
fn hello(_req: Request) -> u32 {
    42
}

fn main() {}
