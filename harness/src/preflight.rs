//! What the system tier needs from this machine, checked cheaply and before
//! any test runs: the test binaries mark a test they cannot run as ignored
//! (reported as skipped, never as passed), and `lulab test` prints why.
//!
//! Under CI (`CI` set) nothing is skipped: a missing prerequisite is the
//! test's failure, so a CI machine that lost QEMU goes red instead of green.

use std::path::Path;

use crate::scenario::KernelChoice;

/// One thing a test needs beyond the Rust toolchain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Need {
    /// QEMU ≥ 10 to boot hosts.
    Qemu,
    /// Building our kernel here (Debian, its toolchain packages or root to install them).
    KernelBuild,
    /// Debian's stock kernel package (fetched with apt).
    StockKernel,
    /// A headless browser to render report.html (Debian's `chromium`,
    /// which `lulab test` installs).
    Chromium,
}

impl Need {
    /// What a host running `kernel` needs.
    pub fn for_kernel(kernel: KernelChoice) -> Self {
        match kernel {
            KernelChoice::Stock => Need::StockKernel,
            KernelChoice::Lulab => Need::KernelBuild,
        }
    }

    /// `Err(why)` when this machine lacks it (checked once per process).
    pub fn check(self) -> Result<(), String> {
        static SEEN: std::sync::Mutex<Vec<(Need, Result<(), String>)>> = std::sync::Mutex::new(Vec::new());
        let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, r)) = seen.iter().find(|(n, _)| *n == self) {
            return r.clone();
        }
        let r = self.check_now();
        seen.push((self, r.clone()));
        r
    }

    fn check_now(self) -> Result<(), String> {
        match self {
            Need::Qemu => crate::setup::require_qemu().map(|_| ()).map_err(|e| format!("{e:#}")),
            Need::KernelBuild => kernel_build(),
            Need::StockKernel => debian_apt(),
            Need::Chromium => crate::report::browser::find().map(|_| ()).map_err(|e| format!("{e:#}")),
        }
    }

    /// Short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Need::Qemu => "QEMU ≥ 10",
            Need::KernelBuild => "our kernel (built here)",
            Need::StockKernel => "Debian's stock kernel",
            Need::Chromium => "headless Chromium",
        }
    }
}

/// True under CI, where a test never skips.
pub fn under_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// The first of `needs` this machine lacks, as `"<need>: <why>"`.
pub fn missing(needs: &[Need]) -> Option<String> {
    needs.iter().find_map(|n| n.check().err().map(|why| format!("{}: {why}", n.name())))
}

/// Whether a test needing `needs` is skipped here: `Some(reason)` when the
/// machine lacks one and this is not CI (under CI the test runs and fails).
pub fn skip_reason(needs: &[Need]) -> Option<String> {
    if under_ci() {
        return None;
    }
    missing(needs)
}

fn debian_apt() -> Result<(), String> {
    if !crate::cmd::on_path("apt-get") || !crate::cmd::on_path("dpkg-deb") {
        return Err("not a Debian system (apt-get / dpkg-deb missing)".into());
    }
    if !Path::new("/usr/share/keyrings/debian-archive-keyring.gpg").exists() {
        return Err("no Debian archive keyring (/usr/share/keyrings/debian-archive-keyring.gpg)".into());
    }
    Ok(())
}

fn kernel_build() -> Result<(), String> {
    if std::env::var_os("LULAB_SKIP_KERNEL_BUILD").is_some() {
        return Err("LULAB_SKIP_KERNEL_BUILD is set".into());
    }
    debian_apt()?;
    let missing: Vec<&str> = crate::kernel::build::toolchain::PACKAGES
        .iter()
        .copied()
        .filter(|p| !crate::setup::dpkg_installed(p))
        .collect();
    if !missing.is_empty() && !is_root() {
        return Err(format!("not root, cannot install {}", missing.join(" ")));
    }
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
