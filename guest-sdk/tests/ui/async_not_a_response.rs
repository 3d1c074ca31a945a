use wasmloop_sdk::{Request, handler};

#[handler]
async fn hello(_req: Request) -> Vec<u32> {
    vec![42]
}

fn main() {}
