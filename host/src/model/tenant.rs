//! Tenants as every part sees them: their limits, what the API shows of them, and the
//! rule for tenant and app names.

use serde::{Deserialize, Serialize};

use crate::model::Invalid;

/// Limits a tenant's apps run under and the quotas of what it stores; unset fields
/// take the server's. The run limits are per server: each worker enforces its share
/// (the limit divided by `--workers`, rounded up).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    /// Requests of this tenant in flight on the server; past it, 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u64>,
    /// Pool threads of the server this tenant's requests may hold (running or
    /// queued); past it, 503. Never all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pool_threads: Option<u64>,
    /// Bytes of guest memory this tenant's requests in flight may reach together on
    /// the server (each counted at its app's `max_memory`); past it, 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_budget: Option<u64>,
    /// Ceilings for the tenant's apps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Quotas of what the tenant stores ([`crate::model::quota`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_apps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_versions: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_routes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_vars_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_settings_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_stored_bytes: Option<u64>,
}

/// A tenant as the API shows it (never its token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: i64,
    pub name: String,
    pub limits: TenantLimits,
    pub created_at: u64,
}

/// Tenant and app names: what fits in a URL path segment and a metric label.
pub fn check_name(what: &str, name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Invalid(format!(
            "{what} name {name:?} must be 1-64 letters, digits, `-` or `_`, starting with a letter or digit"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_invalid() {
        for bad in ["", "a/b", "../x", "with space", "-x"] {
            assert!(check_name("app", bad).is_err(), "{bad:?}");
        }
        assert!(check_name("app", "shop-2_a").is_ok());
    }
}
