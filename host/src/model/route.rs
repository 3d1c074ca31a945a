//! Routes: where requests reach an app (a host, or any host, and a path prefix), how
//! one is written (`/prefix`, `host/prefix`) and what makes one valid.

use serde::{Deserialize, Serialize};

use crate::model::Invalid;

/// Where requests reach an app: a host (or any host) and a path prefix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// `None` matches any host.
    #[serde(default)]
    pub host: Option<String>,
    /// A path prefix starting with `/`, matched on whole segments.
    pub prefix: String,
}

/// `/prefix` for any host, or `host/prefix` (`host` alone means `/`).
pub fn parse_route(value: &str) -> Route {
    if value.starts_with('/') {
        return Route {
            host: None,
            prefix: value.to_string(),
        };
    }
    match value.split_once('/') {
        Some((host, rest)) => Route {
            host: Some(host.to_string()),
            prefix: format!("/{rest}"),
        },
        None => Route {
            host: Some(value.to_string()),
            prefix: "/".to_string(),
        },
    }
}

/// A route's prefix is a clean absolute path; its host a plain host name.
pub fn check_route(route: &Route) -> Result<(), Invalid> {
    let prefix = &route.prefix;
    let clean = prefix.starts_with('/')
        && (prefix == "/" || !prefix.ends_with('/'))
        && !prefix.contains("//")
        && !prefix.split('/').any(|s| s == "." || s == "..")
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/-_.~".contains(c));
    if !clean {
        return Err(Invalid(format!(
            "route prefix {prefix:?} must be `/` or an absolute path without a trailing slash, dot segments or special characters"
        )));
    }
    if let Some(host) = &route.host {
        let ok = !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == ':');
        if !ok {
            return Err(Invalid(format!("route host {host:?} is not a host name")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_routes_are_invalid() {
        for bad in ["", "x", "/a/", "/a/../b", "/a//b", "/a?b", "/%2e"] {
            let route = Route {
                host: None,
                prefix: bad.into(),
            };
            assert!(check_route(&route).is_err(), "{bad:?}");
        }
        assert!(
            check_route(&Route {
                host: Some("api.example.com".into()),
                prefix: "/v1".into()
            })
            .is_ok()
        );
    }

    #[test]
    fn routes_parse_with_and_without_a_host() {
        assert_eq!(
            parse_route("/api"),
            Route {
                host: None,
                prefix: "/api".into()
            }
        );
        assert_eq!(
            parse_route("example.com/api"),
            Route {
                host: Some("example.com".into()),
                prefix: "/api".into()
            }
        );
        assert_eq!(
            parse_route("example.com"),
            Route {
                host: Some("example.com".into()),
                prefix: "/".into()
            }
        );
    }
}
