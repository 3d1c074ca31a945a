//! `serve --reload`, Uvicorn's development loop: the master watches the component
//! file and asks for every worker to be replaced (as SIGHUP does, one at a time, so
//! no request fails) when it has changed and stopped changing. With
//! `--reload-build CMD` it also watches the sources under `--reload-dir` and runs
//! the build when one changes; the rebuilt component is then picked up like any
//! other change. A component that does not load keeps the running workers serving.
//!
//! Watching is polling (`--reload-delay`): a few `stat` calls for the component, a
//! walk of the source directories on a blocking thread, nothing on a worker.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use crate::config::ServeConfig;

/// Directory names a source walk never enters: build outputs and tools' state.
const SKIPPED_DIRS: [&str; 5] = ["target", "node_modules", "__pycache__", "venv", "dist"];
/// File name endings that are outputs, not sources.
const SKIPPED_FILES: [&str; 5] = [".wasm", ".pyc", ".swp", ".tmp", "~"];
/// A walk stops counting past this many files (and says so once).
const MAX_FILES: usize = 50_000;

/// Starts watching when `--reload` is on; each message says why every worker should
/// be replaced.
pub fn start(config: &ServeConfig) -> Option<mpsc::UnboundedReceiver<String>> {
    if !config.reload {
        return None;
    }
    let component = config.component.clone()?;
    let (tx, rx) = mpsc::unbounded_channel();
    let every = config.reload_delay.max(Duration::from_millis(10));
    tokio::spawn(watch_component(component.clone(), every, tx));
    if let Some(command) = config.reload_build.clone() {
        let dirs = if config.reload_dirs.is_empty() {
            vec![PathBuf::from(".")]
        } else {
            config.reload_dirs.clone()
        };
        tokio::spawn(watch_sources(dirs, command, every));
    }
    tracing::info!(
        component = %component.display(),
        build = config.reload_build.as_deref().unwrap_or("-"),
        "reload: watching for changes"
    );
    Some(rx)
}

/// What says a file changed: its modification time, length and inode (a file
/// renamed over it is a new inode).
type Stamp = Option<(SystemTime, u64, u64)>;

async fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt as _;
    let meta = tokio::fs::metadata(path).await.ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

async fn watch_component(path: PathBuf, every: Duration, tx: mpsc::UnboundedSender<String>) {
    let mut seen = stamp(&path).await;
    loop {
        tokio::time::sleep(every).await;
        let mut now = stamp(&path).await;
        if now == seen {
            continue;
        }
        // Wait until the writer is done: the same stamp twice in a row.
        loop {
            tokio::time::sleep(every).await;
            let again = stamp(&path).await;
            if again == now {
                break;
            }
            now = again;
        }
        seen = now;
        if seen.is_none() {
            continue; // removed; its next version will come
        }
        if tx.send("the component changed".to_string()).is_err() {
            return;
        }
    }
}

async fn watch_sources(dirs: Vec<PathBuf>, command: String, every: Duration) {
    let snapshot = |dirs: Vec<PathBuf>| async move {
        tokio::task::spawn_blocking(move || sources(&dirs))
            .await
            .unwrap_or_default()
    };
    let mut seen = snapshot(dirs.clone()).await;
    loop {
        tokio::time::sleep(every).await;
        let mut now = snapshot(dirs.clone()).await;
        if now == seen {
            continue;
        }
        // An editor saving several files: wait for a quiet poll.
        loop {
            tokio::time::sleep(every).await;
            let again = snapshot(dirs.clone()).await;
            if again == now {
                break;
            }
            now = again;
        }
        tracing::info!(%command, "reload: a source changed; building");
        let status = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&command)
            .stdin(std::process::Stdio::null())
            .status()
            .await;
        match status {
            Ok(status) if status.success() => tracing::info!("reload: build done"),
            Ok(status) => tracing::warn!(
                %status,
                "reload: the build failed; the running version keeps serving"
            ),
            Err(e) => tracing::warn!(error = %e, "reload: the build command did not start"),
        }
        // What the build itself wrote (lock files, caches) is not a new change.
        seen = snapshot(dirs.clone()).await;
    }
}

/// Every source file under `dirs` with its stamp, in walk order.
fn sources(dirs: &[PathBuf]) -> Vec<(PathBuf, SystemTime, u64)> {
    let mut files = Vec::new();
    let mut pending: Vec<PathBuf> = dirs.to_vec();
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if !name.starts_with('.') && !SKIPPED_DIRS.contains(&&*name) {
                    pending.push(entry.path());
                }
            } else if !SKIPPED_FILES.iter().any(|end| name.ends_with(end))
                && let Ok(meta) = entry.metadata()
                && let Ok(modified) = meta.modified()
            {
                files.push((entry.path(), modified, meta.len()));
                if files.len() >= MAX_FILES {
                    static WARNED: AtomicBool = AtomicBool::new(false);
                    if !WARNED.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "reload: over {MAX_FILES} files under --reload-dir; the rest are \
                             not watched"
                        );
                    }
                    return files;
                }
            }
        }
    }
    files
}
