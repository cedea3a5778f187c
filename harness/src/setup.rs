//! Host set-up for a fresh Debian bookworm machine: QEMU 10.x from
//! bookworm-backports and the small tools the image stage needs. Idempotent:
//! prints what it does, and does nothing when everything is there.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd;

/// The oldest QEMU the harness supports.
pub const MIN_QEMU: (u32, u32) = (10, 0);
/// Where set-up adds the backports source when the system has none.
const BACKPORTS_SOURCE: &str = "/etc/apt/sources.list.d/lulab-bookworm-backports.sources";
/// Debian packages the image stage and the boot need (besides QEMU).
pub const HOST_PACKAGES: &[&str] = &["busybox-static", "cpio", "xz-utils", "kmod", "zstd"];
/// Debian packages only the tests need: a headless browser that renders
/// report.html (the report test takes a screenshot of it).
pub const TEST_PACKAGES: &[&str] = &["chromium"];
/// The one-line fix shown whenever QEMU is missing or too old.
pub const QEMU_INSTALL_HINT: &str =
    "run `cargo run --release -p lulab -- setup` (installs qemu-system-x86 from bookworm-backports)";

/// Makes the machine ready to build images and boot hosts.
pub fn ensure_host() -> Result<()> {
    let mut apt = Apt::default();
    match qemu_version() {
        Ok(v) if v >= MIN_QEMU => println!("setup: QEMU {}.{} present", v.0, v.1),
        found => {
            match found {
                Ok(v) => println!("setup: QEMU {}.{} is older than {}.{}", v.0, v.1, MIN_QEMU.0, MIN_QEMU.1),
                Err(_) => println!("setup: QEMU not installed"),
            }
            println!("setup: installing qemu-system-x86 from bookworm-backports");
            apt.install(&["-t", "bookworm-backports", "qemu-system-x86"])?;
        }
    }
    let missing: Vec<&str> = HOST_PACKAGES.iter().copied().filter(|p| !dpkg_installed(p)).collect();
    if missing.is_empty() {
        println!("setup: host packages present ({})", HOST_PACKAGES.join(", "));
    } else {
        println!("setup: installing {}", missing.join(" "));
        apt.install(&missing)?;
    }
    // The stock kernel is fetched from backports too, so its lists must be there.
    apt.ensure_backports()
}

/// What the tests need besides [`ensure_host`] ([`TEST_PACKAGES`]).
pub fn ensure_test_tools() -> Result<()> {
    let missing: Vec<&str> = TEST_PACKAGES.iter().copied().filter(|p| !dpkg_installed(p)).collect();
    if missing.is_empty() {
        println!("setup: test packages present ({})", TEST_PACKAGES.join(", "));
        return Ok(());
    }
    println!("setup: installing {} (for the tests)", missing.join(" "));
    Apt::default().install(&missing)
}

/// apt-get with at most one `update` per run, after the backports source exists.
#[derive(Debug, Default)]
pub struct Apt {
    updated: bool,
}

impl Apt {
    /// Adds the backports source if needed and runs `apt-get update` once.
    pub fn ensure_backports(&mut self) -> Result<()> {
        if ensure_backports_source()? || !self.updated && !backports_lists_present() {
            self.updated = false;
            self.update()?;
        }
        Ok(())
    }

    fn update(&mut self) -> Result<()> {
        if !self.updated {
            println!("setup: apt-get update");
            cmd::run(Command::new("apt-get").args(["update", "-q"]))?;
            self.updated = true;
        }
        Ok(())
    }

    /// `apt-get install -y` of `args` (packages, optionally `-t SUITE` first).
    pub fn install(&mut self, args: &[&str]) -> Result<()> {
        self.ensure_backports()?;
        self.update()?;
        cmd::run_visible(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(args),
        )
    }
}

/// True when apt has package lists for bookworm-backports.
fn backports_lists_present() -> bool {
    std::fs::read_dir("/var/lib/apt/lists")
        .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().contains("bookworm-backports_main")))
        .unwrap_or(false)
}

/// True when `pkg` is installed according to dpkg.
pub fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Adds a deb822 source for bookworm-backports when no apt source names it.
/// Returns true when it wrote one.
fn ensure_backports_source() -> Result<bool> {
    let mut texts = Vec::new();
    if let Ok(s) = std::fs::read_to_string("/etc/apt/sources.list") {
        texts.push(s);
    }
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for e in dir.flatten() {
            texts.push(std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    if texts.iter().any(|t| t.contains("bookworm-backports")) {
        return Ok(false);
    }
    let uri = texts
        .iter()
        .flat_map(|t| t.lines())
        .filter_map(|l| l.strip_prefix("URIs:").map(str::trim))
        .find(|u| u.ends_with("/debian") || u.ends_with("/debian/"))
        .unwrap_or("http://deb.debian.org/debian")
        .to_string();
    let body = format!(
        "Types: deb\nURIs: {uri}\nSuites: bookworm-backports\nComponents: main\n\
         Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    );
    println!("setup: adding {BACKPORTS_SOURCE} ({uri})");
    std::fs::write(BACKPORTS_SOURCE, body).with_context(|| format!("writing {BACKPORTS_SOURCE}"))?;
    Ok(true)
}

/// The QEMU binary: `$LULAB_QEMU` or `qemu-system-x86_64` on PATH.
pub fn qemu_binary() -> std::ffi::OsString {
    std::env::var_os("LULAB_QEMU").filter(|v| !v.is_empty()).unwrap_or_else(|| "qemu-system-x86_64".into())
}

/// The installed qemu-system-x86_64 version.
pub fn qemu_version() -> Result<(u32, u32)> {
    let bin = qemu_binary();
    let out = cmd::stdout(Command::new(&bin).arg("--version"))
        .with_context(|| format!("{} not found or not working; {QEMU_INSTALL_HINT}", bin.to_string_lossy()))?;
    parse_qemu_version(&out).with_context(|| format!("unexpected `qemu-system-x86_64 --version` output: {out}"))
}

fn parse_qemu_version(s: &str) -> Result<(u32, u32)> {
    let v = s.split_whitespace().skip_while(|w| *w != "version").nth(1).context("no version word")?;
    let mut parts = v.split('.').map(|p| p.parse::<u32>());
    match (parts.next(), parts.next()) {
        (Some(Ok(a)), Some(Ok(b))) => Ok((a, b)),
        _ => bail!("cannot parse version {v:?}"),
    }
}

/// Fails with the install hint unless QEMU ≥ [`MIN_QEMU`] is present.
pub fn require_qemu() -> Result<(u32, u32)> {
    let v = qemu_version()?;
    if v < MIN_QEMU {
        bail!("QEMU {}.{} is too old (need ≥ {}.{}); {QEMU_INSTALL_HINT}", v.0, v.1, MIN_QEMU.0, MIN_QEMU.1);
    }
    Ok(v)
}

/// One-line accelerator verdict. Hosts always run under TCG: on this machine
/// kind `/dev/kvm` opens and answers, but running a vCPU fails (measured:
/// KVM internal error / MSR assertion), so KVM is probed and reported, never used.
pub fn kvm_note() -> String {
    const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
    let Ok(f) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") else {
        return "accel: TCG (no usable /dev/kvm)".into();
    };
    // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an int;
    // the fd is open for the duration of the call.
    let api = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), KVM_GET_API_VERSION, 0) };
    if api < 0 {
        return "accel: TCG (/dev/kvm does not answer KVM_GET_API_VERSION)".into();
    }
    format!("accel: TCG (/dev/kvm answers, API {api}, but vCPUs fail on this machine kind; KVM not used)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_debian_qemu_version() {
        let s = "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright";
        assert_eq!(parse_qemu_version(s).unwrap(), (10, 0));
        assert_eq!(parse_qemu_version("QEMU emulator version 7.2.15 (Debian)").unwrap(), (7, 2));
        assert!(parse_qemu_version("garbage").is_err());
    }
}
