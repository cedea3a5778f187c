//! Kernel module selection: resolve names through `modules.dep`, dependencies
//! first, skipping built-ins.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd;

/// One module file to ship.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Canonical name (underscores).
    pub name: String,
    /// Path of the (possibly compressed) .ko below the modules directory.
    pub rel_path: String,
}

/// `modules.dep` and `modules.builtin` of one kernel.
#[derive(Debug, Clone)]
pub struct ModuleIndex {
    dir: PathBuf,
    deps: BTreeMap<String, (String, Vec<String>)>,
    builtin: BTreeSet<String>,
}

/// Module names use `-` and `_` interchangeably.
pub fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

fn name_of(rel: &str) -> String {
    let file = rel.rsplit('/').next().unwrap_or(rel);
    canonical(file.split(".ko").next().unwrap_or(file))
}

impl ModuleIndex {
    /// Reads `root/lib/modules/<release>/modules.dep` (and modules.builtin).
    pub fn load(root: &Path, release: &str) -> Result<Self> {
        let dir = root.join("lib/modules").join(release);
        let dep_file = dir.join("modules.dep");
        let text = std::fs::read_to_string(&dep_file).with_context(|| format!("reading {}", dep_file.display()))?;
        let builtin_text = std::fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
        Ok(Self::parse(dir, &text, &builtin_text))
    }

    /// Parses modules.dep / modules.builtin text.
    pub fn parse(dir: PathBuf, dep: &str, builtin: &str) -> Self {
        let mut deps = BTreeMap::new();
        for line in dep.lines() {
            let Some((module, rest)) = line.split_once(':') else { continue };
            let ds = rest.split_whitespace().map(name_of).collect();
            deps.insert(name_of(module), (module.to_string(), ds));
        }
        let builtin = builtin.lines().filter(|l| !l.is_empty()).map(name_of).collect();
        Self { dir, deps, builtin }
    }

    /// True when the module exists as a file or is built in.
    pub fn available(&self, name: &str) -> bool {
        let n = canonical(name);
        self.deps.contains_key(&n) || self.builtin.contains(&n)
    }

    /// `names` and their dependencies, dependencies first, without built-ins
    /// or repeats. Fails naming the first module that does not exist.
    pub fn resolve(&self, names: &[String]) -> Result<Vec<Module>> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for n in names {
            self.visit(&canonical(n), &mut seen, &mut out, 0)?;
        }
        Ok(out)
    }

    fn visit(&self, name: &str, seen: &mut BTreeSet<String>, out: &mut Vec<Module>, depth: usize) -> Result<()> {
        if depth > 64 {
            bail!("module dependency cycle through {name}");
        }
        if !seen.insert(name.to_string()) || self.builtin.contains(name) {
            return Ok(());
        }
        let Some((rel, deps)) = self.deps.get(name) else {
            bail!("kernel module {name} is neither in {}/modules.dep nor built in", self.dir.display());
        };
        for d in deps {
            self.visit(d, seen, out, depth + 1)?;
        }
        out.push(Module { name: name.to_string(), rel_path: rel.clone() });
        Ok(())
    }

    /// The module's contents, decompressed (busybox insmod wants plain .ko).
    pub fn read_plain(&self, m: &Module) -> Result<Vec<u8>> {
        let path = self.dir.join(&m.rel_path);
        let tool = match path.extension().and_then(|e| e.to_str()) {
            Some("xz") => "xz",
            Some("zst") => "zstd",
            Some("gz") => "gzip",
            _ => return std::fs::read(&path).with_context(|| format!("reading {}", path.display())),
        };
        Ok(cmd::run(Command::new(tool).arg("-dc").arg(&path))?.stdout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "kernel/drivers/vfio/pci/vfio-pci.ko.xz: kernel/drivers/vfio/pci/vfio-pci-core.ko.xz kernel/drivers/vfio/vfio.ko.xz kernel/virt/lib/irqbypass.ko.xz\n\
kernel/drivers/vfio/pci/vfio-pci-core.ko.xz: kernel/drivers/vfio/vfio.ko.xz kernel/virt/lib/irqbypass.ko.xz\n\
kernel/drivers/vfio/vfio.ko.xz:\n\
kernel/virt/lib/irqbypass.ko.xz:\n\
kernel/drivers/vfio/vfio_iommu_type1.ko.xz: kernel/drivers/vfio/vfio.ko.xz\n";

    #[test]
    fn dependencies_come_first_once() {
        let idx = ModuleIndex::parse("/m".into(), DEP, "kernel/drivers/virtio/virtio_pci.ko\n");
        let names: Vec<_> = idx
            .resolve(&["virtio-pci".into(), "vfio_iommu_type1".into(), "vfio-pci".into()])
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, ["vfio", "vfio_iommu_type1", "irqbypass", "vfio_pci_core", "vfio_pci"]);
    }

    #[test]
    fn missing_module_is_named() {
        let idx = ModuleIndex::parse("/m".into(), DEP, "");
        let err = idx.resolve(&["iommufd".into()]).unwrap_err();
        assert!(err.to_string().contains("iommufd"), "{err}");
        assert!(!idx.available("iommufd"));
    }
}
