//! Upload bytes in: the deploy path's checks (`deploy::compile_upload` in the mode the
//! export implies, then the trial instantiation under small limits) accept or refuse
//! them with a reason, and never panic. Random bytes rarely get past validation; the
//! seed corpus in fuzz/README.md starts from real components so mutations reach the
//! compiler.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmloop::deploy::compile::compile_upload;
use wasmloop::model::mode::ModeChoice;

fuzz_target!(|bytes: &[u8]| {
    let engine = wasmloop_fuzz::compile_engine();
    if let Ok((_, handler)) = compile_upload(engine, bytes, ModeChoice::Auto) {
        let limits = wasmloop_fuzz::small_limits();
        let _ = wasmloop::runtime::component::try_instantiate(engine, &handler, &limits);
    }
});
