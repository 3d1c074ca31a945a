//! Hosts the operator binds to a tenant: a bound host accepts routes from that tenant
//! only. A binding names one host (`shop.example.com`) or every subdomain of one
//! (`*.example.com`: `a.example.com`, `b.a.example.com`, not `example.com` itself).
//! Hosts no binding names follow the ownership rule of [`crate::model::route`].

use serde::{Deserialize, Serialize};

use crate::model::Invalid;
use crate::model::route::normalize_host;

/// A host, or every subdomain of one, bound to a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostBinding {
    /// `host` or `*.domain`, in normal form.
    pub pattern: String,
    pub tenant: String,
}

/// `pattern` in normal form (see [`normalize_host`]), with its `*.` kept.
pub fn normalize_pattern(pattern: &str) -> Result<String, Invalid> {
    match pattern.trim().strip_prefix("*.") {
        Some(domain) => {
            let domain = normalize_host(domain)?;
            if !domain.contains('.') {
                return Err(Invalid(format!(
                    "host pattern {pattern:?} would bind a whole top-level domain"
                )));
            }
            Ok(format!("*.{domain}"))
        }
        None if pattern.contains('*') => Err(Invalid(format!(
            "host pattern {pattern:?}: a wildcard may only stand first, as `*.example.com`"
        ))),
        None => normalize_host(pattern),
    }
}

/// Whether `pattern` (normalised) covers `host` (normalised).
pub fn covers(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(domain) => host
            .strip_suffix(domain)
            .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
        None => pattern == host,
    }
}

/// Whether two patterns cover a host in common.
pub fn patterns_meet(a: &str, b: &str) -> bool {
    match (a.strip_prefix("*."), b.strip_prefix("*.")) {
        (None, None) => a == b,
        (Some(_), None) => covers(a, b),
        (None, Some(_)) => covers(b, a),
        (Some(x), Some(y)) => x == y || covers(a, y) || covers(b, x),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_name_a_host_or_its_subdomains() {
        assert_eq!(normalize_pattern("Shop.Test.").as_deref(), Ok("shop.test"));
        assert_eq!(
            normalize_pattern("*.Example.com").as_deref(),
            Ok("*.example.com")
        );
        for bad in ["*.com", "a.*.com", "*example.com", "shop.test:80", ""] {
            assert!(normalize_pattern(bad).is_err(), "{bad:?}");
        }
        assert!(covers("shop.test", "shop.test"));
        assert!(!covers("shop.test", "a.shop.test"));
        assert!(covers("*.example.com", "a.example.com"));
        assert!(covers("*.example.com", "b.a.example.com"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(!covers("*.example.com", "badexample.com"));
        assert!(patterns_meet("*.example.com", "a.example.com"));
        assert!(patterns_meet("*.example.com", "*.a.example.com"));
        assert!(!patterns_meet("*.example.com", "example.com"));
        assert!(!patterns_meet("a.test", "b.test"));
    }
}
