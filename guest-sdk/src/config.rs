//! Configuration variables: what the operator set with `--var KEY=VALUE` (or per app),
//! read through the standard wasi:config interface. One call, no environment parsing.

/// Bindings for wasi:config 0.2.0-rc.1, the version wasmtime 48 provides.
mod bindings {
    wit_bindgen::generate!({
        inline: r#"
            package wasi:config@0.2.0-rc.1;
            interface store {
                variant error { upstream(string), io(string) }
                get: func(key: string) -> result<option<string>, error>;
                get-all: func() -> result<list<tuple<string, string>>, error>;
            }
            world imports { import store; }
        "#,
        world: "imports",
    });
}

use bindings::wasi::config::store;

/// The value of configuration variable `key`, or `None` if the operator did not set
/// it. Works the same in both handler styles.
///
/// ```no_run
/// let greeting = wasmloop_sdk::config::get("GREETING").unwrap_or_else(|| "Hello".into());
/// ```
pub fn get(key: &str) -> Option<String> {
    match store::get(key) {
        Ok(value) => value,
        Err(e) => {
            crate::error!("config: failed to read {key:?}: {e:?}");
            None
        }
    }
}

/// Every configuration variable, as `(key, value)` pairs.
pub fn all() -> Vec<(String, String)> {
    store::get_all().unwrap_or_else(|e| {
        crate::error!("config: failed to read the variables: {e:?}");
        Vec::new()
    })
}
