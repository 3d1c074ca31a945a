use wasmloop_sdk::{Request, handler};

#[handler]
fn hello(req: Request, name: String) -> String {
    format!("{} {name}", req.uri())
}

fn main() {}
