use wasmloop_sdk::handler;

#[handler]
fn hello() -> &'static str {
    "hello"
}

fn main() {}
