//! Routes: where requests reach an app (a host, or any host, and a path prefix), how
//! one is written (`/prefix`, `host/prefix`), what makes one valid, how host names are
//! normalised (once, the same way for routes and for requests), and when two routes
//! overlap.
//!
//! The `--root-path` a proxy mounts the server under is a prefix of the same form
//! ([`parse_root_path`], [`strip_root_path`]).
//!
//! The ownership rule ([`takes_from`]): no route may take a request another tenant's
//! route serves now, nor serve a path on a host another tenant's route names. So no
//! deploy changes where a request now served by another tenant goes.

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

/// `/prefix` for any host, or `host/prefix` (`host/`, or a dotted `host` alone, for
/// all of a host's paths). A single word without a `/` is refused: `api` could mean
/// the path `/api` or the host `api`, and guessing either serves the app somewhere
/// its author did not mean.
pub fn parse_route(value: &str) -> Result<Route, Invalid> {
    if value.starts_with('/') {
        return Ok(Route {
            host: None,
            prefix: value.to_string(),
        });
    }
    match value.split_once('/') {
        Some((host, rest)) => Ok(Route {
            host: Some(host.to_string()),
            prefix: format!("/{rest}"),
        }),
        None if value.contains('.') => Ok(Route {
            host: Some(value.to_string()),
            prefix: "/".to_string(),
        }),
        None => Err(Invalid(format!(
            "route {value:?} has no \"/\": a path prefix starts with one (\"/{value}\"), \
             and a route for one host is HOST/ or HOST/PATH (\"{value}/\")"
        ))),
    }
}

/// The host of a route in the one form routes are stored and matched in: lower case
/// ASCII (an internationalised name becomes its `xn--` form), without a trailing dot.
/// A port is refused: requests are matched on the host alone, so a route with one
/// could never be reached.
pub fn normalize_host(host: &str) -> Result<String, Invalid> {
    let trimmed = host.trim();
    if trimmed.contains(':') || trimmed.contains('[') {
        return Err(Invalid(format!(
            "route host {host:?} has a port or is an IPv6 address: routes match the Host header's name alone, give the host without a port"
        )));
    }
    let bare = trimmed.strip_suffix('.').unwrap_or(trimmed);
    let ascii = idna::domain_to_ascii(bare)
        .map_err(|_| Invalid(format!("route host {host:?} is not a valid host name")))?;
    if !is_normal_host(&ascii) {
        return Err(Invalid(format!("route host {host:?} is not a host name")));
    }
    Ok(ascii)
}

/// The host a request names (its URI authority or Host header), normalised as route
/// hosts are: without port or trailing dot, in lower case.
pub fn request_host(authority: &str) -> String {
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let host = match authority.strip_prefix('[') {
        // An IPv6 literal: no route can name one, but keep it whole.
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// `route` with its host normalised ([`normalize_host`]) and checked.
pub fn normalize_route(route: &Route) -> Result<Route, Invalid> {
    let route = Route {
        host: route.host.as_deref().map(normalize_host).transpose()?,
        prefix: route.prefix.clone(),
    };
    check_route(&route)?;
    Ok(route)
}

/// Whether claiming `new` would take requests that `held` (another tenant's route)
/// serves now, or let `new` serve paths on `held`'s host. Host routes beat routes for
/// any host, then the longest prefix wins, so:
///
/// - on the same host (or both for any host), the prefixes may not nest;
/// - a host route may not nest with an any-host route it would shadow on that host;
/// - an any-host route may not contain a host route: the host's other paths under it
///   would fall through to it. (One inside a host route takes nothing: the host
///   route answers all of it.)
pub fn takes_from(new: &Route, held: &Route) -> bool {
    let nested = contains(&new.prefix, &held.prefix) || contains(&held.prefix, &new.prefix);
    match (&new.host, &held.host) {
        (Some(x), Some(y)) => x.eq_ignore_ascii_case(y) && nested,
        (None, None) | (Some(_), None) => nested,
        (None, Some(_)) => new.prefix != held.prefix && contains(&new.prefix, &held.prefix),
    }
}

/// Whether path prefix `outer` covers `inner`: equal, `/`, or `inner` under it.
fn contains(outer: &str, inner: &str) -> bool {
    outer == "/"
        || inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// A host name in normal form: lower-case ASCII labels, none empty, no port.
fn is_normal_host(host: &str) -> bool {
    host.len() <= 253
        && !host.split('.').any(str::is_empty)
        && host
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
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
    if let Some(host) = &route.host
        && !is_normal_host(host)
    {
        return Err(Invalid(format!(
            "route host {host:?} is not a host name in normal form (lower case, no port, no trailing dot)"
        )));
    }
    Ok(())
}

/// `--root-path`: a clean absolute path without a trailing slash (`/api`), as a route
/// prefix is; `""` or `/` mean none.
pub fn parse_root_path(text: &str) -> Result<Option<String>, Invalid> {
    let text = text.trim();
    if text.is_empty() || text == "/" {
        return Ok(None);
    }
    check_route(&Route {
        host: None,
        prefix: text.to_string(),
    })
    .map_err(|_| {
        Invalid(format!(
            "--root-path {text:?} must be an absolute path without a trailing slash, dot \
             segments or special characters, like /api"
        ))
    })?;
    Ok(Some(text.to_string()))
}

/// `path` without the `root` it starts with (a whole segment: `/api` strips `/api`
/// and `/api/x`, never `/apix`); `None` when it does not start with it.
pub fn strip_root_path<'a>(path: &'a str, root: &str) -> Option<&'a str> {
    match path.strip_prefix(root)? {
        "" => Some("/"),
        rest if rest.starts_with('/') => Some(rest),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_path_is_a_whole_prefix() {
        assert_eq!(parse_root_path("/api").unwrap().as_deref(), Some("/api"));
        assert_eq!(parse_root_path("/").unwrap(), None);
        assert_eq!(parse_root_path("").unwrap(), None);
        for bad in ["api", "/api/", "/a/../b", "/a?x"] {
            assert!(parse_root_path(bad).is_err(), "{bad}");
        }
        assert_eq!(strip_root_path("/api", "/api"), Some("/"));
        assert_eq!(strip_root_path("/api/", "/api"), Some("/"));
        assert_eq!(strip_root_path("/api/items/1", "/api"), Some("/items/1"));
        assert_eq!(strip_root_path("/apix", "/api"), None);
        assert_eq!(strip_root_path("/other", "/api"), None);
    }

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
    fn hosts_have_one_normal_form_for_routes_and_requests() {
        for (given, normal) in [
            ("Shop.Test", "shop.test"),
            ("shop.test.", "shop.test"),
            ("SHOP.TEST.", "shop.test"),
            ("bücher.example", "xn--bcher-kva.example"),
            ("XN--BCHER-KVA.example", "xn--bcher-kva.example"),
        ] {
            assert_eq!(normalize_host(given).as_deref(), Ok(normal), "{given}");
            assert_eq!(request_host(normal), normal);
        }
        for bad in ["shop.test:8080", "[::1]", "", ".", "a..b", "exa mple.com"] {
            assert!(normalize_host(bad).is_err(), "{bad:?}");
        }
        assert_eq!(request_host("Shop.Test.:8080"), "shop.test");
        assert_eq!(request_host("shop.test"), "shop.test");
        assert_eq!(request_host("[::1]:80"), "::1");
        assert_eq!(request_host("user@Shop.test:80"), "shop.test");
        assert!(
            check_route(&Route {
                host: Some("Shop.test".into()),
                prefix: "/".into()
            })
            .is_err()
        );
        assert!(
            check_route(&Route {
                host: Some("shop.test:80".into()),
                prefix: "/".into()
            })
            .is_err()
        );
    }

    #[test]
    fn a_new_route_takes_from_a_held_one_only_where_it_would_serve_its_requests() {
        let r = |text: &str| parse_route(text).unwrap();
        // (new, held): refused.
        for (new, held) in [
            ("shop.test/users", "shop.test/"),
            ("shop.test/", "shop.test/users"),
            ("shop.test/users/1", "shop.test/users"),
            ("shop.test/api", "shop.test/api"),
            ("/api/users", "/api"),
            ("/api", "/api/users"),
            ("/", "/anything"),
            ("victim.test/", "/api"),
            ("victim.test/api/users", "/api"),
            ("victim.test/api", "/api/users"),
            ("/api", "shop.test/api/users"),
            ("/", "shop.test/users"),
        ] {
            assert!(takes_from(&r(new), &r(held)), "{new} over {held}");
        }
        // Allowed: different hosts or prefixes, or an any-host route a host route
        // answers for on that host anyway.
        for (new, held) in [
            ("shop.test/api", "shop.test/apiary"),
            ("shop.test/", "other.test/"),
            ("/api", "/apiary"),
            ("/a/b", "/a/c"),
            ("victim.test/api", "/web"),
            ("/elsewhere", "shop.test/"),
            ("/api", "shop.test/api"),
            ("/api/users", "shop.test/api"),
        ] {
            assert!(!takes_from(&r(new), &r(held)), "{new} over {held}");
        }
    }

    #[test]
    fn routes_parse_with_and_without_a_host() {
        assert_eq!(
            parse_route("/api"),
            Ok(Route {
                host: None,
                prefix: "/api".into()
            })
        );
        assert_eq!(
            parse_route("example.com/api"),
            Ok(Route {
                host: Some("example.com".into()),
                prefix: "/api".into()
            })
        );
        for host_alone in ["example.com/", "example.com"] {
            assert_eq!(
                parse_route(host_alone),
                Ok(Route {
                    host: Some("example.com".into()),
                    prefix: "/".into()
                })
            );
        }
        // A bare word is the path /api or the host api: refused, naming both.
        let refused = parse_route("api").unwrap_err().0;
        assert!(
            refused.contains("\"/api\"") && refused.contains("\"api/\""),
            "{refused}"
        );
    }
}
