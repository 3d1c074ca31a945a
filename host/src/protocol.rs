//! What the master and a worker say to each other, and the one place each message is
//! encoded and decoded. The master writes [`TableMessage`]s to a worker's stdin, one
//! `table <json>` line each; the worker writes [`Report`]s to its stdout, one line
//! each. Neither side knows the other's code: only this module.

use std::net::SocketAddr;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::metrics::Snapshot;
use crate::model::app::ActiveApp;
use crate::model::compiler::Compiler;

/// One app of a table message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableEntry {
    pub active: ActiveApp,
    pub files: AppFiles,
}

/// What the master tells a worker to serve.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TableMessage {
    /// Increases with every change; the worker acknowledges it once applied.
    pub generation: u64,
    pub apps: Vec<TableEntry>,
}

impl TableMessage {
    /// The `tenant/app` names of the apps in this table, as metrics label them.
    pub fn app_names(&self) -> std::collections::BTreeSet<String> {
        self.apps
            .iter()
            .map(|e| format!("{}/{}", e.active.tenant, e.active.app))
            .collect()
    }
}

/// Where a deployed version's files are.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppFiles {
    pub component: std::path::PathBuf,
    /// The cached artifact, when there is one.
    pub artifact: Option<Artifact>,
    /// The compiler of that artifact: the worker loads it into that compiler's engine.
    #[serde(default)]
    pub compiler: Compiler,
    /// The operator's own file (an app of `--manifest`): the worker compiles it at
    /// load, as it does the component of `serve FILE`. A deployed version is never
    /// compiled by a worker.
    #[serde(default)]
    pub local: bool,
}

/// A compiled artifact in the node's data directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Artifact {
    pub path: std::path::PathBuf,
    /// The SHA-256 the registry recorded when it was written.
    pub sha256: String,
    /// The file as the master last found it to have that hash: a worker that finds
    /// the same file (same inode, size and modification time) maps it without
    /// hashing it again; any other file is read and hashed first.
    #[serde(default)]
    pub verified: Option<FileStamp>,
}

/// Which version of a file this is: a rewrite or a replacement changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    pub device: u64,
    pub inode: u64,
    pub len: u64,
    pub modified_ns: i128,
}

impl FileStamp {
    pub fn of(meta: &std::fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt as _;
        FileStamp {
            device: meta.dev(),
            inode: meta.ino(),
            len: meta.len(),
            modified_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

/// What a worker tells the master, one line each on its stdout.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// The worker is serving.
    Ready,
    /// The worker's event loop is alive and has served this many requests.
    Beat { served: u64 },
    /// The worker reached `--max-requests` and asks to be replaced.
    Retire,
    /// The worker's metrics (every second).
    Metrics(Box<Snapshot>),
    /// The worker serves this route-table generation.
    Applied(u64),
}

impl Report {
    /// The line for this report, newline included.
    pub fn line(&self) -> String {
        match self {
            Report::Ready => "ready\n".to_string(),
            Report::Beat { served } => format!("beat {served}\n"),
            Report::Retire => "retire\n".to_string(),
            Report::Applied(generation) => format!("applied {generation}\n"),
            Report::Metrics(snapshot) => match serde_json::to_string(snapshot) {
                Ok(json) => format!("metrics {json}\n"),
                Err(_) => String::new(),
            },
        }
    }

    /// Parses a line written by [`Report::line`].
    pub fn parse(line: &str) -> Option<Report> {
        match line.trim().split_once(' ') {
            None if line.trim() == "ready" => Some(Report::Ready),
            None if line.trim() == "retire" => Some(Report::Retire),
            Some(("beat", n)) => n.parse().ok().map(|served| Report::Beat { served }),
            Some(("applied", n)) => n.parse().ok().map(Report::Applied),
            Some(("metrics", json)) => serde_json::from_str(json)
                .ok()
                .map(|snapshot| Report::Metrics(Box::new(snapshot))),
            _ => None,
        }
    }
}

/// A table as the line written to a worker's stdin.
pub fn table_line(table: &TableMessage) -> anyhow::Result<String> {
    Ok(format!(
        "table {}\n",
        serde_json::to_string(table).context("failed to encode the route table")?
    ))
}

/// The environment variable that tells a worker this server's listeners as the
/// master bound them (a worker only knows its own socket, and `--admin-listen` may
/// say port 0): `ADDR,ADDR`.
pub const OWN_LISTENERS_ENV: &str = "WASMLOOP_OWN_LISTENERS";

/// The settings of the master's `--config` file, as it read them (less `registry`),
/// for its workers: they serve what the master read, not a file edited since.
pub const CONFIG_SNAPSHOT_ENV: &str = "WASMLOOP_CONFIG_SNAPSHOT";

/// The value of [`OWN_LISTENERS_ENV`] for `listeners`.
pub fn own_listeners_value(listeners: impl IntoIterator<Item = SocketAddr>) -> String {
    listeners
        .into_iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The listeners a worker was told about; none when the variable is missing.
pub fn own_listeners() -> Vec<SocketAddr> {
    std::env::var(OWN_LISTENERS_ENV)
        .unwrap_or_default()
        .split(',')
        .filter_map(|a| a.trim().parse().ok())
        .collect()
}

/// Reads a line written by [`table_line`].
pub fn parse_table(line: &str) -> Option<TableMessage> {
    serde_json::from_str(line.trim().strip_prefix("table ")?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip_through_their_lines() {
        for report in [Report::Ready, Report::Beat { served: 42 }, Report::Retire] {
            assert_eq!(Report::parse(&report.line()), Some(report));
        }
        assert_eq!(Report::parse("hello"), None);
        assert_eq!(Report::parse("beat many"), None);
    }

    #[test]
    fn tables_round_trip_through_their_lines() {
        let table = TableMessage {
            generation: 7,
            apps: Vec::new(),
        };
        let line = table_line(&table).unwrap();
        assert!(line.starts_with("table ") && line.ends_with('\n'));
        assert_eq!(parse_table(&line).map(|t| t.generation), Some(7));
        assert!(parse_table("tables {}").is_none());
    }
}
