//! The registry on PostgreSQL (`--registry postgres://...`), for several nodes that
//! share one registry. Tenants, tokens, apps, versions, routes and the component
//! bytes (`bytea`) live in the database; every change that alters what is served
//! sends `NOTIFY wasmloop_changes` in its transaction, which [`crate::registry::follow`] turns
//! into a re-read on every node. Compiled artifacts stay per node: their records are
//! kept by a [`SqliteRegistry`] in the node's data directory.
//!
//! Schema migrations are numbered, applied at start in one transaction under an
//! advisory lock (nodes starting together apply each once), and recorded in
//! `wasmloop_schema`. A database newer than this binary is refused.
//!
//! Calls block on the network: the master runs them on blocking threads. A lost
//! connection makes the call fail as [`RegistryError::Unavailable`] and is
//! reopened by the next call.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use postgres::error::SqlState;
use postgres::{Client, GenericClient, NoTls, Row, Transaction};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::model::app::{ActiveApp, AppInfo, Version};
use crate::model::host::{HostBinding, normalize_pattern};
use crate::model::quota::Quotas;
use crate::model::route::{Route, check_route};
use crate::model::tenant::{Tenant, TenantLimits, check_name};
use crate::registry::{
    Bound, HeldRoute, NewVersion, Registry, RegistryError, Result, SqliteRegistry, check_binding,
    check_claim, host_key, new_token, now, parse_token, read_mode, route_from_key,
};

/// The channel every change is announced on.
pub const CHANNEL: &str = "wasmloop_changes";

/// How long opening a connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Serializes route claims across nodes (`pg_advisory_xact_lock`); any fixed number.
const ROUTES_LOCK: i64 = 0x7761_736d_726f_7574;

/// Serializes migrations across nodes (`pg_advisory_xact_lock`); any fixed number.
const MIGRATION_LOCK: i64 = 0x7761_736d_6c6f_6f70;

/// The schema, one entry per version; never edit a released entry, add one.
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE tenants (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    token_hash BYTEA NOT NULL,
    limits TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE apps (
    id BIGSERIAL PRIMARY KEY,
    tenant_id BIGINT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    active_version BIGINT,
    created_at BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);
CREATE TABLE components (
    sha256 TEXT PRIMARY KEY,
    bytes BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE versions (
    app_id BIGINT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    number BIGINT NOT NULL,
    sha256 TEXT NOT NULL REFERENCES components(sha256),
    size BIGINT NOT NULL,
    export TEXT NOT NULL,
    mode TEXT NOT NULL,
    settings TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (app_id, number)
);
CREATE TABLE routes (
    host TEXT NOT NULL,
    prefix TEXT NOT NULL,
    app_id BIGINT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    PRIMARY KEY (host, prefix)
);
",
    "
CREATE TABLE hosts (
    pattern TEXT PRIMARY KEY,
    tenant_id BIGINT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE
);
",
];

impl From<postgres::Error> for RegistryError {
    fn from(e: postgres::Error) -> Self {
        if unreachable(&e) {
            RegistryError::Unavailable(format!("the registry database is unreachable: {e}"))
        } else if e.code() == Some(&SqlState::UNIQUE_VIOLATION)
            || e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE)
        {
            RegistryError::Conflict(
                "another change to the same names or routes was made at the same time; try again"
                    .into(),
            )
        } else {
            RegistryError::Storage(anyhow::Error::from(e).context("registry database error"))
        }
    }
}

/// Whether `e` means the database did not answer (or is shutting down or starting
/// up), as opposed to answering no: connection exceptions (SQLSTATE class 08) and
/// operator interventions (class 57, such as `admin_shutdown` and
/// `cannot_connect_now`).
fn unreachable(e: &postgres::Error) -> bool {
    let code = e.code().map(SqlState::code).unwrap_or("");
    e.is_closed() || e.as_db_error().is_none() || code.starts_with("08") || code.starts_with("57")
}

/// The registry in a PostgreSQL database shared by every node.
pub struct PostgresRegistry {
    config: postgres::Config,
    /// The URL without its password, for messages.
    shown: String,
    client: Mutex<Option<Client>>,
    /// This node's artifact records.
    local: SqliteRegistry,
}

/// `url` with every password replaced by `***`, for logs, errors and `/healthz`, in
/// each form PostgreSQL accepts: a URL's user info (`postgres://user:pw@host`), a
/// URL's query parameters (`?password=pw`, `sslpassword`), and key=value settings
/// (`password=pw`, `password = 'p w'`, with quotes and escapes). Whatever cannot be
/// read as one of those is hidden whole.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => redact_url(scheme, rest),
        None => redact_key_values(url).unwrap_or_else(|| "(connection settings hidden)".into()),
    }
}

fn is_secret_key(key: &str) -> bool {
    key.to_ascii_lowercase().contains("password")
}

fn redact_url(scheme: &str, rest: &str) -> String {
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let (authority, path) =
        before_query.split_at(before_query.find('/').unwrap_or(before_query.len()));
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_string(),
    };
    let query = query.map(|query| {
        query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if is_secret_key(key) => format!("{key}=***"),
                _ => pair.to_string(),
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    match query {
        Some(query) => format!("{scheme}://{authority}{path}?{query}"),
        None => format!("{scheme}://{authority}{path}"),
    }
}

/// `key = value` settings separated by white space, a value plain or in single
/// quotes with `\` escapes; `None` when the text is not in that form.
fn redact_key_values(text: &str) -> Option<String> {
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let key_end = rest.find(|c: char| c == '=' || c.is_whitespace())?;
        let key = &rest[..key_end];
        rest = rest[key_end..].trim_start().strip_prefix('=')?.trim_start();
        let (value, after) = if let Some(quoted) = rest.strip_prefix('\'') {
            let mut end = None;
            let mut escaped = false;
            for (i, c) in quoted.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '\'' => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let end = end?;
            (&rest[..end + 2], &quoted[end + 1..])
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        if key.is_empty() {
            return None;
        }
        out.push(if is_secret_key(key) {
            format!("{key}=***")
        } else {
            format!("{key}={value}")
        });
        rest = after.trim_start();
    }
    Some(out.join(" "))
}

/// Opens a connection to the database `config` names.
pub fn connect(config: &postgres::Config) -> std::result::Result<Client, postgres::Error> {
    let mut config = config.clone();
    config.connect_timeout(CONNECT_TIMEOUT);
    config.connect(NoTls)
}

/// Parses a `postgres://` URL (or key=value string) into a connection config.
pub fn parse(url: &str) -> anyhow::Result<postgres::Config> {
    url.parse::<postgres::Config>()
        .with_context(|| format!("--registry {} is not a PostgreSQL URL", redact(url)))
}

impl PostgresRegistry {
    /// Connects to `url` and applies the migrations this database lacks; the
    /// artifact records stay in `local`. Fails when the database is unreachable:
    /// the caller decides whether to wait ([`PostgresRegistry::open_waiting`]).
    pub fn open(url: &str, local: SqliteRegistry) -> anyhow::Result<PostgresRegistry> {
        let config = parse(url)?;
        let shown = redact(url);
        let mut client = connect(&config)
            .with_context(|| format!("failed to connect to the registry at {shown}"))?;
        migrate(&mut client)
            .with_context(|| format!("failed to migrate the registry at {shown}"))?;
        Ok(PostgresRegistry {
            config,
            shown,
            client: Mutex::new(Some(client)),
            local,
        })
    }

    /// Like [`PostgresRegistry::open`], but waits for a database that is down,
    /// saying so every time it retries. Other failures (a bad URL, a refused
    /// password, a database newer than this binary) end the wait.
    pub fn open_waiting(
        url: &str,
        local: impl Fn() -> anyhow::Result<SqliteRegistry>,
    ) -> anyhow::Result<PostgresRegistry> {
        let mut delay = Duration::from_millis(500);
        loop {
            match PostgresRegistry::open(url, local()?) {
                Ok(registry) => return Ok(registry),
                Err(e) if is_unreachable(&e) => {
                    tracing::warn!(
                        "waiting for the registry at {}: {}; not serving until it answers (retrying in {} ms)",
                        redact(url),
                        e.root_cause(),
                        delay.as_millis()
                    );
                    #[expect(
                        clippy::disallowed_methods,
                        reason = "a blocking thread, at start-up"
                    )]
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs `f` on the connection. A kept connection is checked first (one empty
    /// query) and replaced when the database restarted since it was opened, so a
    /// call after an outage succeeds rather than failing on a dead connection. A call
    /// that finds the database gone drops the connection for the next to reopen.
    fn with<T>(&self, f: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        let mut slot = self.client.lock().unwrap_or_else(|poisoned| {
            // A call panicked mid-way: its connection may be in any state, so the
            // next call opens a new one (the server rolls the old transaction back).
            tracing::error!("a registry call panicked; reconnecting");
            self.client.clear_poison();
            let mut slot = poisoned.into_inner();
            *slot = None;
            slot
        });
        if slot
            .as_mut()
            .is_none_or(|c| c.is_valid(CONNECT_TIMEOUT).is_err())
        {
            *slot = None;
            let client = connect(&self.config).map_err(|e| {
                RegistryError::Unavailable(format!(
                    "the registry database at {} is unreachable: {e}",
                    self.shown
                ))
            })?;
            *slot = Some(client);
        }
        let client = slot.as_mut().expect("a connection was just opened");
        let result = f(client);
        if matches!(result, Err(RegistryError::Unavailable(_))) {
            *slot = None;
        }
        result
    }

    fn app_id(db: &mut impl GenericClient, tenant: &Tenant, app: &str) -> Result<i64> {
        db.query_opt(
            "SELECT id FROM apps WHERE tenant_id = $1 AND name = $2",
            &[&tenant.id, &app],
        )?
        .map(|r| r.get(0))
        .ok_or_else(|| RegistryError::NotFound(format!("app {app:?}")))
    }

    fn read_version(row: &Row, active: Option<i64>) -> Result<Version> {
        let number: i64 = row.get("number");
        let settings: String = row.get("settings");
        Ok(Version {
            number: number as u64,
            sha256: row.get("sha256"),
            size: row.get::<_, i64>("size") as u64,
            export: row.get("export"),
            mode: read_mode(row.get("mode")).map_err(|e| anyhow::anyhow!("versions.mode: {e}"))?,
            settings: serde_json::from_str(&settings).unwrap_or_default(),
            created_at: row.get::<_, i64>("created_at") as u64,
            active: active == Some(number),
        })
    }

    fn tenant_from_row(row: &Row) -> Tenant {
        let limits: String = row.get("limits");
        Tenant {
            id: row.get("id"),
            name: row.get("name"),
            limits: serde_json::from_str(&limits).unwrap_or_default(),
            created_at: row.get::<_, i64>("created_at") as u64,
        }
    }

    /// Replaces `app_id`'s routes; a route another app holds is a conflict.
    /// Replaces `app_id`'s routes with `routes` under the ownership rule. Claims are
    /// serialised across nodes by a transaction-scoped advisory lock: two nodes
    /// deploying overlapping routes at once cannot both see the other's as absent.
    fn claim_routes(tx: &mut impl GenericClient, app_id: i64, routes: &[Route]) -> Result<()> {
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ROUTES_LOCK])?;
        tx.execute("DELETE FROM routes WHERE app_id = $1", &[&app_id])?;
        let held: Vec<HeldRoute> = tx
            .query(
                "SELECT r.host, r.prefix, a.tenant_id != (SELECT tenant_id FROM apps WHERE id = $1)
                 FROM routes r JOIN apps a ON a.id = r.app_id",
                &[&app_id],
            )?
            .iter()
            .map(|row| HeldRoute {
                route: route_from_key(row.get(0), row.get(1)),
                other_tenant: row.get(2),
            })
            .collect();
        let bound: Vec<Bound> = tx
            .query(
                "SELECT pattern, tenant_id != (SELECT tenant_id FROM apps WHERE id = $1) FROM hosts",
                &[&app_id],
            )?
            .iter()
            .map(|row| Bound {
                pattern: row.get(0),
                other_tenant: row.get(1),
            })
            .collect();
        check_claim(routes, &held, &bound)?;
        for route in routes {
            let host = host_key(&route.host);
            let inserted = tx.execute(
                "INSERT INTO routes (host, prefix, app_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&host, &route.prefix, &app_id],
            )?;
            if inserted == 0 {
                return Err(RegistryError::Conflict(format!(
                    "the route {host}{} already belongs to another app",
                    route.prefix
                )));
            }
        }
        Ok(())
    }

    /// Runs `f` in one transaction that, when it commits, announces the change to
    /// every node (`NOTIFY` is delivered on commit, never for a rollback).
    fn change<T>(&self, f: impl FnOnce(&mut Transaction<'_>) -> Result<T>) -> Result<T> {
        self.with(|db| {
            let mut tx = db.transaction()?;
            let value = f(&mut tx)?;
            tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL])?;
            tx.commit()?;
            Ok(value)
        })
    }

    /// Prunes `app_id`'s versions past the quota (`active` just became active), then
    /// checks the bytes the tenant's versions refer to.
    fn prune_and_check_stored(
        tx: &mut Transaction<'_>,
        tenant: &Tenant,
        app_id: i64,
        active: i64,
        quotas: &Quotas,
    ) -> Result<()> {
        let numbers: Vec<u64> = tx
            .query("SELECT number FROM versions WHERE app_id = $1", &[&app_id])?
            .iter()
            .map(|r| r.get::<_, i64>(0) as u64)
            .collect();
        for number in quotas.versions_to_prune(numbers, active as u64) {
            tx.execute(
                "DELETE FROM versions WHERE app_id = $1 AND number = $2",
                &[&app_id, &(number as i64)],
            )?;
        }
        let stored: i64 = tx
            .query_one(
                "SELECT COALESCE(SUM(size), 0)::BIGINT FROM (SELECT DISTINCT v.sha256, v.size FROM versions v
                 JOIN apps a ON a.id = v.app_id WHERE a.tenant_id = $1) AS s",
                &[&tenant.id],
            )?
            .get(0);
        quotas.check_stored(stored as u64)?;
        Ok(())
    }

    /// Drops component bytes no version refers to. Best effort: a deploy that
    /// refers to them at the same moment wins (the foreign key refuses the delete).
    fn sweep_components(&self) {
        let swept = self.with(|db| {
            Ok(db.execute(
                "DELETE FROM components c WHERE NOT EXISTS (SELECT 1 FROM versions v WHERE v.sha256 = c.sha256)",
                &[],
            )?)
        });
        if let Err(e) = swept {
            tracing::debug!("registry: component clean-up deferred: {e}");
        }
    }
}

/// Whether `e` (from [`PostgresRegistry::open`]) means the database did not answer.
fn is_unreachable(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<postgres::Error>())
        .any(unreachable)
}

/// Applies the migrations `client`'s database lacks, under an advisory lock.
fn migrate(client: &mut Client) -> anyhow::Result<()> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    // "already exists, skipping" is not news.
    tx.batch_execute("SET LOCAL client_min_messages = warning")?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS wasmloop_schema (version INTEGER NOT NULL)")?;
    let current: i32 = match tx.query_opt("SELECT version FROM wasmloop_schema", &[])? {
        Some(row) => row.get(0),
        None => {
            tx.execute("INSERT INTO wasmloop_schema (version) VALUES (0)", &[])?;
            0
        }
    };
    let known = MIGRATIONS.len() as i32;
    anyhow::ensure!(
        current <= known,
        "the registry has schema version {current}, newer than this wasmloop knows ({known}); upgrade wasmloop"
    );
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(migration)
            .with_context(|| format!("migration {} failed", i + 1))?;
        tracing::info!(version = i + 1, "registry schema migrated");
    }
    tx.execute("UPDATE wasmloop_schema SET version = $1", &[&known])?;
    tx.commit()?;
    Ok(())
}

impl Registry for PostgresRegistry {
    fn create_tenant(&self, name: &str, limits: &TenantLimits) -> Result<(Tenant, String)> {
        check_name("tenant", name)?;
        let limits_json = serde_json::to_string(limits).map_err(anyhow::Error::from)?;
        self.with(|db| {
            let mut tx = db.transaction()?;
            let created_at = now();
            let row = tx.query_opt(
                "INSERT INTO tenants (name, token_hash, limits, created_at) VALUES ($1, '', $2, $3)
                 ON CONFLICT (name) DO NOTHING RETURNING id",
                &[&name, &limits_json, &(created_at as i64)],
            )?;
            let Some(row) = row else {
                return Err(RegistryError::Conflict(format!(
                    "tenant {name:?} already exists"
                )));
            };
            let id: i64 = row.get(0);
            let (token, hash) = new_token(id)?;
            tx.execute(
                "UPDATE tenants SET token_hash = $1 WHERE id = $2",
                &[&hash, &id],
            )?;
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
        self.change(|tx| {
            // Bindings and route claims take the same lock: neither sees a stale other.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ROUTES_LOCK])?;
            let tenant_id: i64 = tx
                .query_opt("SELECT id FROM tenants WHERE name = $1", &[&tenant])?
                .map(|r| r.get(0))
                .ok_or_else(|| RegistryError::NotFound(format!("tenant {tenant:?}")))?;
            let bindings: Vec<(String, i64)> = tx
                .query("SELECT pattern, tenant_id FROM hosts", &[])?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let routes: Vec<(Route, i64)> = tx
                .query(
                    "SELECT r.host, r.prefix, a.tenant_id FROM routes r JOIN apps a ON a.id = r.app_id",
                    &[],
                )?
                .iter()
                .map(|r| (route_from_key(r.get(0), r.get(1)), r.get(2)))
                .collect();
            check_binding(&pattern, tenant_id, &bindings, &routes)?;
            tx.execute(
                "INSERT INTO hosts (pattern, tenant_id) VALUES ($1, $2)
                 ON CONFLICT (pattern) DO UPDATE SET tenant_id = excluded.tenant_id",
                &[&pattern, &tenant_id],
            )?;
            Ok(HostBinding {
                pattern,
                tenant: tenant.to_string(),
            })
        })
    }

    fn unbind_host(&self, pattern: &str) -> Result<()> {
        let pattern = normalize_pattern(pattern)?;
        self.change(|tx| {
            if tx.execute("DELETE FROM hosts WHERE pattern = $1", &[&pattern])? == 0 {
                return Err(RegistryError::NotFound(format!("host binding {pattern:?}")));
            }
            Ok(())
        })
    }

    fn host_bindings(&self) -> Result<Vec<HostBinding>> {
        self.with(|db| {
            let rows = db.query(
                "SELECT h.pattern, t.name FROM hosts h JOIN tenants t ON t.id = h.tenant_id ORDER BY h.pattern",
                &[],
            )?;
            Ok(rows
                .iter()
                .map(|r| HostBinding {
                    pattern: r.get(0),
                    tenant: r.get(1),
                })
                .collect())
        })
    }

    fn tenants(&self) -> Result<Vec<Tenant>> {
        self.with(|db| {
            let rows = db.query("SELECT * FROM tenants ORDER BY name", &[])?;
            Ok(rows.iter().map(Self::tenant_from_row).collect())
        })
    }

    fn set_tenant_limits(&self, name: &str, limits: &TenantLimits) -> Result<Tenant> {
        let limits_json = serde_json::to_string(limits).map_err(anyhow::Error::from)?;
        self.change(|tx| {
            let row = tx
                .query_opt(
                    "UPDATE tenants SET limits = $1 WHERE name = $2 RETURNING *",
                    &[&limits_json, &name],
                )?
                .ok_or_else(|| RegistryError::NotFound(format!("tenant {name:?}")))?;
            Ok(Self::tenant_from_row(&row))
        })
    }

    fn delete_tenant(&self, name: &str) -> Result<()> {
        self.change(|tx| {
            if tx.execute("DELETE FROM tenants WHERE name = $1", &[&name])? == 0 {
                return Err(RegistryError::NotFound(format!("tenant {name:?}")));
            }
            Ok(())
        })?;
        self.sweep_components();
        Ok(())
    }

    fn authenticate(&self, token: &str) -> Result<Option<Tenant>> {
        let Some((id, secret)) = parse_token(token) else {
            return Ok(None);
        };
        let presented = Sha256::digest(secret.as_bytes());
        self.with(|db| {
            let row = db.query_opt("SELECT * FROM tenants WHERE id = $1", &[&id])?;
            Ok(row.and_then(|row| {
                let stored: Vec<u8> = row.get("token_hash");
                bool::from(stored.as_slice().ct_eq(presented.as_slice()))
                    .then(|| Self::tenant_from_row(&row))
            }))
        })
    }

    fn apps(&self, tenant: &Tenant) -> Result<Vec<AppInfo>> {
        self.with(|db| {
            let rows = db.query(
                "SELECT a.id, a.name, a.active_version, (SELECT COUNT(*) FROM versions v WHERE v.app_id = a.id),
                        a.created_at,
                        (SELECT v.created_at FROM versions v WHERE v.app_id = a.id AND v.number = a.active_version)
                 FROM apps a WHERE a.tenant_id = $1 ORDER BY a.name",
                &[&tenant.id],
            )?;
            let mut apps = Vec::new();
            for row in rows {
                let id: i64 = row.get(0);
                let routes = db
                    .query(
                        "SELECT host, prefix FROM routes WHERE app_id = $1 ORDER BY host, prefix",
                        &[&id],
                    )?
                    .iter()
                    .map(|r| {
                        let host: String = r.get(0);
                        Route {
                            host: (host != "*").then_some(host),
                            prefix: r.get(1),
                        }
                    })
                    .collect();
                apps.push(AppInfo {
                    name: row.get(1),
                    tenant: tenant.name.clone(),
                    active_version: row.get::<_, Option<i64>>(2).map(|v| v as u64),
                    versions: row.get::<_, i64>(3) as u64,
                    routes,
                    created_at: row.get::<_, i64>(4) as u64,
                    deployed_at: row.get::<_, Option<i64>>(5).map(|t| t as u64),
                });
            }
            Ok(apps)
        })
    }

    fn versions(&self, tenant: &Tenant, app: &str) -> Result<Vec<Version>> {
        self.with(|db| {
            let app_id = Self::app_id(db, tenant, app)?;
            let active: Option<i64> = db
                .query_one("SELECT active_version FROM apps WHERE id = $1", &[&app_id])?
                .get(0);
            let rows = db.query(
                "SELECT * FROM versions WHERE app_id = $1 ORDER BY number",
                &[&app_id],
            )?;
            rows.iter().map(|r| Self::read_version(r, active)).collect()
        })
    }

    fn add_version(&self, tenant: &Tenant, app: &str, version: NewVersion) -> Result<Version> {
        check_name("app", app)?;
        for route in &version.settings.routes {
            check_route(route)?;
        }
        let settings = serde_json::to_string(&version.settings).map_err(anyhow::Error::from)?;
        let bytes: &Bytes = &version.bytes;
        self.change(|tx| {
            let created_at = now() as i64;
            tx.execute(
                "INSERT INTO components (sha256, bytes, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&version.sha256, &bytes.as_ref(), &created_at],
            )?;
            let exists = tx
                .query_opt(
                    "SELECT 1 FROM apps WHERE tenant_id = $1 AND name = $2",
                    &[&tenant.id, &app],
                )?
                .is_some();
            if !exists {
                // Serialised with other deploys of this tenant by the tenant's row lock.
                tx.execute("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE", &[&tenant.id])?;
                let apps: i64 = tx
                    .query_one("SELECT COUNT(*) FROM apps WHERE tenant_id = $1", &[&tenant.id])?
                    .get(0);
                version.quotas.check_new_app(apps as u64)?;
            }
            tx.execute(
                "INSERT INTO apps (tenant_id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&tenant.id, &app, &created_at],
            )?;
            // The app's row lock orders concurrent deploys of one app.
            let app_id: i64 = tx
                .query_one(
                    "SELECT id FROM apps WHERE tenant_id = $1 AND name = $2 FOR UPDATE",
                    &[&tenant.id, &app],
                )?
                .get(0);
            let number: i64 = tx
                .query_one(
                    "SELECT COALESCE(MAX(number), 0) + 1 FROM versions WHERE app_id = $1",
                    &[&app_id],
                )?
                .get(0);
            tx.execute(
                "INSERT INTO versions (app_id, number, sha256, size, export, mode, settings, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &app_id,
                    &number,
                    &version.sha256,
                    &(version.size as i64),
                    &version.export,
                    &version.mode.as_str(),
                    &settings,
                    &created_at,
                ],
            )?;
            Self::claim_routes(tx, app_id, &version.settings.routes)?;
            tx.execute(
                "UPDATE apps SET active_version = $1 WHERE id = $2",
                &[&number, &app_id],
            )?;
            Self::prune_and_check_stored(tx, tenant, app_id, number, &version.quotas)?;
            Ok(Version {
                number: number as u64,
                sha256: version.sha256.clone(),
                size: version.size,
                export: version.export.clone(),
                mode: version.mode,
                settings: version.settings.clone(),
                created_at: created_at as u64,
                active: true,
            })
        })
    }

    fn activate(&self, tenant: &Tenant, app: &str, number: u64) -> Result<Version> {
        self.change(|tx| {
            let app_id: i64 = tx
                .query_opt(
                    "SELECT id FROM apps WHERE tenant_id = $1 AND name = $2 FOR UPDATE",
                    &[&tenant.id, &app],
                )?
                .map(|r| r.get(0))
                .ok_or_else(|| RegistryError::NotFound(format!("app {app:?}")))?;
            let version = tx
                .query_opt(
                    "SELECT * FROM versions WHERE app_id = $1 AND number = $2",
                    &[&app_id, &(number as i64)],
                )?
                .map(|row| Self::read_version(&row, Some(number as i64)))
                .ok_or_else(|| RegistryError::NotFound(format!("version {number} of {app:?}")))??;
            Self::claim_routes(tx, app_id, &version.settings.routes)?;
            tx.execute(
                "UPDATE apps SET active_version = $1 WHERE id = $2",
                &[&(number as i64), &app_id],
            )?;
            Ok(version)
        })
    }

    fn delete_app(&self, tenant: &Tenant, app: &str) -> Result<()> {
        self.change(|tx| {
            let app_id = Self::app_id(tx, tenant, app)?;
            tx.execute("DELETE FROM apps WHERE id = $1", &[&app_id])?;
            Ok(())
        })?;
        self.sweep_components();
        Ok(())
    }

    fn active(&self) -> Result<Vec<ActiveApp>> {
        self.with(|db| {
            let rows = db.query(
                "SELECT t.name AS tenant, t.limits AS tenant_limits, a.name AS app, v.*
                 FROM apps a JOIN tenants t ON t.id = a.tenant_id
                 JOIN versions v ON v.app_id = a.id AND v.number = a.active_version
                 ORDER BY t.name, a.name",
                &[],
            )?;
            rows.iter()
                .map(|row| {
                    let limits: String = row.get("tenant_limits");
                    let number: i64 = row.get("number");
                    Ok(ActiveApp {
                        tenant: row.get("tenant"),
                        tenant_limits: serde_json::from_str(&limits).unwrap_or_default(),
                        app: row.get("app"),
                        version: Self::read_version(row, Some(number))?,
                    })
                })
                .collect()
        })
    }

    fn referenced_components(&self) -> Result<Vec<String>> {
        self.with(|db| {
            let rows = db.query("SELECT DISTINCT sha256 FROM versions", &[])?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn collect_garbage(&self) -> Result<Vec<String>> {
        self.sweep_components();
        let referenced = self.referenced_components()?;
        self.local.forget_artifacts_except(&referenced)?;
        Ok(referenced)
    }

    fn component(&self, sha256: &str) -> Result<Option<Vec<u8>>> {
        self.with(|db| {
            Ok(db
                .query_opt("SELECT bytes FROM components WHERE sha256 = $1", &[&sha256])?
                .map(|r| r.get(0)))
        })
    }

    fn artifact(&self, sha256: &str, engine: &str) -> Result<Option<String>> {
        self.local.artifact(sha256, engine)
    }

    fn put_artifact(&self, sha256: &str, engine: &str, artifact_sha256: &str) -> Result<()> {
        self.local.put_artifact(sha256, engine, artifact_sha256)
    }

    fn shared(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_in_every_form_postgres_accepts() {
        for (given, shown) in [
            (
                "postgres://u:s3cret@db:5432/x",
                "postgres://u:***@db:5432/x",
            ),
            (
                "postgresql://u:s3cret@db/x?sslmode=require",
                "postgresql://u:***@db/x?sslmode=require",
            ),
            (
                "postgres://u@db/x?password=s3cret&sslmode=disable",
                "postgres://u@db/x?password=***&sslmode=disable",
            ),
            (
                "postgres://db/x?user=u&PassWord=s3cret",
                "postgres://db/x?user=u&PassWord=***",
            ),
            (
                "postgres://db/x?sslpassword=s3cret",
                "postgres://db/x?sslpassword=***",
            ),
            (
                "postgres://u:s3cret@[::1]:5432/x",
                "postgres://u:***@[::1]:5432/x",
            ),
            (
                "host=db user=u password=s3cret dbname=x",
                "host=db user=u password=*** dbname=x",
            ),
            (
                "host=db password = s3cret dbname=x",
                "host=db password=*** dbname=x",
            ),
            (
                "host=db password='s3 cr\\'et' dbname=x",
                "host=db password=*** dbname=x",
            ),
            ("host=db  password='s3cret'", "host=db password=***"),
        ] {
            let redacted = redact(given);
            assert_eq!(redacted, shown, "{given}");
            assert!(!redacted.contains("s3"), "{given}");
        }
        // Not readable as either form: hidden whole.
        assert!(!redact("host=db password='s3cret").contains("s3cret"));
        assert!(!redact("=s3cret").contains("s3cret"));
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://wl:s3cret@db.internal:5432/wasmloop"),
            "postgres://wl:***@db.internal:5432/wasmloop"
        );
        assert_eq!(redact("postgres://db/wasmloop"), "postgres://db/wasmloop");
        assert_eq!(
            redact("postgres://wl@db/wasmloop"),
            "postgres://wl@db/wasmloop"
        );
        assert_eq!(
            redact("host=db user=wl password=s3cret"),
            "host=db user=wl password=***"
        );
    }
}
