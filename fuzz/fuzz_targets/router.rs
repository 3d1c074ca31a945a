//! Routes and a request in: the route table picks the same app as a plain reference
//! implementation of the rules in routes.rs (host routes before any-host routes, then
//! the longest prefix on whole segments, the first inserted among equals). Hosts are
//! compared in their normal form (model::route::request_host, tested on its own).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmloop::model::route::{Route, check_route, request_host};
use wasmloop::worker::routes::RouteTable;

fuzz_target!(|input: (Vec<(Option<String>, String)>, String, String)| {
    let (routes, host, path) = input;
    let apps = wasmloop_fuzz::apps();
    let mut table = RouteTable::default();
    let mut accepted: Vec<(Route, usize)> = Vec::new();
    for (i, (route_host, prefix)) in routes.into_iter().enumerate() {
        let route = Route {
            host: route_host,
            prefix,
        };
        // The registry refuses what check_route refuses; the table never sees it.
        if check_route(&route).is_err() {
            continue;
        }
        let app = i % apps.len();
        table.insert(apps[app].clone(), std::slice::from_ref(&route));
        accepted.push((route, app));
    }
    table.seal();
    let found = table.find(&host, &path).map(|a| a.name.clone());
    let expected = reference(&accepted, &host, &path).map(|i| apps[i].name.clone());
    assert_eq!(
        found, expected,
        "routes {accepted:?}, host {host:?}, path {path:?}"
    );
});

fn matches(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path == prefix
        || (path.starts_with(prefix) && path[prefix.len()..].starts_with('/'))
}

fn reference(routes: &[(Route, usize)], host: &str, path: &str) -> Option<usize> {
    let longest = |for_host: bool| {
        let mut best: Option<(usize, usize)> = None;
        for (route, app) in routes {
            let host_ok = match &route.host {
                Some(h) => for_host && *h == request_host(host),
                None => !for_host,
            };
            if host_ok
                && matches(&route.prefix, path)
                && best.is_none_or(|(len, _)| route.prefix.len() > len)
            {
                best = Some((route.prefix.len(), *app));
            }
        }
        best.map(|(_, app)| app)
    };
    longest(true).or_else(|| longest(false))
}
