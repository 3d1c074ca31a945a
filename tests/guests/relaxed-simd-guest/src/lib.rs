//! A guest that uses relaxed SIMD, a WebAssembly proposal Winch (the baseline
//! compiler) does not support and Cranelift does: `--compiler auto` must fall back to
//! Cranelift for it instead of failing to start. Answers `GET /` with the result of a
//! relaxed fused multiply-add: `madd 7`.

use core::arch::wasm32::{f32x4, f32x4_extract_lane, f32x4_relaxed_madd};

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Handler;

wasip2::http::proxy::export!(Handler);

/// 2 * 3 + 1, with a relaxed-SIMD instruction.
#[target_feature(enable = "relaxed-simd")]
fn madd() -> f32 {
    let v = f32x4_relaxed_madd(
        f32x4(2.0, 0.0, 0.0, 0.0),
        f32x4(3.0, 0.0, 0.0, 0.0),
        f32x4(1.0, 0.0, 0.0, 0.0),
    );
    f32x4_extract_lane::<0>(v)
}

impl Guest for Handler {
    fn handle(_: IncomingRequest, out: ResponseOutparam) {
        let value = madd();
        let body = format!("madd {value}\n");
        let resp = OutgoingResponse::new(Fields::new());
        let outgoing = resp.body().unwrap();
        ResponseOutparam::set(out, Ok(resp));
        let stream = outgoing.write().unwrap();
        stream.blocking_write_and_flush(body.as_bytes()).unwrap();
        drop(stream);
        OutgoingBody::finish(outgoing, None).unwrap();
    }
}
