//! The registry: tenants, their tokens, apps, versions, active routes and cached
//! artifacts. [`Registry`] is the interface the admin API and the master use;
//! [`SqliteRegistry`] keeps it in SQLite inside the data directory (the embedded
//! default), [`crate::registry::postgres`] in PostgreSQL for several nodes. Every call is
//! one transaction: a refused call changes nothing. With SQLite, component bytes live
//! beside the database, by content hash (`deploy/compile.rs`), and the registry only records
//! the hash; a shared registry keeps the bytes too.
//!
//! Calls block on file I/O: the master runs them on a blocking thread, never on its
//! event loop.

pub mod follow;
pub mod postgres;

use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use rusqlite::{Connection, OptionalExtension as _, params};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::model::Invalid;
use crate::model::app::{ActiveApp, AppInfo, AppSettings, Version};
use crate::model::host::{
    HostBinding, covers as host_pattern_covers, normalize_pattern, patterns_meet,
};
use crate::model::mode::Mode;
use crate::model::quota::{OverQuota, Quotas};
use crate::model::route::{Route, check_route, takes_from};
use crate::model::tenant::{Tenant, TenantLimits, check_name};

/// Why a registry call was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    /// The registry's database does not answer (a shared registry that is down).
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Storage(#[from] anyhow::Error),
    /// Over one of the tenant's quotas.
    #[error(transparent)]
    OverQuota(#[from] OverQuota),
}

impl From<rusqlite::Error> for RegistryError {
    fn from(e: rusqlite::Error) -> Self {
        RegistryError::Storage(anyhow::Error::from(e).context("registry database error"))
    }
}

impl From<Invalid> for RegistryError {
    fn from(e: Invalid) -> Self {
        RegistryError::Invalid(e.0)
    }
}

pub type Result<T> = std::result::Result<T, RegistryError>;

/// A version to record: the component's hash and what validation found.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub sha256: String,
    pub size: u64,
    pub export: String,
    /// Where it runs.
    pub mode: Mode,
    pub settings: AppSettings,
    /// The component itself, for a registry that keeps the bytes.
    pub bytes: bytes::Bytes,
    /// The tenant's quotas, checked in the writing transaction.
    pub quotas: Quotas,
}

/// The registry's operations. Implementations must make each call atomic.
pub trait Registry: Send + Sync {
    /// Creates a tenant; returns it and its token, which is never shown again.
    fn create_tenant(&self, name: &str, limits: &TenantLimits) -> Result<(Tenant, String)>;
    fn tenants(&self) -> Result<Vec<Tenant>>;
    /// Replaces a tenant's limits and quotas (the admin's overrides).
    fn set_tenant_limits(&self, name: &str, limits: &TenantLimits) -> Result<Tenant>;
    /// Deletes a tenant with its apps.
    fn delete_tenant(&self, name: &str) -> Result<()>;
    /// The tenant a token belongs to, compared in constant time.
    fn authenticate(&self, token: &str) -> Result<Option<Tenant>>;
    fn apps(&self, tenant: &Tenant) -> Result<Vec<AppInfo>>;
    fn versions(&self, tenant: &Tenant, app: &str) -> Result<Vec<Version>>;
    /// Records a new version of `app` (creating the app) and makes it active, within
    /// the tenant's quotas (`version.quotas`); prunes the app's versions past
    /// `max_versions`, never the active one or the rollback target.
    fn add_version(&self, tenant: &Tenant, app: &str, version: NewVersion) -> Result<Version>;
    /// Makes version `number` of `app` the active one.
    fn activate(&self, tenant: &Tenant, app: &str, number: u64) -> Result<Version>;
    fn delete_app(&self, tenant: &Tenant, app: &str) -> Result<()>;
    /// Every app with an active version, for the workers.
    fn active(&self) -> Result<Vec<ActiveApp>>;
    /// Hashes of every component a version refers to (to keep), for clean-up.
    fn referenced_components(&self) -> Result<Vec<String>>;
    /// Forgets what no version refers to any more (artifact records, and a shared
    /// registry's component bytes); returns the hashes still referenced, which the
    /// caller keeps on disk.
    fn collect_garbage(&self) -> Result<Vec<String>>;
    /// The recorded hash of the cached artifact of `sha256` for `engine`.
    fn artifact(&self, sha256: &str, engine: &str) -> Result<Option<String>>;
    fn put_artifact(&self, sha256: &str, engine: &str, artifact_sha256: &str) -> Result<()>;
    /// The bytes of component `sha256`, for a registry that keeps them (a shared
    /// one); `None` when it does not.
    fn component(&self, _sha256: &str) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }
    /// Whether other nodes change this registry too (so this node must follow it).
    fn shared(&self) -> bool {
        false
    }
    /// Binds the hosts `pattern` covers to `tenant`: from then on only its routes may
    /// name them. Refused when another tenant's binding or route is there already.
    fn bind_host(&self, pattern: &str, tenant: &str) -> Result<HostBinding>;
    fn unbind_host(&self, pattern: &str) -> Result<()>;
    fn host_bindings(&self) -> Result<Vec<HostBinding>>;
}

/// The registry in `DATA_DIR/registry.sqlite3`.
pub struct SqliteRegistry {
    db: Mutex<Connection>,
}

const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tenants (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    token_hash BLOB NOT NULL,
    limits TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS apps (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    active_version INTEGER,
    created_at INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);
CREATE TABLE IF NOT EXISTS versions (
    app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    number INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    export TEXT NOT NULL,
    mode TEXT NOT NULL,
    settings TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (app_id, number)
);
CREATE TABLE IF NOT EXISTS routes (
    host TEXT NOT NULL,
    prefix TEXT NOT NULL,
    app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    PRIMARY KEY (host, prefix)
);
CREATE TABLE IF NOT EXISTS hosts (
    pattern TEXT PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants(id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS artifacts (
    sha256 TEXT NOT NULL,
    engine TEXT NOT NULL,
    artifact_sha256 TEXT NOT NULL,
    PRIMARY KEY (sha256, engine)
);
";

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A stored version's mode column.
pub(crate) fn read_mode(text: String) -> std::result::Result<Mode, String> {
    text.parse()
}

/// A fresh token: `wlt_<tenant id>_<64 hex digits of randomness>`.
pub(crate) fn new_token(tenant_id: i64) -> anyhow::Result<(String, Vec<u8>)> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no randomness for a token: {e}"))?;
    let secret = hex::encode(secret);
    let hash = Sha256::digest(secret.as_bytes()).to_vec();
    Ok((format!("wlt_{tenant_id}_{secret}"), hash))
}

/// The `&str` a route's host is stored as: `*` for any host.
pub(crate) fn host_key(host: &Option<String>) -> String {
    host.as_deref()
        .map_or_else(|| "*".to_string(), str::to_ascii_lowercase)
}

/// A route some app holds, and whether another tenant than the claimer's holds it.
pub(crate) struct HeldRoute {
    pub route: Route,
    pub other_tenant: bool,
}

/// A route as the registry stores it (`*` for any host), back as a [`Route`].
pub(crate) fn route_from_key(host: String, prefix: String) -> Route {
    Route {
        host: (host != "*").then_some(host),
        prefix,
    }
}

/// A host binding, and whether it binds the host to another tenant than the claimer's.
pub(crate) struct Bound {
    pub pattern: String,
    pub other_tenant: bool,
}

/// The ownership rule ([`takes_from`]): a claim may not name a host bound to another
/// tenant, take from any route of another tenant, nor take a route another app of
/// the same tenant holds. The refusal names the route that is taken and not who
/// holds it.
pub(crate) fn check_claim(claimed: &[Route], held: &[HeldRoute], bound: &[Bound]) -> Result<()> {
    let show = |r: &Route| format!("{}{}", r.host.as_deref().unwrap_or(""), r.prefix);
    for route in claimed {
        if let Some(host) = &route.host
            && bound
                .iter()
                .any(|b| b.other_tenant && host_pattern_covers(&b.pattern, host))
        {
            return Err(RegistryError::Conflict(format!(
                "the route {} is taken: the operator bound the host {host} to another tenant",
                show(route)
            )));
        }
        for other in held {
            if other.other_tenant && takes_from(route, &other.route) {
                return Err(RegistryError::Conflict(format!(
                    "the route {} is taken: it would serve requests that {}, another tenant's route, serves or may serve (see docs/operations.md, \"Routes are owned\")",
                    show(route),
                    show(&other.route)
                )));
            }
            if !other.other_tenant && *route == other.route {
                return Err(RegistryError::Conflict(format!(
                    "the route {} already belongs to another app",
                    show(route)
                )));
            }
        }
    }
    Ok(())
}

/// Whether binding `pattern` to the tenant `tenant_id` is free: no other tenant's
/// binding covers a host in common, and no other tenant's route names a host it
/// covers.
pub(crate) fn check_binding(
    pattern: &str,
    tenant_id: i64,
    bindings: &[(String, i64)],
    routes: &[(Route, i64)],
) -> Result<()> {
    if bindings
        .iter()
        .any(|(other, owner)| *owner != tenant_id && patterns_meet(other, pattern))
    {
        return Err(RegistryError::Conflict(format!(
            "{pattern} meets a host pattern bound to another tenant"
        )));
    }
    if let Some((route, _)) = routes.iter().find(|(route, owner)| {
        *owner != tenant_id
            && route
                .host
                .as_deref()
                .is_some_and(|host| host_pattern_covers(pattern, host))
    }) {
        return Err(RegistryError::Conflict(format!(
            "another tenant serves {}{}: move or delete that app first",
            route.host.as_deref().unwrap_or(""),
            route.prefix
        )));
    }
    Ok(())
}

/// A token's tenant id and secret, when it has the shape of a token.
pub(crate) fn parse_token(token: &str) -> Option<(i64, &str)> {
    token
        .strip_prefix("wlt_")
        .and_then(|rest| rest.split_once('_'))
        .and_then(|(id, secret)| Some((id.parse::<i64>().ok()?, secret)))
}

impl SqliteRegistry {
    /// Opens (creating and migrating) the registry in `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<SqliteRegistry> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("failed to create the data directory {}", dir.display()))?;
        let path = dir.join("registry.sqlite3");
        let db = Connection::open(&path)
            .with_context(|| format!("failed to open the registry {}", path.display()))?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
        )
        .context("failed to configure the registry database")?;
        let version: i64 = db.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            anyhow::bail!(
                "the registry {} has schema version {version}, newer than this wasmloop knows ({SCHEMA_VERSION}); upgrade wasmloop",
                path.display()
            );
        }
        db.execute_batch(SCHEMA)
            .context("failed to create the registry tables")?;
        db.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
        Ok(SqliteRegistry { db: Mutex::new(db) })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        // A call that panicked dropped its transaction, which rolled it back: the
        // connection is as the last committed call left it.
        let mut db = self.db.lock().unwrap_or_else(|poisoned| {
            tracing::error!("a registry call panicked; its transaction was rolled back");
            self.db.clear_poison();
            poisoned.into_inner()
        });
        f(&mut db)
    }

    fn app_id(db: &Connection, tenant: &Tenant, app: &str) -> Result<i64> {
        db.query_row(
            "SELECT id FROM apps WHERE tenant_id = ?1 AND name = ?2",
            params![tenant.id, app],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(|| RegistryError::NotFound(format!("app {app:?}")))
    }

    fn read_version(row: &rusqlite::Row<'_>, active: Option<i64>) -> rusqlite::Result<Version> {
        let number: i64 = row.get("number")?;
        let settings: String = row.get("settings")?;
        Ok(Version {
            number: number as u64,
            sha256: row.get("sha256")?,
            size: row.get::<_, i64>("size")? as u64,
            export: row.get("export")?,
            mode: read_mode(row.get("mode")?).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
            })?,
            settings: serde_json::from_str(&settings).unwrap_or_default(),
            created_at: row.get::<_, i64>("created_at")? as u64,
            active: active == Some(number),
        })
    }

    /// Replaces `app_id`'s routes with `routes`; a route another app holds is a
    /// conflict (and the caller's transaction is rolled back).
    fn claim_routes(tx: &rusqlite::Transaction<'_>, app_id: i64, routes: &[Route]) -> Result<()> {
        tx.execute("DELETE FROM routes WHERE app_id = ?1", params![app_id])?;
        let held = {
            let mut query = tx.prepare(
                "SELECT r.host, r.prefix, a.tenant_id != (SELECT tenant_id FROM apps WHERE id = ?1)
                 FROM routes r JOIN apps a ON a.id = r.app_id",
            )?;
            query
                .query_map(params![app_id], |row| {
                    Ok(HeldRoute {
                        route: route_from_key(row.get(0)?, row.get(1)?),
                        other_tenant: row.get(2)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?
        };
        let bound = {
            let mut query = tx.prepare(
                "SELECT pattern, tenant_id != (SELECT tenant_id FROM apps WHERE id = ?1) FROM hosts",
            )?;
            query
                .query_map(params![app_id], |row| {
                    Ok(Bound {
                        pattern: row.get(0)?,
                        other_tenant: row.get(1)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?
        };
        check_claim(routes, &held, &bound)?;
        for route in routes {
            tx.execute(
                "INSERT INTO routes (host, prefix, app_id) VALUES (?1, ?2, ?3)",
                params![host_key(&route.host), route.prefix, app_id],
            )?;
        }
        Ok(())
    }

    /// Prunes `app_id`'s versions past the quota (`active` just became active), then
    /// checks the bytes the tenant's versions refer to.
    fn prune_and_check_stored(
        tx: &rusqlite::Transaction<'_>,
        tenant: &Tenant,
        app_id: i64,
        active: i64,
        quotas: &Quotas,
    ) -> Result<()> {
        let numbers = {
            let mut q = tx.prepare("SELECT number FROM versions WHERE app_id = ?1")?;
            q.query_map(params![app_id], |r| r.get::<_, i64>(0))?
                .map(|n| n.map(|n| n as u64))
                .collect::<rusqlite::Result<Vec<u64>>>()?
        };
        for number in quotas.versions_to_prune(numbers, active as u64) {
            tx.execute(
                "DELETE FROM versions WHERE app_id = ?1 AND number = ?2",
                params![app_id, number as i64],
            )?;
        }
        let stored: i64 = tx.query_row(
            "SELECT COALESCE(SUM(size), 0) FROM (SELECT DISTINCT v.sha256, v.size FROM versions v
             JOIN apps a ON a.id = v.app_id WHERE a.tenant_id = ?1)",
            params![tenant.id],
            |r| r.get(0),
        )?;
        quotas.check_stored(stored as u64)?;
        Ok(())
    }

    /// Drops the artifact records of every component not in `keep`.
    pub(crate) fn forget_artifacts_except(&self, keep: &[String]) -> Result<()> {
        self.with(|db| {
            let tx = db.transaction()?;
            let recorded = {
                let mut q = tx.prepare("SELECT DISTINCT sha256 FROM artifacts")?;
                q.query_map([], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()?
            };
            for sha in recorded.iter().filter(|sha| !keep.contains(sha)) {
                tx.execute("DELETE FROM artifacts WHERE sha256 = ?1", params![sha])?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn tenant_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Tenant> {
        let limits: String = row.get("limits")?;
        Ok(Tenant {
            id: row.get("id")?,
            name: row.get("name")?,
            limits: serde_json::from_str(&limits).unwrap_or_default(),
            created_at: row.get::<_, i64>("created_at")? as u64,
        })
    }
}

impl Registry for SqliteRegistry {
    fn create_tenant(&self, name: &str, limits: &TenantLimits) -> Result<(Tenant, String)> {
        check_name("tenant", name)?;
        self.with(|db| {
            let tx = db.transaction()?;
            let exists: Option<i64> = tx
                .query_row("SELECT id FROM tenants WHERE name = ?1", params![name], |r| r.get(0))
                .optional()?;
            if exists.is_some() {
                return Err(RegistryError::Conflict(format!("tenant {name:?} already exists")));
            }
            let created_at = now();
            let limits_json = serde_json::to_string(limits).map_err(anyhow::Error::from)?;
            tx.execute(
                "INSERT INTO tenants (name, token_hash, limits, created_at) VALUES (?1, x'', ?2, ?3)",
                params![name, limits_json, created_at as i64],
            )?;
            let id = tx.last_insert_rowid();
            let (token, hash) = new_token(id)?;
            tx.execute("UPDATE tenants SET token_hash = ?1 WHERE id = ?2", params![hash, id])?;
            tx.commit()?;
            Ok((
                Tenant {
                    id,
                    name: name.to_string(),
                    limits: limits.clone(),
                    created_at,
                },
                token,
            ))
        })
    }

    fn bind_host(&self, pattern: &str, tenant: &str) -> Result<HostBinding> {
        let pattern = normalize_pattern(pattern)?;
        self.with(|db| {
            let tx = db.transaction()?;
            let tenant_id: i64 = tx
                .query_row("SELECT id FROM tenants WHERE name = ?1", params![tenant], |r| r.get(0))
                .optional()?
                .ok_or_else(|| RegistryError::NotFound(format!("tenant {tenant:?}")))?;
            let bindings = {
                let mut q = tx.prepare("SELECT pattern, tenant_id FROM hosts")?;
                q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<Vec<(String, i64)>>>()?
            };
            let routes = {
                let mut q = tx.prepare(
                    "SELECT r.host, r.prefix, a.tenant_id FROM routes r JOIN apps a ON a.id = r.app_id",
                )?;
                q.query_map([], |r| Ok((route_from_key(r.get(0)?, r.get(1)?), r.get(2)?)))?
                    .collect::<rusqlite::Result<Vec<(Route, i64)>>>()?
            };
            check_binding(&pattern, tenant_id, &bindings, &routes)?;
            tx.execute(
                "INSERT INTO hosts (pattern, tenant_id) VALUES (?1, ?2)
                 ON CONFLICT (pattern) DO UPDATE SET tenant_id = excluded.tenant_id",
                params![pattern, tenant_id],
            )?;
            tx.commit()?;
            Ok(HostBinding {
                pattern,
                tenant: tenant.to_string(),
            })
        })
    }

    fn unbind_host(&self, pattern: &str) -> Result<()> {
        let pattern = normalize_pattern(pattern)?;
        self.with(|db| {
            if db.execute("DELETE FROM hosts WHERE pattern = ?1", params![pattern])? == 0 {
                return Err(RegistryError::NotFound(format!("host binding {pattern:?}")));
            }
            Ok(())
        })
    }

    fn host_bindings(&self) -> Result<Vec<HostBinding>> {
        self.with(|db| {
            let mut q = db.prepare(
                "SELECT h.pattern, t.name FROM hosts h JOIN tenants t ON t.id = h.tenant_id ORDER BY h.pattern",
            )?;
            let rows = q.query_map([], |r| {
                Ok(HostBinding {
                    pattern: r.get(0)?,
                    tenant: r.get(1)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn tenants(&self) -> Result<Vec<Tenant>> {
        self.with(|db| {
            let mut stmt = db.prepare("SELECT * FROM tenants ORDER BY name")?;
            let rows = stmt.query_map([], Self::tenant_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn set_tenant_limits(&self, name: &str, limits: &TenantLimits) -> Result<Tenant> {
        let limits_json = serde_json::to_string(limits).map_err(anyhow::Error::from)?;
        self.with(|db| {
            let n = db.execute(
                "UPDATE tenants SET limits = ?1 WHERE name = ?2",
                params![limits_json, name],
            )?;
            if n == 0 {
                return Err(RegistryError::NotFound(format!("tenant {name:?}")));
            }
            Ok(db.query_row(
                "SELECT * FROM tenants WHERE name = ?1",
                params![name],
                Self::tenant_from_row,
            )?)
        })
    }

    fn delete_tenant(&self, name: &str) -> Result<()> {
        self.with(|db| {
            let n = db.execute("DELETE FROM tenants WHERE name = ?1", params![name])?;
            if n == 0 {
                return Err(RegistryError::NotFound(format!("tenant {name:?}")));
            }
            Ok(())
        })
    }

    fn authenticate(&self, token: &str) -> Result<Option<Tenant>> {
        let Some((id, secret)) = parse_token(token) else {
            return Ok(None);
        };
        let presented = Sha256::digest(secret.as_bytes());
        self.with(|db| {
            let row = db
                .query_row("SELECT * FROM tenants WHERE id = ?1", params![id], |row| {
                    Ok((
                        Self::tenant_from_row(row)?,
                        row.get::<_, Vec<u8>>("token_hash")?,
                    ))
                })
                .optional()?;
            Ok(row.and_then(|(tenant, stored)| {
                bool::from(stored.as_slice().ct_eq(presented.as_slice())).then_some(tenant)
            }))
        })
    }

    fn apps(&self, tenant: &Tenant) -> Result<Vec<AppInfo>> {
        self.with(|db| {
            let mut stmt = db.prepare(
                "SELECT a.id, a.name, a.active_version, (SELECT COUNT(*) FROM versions v WHERE v.app_id = a.id),
                        a.created_at,
                        (SELECT v.created_at FROM versions v WHERE v.app_id = a.id AND v.number = a.active_version)
                 FROM apps a WHERE a.tenant_id = ?1 ORDER BY a.name",
            )?;
            let rows = stmt
                .query_map(params![tenant.id], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut apps = Vec::new();
            for (id, name, active, versions, created_at, deployed_at) in rows {
                let mut stmt =
                    db.prepare("SELECT host, prefix FROM routes WHERE app_id = ?1 ORDER BY host, prefix")?;
                let routes = stmt
                    .query_map(params![id], |r| {
                        let host: String = r.get(0)?;
                        Ok(Route {
                            host: (host != "*").then_some(host),
                            prefix: r.get(1)?,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                apps.push(AppInfo {
                    name,
                    tenant: tenant.name.clone(),
                    active_version: active.map(|v| v as u64),
                    versions: versions as u64,
                    routes,
                    created_at: created_at as u64,
                    deployed_at: deployed_at.map(|t| t as u64),
                });
            }
            Ok(apps)
        })
    }

    fn versions(&self, tenant: &Tenant, app: &str) -> Result<Vec<Version>> {
        self.with(|db| {
            let app_id = Self::app_id(db, tenant, app)?;
            let active: Option<i64> = db.query_row(
                "SELECT active_version FROM apps WHERE id = ?1",
                params![app_id],
                |r| r.get(0),
            )?;
            let mut stmt =
                db.prepare("SELECT * FROM versions WHERE app_id = ?1 ORDER BY number")?;
            let rows = stmt.query_map(params![app_id], |row| Self::read_version(row, active))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn add_version(&self, tenant: &Tenant, app: &str, version: NewVersion) -> Result<Version> {
        check_name("app", app)?;
        for route in &version.settings.routes {
            check_route(route)?;
        }
        self.with(|db| {
            let tx = db.transaction()?;
            let app_id = match tx
                .query_row(
                    "SELECT id FROM apps WHERE tenant_id = ?1 AND name = ?2",
                    params![tenant.id, app],
                    |r| r.get::<_, i64>(0),
                )
                .optional()?
            {
                Some(id) => id,
                None => {
                    let apps: i64 = tx.query_row(
                        "SELECT COUNT(*) FROM apps WHERE tenant_id = ?1",
                        params![tenant.id],
                        |r| r.get(0),
                    )?;
                    version.quotas.check_new_app(apps as u64)?;
                    tx.execute(
                        "INSERT INTO apps (tenant_id, name, created_at) VALUES (?1, ?2, ?3)",
                        params![tenant.id, app, now() as i64],
                    )?;
                    tx.last_insert_rowid()
                }
            };
            let number: i64 = tx.query_row(
                "SELECT COALESCE(MAX(number), 0) + 1 FROM versions WHERE app_id = ?1",
                params![app_id],
                |r| r.get(0),
            )?;
            let settings = serde_json::to_string(&version.settings).map_err(anyhow::Error::from)?;
            let created_at = now();
            tx.execute(
                "INSERT INTO versions (app_id, number, sha256, size, export, mode, settings, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    app_id,
                    number,
                    version.sha256,
                    version.size as i64,
                    version.export,
                    version.mode.as_str(),
                    settings,
                    created_at as i64
                ],
            )?;
            Self::claim_routes(&tx, app_id, &version.settings.routes)?;
            tx.execute(
                "UPDATE apps SET active_version = ?1 WHERE id = ?2",
                params![number, app_id],
            )?;
            Self::prune_and_check_stored(&tx, tenant, app_id, number, &version.quotas)?;
            tx.commit()?;
            Ok(Version {
                number: number as u64,
                sha256: version.sha256,
                size: version.size,
                export: version.export,
                mode: version.mode,
                settings: version.settings,
                created_at,
                active: true,
            })
        })
    }

    fn activate(&self, tenant: &Tenant, app: &str, number: u64) -> Result<Version> {
        self.with(|db| {
            let tx = db.transaction()?;
            let app_id = Self::app_id(&tx, tenant, app)?;
            let version = tx
                .query_row(
                    "SELECT * FROM versions WHERE app_id = ?1 AND number = ?2",
                    params![app_id, number as i64],
                    |row| Self::read_version(row, Some(number as i64)),
                )
                .optional()?
                .ok_or_else(|| RegistryError::NotFound(format!("version {number} of {app:?}")))?;
            Self::claim_routes(&tx, app_id, &version.settings.routes)?;
            tx.execute(
                "UPDATE apps SET active_version = ?1 WHERE id = ?2",
                params![number as i64, app_id],
            )?;
            tx.commit()?;
            Ok(version)
        })
    }

    fn delete_app(&self, tenant: &Tenant, app: &str) -> Result<()> {
        self.with(|db| {
            let app_id = Self::app_id(db, tenant, app)?;
            db.execute("DELETE FROM apps WHERE id = ?1", params![app_id])?;
            Ok(())
        })
    }

    fn active(&self) -> Result<Vec<ActiveApp>> {
        self.with(|db| {
            let mut stmt = db.prepare(
                "SELECT t.name AS tenant, t.limits AS tenant_limits, a.name AS app, v.*
                 FROM apps a JOIN tenants t ON t.id = a.tenant_id
                 JOIN versions v ON v.app_id = a.id AND v.number = a.active_version
                 ORDER BY t.name, a.name",
            )?;
            let rows = stmt.query_map([], |row| {
                let limits: String = row.get("tenant_limits")?;
                let number: i64 = row.get("number")?;
                Ok(ActiveApp {
                    tenant: row.get("tenant")?,
                    tenant_limits: serde_json::from_str(&limits).unwrap_or_default(),
                    app: row.get("app")?,
                    version: Self::read_version(row, Some(number))?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn referenced_components(&self) -> Result<Vec<String>> {
        self.with(|db| {
            let mut stmt = db.prepare("SELECT DISTINCT sha256 FROM versions")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn collect_garbage(&self) -> Result<Vec<String>> {
        let referenced = self.referenced_components()?;
        self.forget_artifacts_except(&referenced)?;
        Ok(referenced)
    }

    fn artifact(&self, sha256: &str, engine: &str) -> Result<Option<String>> {
        self.with(|db| {
            Ok(db
                .query_row(
                    "SELECT artifact_sha256 FROM artifacts WHERE sha256 = ?1 AND engine = ?2",
                    params![sha256, engine],
                    |r| r.get(0),
                )
                .optional()?)
        })
    }

    fn put_artifact(&self, sha256: &str, engine: &str, artifact_sha256: &str) -> Result<()> {
        self.with(|db| {
            db.execute(
                "INSERT OR REPLACE INTO artifacts (sha256, engine, artifact_sha256) VALUES (?1, ?2, ?3)",
                params![sha256, engine, artifact_sha256],
            )?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> (SqliteRegistry, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "wasmloop-registry-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        (SqliteRegistry::open(&dir).unwrap(), dir)
    }

    fn rand_suffix() -> u64 {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).unwrap();
        u64::from_le_bytes(b)
    }

    fn version(routes: &[&str]) -> NewVersion {
        NewVersion {
            sha256: "ab".repeat(32),
            size: 10,
            export: "wasi:http/handler@0.3.0".into(),
            mode: Mode::Loop,
            bytes: bytes::Bytes::new(),
            quotas: Quotas::UNLIMITED,
            settings: AppSettings {
                routes: routes
                    .iter()
                    .map(|p| Route {
                        host: None,
                        prefix: p.to_string(),
                    })
                    .collect(),
                ..AppSettings::default()
            },
        }
    }

    #[test]
    fn tokens_authenticate_their_tenant_only() {
        let (reg, _dir) = registry();
        let (a, token_a) = reg.create_tenant("a", &TenantLimits::default()).unwrap();
        let (b, token_b) = reg.create_tenant("b", &TenantLimits::default()).unwrap();
        assert_eq!(reg.authenticate(&token_a).unwrap(), Some(a.clone()));
        assert_eq!(reg.authenticate(&token_b).unwrap(), Some(b.clone()));
        // B's id with A's secret, a truncated token, garbage.
        let forged = format!("wlt_{}_{}", b.id, token_a.rsplit('_').next().unwrap());
        for bad in [
            forged.as_str(),
            &token_a[..token_a.len() - 1],
            "",
            "wlt_x_y",
            "Bearer",
        ] {
            assert_eq!(reg.authenticate(bad).unwrap(), None, "{bad}");
        }
        assert!(matches!(
            reg.create_tenant("a", &TenantLimits::default()),
            Err(RegistryError::Conflict(_))
        ));
    }

    #[test]
    fn versions_count_up_and_rollback_restores_routes() {
        let (reg, _dir) = registry();
        let (t, _) = reg.create_tenant("t", &TenantLimits::default()).unwrap();
        assert_eq!(
            reg.add_version(&t, "app", version(&["/a"])).unwrap().number,
            1
        );
        assert_eq!(
            reg.add_version(&t, "app", version(&["/b"])).unwrap().number,
            2
        );
        assert_eq!(reg.apps(&t).unwrap()[0].routes[0].prefix, "/b");
        reg.activate(&t, "app", 1).unwrap();
        let apps = reg.apps(&t).unwrap();
        assert_eq!(
            (apps[0].active_version, apps[0].routes[0].prefix.as_str()),
            (Some(1), "/a")
        );
        let versions = reg.versions(&t, "app").unwrap();
        assert_eq!(
            versions.iter().map(|v| v.active).collect::<Vec<_>>(),
            [true, false]
        );
        assert!(matches!(
            reg.activate(&t, "app", 9),
            Err(RegistryError::NotFound(_))
        ));
    }

    #[test]
    fn a_route_held_by_another_app_is_a_conflict_and_changes_nothing() {
        let (reg, _dir) = registry();
        let (a, _) = reg.create_tenant("a", &TenantLimits::default()).unwrap();
        let (b, _) = reg.create_tenant("b", &TenantLimits::default()).unwrap();
        reg.add_version(&a, "one", version(&["/shared"])).unwrap();
        let refused = reg.add_version(&b, "two", version(&["/shared"]));
        assert!(
            matches!(refused, Err(RegistryError::Conflict(_))),
            "{refused:?}"
        );
        assert!(reg.apps(&b).unwrap().is_empty());
        assert_eq!(reg.active().unwrap().len(), 1);
    }
}
