//! Manifest text (`wasmloop.toml`) in: `Manifest::parse` accepts or refuses it with an
//! error, and never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(manifest) = wasmloop::model::manifest::Manifest::parse(text) {
        // What parse accepted must give settings the admin API takes.
        for app in &manifest.apps {
            app.settings().expect("parse checked every app's settings");
        }
    }
});
