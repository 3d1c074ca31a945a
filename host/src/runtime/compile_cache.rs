//! Cranelift's incremental compilation cache, on disk and shared by every compile on
//! a node: one file per compiled function, named by the key Cranelift computes from
//! the function's IR and the target, so two components that share functions (two
//! componentize-py apps share CPython's) compile the shared ones once. An entry from
//! another Cranelift version is refused by Cranelift itself and written anew.
//!
//! Bounded: after a compile, the entries used longest ago (by modification time,
//! which a hit refreshes) are removed until the directory is under its bound. Writes
//! go to a unique temporary name and are renamed into place, so concurrent compiles
//! never read half an entry. Used by the compile child only (blocking file I/O).

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use wasmtime::CacheStore;

/// The cache in `dir`, counting what one compile asked of it.
#[derive(Debug)]
pub struct DiskCache {
    dir: PathBuf,
    lookups: AtomicU64,
    hits: AtomicU64,
    written: AtomicU64,
}

/// What one compile asked of the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CacheStats {
    /// Functions looked up.
    pub lookups: u64,
    /// Of those, found (not compiled).
    pub hits: u64,
}

impl DiskCache {
    /// Opens (making it if needed) the cache directory.
    pub fn open(dir: &Path) -> anyhow::Result<DiskCache> {
        std::fs::create_dir_all(dir).map_err(|e| {
            anyhow::anyhow!("failed to make the compile cache {}: {e}", dir.display())
        })?;
        Ok(DiskCache {
            dir: dir.to_path_buf(),
            lookups: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            written: AtomicU64::new(0),
        })
    }

    /// The lookups and hits so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            lookups: self.lookups.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
        }
    }

    fn entry(&self, key: &[u8]) -> PathBuf {
        let name = if key.len() <= 64 {
            hex::encode(key)
        } else {
            crate::model::app::sha256_hex(key)
        };
        self.dir.join(&name[..2]).join(&name[2..])
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "the compile child, no event loop"
)]
impl CacheStore for DiskCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        use std::io::Read as _;
        let mut file = std::fs::File::open(self.entry(key)).ok()?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).ok()?;
        // A hit is a use: the entry is kept longer than ones not used since (the
        // owner may set a file's times through any descriptor of it).
        let _ = file.set_modified(SystemTime::now());
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(Cow::Owned(bytes))
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let path = self.entry(key);
        let Some(parent) = path.parent() else {
            return false;
        };
        let n = self.written.fetch_add(1, Ordering::Relaxed);
        let tmp = parent.join(format!(".tmp-{}-{n}", std::process::id()));
        let written = std::fs::create_dir_all(parent)
            .and_then(|()| std::fs::write(&tmp, &value))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.is_ok()
    }
}

/// Removes the entries of the cache in `dir` used longest ago until it holds at most
/// `max_bytes`; returns how many were removed.
pub fn evict(dir: &Path, max_bytes: u64) -> usize {
    let mut entries = Vec::new();
    let mut total = 0u64;
    for shard in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for entry in std::fs::read_dir(shard.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            total += meta.len();
            let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            entries.push((used, meta.len(), entry.path()));
        }
    }
    if total <= max_bytes {
        return 0;
    }
    entries.sort();
    let mut removed = 0;
    for (_, len, path) in entries {
        if total <= max_bytes {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= len;
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hit_keeps_its_entry_past_one_not_used_since() {
        let dir = std::env::temp_dir().join(format!("wasmloop-cache-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cache = DiskCache::open(&dir).unwrap();
        assert!(cache.insert(b"used", vec![1; 1000]));
        assert!(cache.insert(b"unused", vec![2; 1000]));
        // Both written long ago, the one to keep first.
        let long_ago = SystemTime::now() - std::time::Duration::from_secs(3600);
        for (key, age) in [(&b"used"[..], 60), (&b"unused"[..], 0)] {
            std::fs::File::open(cache.entry(key))
                .unwrap()
                .set_modified(long_ago - std::time::Duration::from_secs(age))
                .unwrap();
        }
        assert_eq!(cache.get(b"used").as_deref(), Some(&[1u8; 1000][..]));
        assert_eq!(cache.get(b"missing"), None);
        assert_eq!(
            cache.stats(),
            CacheStats {
                lookups: 2,
                hits: 1
            }
        );
        assert_eq!(evict(&dir, 1500), 1);
        assert!(cache.entry(b"used").exists());
        assert!(!cache.entry(b"unused").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
