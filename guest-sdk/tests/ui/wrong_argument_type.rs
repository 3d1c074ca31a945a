use wasmloop_sdk::handler;

#[handler]
fn hello(path: String) -> String {
    path
}

fn main() {}
