//! The kernel toolchain: Debian packages (installed idempotently with
//! [`Apt`]), bindgen-cli from crates.io into the cache, and the exact
//! variables every `make` of the kernel gets.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd;
use crate::setup::{dpkg_installed, Apt};

/// Debian (bookworm) packages the kernel build needs.
pub const PACKAGES: &[&str] = &[
    "rustc-web",
    "rust-web-src",
    "clang-19",
    "lld-19",
    "llvm-19",
    "libclang-19-dev",
    "flex",
    "bison",
    "bc",
    "libelf-dev",
    "libssl-dev",
    "dwarves",
    "cpio",
    "kexec-tools",
    "kmod",
    "xz-utils",
    "make",
    "patch",
];
/// bindgen-cli version: 7.3's minimum, built from crates.io.
pub const BINDGEN_VERSION: &str = "0.71.1";
/// Debian's rustc-web; rustup's rustc (first on PATH, no rust-src) must not be used.
pub const RUSTC: &str = "/usr/bin/rustc";
/// `LLVM=` suffix for clang-19 / ld.lld-19 / llvm-*-19.
pub const LLVM_SUFFIX: &str = "-19";
/// Where libclang-19 lives (bindgen loads it at run time).
const LIBCLANG_PATH: &str = "/usr/lib/llvm-19/lib";

/// A ready toolchain: the `make` variables and the versions that key the cache.
#[derive(Debug, Clone)]
pub struct Toolchain {
    /// Path of the bindgen binary.
    pub bindgen: PathBuf,
    /// `rustc --version`, `clang --version` (first line), `bindgen --version`.
    pub versions: Vec<(String, String)>,
}

impl Toolchain {
    /// Installs whatever is missing and reads the versions.
    pub fn ensure(cache_root: &Path) -> Result<Self> {
        let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !dpkg_installed(p)).collect();
        if missing.is_empty() {
            println!("kernel: [toolchain] Debian packages present");
        } else {
            println!("kernel: [toolchain] installing {}", missing.join(" "));
            Apt::default().install(&missing)?;
        }
        let root = cache_root.join("tools");
        let bindgen = root.join("bin/bindgen");
        let have = cmd::stdout(Command::new(&bindgen).arg("--version")).unwrap_or_default();
        if !have.contains(BINDGEN_VERSION) {
            println!("kernel: [toolchain] cargo install bindgen-cli {BINDGEN_VERSION} (about a minute)");
            cmd::run(
                Command::new("cargo")
                    .args(["install", "--locked", "bindgen-cli", "--version", BINDGEN_VERSION, "--root"])
                    .arg(&root),
            )
            .context("building bindgen-cli from crates.io")?;
        }
        let first = |c: &mut Command| -> Result<String> {
            Ok(cmd::stdout(c)?.lines().next().unwrap_or_default().trim().to_string())
        };
        let versions = vec![
            ("rustc".to_string(), first(Command::new(RUSTC).arg("--version"))?),
            ("clang".to_string(), first(Command::new(format!("clang{LLVM_SUFFIX}")).arg("--version"))?),
            (
                "bindgen".to_string(),
                first(Command::new(&bindgen).arg("--version").env("LIBCLANG_PATH", LIBCLANG_PATH))?,
            ),
        ];
        for (k, v) in &versions {
            println!("kernel: [toolchain] {k}: {v}");
        }
        Ok(Self { bindgen, versions })
    }

    /// The variables every kernel `make` gets (as `VAR=value` arguments).
    pub fn make_vars(&self) -> Vec<String> {
        vec![format!("LLVM={LLVM_SUFFIX}"), format!("RUSTC={RUSTC}"), format!("BINDGEN={}", self.bindgen.display())]
    }

    /// A `make -C tree` command with the toolchain variables and environment.
    pub fn make(&self, tree: &Path) -> Command {
        let mut c = Command::new("make");
        c.arg("-C").arg(tree).args(self.make_vars()).env("LIBCLANG_PATH", LIBCLANG_PATH);
        // rustup's proxies read these; Debian's rustc must not be redirected.
        c.env_remove("RUSTUP_TOOLCHAIN").env_remove("CARGO_BUILD_RUSTC");
        c
    }

    /// `make rustavailable`, explaining a failure in terms of our packages.
    pub fn check_rust(&self, tree: &Path) -> Result<()> {
        let out = self.make(tree).arg("rustavailable").output().context("running make rustavailable")?;
        let text = String::from_utf8_lossy(&[out.stdout.as_slice(), out.stderr.as_slice()].concat()).into_owned();
        if out.status.success() && text.contains("Rust is available") {
            return Ok(());
        }
        let mut hints = Vec::new();
        if text.contains("source code for the 'core' standard library could not be found") {
            hints.push("rust-src missing: install `rust-web-src` (Debian puts it where /usr/bin/rustc looks)");
        }
        if text.contains("bindgen") {
            hints.push("bindgen missing or too old: `cargo install --locked bindgen-cli --version 0.71.1`");
        }
        if text.contains("libclang") {
            hints.push("libclang missing: install `libclang-19-dev`");
        }
        if text.contains("Rust compiler") || text.contains("rustc") {
            hints.push("rustc missing or too old: install `rustc-web` (/usr/bin/rustc), never rustup's");
        }
        bail!(
            "`make rustavailable` in {} says Rust is not usable:\n{}\n{}",
            tree.display(),
            cmd::tail(text.as_bytes(), 15),
            hints.iter().map(|h| format!("hint: {h}")).collect::<Vec<_>>().join("\n")
        )
    }
}
