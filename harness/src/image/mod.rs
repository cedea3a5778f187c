//! The image stage: the host initramfs (busybox, the guest agent, our /init
//! and the kernel's modules), cached by the hash of everything that goes in.

pub mod agent;
pub mod cpio;
pub mod modules;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::cache;
use crate::kernel::KernelArtifacts;
use cpio::Entry;
use modules::ModuleIndex;

/// Where busybox-static installs its binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// `images/host.toml`: what goes into the initramfs.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostImageConfig {
    /// Module selection.
    pub modules: ModuleConfig,
}

/// The `[modules]` table of `images/host.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ModuleConfig {
    /// Loaded at boot; must exist (or be built in).
    pub load: Vec<String>,
    /// Loaded at boot when present.
    #[serde(default)]
    pub load_optional: Vec<String>,
    /// Shipped, not loaded.
    #[serde(default)]
    pub include: Vec<String>,
}

/// The repository's `images/` directory.
pub fn images_dir() -> PathBuf {
    crate::workspace_root().join("images")
}

impl HostImageConfig {
    /// Reads and validates `images/host.toml`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }
}

/// Everything one initramfs is made of.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// The kernel whose modules are shipped.
    pub kernel: KernelArtifacts,
    /// Module selection.
    pub config: HostImageConfig,
    /// The static guest agent binary.
    pub agent: PathBuf,
    /// busybox-static.
    pub busybox: PathBuf,
    /// The /init script.
    pub init: PathBuf,
}

/// A built initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Initramfs {
    /// The gzip-compressed cpio archive.
    pub path: PathBuf,
    /// Modules loaded at boot, in order.
    pub loaded_modules: Vec<String>,
}

impl ImageSpec {
    /// The default host image for `kernel`: images/host.toml, images/init.sh,
    /// a freshly built agent.
    pub fn host(kernel: &KernelArtifacts) -> Result<Self> {
        let dir = images_dir();
        Ok(Self {
            kernel: kernel.clone(),
            config: HostImageConfig::load(&dir.join("host.toml"))?,
            agent: agent::build()?,
            busybox: BUSYBOX.into(),
            init: dir.join("init.sh"),
        })
    }

    /// Builds (or takes from the cache) the initramfs.
    pub fn build(&self) -> Result<Initramfs> {
        let (load, include) = self.select_modules()?;
        let mut key = cache::ContentHash::new("initramfs");
        key.file("agent", &self.agent)?
            .file("busybox", &self.busybox)?
            .file("init", &self.init)?
            .str("kernel", &self.kernel.release)
            .str("kernel-version", &self.kernel.source_version);
        for m in load.iter().chain(&include) {
            key.str("module", &m.rel_path);
        }
        let key = key.finish();
        let loaded_modules = load.iter().map(|m| m.name.clone()).collect();
        let dir = cache::entry("initramfs", &key, |staging| {
            let entries = self.entries(&load, &include)?;
            let f = std::fs::File::create(staging.join("initramfs.cpio.gz"))?;
            let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
            cpio::write_archive(&mut gz, &entries)?;
            gz.finish()?.flush()?;
            Ok(())
        })?;
        Ok(Initramfs { path: dir.join("initramfs.cpio.gz"), loaded_modules })
    }

    fn select_modules(&self) -> Result<(Vec<modules::Module>, Vec<modules::Module>)> {
        let Some(root) = &self.kernel.modules_root else {
            return Ok((Vec::new(), Vec::new()));
        };
        let idx = ModuleIndex::load(root, &self.kernel.release)?;
        let c = &self.config.modules;
        let mut want = c.load.clone();
        want.extend(c.load_optional.iter().filter(|m| idx.available(m)).cloned());
        let load = idx.resolve(&want)?;
        let include: Vec<_> = idx
            .resolve(&c.include.iter().filter(|m| idx.available(m)).cloned().collect::<Vec<_>>())?
            .into_iter()
            .filter(|m| !load.contains(m))
            .collect();
        Ok((load, include))
    }

    fn entries(&self, load: &[modules::Module], include: &[modules::Module]) -> Result<Vec<Entry>> {
        let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        let mut e = ["bin", "dev", "etc", "etc/lulab", "lib", "lib/modules", "lib/modules/lulab", "proc", "sys", "tmp", "root"]
            .iter()
            .map(|d| Entry::Dir { path: d.to_string() })
            .collect::<Vec<_>>();
        e.push(Entry::CharDev { path: "dev/console".into(), major: 5, minor: 1 });
        e.push(Entry::File { path: "bin/busybox".into(), mode: 0o755, data: read(&self.busybox)? });
        e.push(Entry::Symlink { path: "bin/sh".into(), target: "busybox".into() });
        e.push(Entry::File { path: "init".into(), mode: 0o755, data: read(&self.init)? });
        e.push(Entry::File { path: "bin/lulab-agent".into(), mode: 0o755, data: read(&self.agent)? });
        let idx = match &self.kernel.modules_root {
            Some(root) => Some(ModuleIndex::load(root, &self.kernel.release)?),
            None => None,
        };
        let mut list = String::new();
        for (i, m) in load.iter().chain(include).enumerate() {
            let data = idx.as_ref().context("modules without a module index")?.read_plain(m)?;
            e.push(Entry::File { path: format!("lib/modules/lulab/{}.ko", m.name), mode: 0o644, data });
            if i < load.len() {
                list.push_str(&format!("{}.ko\n", m.name));
            }
        }
        e.push(Entry::File { path: "etc/lulab/modules.load".into(), mode: 0o644, data: list.into_bytes() });
        Ok(e)
    }
}
