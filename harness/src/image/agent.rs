//! Building the guest agent as a static binary for the initramfs.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd;

/// Target triple: the musl target cannot be installed here, so glibc + crt-static.
const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Builds `lulab-agent` (release, static) and returns its path. Cargo's own
/// incremental build makes this a no-op when nothing changed.
pub fn build() -> Result<PathBuf> {
    let root = crate::workspace_root();
    let target_dir = root.join("target").join("agent");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    cmd::run(
        Command::new(cargo)
            .args(["build", "--release", "--quiet", "-p", "lulab-guest-agent", "--target", TARGET])
            .arg("--target-dir")
            .arg(&target_dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .current_dir(&root),
    )
    .context("building the guest agent")?;
    let bin = target_dir.join(TARGET).join("release").join("lulab-agent");
    let elf = std::fs::read(&bin).with_context(|| format!("reading {}", bin.display()))?;
    if has_interpreter(&elf) {
        bail!("{} is dynamically linked; the initramfs has no libc", bin.display());
    }
    Ok(bin)
}

/// True when a 64-bit ELF has a PT_INTERP program header (dynamic binary).
fn has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u64_at = |o: usize| elf.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as usize);
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return true;
    };
    (0..phnum).any(|i| elf.get(phoff + i * phentsize..phoff + i * phentsize + 4) == Some(&3u32.to_le_bytes()[..]))
}

#[cfg(test)]
mod tests {
    #[test]
    fn detects_dynamic_binaries() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(super::has_interpreter(&me), "test binaries are dynamic");
        assert!(super::has_interpreter(b"short"));
    }
}
