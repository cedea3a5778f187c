//! Building our kernel: Debian's `linux-source-X.Y` + `kernel/patches/` +
//! `kernel/config/*.config` + the in-tree Rust unit `kernel/pkernfs/`.
//!
//! Stages (each printed as it runs): toolchain → unpack → patch → configure →
//! build → modules. Two cache levels: a mutable work tree keyed by source
//! version + toolchain (so a changed patch rebuilds incrementally), and the
//! finished artefacts keyed by every input (so nothing changed = seconds).

pub mod config;
pub mod make;
pub mod patches;
pub mod source;
pub mod toolchain;

/// pkernfs' on-memory layout: the very file the kernel builds
/// (`kernel/pkernfs/layout.rs`), so the harness never keeps a second copy.
#[path = "../../../../kernel/pkernfs/layout.rs"]
#[allow(missing_docs, dead_code)]
pub mod pkernfs_layout;

#[cfg(test)]
mod layout_tests {
    use super::pkernfs_layout::*;

    #[test]
    fn the_shared_layout_behaves_on_the_host_as_in_kunit() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        let h = Header { version: FORMAT_VERSION, size: 64 << 20 };
        let mut b = h.encode();
        assert_eq!(Header::decode(&b), Ok(h));
        b[17] ^= 0x80;
        assert_eq!(Header::decode(&b), Err(HeaderError::BadChecksum));
        assert_eq!(blocks_for(BLOCK_SIZE * 3 - 1), 3);
    }
}

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use self::patches::Overlay;
use self::toolchain::Toolchain;
use super::KernelArtifacts;
use crate::cache::{self, ContentHash};

/// What kernel to build and from where: data, turned into commands only here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSpec {
    /// Name in reports ("lulab").
    pub name: String,
    /// Debian source package (`linux-source-7.3`); the newest version is taken.
    pub source_package: String,
    /// Suites to look in (trixie-backports, forky).
    pub suites: Vec<String>,
    /// Debian mirror URI.
    pub mirror: String,
    /// Our `kernel/` directory: `config/`, `patches/series`, overlays.
    pub kernel_dir: PathBuf,
    /// Overlay directories (relative to `kernel_dir`) and where they go in the tree.
    pub overlays: Vec<(String, String)>,
}

impl KernelSpec {
    /// Our kernel from this repository's `kernel/` (or `$LULAB_KERNEL_DIR`).
    pub fn lulab() -> Self {
        let kernel_dir = std::env::var_os("LULAB_KERNEL_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel"));
        let kernel_dir = kernel_dir.canonicalize().unwrap_or(kernel_dir);
        Self {
            name: "lulab".into(),
            source_package: "linux-source-7.3".into(),
            suites: vec!["trixie-backports".into(), "forky".into()],
            mirror: "http://deb.debian.org/debian".into(),
            kernel_dir,
            overlays: vec![("pkernfs".into(), "fs/pkernfs".into())],
        }
    }

    /// The config fragments, in merge order.
    pub fn fragments(&self) -> Result<Vec<PathBuf>> {
        config::fragments(&self.kernel_dir.join("config"))
    }

    /// Every option the fragments ask for.
    pub fn requested(&self) -> Result<config::Requested> {
        config::Requested::from_files(&self.fragments()?)
    }

    fn overlay_dirs(&self) -> Vec<Overlay> {
        self.overlays.iter().map(|(f, t)| Overlay { from: self.kernel_dir.join(f), to: t.clone() }).collect()
    }
}

/// Written next to the artefacts; the source of [`KernelArtifacts`] on a cache hit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// [`KernelSpec::name`].
    pub name: String,
    /// Debian source package.
    pub source_package: String,
    /// Its exact Debian version.
    pub source_version: String,
    /// `make kernelrelease`.
    pub release: String,
    /// Tool → version line.
    pub toolchain: Vec<(String, String)>,
    /// The cache key of this build.
    pub key: String,
    /// Wall time of the build that produced it.
    pub build_seconds: f64,
    /// Whether loadable modules were installed under `modules/`.
    pub has_modules: bool,
}

/// A finished build: the artefacts plus where its `.config` and log are.
#[derive(Debug, Clone)]
pub struct Built {
    /// What later stages need.
    pub artifacts: KernelArtifacts,
    /// The cache entry directory.
    pub dir: PathBuf,
    /// The final `.config`.
    pub config: PathBuf,
    /// The manifest.
    pub manifest: Manifest,
}

/// Builds `spec` (or takes it from the cache under [`cache::root`]).
pub fn build(spec: &KernelSpec) -> Result<KernelArtifacts> {
    Ok(build_at(&cache::root(), spec)?.artifacts)
}

/// [`build`] under an explicit cache root, returning the entry's details too.
pub fn build_at(root: &Path, spec: &KernelSpec) -> Result<Built> {
    let start = Instant::now();
    // The toolchain install (apt) and the source fetch are shared by every
    // build on this machine: one at a time, quick once done. The work tree
    // is shared too, but only a cache miss needs it, so its lock is taken
    // inside the entry's build: a cache hit never waits for another build.
    let (tc, src) = {
        let _setup = cache::lock(&root.join("kernel").join(".setup.lock"))?;
        (Toolchain::ensure(root)?, source::fetch(root, spec)?)
    };
    println!("kernel: [unpack] {} {}", spec.source_package, src.version);
    let mut h = ContentHash::new("kernel-build");
    h.str("name", &spec.name).str("package", &spec.source_package).str("version", &src.version);
    for (tool, v) in &tc.versions {
        h.str(tool, v);
    }
    for (from, to) in &spec.overlays {
        h.str("overlay", &format!("{from}->{to}"));
    }
    h.tree("kernel", &spec.kernel_dir)?;
    let key = h.finish();
    let dir = cache::entry_at(root, "kernel", &key, |out| {
        let _tree = cache::lock(&root.join("kernel").join(".build.lock"))?;
        build_into(root, spec, &tc, &src, &key, start, out)
    })?;
    let manifest: Manifest = read_json(&dir.join("manifest.json"))?;
    let modules = dir.join("modules");
    let artifacts = KernelArtifacts {
        name: manifest.name.clone(),
        bzimage: dir.join("bzImage"),
        modules_root: manifest.has_modules.then_some(modules),
        release: manifest.release.clone(),
        source_version: manifest.source_version.clone(),
    };
    println!(
        "kernel: {} {} ({} {}) ready in {:.1?}: {}",
        spec.name,
        artifacts.release,
        spec.source_package,
        artifacts.source_version,
        start.elapsed(),
        artifacts.bzimage.display()
    );
    Ok(Built { artifacts, config: dir.join("config"), dir, manifest })
}

/// The mutable work tree for this source version and toolchain.
fn work_tree(root: &Path, spec: &KernelSpec, tc: &Toolchain, src: &source::Source) -> Result<PathBuf> {
    let mut h = ContentHash::new("kernel-tree");
    h.str("package", &spec.source_package).str("version", &src.version);
    for (tool, v) in &tc.versions {
        h.str(tool, v);
    }
    let base = root.join("kernel-tree").join(h.finish());
    let ready = base.join(".ready");
    if !ready.exists() {
        println!("kernel: [unpack] new work tree {}", base.display());
        if base.exists() {
            std::fs::remove_dir_all(&base).with_context(|| format!("clearing {}", base.display()))?;
        }
        std::fs::create_dir_all(&base)?;
        source::untar(&src.tarball, &base)?;
        std::fs::write(&ready, &src.version)?;
    }
    Ok(base)
}

fn build_into(
    root: &Path,
    spec: &KernelSpec,
    tc: &Toolchain,
    src: &source::Source,
    key: &str,
    start: Instant,
    out: &Path,
) -> Result<()> {
    let base = work_tree(root, spec, tc, src)?;
    // Serialised by the work-tree lock taken in `build_at`.
    let tree = source::tree_in(&base, &spec.source_package)?;
    let mut log = make::Log::create(&base.join("build.log"))?;
    println!("kernel: log: {}", log.path().display());

    let series = patches::read_series(&spec.kernel_dir.join("patches"))?;
    patches::prepare(&src.pristine, &tree, &series, &spec.overlay_dirs(), &base.join("patch-state"))?;

    println!("kernel: [configure] make rustavailable");
    tc.check_rust(&tree)?;
    println!("kernel: [configure] tinyconfig + {} fragments + olddefconfig", spec.fragments()?.len());
    config::configure(tc, &tree, &spec.fragments()?, &mut log)?;

    let jobs = format!("-j{}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    log.make(tc.make(&tree).arg(&jobs).arg("bzImage"), "build")?;
    let release = crate::cmd::stdout(tc.make(&tree).args(["-s", "kernelrelease"]))?;
    let release = release
        .lines()
        .rfind(|l| !l.trim().is_empty() && !l.starts_with("make"))
        .with_context(|| format!("`make kernelrelease` in {} printed no release", tree.display()))?
        .trim()
        .to_string();
    let dot = std::fs::read_to_string(tree.join(".config"))?;
    let modular = dot.lines().any(|l| l == "CONFIG_MODULES=y");
    let mut has_modules = false;
    if modular {
        log.make(tc.make(&tree).arg(&jobs).arg("modules"), "modules")?;
        let dest = out.join("modules");
        log.run(
            tc.make(&tree)
                .arg("modules_install")
                .arg(format!("INSTALL_MOD_PATH={}", dest.display()))
                .arg("INSTALL_MOD_STRIP=1"),
            "make modules_install",
        )?;
        has_modules = std::fs::read_dir(dest.join("lib/modules")).map(|d| d.count() > 0).unwrap_or(false);
        // `build`/`source` point into the mutable work tree; images must not follow them.
        for link in ["build", "source"] {
            let p = dest.join("lib/modules").join(&release).join(link);
            if p.is_symlink() {
                std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
            }
        }
    }
    for (from, to) in [("arch/x86/boot/bzImage", "bzImage"), (".config", "config"), ("System.map", "System.map")] {
        std::fs::copy(tree.join(from), out.join(to))
            .with_context(|| format!("copying {from} out of {}", tree.display()))?;
    }
    let manifest = Manifest {
        name: spec.name.clone(),
        source_package: spec.source_package.clone(),
        source_version: src.version.clone(),
        release,
        toolchain: tc.versions.clone(),
        key: key.to_string(),
        build_seconds: start.elapsed().as_secs_f64(),
        has_modules,
    };
    let path = out.join("manifest.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest)?)
        .with_context(|| format!("writing {}", path.display()))?;
    std::fs::copy(log.path(), out.join("build.log"))?;
    Ok(())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
}
