//! Debian's stock kernel image, fetched with `apt-get download` from
//! bookworm-backports and unpacked into the cache (never installed here).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::KernelArtifacts;
use crate::{cache, cmd};

/// Which Debian kernel package to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockSpec {
    /// The meta package whose dependency names the real image package.
    pub meta_package: String,
    /// Suite to take it from.
    pub suite: String,
}

impl Default for StockSpec {
    fn default() -> Self {
        // The backports 6.12 image ships vfio-pci, e1000e, nvme and virtio_console.
        Self { meta_package: "linux-image-amd64".into(), suite: "bookworm-backports".into() }
    }
}

/// Resolves, downloads (once) and unpacks the stock kernel.
pub fn fetch(spec: &StockSpec) -> Result<KernelArtifacts> {
    let package = resolve_image_package(spec)?;
    let version = candidate_version(&package)?;
    let key = cache::ContentHash::new("stock-kernel").str("package", &package).str("version", &version).finish();
    let dir = cache::entry("stock-kernel", &key, |staging| unpack(&package, staging))?;
    let root = dir.join("root");
    let bzimage = find_vmlinuz(&root)?;
    let release = bzimage
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .context("vmlinuz file name has no release")?
        .to_string();
    Ok(KernelArtifacts {
        name: "debian-stock".into(),
        bzimage,
        modules_root: Some(root),
        release,
        source_version: format!("{package} {version}"),
    })
}

/// `linux-image-amd64` → `linux-image-6.12.95+deb12-amd64` (the suite's candidate).
fn resolve_image_package(spec: &StockSpec) -> Result<String> {
    let out = cmd::stdout(Command::new("apt-cache").args(["depends", "-t", &spec.suite, &spec.meta_package]))
        .with_context(|| format!("looking up {} in {} (did `lulab setup` run?)", spec.meta_package, spec.suite))?;
    parse_depends(&out).with_context(|| {
        format!("{} in {} names no linux-image package; apt-cache said:\n{out}", spec.meta_package, spec.suite)
    })
}

fn parse_depends(out: &str) -> Option<String> {
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-") && !p.contains('<'))
        .map(String::from)
}

fn candidate_version(package: &str) -> Result<String> {
    let out = cmd::stdout(Command::new("apt-cache").args(["policy", package]))?;
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .find(|v| *v != "(none)")
        .map(String::from)
        .with_context(|| format!("apt has no candidate version of {package}; run `apt-get update`"))
}

fn unpack(package: &str, staging: &Path) -> Result<()> {
    println!("kernel: downloading {package}");
    cmd::run(Command::new("apt-get").arg("download").arg("-q").arg(package).current_dir(staging))?;
    let deb = std::fs::read_dir(staging)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download produced no .deb")?;
    let root = staging.join("root");
    println!("kernel: unpacking {}", deb.display());
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    std::fs::remove_file(&deb)?;
    let vmlinuz = find_vmlinuz(&root)?;
    let release = vmlinuz.file_name().unwrap_or_default().to_string_lossy().trim_start_matches("vmlinuz-").to_string();
    // Debian's .deb ships no modules.dep.
    cmd::run(Command::new("depmod").arg("-b").arg(&root).arg(&release))?;
    Ok(())
}

fn find_vmlinuz(root: &Path) -> Result<PathBuf> {
    let boot = root.join("boot");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&boot)
        .with_context(|| format!("reading {}", boot.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
        .collect();
    found.sort();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("no vmlinuz-* in {}", boot.display()),
        many => bail!("several kernels in {}: {many:?}", boot.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_image_dependency() {
        let out = "linux-image-amd64\n  Depends: linux-image-6.12.95+deb12-amd64\n";
        assert_eq!(parse_depends(out).as_deref(), Some("linux-image-6.12.95+deb12-amd64"));
        assert_eq!(parse_depends("linux-image-amd64\n"), None);
    }
}
