//! Fetching Debian's `linux-source-X.Y` through a private apt configuration:
//! its own sources list, lists and cache under the lulab cache, so the
//! system's apt sources are never touched and no trixie package is installed.
//! The package is only downloaded and unpacked with `dpkg-deb -x`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};

use super::KernelSpec;
use crate::cache;
use crate::cmd;

/// How old the private package lists may get before they are refreshed.
const LISTS_MAX_AGE: Duration = Duration::from_secs(12 * 3600);

/// An apt-get / apt-cache configuration that only sees `spec`'s suites.
#[derive(Debug)]
pub struct PrivateApt {
    dir: PathBuf,
    spec: KernelSpec,
}

impl PrivateApt {
    /// The private configuration for `spec` under `cache_root/apt`.
    pub fn new(cache_root: &Path, spec: &KernelSpec) -> Self {
        Self { dir: cache_root.join("apt").join(spec.source_package.as_str()), spec: spec.clone() }
    }

    fn sources_list(&self) -> PathBuf {
        self.dir.join("sources.list")
    }

    fn lists(&self) -> PathBuf {
        self.dir.join("lists")
    }

    /// The `-o` options that redirect apt to this configuration.
    fn options(&self) -> Vec<String> {
        let d = &self.dir;
        vec![
            format!("Dir::Etc::SourceList={}", self.sources_list().display()),
            "Dir::Etc::SourceParts=/dev/null".into(),
            format!("Dir::State::Lists={}", self.lists().display()),
            format!("Dir::Cache={}", d.join("cache").display()),
            "Dir::State::status=/dev/null".into(),
            "Acquire::Languages=none".into(),
            "APT::Get::List-Cleanup=1".into(),
        ]
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        for o in self.options() {
            c.arg("-o").arg(o);
        }
        c
    }

    /// Writes the sources list; refreshes the lists when they are missing,
    /// stale, or the list of suites changed. A failed refresh with usable old
    /// lists is only a warning (the cache must keep working offline).
    pub fn update(&self) -> Result<()> {
        std::fs::create_dir_all(self.lists().join("partial"))
            .with_context(|| format!("creating {}", self.lists().display()))?;
        std::fs::create_dir_all(self.dir.join("cache/archives/partial"))?;
        let body: String = self
            .spec
            .suites
            .iter()
            .map(|s| {
                format!(
                    "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {} {s} main\n",
                    self.spec.mirror
                )
            })
            .collect();
        let path = self.sources_list();
        let changed = std::fs::read_to_string(&path).ok().as_deref() != Some(body.as_str());
        if changed {
            std::fs::write(&path, &body).with_context(|| format!("writing {}", path.display()))?;
        }
        let stamp = self.dir.join("updated");
        let fresh = std::fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .map(|t| SystemTime::now().duration_since(t).unwrap_or_default() < LISTS_MAX_AGE)
            .unwrap_or(false);
        if fresh && !changed {
            return Ok(());
        }
        println!("kernel: refreshing package lists for {} ({})", self.spec.suites.join(", "), self.spec.mirror);
        match cmd::run(self.command("apt-get").args(["update", "-q"])) {
            Ok(_) => std::fs::write(&stamp, "").with_context(|| format!("writing {}", stamp.display())),
            Err(e) if std::fs::metadata(&stamp).is_ok() && !changed => {
                println!("kernel: warning: refresh failed, using older lists: {e:#}");
                Ok(())
            }
            Err(e) => Err(e).context("private apt-get update for the kernel source failed"),
        }
    }

    /// Every version of `pkg` the configured suites offer, with its suite.
    pub fn versions(&self, pkg: &str) -> Result<Vec<(String, String)>> {
        let out = cmd::stdout(self.command("apt-cache").args(["madison", pkg]))?;
        Ok(parse_madison(&out, pkg))
    }

    /// The newest version of `spec.source_package` (no pinned Debian revision).
    pub fn newest(&self) -> Result<String> {
        let pkg = &self.spec.source_package;
        let found = self.versions(pkg)?;
        let mut best: Option<&str> = None;
        for (v, _) in &found {
            if best.is_none_or(|b| version_gt(v, b)) {
                best = Some(v);
            }
        }
        match best {
            Some(v) => Ok(v.to_string()),
            None => bail!(
                "no `{pkg}` package found in {} on {} (looked with the private apt lists in {})",
                self.spec.suites.join(", "),
                self.spec.mirror,
                self.lists().display()
            ),
        }
    }

    /// Downloads `pkg=version` into `dest_dir` and returns the .deb's path.
    pub fn download(&self, version: &str, dest_dir: &Path) -> Result<PathBuf> {
        let pkg = &self.spec.source_package;
        cmd::run(self.command("apt-get").current_dir(dest_dir).args(["download", "-q", &format!("{pkg}={version}")]))?;
        std::fs::read_dir(dest_dir)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .with_context(|| format!("apt-get download left no .deb for {pkg}={version} in {}", dest_dir.display()))
    }
}

/// `apt-cache madison` lines: `pkg | version | uri suite/main amd64 Packages`.
fn parse_madison(out: &str, pkg: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('|').map(str::trim).collect();
            (f.len() >= 3 && f[0] == pkg).then(|| {
                let suite = f[2].split_whitespace().nth(1).unwrap_or("").to_string();
                (f[1].to_string(), suite)
            })
        })
        .collect()
}

/// Debian version order, by dpkg itself.
fn version_gt(a: &str, b: &str) -> bool {
    Command::new("dpkg").args(["--compare-versions", a, "gt", b]).status().is_ok_and(|s| s.success())
}

/// Pristine kernel source for `version`, unpacked once into the cache:
/// returns the directory holding the `.tar.xz` (kept for later unpacks) and
/// the unpacked tree.
#[derive(Debug, Clone)]
pub struct Source {
    /// Exact Debian version of the source package.
    pub version: String,
    /// The kernel source tarball from the package.
    pub tarball: PathBuf,
    /// The unpacked, never-modified tree.
    pub pristine: PathBuf,
}

/// Fetches (or takes from the cache) `spec`'s newest source package.
pub fn fetch(cache_root: &Path, spec: &KernelSpec) -> Result<Source> {
    let apt = PrivateApt::new(cache_root, spec);
    apt.update()?;
    let version = apt.newest()?;
    let key = crate::cache::ContentHash::new("kernel-src")
        .str("package", &spec.source_package)
        .str("version", &version)
        .finish();
    let tarball_name = format!("{}.tar.xz", spec.source_package);
    let dir = cache::entry_at(cache_root, "kernel-src", &key, |staging| {
        println!("kernel: [unpack] downloading {}={version}", spec.source_package);
        let deb = apt.download(&version, staging)?;
        let x = staging.join("deb");
        cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x))?;
        let tar = x.join("usr/src").join(&tarball_name);
        if !tar.is_file() {
            bail!("{} has no /usr/src/{tarball_name}", deb.display());
        }
        std::fs::rename(&tar, staging.join(&tarball_name))?;
        std::fs::remove_dir_all(&x)?;
        std::fs::remove_file(&deb)?;
        println!("kernel: [unpack] unpacking {tarball_name}");
        untar(&staging.join(&tarball_name), staging)?;
        std::fs::write(staging.join("version"), &version)?;
        Ok(())
    })?;
    let pristine = tree_in(&dir, &spec.source_package)?;
    Ok(Source { version, tarball: dir.join(&tarball_name), pristine })
}

/// Unpacks a kernel tarball into `dest` (it contains one top directory).
pub fn untar(tarball: &Path, dest: &Path) -> Result<()> {
    cmd::run(Command::new("tar").arg("-xJf").arg(tarball).arg("-C").arg(dest))
        .with_context(|| format!("unpacking {}", tarball.display()))?;
    Ok(())
}

/// The kernel tree a tarball unpacked into `dir` (its one directory with a Makefile).
pub fn tree_in(dir: &Path, package: &str) -> Result<PathBuf> {
    let p = dir.join(package);
    if p.join("Makefile").is_file() {
        return Ok(p);
    }
    std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("Makefile").is_file() && p.join("Kconfig").is_file())
        .with_context(|| format!("no kernel tree (Makefile + Kconfig) in {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn madison_lines_give_versions_and_suites() {
        let out =
            " linux-source-7.3 | 7.3.4-1~bpo13+1 | http://deb.debian.org/debian trixie-backports/main amd64 Packages\n\
                   linux-source-7.3 | 7.3.2-1 | http://deb.debian.org/debian forky/main amd64 Packages\n\
                   other | 1 | x y/main amd64 Packages\n";
        let v = parse_madison(out, "linux-source-7.3");
        assert_eq!(v.len(), 2);
        assert_eq!(v[0], ("7.3.4-1~bpo13+1".to_string(), "trixie-backports/main".to_string()));
    }

    #[test]
    fn debian_version_order() {
        assert!(version_gt("7.3.4-1~bpo13+1", "7.3.2-1"));
        assert!(version_gt("7.3.4-1", "7.3.4-1~bpo13+1"));
        assert!(!version_gt("7.2.9-1", "7.3.1-1~bpo13+1"));
    }
}
