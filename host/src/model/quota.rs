//! What one tenant may store: apps, versions kept per app, routes per app, the size
//! of an app's variables and settings, and the bytes of its components. The server
//! sets a default for each (`--tenant-max-*`), the admin may override any of them per
//! tenant ([`crate::model::tenant::TenantLimits`]). A change over a quota is refused
//! whole, with the quota's name and value, and nothing is stored.

use serde::{Deserialize, Serialize};

use crate::model::app::AppSettings;
use crate::model::tenant::TenantLimits;

/// The quotas that hold for one tenant: its overrides, else the server's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quotas {
    pub max_apps: u64,
    /// Versions kept per app; older ones are pruned at the next deploy. Never fewer
    /// than two: the active version and the one a rollback goes to are never pruned.
    pub max_versions: u64,
    pub max_routes: u64,
    /// Bytes of an app's variables, keys and values together.
    pub max_vars_bytes: u64,
    /// Bytes of an app's settings as stored (JSON), variables included.
    pub max_settings_bytes: u64,
    /// Bytes of the distinct components the tenant's versions refer to.
    pub max_stored_bytes: u64,
}

/// A change refused by a quota.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("over the tenant's quota {quota} ({limit}): {message}; nothing was stored")]
pub struct OverQuota {
    /// The quota's name, as in the tenant's limits (`max_apps`, ...).
    pub quota: &'static str,
    pub limit: u64,
    pub message: String,
}

impl Quotas {
    /// No quota at all (for tests and tools).
    pub const UNLIMITED: Quotas = Quotas {
        max_apps: u64::MAX,
        max_versions: u64::MAX,
        max_routes: u64::MAX,
        max_vars_bytes: u64::MAX,
        max_settings_bytes: u64::MAX,
        max_stored_bytes: u64::MAX,
    };

    /// The tenant's overrides over the server's `defaults`.
    pub fn resolve(limits: &TenantLimits, defaults: &Quotas) -> Quotas {
        Quotas {
            max_apps: limits.max_apps.unwrap_or(defaults.max_apps),
            max_versions: limits.max_versions.unwrap_or(defaults.max_versions),
            max_routes: limits.max_routes.unwrap_or(defaults.max_routes),
            max_vars_bytes: limits.max_vars_bytes.unwrap_or(defaults.max_vars_bytes),
            max_settings_bytes: limits
                .max_settings_bytes
                .unwrap_or(defaults.max_settings_bytes),
            max_stored_bytes: limits.max_stored_bytes.unwrap_or(defaults.max_stored_bytes),
        }
    }

    /// What a deploy's request alone can break: its routes, variables, settings, and
    /// a component larger than all the tenant may store.
    pub fn check_deploy(
        &self,
        settings: &AppSettings,
        component_bytes: u64,
    ) -> Result<(), OverQuota> {
        let over = |quota, limit, message: String| {
            Err(OverQuota {
                quota,
                limit,
                message,
            })
        };
        let routes = settings.routes.len() as u64;
        if routes > self.max_routes {
            return over(
                "max_routes",
                self.max_routes,
                format!("the app names {routes} routes"),
            );
        }
        let vars: u64 = settings
            .vars
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum();
        if vars > self.max_vars_bytes {
            return over(
                "max_vars_bytes",
                self.max_vars_bytes,
                format!("the app's variables take {vars} bytes"),
            );
        }
        let stored = serde_json::to_vec(settings).map_or(u64::MAX, |json| json.len() as u64);
        if stored > self.max_settings_bytes {
            return over(
                "max_settings_bytes",
                self.max_settings_bytes,
                format!("the app's settings take {stored} bytes"),
            );
        }
        if component_bytes > self.max_stored_bytes {
            return over(
                "max_stored_bytes",
                self.max_stored_bytes,
                format!("the component alone is {component_bytes} bytes"),
            );
        }
        Ok(())
    }

    /// Whether a tenant with `apps` apps may create another.
    pub fn check_new_app(&self, apps: u64) -> Result<(), OverQuota> {
        if apps >= self.max_apps {
            return Err(OverQuota {
                quota: "max_apps",
                limit: self.max_apps,
                message: format!("the tenant has {apps} apps; delete one first"),
            });
        }
        Ok(())
    }

    /// Whether `stored` bytes of components, counted once the new version is in and
    /// old ones pruned, fit.
    pub fn check_stored(&self, stored: u64) -> Result<(), OverQuota> {
        if stored > self.max_stored_bytes {
            return Err(OverQuota {
                quota: "max_stored_bytes",
                limit: self.max_stored_bytes,
                message: format!(
                    "the tenant's versions would refer to {stored} bytes of components; delete apps or deploy smaller components"
                ),
            });
        }
        Ok(())
    }

    /// Which of an app's versions to prune once `active` (the newest) is in: all but
    /// the newest `max_versions`, never the active one or the one before it (the
    /// rollback target).
    pub fn versions_to_prune(&self, mut numbers: Vec<u64>, active: u64) -> Vec<u64> {
        numbers.sort_unstable_by(|a, b| b.cmp(a));
        let rollback = numbers.iter().copied().find(|n| *n < active);
        let keep = self.max_versions.max(2) as usize;
        numbers
            .into_iter()
            .skip(keep)
            .filter(|n| *n != active && Some(*n) != rollback)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::route::parse_route;

    fn quotas() -> Quotas {
        Quotas {
            max_apps: 2,
            max_versions: 3,
            max_routes: 2,
            max_vars_bytes: 10,
            max_settings_bytes: 200,
            max_stored_bytes: 1000,
        }
    }

    #[test]
    fn each_quota_holds_at_its_value_and_refuses_past_it() {
        let q = quotas();
        let mut settings = AppSettings {
            routes: vec![parse_route("/a").unwrap(), parse_route("/b").unwrap()],
            ..AppSettings::default()
        };
        settings.vars.insert("K".into(), "123456789".into());
        assert_eq!(q.check_deploy(&settings, 1000), Ok(()));
        assert_eq!(
            q.check_deploy(&settings, 1001).unwrap_err().quota,
            "max_stored_bytes"
        );
        settings.vars.insert("L".into(), String::new());
        assert_eq!(
            q.check_deploy(&settings, 1).unwrap_err().quota,
            "max_vars_bytes"
        );
        settings.vars.remove("L");
        settings.routes.push(parse_route("/c").unwrap());
        let over = q.check_deploy(&settings, 1).unwrap_err();
        assert_eq!((over.quota, over.limit), ("max_routes", 2));
        assert!(over.to_string().contains("max_routes (2)"), "{over}");
        settings.routes.pop();
        settings.allow_outbound = vec!["x".repeat(200)];
        assert_eq!(
            q.check_deploy(&settings, 1).unwrap_err().quota,
            "max_settings_bytes"
        );
        assert_eq!(q.check_new_app(1), Ok(()));
        assert_eq!(q.check_new_app(2).unwrap_err().quota, "max_apps");
        assert_eq!(q.check_stored(1000), Ok(()));
        assert!(q.check_stored(1001).is_err());
    }

    #[test]
    fn pruning_keeps_the_newest_the_active_and_the_rollback_target() {
        let q = quotas();
        assert_eq!(q.versions_to_prune(vec![1, 2, 3], 3), Vec::<u64>::new());
        assert_eq!(q.versions_to_prune(vec![1, 2, 3, 4, 5], 5), vec![2, 1]);
        let one = Quotas {
            max_versions: 1,
            ..q
        };
        assert_eq!(one.versions_to_prune(vec![1, 2, 3], 3), vec![1]);
        // Numbers need not be consecutive once some were pruned.
        assert_eq!(one.versions_to_prune(vec![9, 4, 7], 9), vec![4]);
    }

    #[test]
    fn overrides_replace_defaults_one_by_one() {
        let limits = TenantLimits {
            max_apps: Some(50),
            ..TenantLimits::default()
        };
        let resolved = Quotas::resolve(&limits, &quotas());
        assert_eq!(resolved.max_apps, 50);
        assert_eq!(resolved.max_routes, 2);
    }
}
