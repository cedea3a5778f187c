//! Content-addressed build cache under `$XDG_CACHE_HOME/lulab` (or
//! `~/.cache/lulab`). Every artefact directory is named by a hash of all its
//! inputs and published atomically, so a half-built entry is never used and a
//! warm machine never rebuilds.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// Marker written last into a finished cache entry.
const COMPLETE: &str = ".lulab-complete";

/// The cache root directory.
pub fn root() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("lulab");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache").join("lulab")
}

/// Accumulates the inputs of a cached artefact into a stable hash.
#[derive(Debug, Clone, Default)]
pub struct ContentHash(Sha256);

impl ContentHash {
    /// An empty hash for artefact kind `kind` (the kind is part of the key).
    pub fn new(kind: &str) -> Self {
        let mut h = Self(Sha256::new());
        h.str("kind", kind);
        h
    }

    /// Adds a named string input.
    pub fn str(&mut self, name: &str, value: &str) -> &mut Self {
        self.bytes(name, value.as_bytes())
    }

    /// Adds a named byte input (length-prefixed, so inputs cannot run together).
    pub fn bytes(&mut self, name: &str, value: &[u8]) -> &mut Self {
        for part in [name.as_bytes(), value] {
            self.0.update((part.len() as u64).to_le_bytes());
            self.0.update(part);
        }
        self
    }

    /// Adds a file's contents, named by `name`.
    pub fn file(&mut self, name: &str, path: &Path) -> Result<&mut Self> {
        let mut f = std::fs::File::open(path).with_context(|| format!("hashing {}", path.display()))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).with_context(|| format!("hashing {}", path.display()))?;
        Ok(self.bytes(name, &buf))
    }

    /// Adds every regular file below `dir` (sorted, with relative paths).
    pub fn tree(&mut self, name: &str, dir: &Path) -> Result<&mut Self> {
        let mut files = Vec::new();
        collect_files(dir, &mut files)?;
        files.sort();
        for f in files {
            let rel = f.strip_prefix(dir).unwrap_or(&f).to_string_lossy().into_owned();
            self.file(&format!("{name}/{rel}"), &f)?;
        }
        Ok(self)
    }

    /// The hex digest (first 16 bytes: plenty for a local cache).
    pub fn finish(&self) -> String {
        hex::encode(&self.0.clone().finalize()[..16])
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let ty = entry.file_type()?;
        if ty.is_dir() {
            collect_files(&entry.path(), out)?;
        } else if ty.is_file() {
            out.push(entry.path());
        }
    }
    Ok(())
}

/// Returns `root()/kind/key`, building it with `build` first when it is not
/// complete. `build` fills a fresh staging directory that is renamed into
/// place only when it succeeds.
pub fn entry(kind: &str, key: &str, build: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    entry_at(&root(), kind, key, build)
}

/// [`entry`] under an explicit cache root. Builders of the same entry (threads
/// or processes) are serialised by an exclusive `flock` on `.KEY.lock`, so an
/// artefact is built once and the others wait for it.
pub fn entry_at(root: &Path, kind: &str, key: &str, build: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    let dir = root.join(kind).join(key);
    if dir.join(COMPLETE).exists() {
        return Ok(dir);
    }
    let _lock = lock(&root.join(kind).join(format!(".{key}.lock")))?;
    if dir.join(COMPLETE).exists() {
        return Ok(dir); // built by whoever held the lock before us
    }
    let staging = root.join(kind).join(format!(".{key}.staging"));
    for stale in [&staging, &dir] {
        if stale.exists() {
            // Left by a killed run (we hold the lock, so nobody is using it).
            std::fs::remove_dir_all(stale).with_context(|| format!("clearing {}", stale.display()))?;
        }
    }
    std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    build(&staging).with_context(|| format!("building cache entry {kind}/{key} in {}", staging.display()))?;
    std::fs::write(staging.join(COMPLETE), key)?;
    std::fs::rename(&staging, &dir).with_context(|| format!("publishing {}", dir.display()))?;
    Ok(dir)
}

/// Takes an exclusive `flock` on `path` (created if needed), waiting for
/// other threads or processes holding it; released when the guard drops.
pub fn lock(path: &Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("locking {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_every_input_and_its_boundaries() {
        let a = ContentHash::new("k").str("a", "xy").str("b", "z").finish();
        let b = ContentHash::new("k").str("a", "x").str("b", "yz").finish();
        let c = ContentHash::new("k").str("a", "xy").str("b", "z").finish();
        assert_ne!(a, b);
        assert_eq!(a, c);
        assert_ne!(a, ContentHash::new("other").str("a", "xy").str("b", "z").finish());
    }

    #[test]
    fn entry_builds_once_and_not_after_failure() {
        let tmp = tempfile::tempdir().unwrap();
        let mut runs = 0;
        let err = entry_at(tmp.path(), "t", "k1", |_| anyhow::bail!("boom")).unwrap_err();
        assert!(format!("{err:#}").contains("boom"));
        for _ in 0..2 {
            let d = entry_at(tmp.path(), "t", "k1", |d| {
                runs += 1;
                std::fs::write(d.join("x"), "1")?;
                Ok(())
            })
            .unwrap();
            assert_eq!(std::fs::read_to_string(d.join("x")).unwrap(), "1");
        }
        assert_eq!(runs, 1);
    }

    #[test]
    fn concurrent_builders_build_once() {
        let tmp = tempfile::tempdir().unwrap();
        let runs = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let d = entry_at(tmp.path(), "t", "k", |d| {
                        runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        std::fs::write(d.join("x"), "1")?;
                        Ok(())
                    })
                    .unwrap();
                    assert!(d.join("x").exists());
                });
            }
        });
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
