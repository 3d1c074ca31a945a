//! Apps and their versions as every part sees them: the settings a deploy gives, a
//! stored version, what the API lists and what the workers serve; and the content
//! hash components are stored and cached by.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::model::mode::{Mode, ModeChoice};
use crate::model::reuse::Reuse;
use crate::model::route::Route;
use crate::model::tenant::TenantLimits;

/// Per-app settings, kept with each version so a rollback restores them too.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSettings {
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    #[serde(default)]
    pub allow_outbound: Vec<String>,
    /// `loop` or `pool` to override the export's type; `None` (or `auto`) reads it.
    #[serde(default)]
    pub mode: Option<ModeChoice>,
    #[serde(default)]
    pub fuel: Option<u64>,
    #[serde(default)]
    pub max_memory: Option<u64>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub max_in_flight: Option<u64>,
    /// Whether requests reuse instances, and the bounds on one that does (not stored
    /// when it is the default, a fresh sandbox per request).
    #[serde(default, skip_serializing_if = "Reuse::is_default")]
    pub reuse: Reuse,
}

impl AppSettings {
    /// The mode these settings ask for.
    pub fn mode_choice(&self) -> ModeChoice {
        self.mode.unwrap_or_default()
    }
}

/// One version of an app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    pub number: u64,
    pub sha256: String,
    pub size: u64,
    pub export: String,
    pub mode: Mode,
    pub settings: AppSettings,
    pub created_at: u64,
    pub active: bool,
}

/// An app and its active version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppInfo {
    pub name: String,
    pub tenant: String,
    pub active_version: Option<u64>,
    pub versions: u64,
    pub routes: Vec<Route>,
    /// When the app was created (seconds since the Unix epoch).
    #[serde(default)]
    pub created_at: u64,
    /// When its active version was deployed, if it has one.
    #[serde(default)]
    pub deployed_at: Option<u64>,
}

/// What the workers serve: one entry per app with an active version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveApp {
    pub tenant: String,
    pub tenant_limits: TenantLimits,
    pub app: String,
    pub version: Version,
}

/// Hex SHA-256 of `bytes`: the name a component and its artifact are stored under.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
