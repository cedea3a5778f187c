//! Kernels the harness boots: Debian's stock image (fetched, never installed)
//! and our own build (`linux-source-7.3` + `kernel/`).

pub mod build;
pub mod stock;

use std::path::PathBuf;

/// A kernel ready to boot: what every later stage needs from a kernel build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelArtifacts {
    /// Human name for reports ("debian-stock", "lulab").
    pub name: String,
    /// The bzImage / vmlinuz.
    pub bzimage: PathBuf,
    /// Directory containing `lib/modules/<release>/` (with modules.dep), if the
    /// kernel has loadable modules.
    pub modules_root: Option<PathBuf>,
    /// `uname -r` of this kernel.
    pub release: String,
    /// Exact source / package version (e.g. Debian's `6.12.95-1~bpo12+1`).
    pub source_version: String,
}

impl KernelArtifacts {
    /// Its `System.map` (next to the image: `System.map` or
    /// `System.map-<release>`), if there is one.
    pub fn system_map(&self) -> Option<PathBuf> {
        let dir = self.bzimage.parent()?;
        [dir.join("System.map"), dir.join(format!("System.map-{}", self.release))].into_iter().find(|p| p.is_file())
    }
}
