//! Which app a request goes to. The master sends each worker a [`TableMessage`] (every
//! active app, its routes and files) at start and after every deploy; the worker loads
//! what it does not have yet off the loop and swaps in a new [`RouteTable`].
//!
//! Matching uses only the Host header (the URI's authority for absolute-form requests,
//! which must then agree with Host) and the path: a route with a host beats one for
//! any host, then the longest prefix wins, matched on whole path segments (`/api`
//! matches `/api` and `/api/x`, not `/apiary`). Nothing else a client sends, such as
//! `X-Forwarded-Host`, takes part.

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::route::{Route, request_host};
use crate::model::tenant::TenantLimits;
use crate::protocol::TableMessage;
use crate::worker::admission::TenantSlots;
use crate::worker::app::{App, Defaults, Engines};

/// The worker's routes: every (host, prefix) to its app.
#[derive(Default)]
pub struct RouteTable {
    pub generation: u64,
    /// Host-specific routes, by lower-case host, longest prefix first.
    by_host: HashMap<String, Vec<(String, Arc<App>)>>,
    /// Routes for any host, longest prefix first.
    any_host: Vec<(String, Arc<App>)>,
    /// Every app, keyed by (tenant/app, version), for reuse by the next table.
    pub apps: HashMap<(Arc<str>, u64), Arc<App>>,
}

impl RouteTable {
    /// A table sending every request to `app` (single-file `serve`).
    pub fn single(app: Arc<App>) -> RouteTable {
        let mut table = RouteTable::default();
        table.any_host.push(("/".to_string(), app.clone()));
        table.apps.insert((app.name.clone(), app.version), app);
        table
    }

    /// Adds `app` under each of its routes.
    pub fn insert(&mut self, app: Arc<App>, routes: &[Route]) {
        for route in routes {
            let entry = (route.prefix.clone(), app.clone());
            match &route.host {
                Some(host) => self
                    .by_host
                    .entry(request_host(host))
                    .or_default()
                    .push(entry),
                None => self.any_host.push(entry),
            }
        }
        self.apps.insert((app.name.clone(), app.version), app);
    }

    /// Orders every list longest prefix first; call once after the inserts.
    pub fn seal(&mut self) {
        let by_len = |a: &(String, Arc<App>), b: &(String, Arc<App>)| b.0.len().cmp(&a.0.len());
        self.any_host.sort_by(by_len);
        for routes in self.by_host.values_mut() {
            routes.sort_by(by_len);
        }
    }

    /// The app for a request to `host` (its authority or Host header, any case, with or
    /// without port and trailing dot) and `path`.
    pub fn find(&self, host: &str, path: &str) -> Option<&Arc<App>> {
        let host = request_host(host);
        self.by_host
            .get(&host)
            .and_then(|routes| longest(routes, path))
            .or_else(|| longest(&self.any_host, path))
    }

    pub fn is_empty(&self) -> bool {
        self.any_host.is_empty() && self.by_host.is_empty()
    }
}

/// A worker's tenants: their slots outlive tables, so requests of an old version and
/// a new one count against the same limits.
pub type TenantMap = HashMap<String, (TenantLimits, Arc<TenantSlots>)>;

/// Builds the table for `message`, reusing the apps of `previous` that did not change
/// and loading the others (blocking: call it off the loop). An app that fails to load
/// is left out and logged; the others are served.
pub fn build(
    engines: &Engines,
    message: &TableMessage,
    defaults: &Defaults,
    previous: &HashMap<(Arc<str>, u64), Arc<App>>,
    tenants: &mut TenantMap,
) -> RouteTable {
    let mut table = RouteTable {
        generation: message.generation,
        ..RouteTable::default()
    };
    for entry in &message.apps {
        let active = &entry.active;
        let name: Arc<str> = format!("{}/{}", active.tenant, active.app).into();
        let slots = match tenants.get(&active.tenant) {
            Some((limits, slots)) if *limits == active.tenant_limits => slots.clone(),
            _ => {
                let slots = Arc::new(defaults.tenant_slots(&active.tenant_limits));
                tenants.insert(
                    active.tenant.clone(),
                    (active.tenant_limits.clone(), slots.clone()),
                );
                slots
            }
        };
        let reusable = previous
            .get(&(name.clone(), active.version.number))
            .filter(|app| {
                app.tenant_slots
                    .as_ref()
                    .is_some_and(|s| Arc::ptr_eq(s, &slots))
                    // The optimized tier's artifact replaces the baseline one's.
                    && (entry.files.local || app.compiler == entry.files.compiler)
            })
            .cloned();
        let app = match reusable {
            Some(app) => app,
            None => match App::from_registry(engines, active, &entry.files, defaults, slots) {
                Ok(app) => Arc::new(app),
                Err(e) => {
                    tracing::error!(app = %name, version = active.version.number, "cannot serve this app: {e:#}");
                    continue;
                }
            },
        };
        table.insert(app, &active.version.settings.routes);
    }
    table.seal();
    table
}

fn longest<'a>(routes: &'a [(String, Arc<App>)], path: &str) -> Option<&'a Arc<App>> {
    routes
        .iter()
        .find(|(prefix, _)| prefix_matches(prefix, path))
        .map(|(_, app)| app)
}

/// `/api` matches `/api`, `/api/` and `/api/x`, not `/apiary`; `/` matches all.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/v1"));
        assert!(prefix_matches("/api", "/api/"));
        assert!(!prefix_matches("/api", "/apiary"));
        assert!(!prefix_matches("/api", "/"));
        assert!(prefix_matches("/", "/anything"));
    }
}
