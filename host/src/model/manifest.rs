//! `wasmloop.toml`: the apps of a project, with their routes, variables and limits, in
//! the spirit of spin.toml. `wasmloop deploy --manifest` deploys each app through the
//! admin API; `wasmloop serve --manifest` serves them locally without a registry.
//!
//! ```toml
//! [[app]]
//! name = "api"
//! component = "target/wasm32-wasip2/release/api.wasm"
//! routes = ["/api", "example.com/v2"]
//! allow_outbound = ["upstream.example.com:443"]
//! mode = "auto"            # or "loop" / "pool"
//!
//! [app.vars]
//! GREETING = "hello"
//!
//! [app.limits]
//! fuel = 5_000_000_000
//! max_memory = "64M"
//! timeout = "10s"
//! max_in_flight = 200
//!
//! [app.reuse]              # optional: a fresh sandbox per request by default
//! mode = "serial"
//! max_requests = "1000-1500"
//! idle_timeout = "30s"
//! memory_high_water = "48M"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::Deserialize;

use crate::model::app::AppSettings;
use crate::model::mode::ModeChoice;
use crate::model::reuse::Reuse;
use crate::model::route::{normalize_route, parse_route};
use crate::model::tenant::check_name;
use crate::model::text::parse_size;

/// A parsed manifest; component paths are relative to its directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(rename = "app", default)]
    pub apps: Vec<ManifestApp>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestApp {
    pub name: String,
    pub component: PathBuf,
    #[serde(default)]
    pub routes: Vec<String>,
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    #[serde(default)]
    pub allow_outbound: Vec<String>,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub limits: ManifestLimits,
    #[serde(default)]
    pub reuse: Option<ManifestReuse>,
}

/// `[app.reuse]`: the app's instance-reuse contract.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestReuse {
    pub mode: Option<String>,
    /// `N` or `"LOW-HIGH"`.
    pub max_requests: Option<Size>,
    pub max_concurrent: Option<u32>,
    pub idle_timeout: Option<String>,
    pub memory_high_water: Option<Size>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestLimits {
    pub fuel: Option<u64>,
    /// Bytes, or a size such as `"64M"`.
    pub max_memory: Option<Size>,
    /// A duration such as `"10s"`.
    pub timeout: Option<String>,
    pub max_in_flight: Option<u64>,
}

/// A size given as a number of bytes or as text with a K/M/G suffix.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

impl Manifest {
    /// Reads and checks `path`; component paths become absolute.
    #[expect(clippy::disallowed_methods, reason = "CLI and start-up, not the loop")]
    pub fn load(path: &Path) -> anyhow::Result<Manifest> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read {}", path.display()))?;
        let mut manifest = Manifest::parse(&text)
            .with_context(|| format!("{} is not a valid manifest", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for app in &mut manifest.apps {
            if app.component.is_relative() {
                app.component = base.join(&app.component);
            }
        }
        Ok(manifest)
    }

    /// Parses manifest text and checks names and routes.
    pub fn parse(text: &str) -> anyhow::Result<Manifest> {
        let manifest: Manifest = toml::from_str(text)?;
        if manifest.apps.is_empty() {
            bail!("no [[app]] entries");
        }
        let mut names = std::collections::BTreeSet::new();
        for app in &manifest.apps {
            check_name("app", &app.name)?;
            if !names.insert(&app.name) {
                bail!("app {:?} appears twice", app.name);
            }
            app.settings()?;
        }
        Ok(manifest)
    }
}

impl ManifestReuse {
    fn to_reuse(&self) -> anyhow::Result<Reuse> {
        let mut reuse = Reuse::default();
        if let Some(mode) = &self.mode {
            reuse.set("reuse", mode)?;
        }
        match &self.max_requests {
            None => {}
            Some(Size::Bytes(n)) => reuse.set("reuse_max_requests", &n.to_string())?,
            Some(Size::Text(text)) => reuse.set("reuse_max_requests", text)?,
        }
        if let Some(n) = self.max_concurrent {
            reuse.set("reuse_max_concurrent", &n.to_string())?;
        }
        if let Some(text) = &self.idle_timeout {
            let ms = humantime::parse_duration(text)
                .with_context(|| format!("idle_timeout {text:?}"))?
                .as_millis();
            reuse.set("reuse_idle_timeout_ms", &ms.to_string())?;
        }
        match &self.memory_high_water {
            None => {}
            Some(Size::Bytes(n)) => reuse.set("reuse_memory_high_water", &n.to_string())?,
            Some(Size::Text(text)) => reuse.set("reuse_memory_high_water", text)?,
        }
        Ok(reuse)
    }
}

impl ManifestApp {
    /// The app's settings as the admin API takes them.
    pub fn settings(&self) -> anyhow::Result<AppSettings> {
        let routes: Vec<_> = if self.routes.is_empty() {
            vec![parse_route(&format!("/{}", self.name))?]
        } else {
            self.routes
                .iter()
                .map(|r| parse_route(r))
                .collect::<Result<_, _>>()?
        };
        let routes = routes
            .iter()
            .map(normalize_route)
            .collect::<Result<Vec<_>, _>>()?;
        let mode = match &self.mode {
            None => None,
            Some(text) => match text.parse::<ModeChoice>() {
                Ok(ModeChoice::Auto) => None,
                Ok(choice) => Some(choice),
                Err(e) => bail!("app {:?}: {e}", self.name),
            },
        };
        let max_memory = match &self.limits.max_memory {
            None => None,
            Some(Size::Bytes(n)) => Some(*n),
            Some(Size::Text(text)) => Some(parse_size(text)?),
        };
        let timeout_ms = match &self.limits.timeout {
            None => None,
            Some(text) => Some(
                humantime::parse_duration(text)
                    .with_context(|| format!("app {:?}: timeout {text:?}", self.name))?
                    .as_millis() as u64,
            ),
        };
        let reuse = match &self.reuse {
            None => Reuse::default(),
            Some(reuse) => reuse
                .to_reuse()
                .with_context(|| format!("app {:?}: [app.reuse]", self.name))?,
        };
        Ok(AppSettings {
            reuse,
            routes,
            vars: self.vars.clone(),
            allow_outbound: self.allow_outbound.clone(),
            mode,
            fuel: self.limits.fuel,
            max_memory,
            timeout_ms,
            max_in_flight: self.limits.max_in_flight,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_parses_into_settings() {
        let manifest = Manifest::parse(
            r#"
            [[app]]
            name = "api"
            component = "api.wasm"
            routes = ["/api", "example.com/v2"]
            [app.vars]
            GREETING = "hi"
            [app.limits]
            max_memory = "64M"
            timeout = "10s"

            [[app]]
            name = "plain"
            component = "plain.wasm"
            "#,
        )
        .unwrap();
        let api = manifest.apps[0].settings().unwrap();
        assert_eq!(api.routes.len(), 2);
        assert_eq!(api.routes[1].host.as_deref(), Some("example.com"));
        assert_eq!(
            (api.max_memory, api.timeout_ms),
            (Some(64 << 20), Some(10_000))
        );
        assert_eq!(
            manifest.apps[1].settings().unwrap().routes[0].prefix,
            "/plain"
        );
    }

    #[test]
    fn mistakes_are_named() {
        for (text, needle) in [
            ("", "no [[app]]"),
            (
                "[[app]]\nname = \"a\"\ncomponent = \"a.wasm\"\ncolour = 1",
                "colour",
            ),
            (
                "[[app]]\nname = \"a b\"\ncomponent = \"a.wasm\"",
                "app name",
            ),
            (
                "[[app]]\nname = \"a\"\ncomponent = \"a.wasm\"\nroutes = [\"/x/../y\"]",
                "route prefix",
            ),
            (
                "[[app]]\nname = \"a\"\ncomponent = \"x\"\n[[app]]\nname = \"a\"\ncomponent = \"y\"",
                "twice",
            ),
        ] {
            let err = format!("{:#}", Manifest::parse(text).unwrap_err());
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
