//! What both WASI sides (`wasi_p2`, `wasi_p3`) convert the same way: header lists into
//! a `HeaderMap`, and methods between `http` and a wasi `Method` enum (the two crates'
//! enums are distinct types with the same variants, hence a macro).

use http::{HeaderMap, HeaderName, HeaderValue};

/// The headers of a wasi field list, leaving out any `http` cannot represent.
pub(crate) fn header_map(entries: Vec<(String, Vec<u8>)>) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(entries.len());
    for (name, value) in entries {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            map.append(name, value);
        }
    }
    map
}

/// Defines `method_from_wasi` and `method_to_wasi` for the wasi types module `$wasi`.
macro_rules! methods {
    ($wasi:ident) => {
        fn method_from_wasi(method: $wasi::Method) -> Result<http::Method, String> {
            use http::Method;
            Ok(match method {
                $wasi::Method::Get => Method::GET,
                $wasi::Method::Head => Method::HEAD,
                $wasi::Method::Post => Method::POST,
                $wasi::Method::Put => Method::PUT,
                $wasi::Method::Delete => Method::DELETE,
                $wasi::Method::Connect => Method::CONNECT,
                $wasi::Method::Options => Method::OPTIONS,
                $wasi::Method::Trace => Method::TRACE,
                $wasi::Method::Patch => Method::PATCH,
                $wasi::Method::Other(other) => Method::from_bytes(other.as_bytes())
                    .map_err(|e| format!("invalid method: {e}"))?,
            })
        }

        fn method_to_wasi(method: &http::Method) -> $wasi::Method {
            use http::Method;
            match *method {
                Method::GET => $wasi::Method::Get,
                Method::HEAD => $wasi::Method::Head,
                Method::POST => $wasi::Method::Post,
                Method::PUT => $wasi::Method::Put,
                Method::DELETE => $wasi::Method::Delete,
                Method::CONNECT => $wasi::Method::Connect,
                Method::OPTIONS => $wasi::Method::Options,
                Method::TRACE => $wasi::Method::Trace,
                Method::PATCH => $wasi::Method::Patch,
                ref other => $wasi::Method::Other(other.to_string()),
            }
        }
    };
}
pub(crate) use methods;
