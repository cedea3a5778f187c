//! pkernfs corruption steps. `pkernfs_corrupt` unmounts, then changes one
//! byte of a named structure in the carve-out straight in the host's RAM file
//! (saving the original), `pkernfs_expect_refused` (after a kexec) checks that
//! the kernel refuses the mount with EUCLEAN and a message naming that
//! structure without writing a byte, and `pkernfs_restore` puts the saved
//! byte back so that the next `pkernfs_verify` proves the image was refused,
//! not destroyed. Each corruption is thus independent of the previous one.
//!
//! The carve-out is hashed (xxh3-128 of all of it, from the RAM file) before
//! and right after corrupting, at the jump, before and after the refused
//! mount, and after the restore; all of it lands in pkernfs.json and in
//! report.json's `pkernfs` section.

use std::time::Duration;

use anyhow::{Context, Result};
use lulab_proto::Op;

use super::pkernfs::lookup_path;
use super::Runner;
use crate::guest_memory::GuestMemory;
use crate::pkernfs::corrupt;
use crate::pkernfs::format::{Image, ROOT_INO};
use crate::report::PkernfsRefusal;
use crate::scenario::CorruptWhat;

/// The kernel's refusal line (kernel/pkernfs/ops.rs), followed by the
/// address, `: `, and the format's description `STRUCTURE: what is wrong`.
const REFUSAL: &str = "pkernfs: refusing the image at ";

/// A corruption `pkernfs_restore` has yet to undo.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    /// (offset in the carve-out, original byte).
    saved: Vec<(u64, u8)>,
    /// Carve-out hash before corrupting.
    before: String,
    /// Carve-out hash right after corrupting.
    corrupted: String,
}

impl Runner<'_> {
    /// A second, writable mapping of the RAM file (the runner's own is shared
    /// read-mostly with the oracles).
    fn pk_ram_writer(&self) -> Result<GuestMemory> {
        let mem = self.mem.as_ref().context("no guest memory")?;
        Ok(GuestMemory::open(mem.path(), mem.ram_size())?)
    }

    /// Writes `bytes` at carve-out offsets through the RAM file.
    fn pk_poke(&self, bytes: &[(u64, u8)]) -> Result<()> {
        let base = self.pk_spec()?.base();
        let mut w = self.pk_ram_writer()?;
        for (off, b) in bytes {
            w.write(base + off, &[*b]).with_context(|| format!("writing the carve-out at +{off:#x}"))?;
        }
        w.flush().context("flushing the RAM file")?;
        Ok(())
    }

    /// `pkernfs_corrupt`: unmount, break `what` in the RAM file, hash.
    pub(super) fn pk_corrupt(&mut self, what: CorruptWhat, file: Option<&str>) -> Result<()> {
        let pk = self.pk_spec()?;
        // Nothing in this kernel may write the image from here on.
        let _ = self.pk_call(Op::Umount { target: pk.mount.clone() }, Duration::from_secs(10));
        let before_bytes = self.pk_carveout()?;
        let before = self.pk_record_hash("before corrupting", &before_bytes);
        let mut bytes = before_bytes.clone();
        let (c, corrupted) = match what {
            CorruptWhat::Superblock => (corrupt::corrupt_superblock(&mut bytes)?, "superblock".to_string()),
            CorruptWhat::Allocator => (corrupt::corrupt_allocator(&mut bytes)?, "allocator".to_string()),
            CorruptWhat::Inode => {
                let (ino, label) = match file {
                    None => (ROOT_INO, "root directory".to_string()),
                    Some(f) => {
                        let mut copy = before_bytes.clone();
                        let img = Image::open(&mut copy).map_err(|e| anyhow::anyhow!("the image to corrupt does not open: {}", e.describe()))?;
                        (lookup_path(&img, f).map_err(|e| anyhow::anyhow!("{f}: {e}"))?, f.to_string())
                    }
                };
                (corrupt::corrupt_inode(&mut bytes, ino)?, format!("inode {ino} ({label})"))
            }
        };
        let saved: Vec<(u64, u8)> =
            bytes.iter().zip(&before_bytes).enumerate().filter(|(_, (a, b))| a != b).map(|(i, (_, b))| (i as u64, *b)).collect();
        let changed: Vec<(u64, u8)> = saved.iter().map(|(off, _)| (*off, bytes[*off as usize])).collect();
        // The format code on the host must refuse it the way the kernel will.
        let host_error = match Image::open(&mut bytes.clone()) {
            Ok(_) => {
                self.pk.findings.push(crate::report::Finding::new(crate::report::Reason::PkernfsCorruptionMishandled, format!("pkernfs: the host's format code accepts the image with a corrupted {corrupted}")));
                "accepted".to_string()
            }
            Err(e) => {
                if e != c.expected {
                    self.pk.findings.push(crate::report::Finding::new(crate::report::Reason::PkernfsCorruptionMishandled, format!("pkernfs: corrupted {corrupted}: host refuses with {e:?}, helper expected {:?}", c.expected)));
                }
                e.describe().to_string()
            }
        };
        self.pk_poke(&changed)?;
        let corrupted_hash = self.pk_hash("corrupted")?;
        if corrupted_hash != hash_of(&bytes) {
            self.pk.findings.push(crate::report::Finding::new(crate::report::Reason::PkernfsCorruptionMishandled, format!("pkernfs: the carve-out changed while {corrupted} was being corrupted")));
        }
        self.pk.refusals.push(PkernfsRefusal { corrupted, offset: c.offset, host_error, ..Default::default() });
        self.pk.pending = Some(Pending { saved, before, corrupted: corrupted_hash });
        Ok(())
    }

    /// `pkernfs_expect_refused`: mount refused with EUCLEAN, the kernel names
    /// `structure`, and the carve-out is exactly as the harness left it.
    pub(super) fn pk_expect_refused(&mut self, structure: &str) -> Result<()> {
        let pk = self.pk_spec()?;
        let pending = self.pk.pending.clone().context("`pkernfs_expect_refused` without a pending `pkernfs_corrupt`")?;
        let n = self.live_updates;
        let before_mount = self.pk_hash("refusal: before mount")?;
        let mounted = self.pk_mount(&pk);
        let dmesg = self.host()?.agent.exec(&["dmesg"], Duration::from_secs(10))?.stdout;
        let after_mount = self.pk_hash("refusal: after mount")?;
        let mut r = self.pk.refusals.pop().context("no refusal record")?;
        r.expected_structure = structure.to_string();
        match &mounted {
            Ok(_) => {
                self.pk.findings.push(crate::report::Finding::new(crate::report::Reason::PkernfsCorruptionMishandled, format!("pkernfs: after {n} update(s) the mount accepted the image with a corrupted {}", r.corrupted)));
                let _ = self.pk_call(Op::Umount { target: pk.mount.clone() }, Duration::from_secs(10));
            }
            Err(e) => {
                let text = format!("{e:#}");
                r.errno = errno_name(&text);
                r.mount_error = Some(text);
            }
        }
        if mounted.is_err() && r.errno.as_deref() != Some("EUCLEAN") {
            self.pk.findings.push(crate::report::Finding::new(crate::report::Reason::PkernfsCorruptionMishandled, format!("pkernfs: corrupted {}: mount failed, but not with EUCLEAN: {:?}", r.corrupted, r.mount_error)));
        }
        r.kernel_line = dmesg.lines().rev().find(|l| l.contains(REFUSAL)).map(|l| l.trim().to_string());
        r.named_structure = r.kernel_line.as_deref().and_then(named_structure);
        if r.named_structure.as_deref() != Some(structure) {
            self.pk.findings.push(crate::report::Finding::new(crate::report::Reason::PkernfsCorruptionMishandled, format!(
                "pkernfs: corrupted {}: the kernel named {:?}, expected {structure:?} (line {:?})",
                r.corrupted, r.named_structure, r.kernel_line
            )));
        } else if !r.kernel_line.as_deref().is_some_and(|l| l.contains(&r.host_error)) {
            self.pk.findings.push(crate::report::Finding::new(crate::report::Reason::PkernfsCorruptionMishandled, format!("pkernfs: corrupted {}: kernel says {:?}, the host's format code {:?}", r.corrupted, r.kernel_line, r.host_error)));
        }
        r.untouched = before_mount == pending.corrupted && after_mount == pending.corrupted;
        if !r.untouched {
            self.pk.findings.push(crate::report::Finding::new(crate::report::Reason::PkernfsCorruptionMishandled, format!(
                "pkernfs: corrupted {}: the carve-out was written (xxh3-128 corrupted {}, before mount {before_mount}, after the refused mount {after_mount})",
                r.corrupted, pending.corrupted
            )));
        }
        r.as_expected =
            mounted.is_err() && r.errno.as_deref() == Some("EUCLEAN") && r.named_structure.as_deref() == Some(structure) && r.untouched;
        self.pk.refusals.push(r);
        Ok(())
    }

    /// `pkernfs_restore`: put the saved bytes back; the carve-out must hash as
    /// before the corruption.
    pub(super) fn pk_restore(&mut self) -> Result<()> {
        let pending = self.pk.pending.take().context("`pkernfs_restore` without a pending `pkernfs_corrupt`")?;
        self.pk_poke(&pending.saved)?;
        let now = self.pk_hash("restored")?;
        let restored = now == pending.before;
        if !restored {
            self.pk.findings.push(crate::report::Finding::new(crate::report::Reason::PkernfsCorruptionMishandled, format!(
                "pkernfs: after restoring {} byte(s) the carve-out hashes {now}, not {} as before the corruption",
                pending.saved.len(),
                pending.before
            )));
        }
        if let Some(r) = self.pk.refusals.last_mut() {
            r.restored = restored;
        }
        Ok(())
    }
}

fn hash_of(bytes: &[u8]) -> String {
    super::pkernfs::hash_hex(bytes)
}

/// `EUCLEAN` (or `os error N`) from an agent error such as
/// "mount -t pkernfs none /mnt/pkernfs: Structure needs cleaning (os error 117)".
fn errno_name(text: &str) -> Option<String> {
    if text.contains("Structure needs cleaning") || text.contains("(os error 117)") {
        return Some("EUCLEAN".into());
    }
    let i = text.rfind("(os error ")?;
    let n: String = text[i + 10..].chars().take_while(char::is_ascii_digit).collect();
    (!n.is_empty()).then(|| format!("os error {n}"))
}

/// The structure a refusal line names: the words between `at 0x…: ` and the next `:`.
fn named_structure(line: &str) -> Option<String> {
    let rest = &line[line.find(REFUSAL)? + REFUSAL.len()..];
    let rest = &rest[rest.find(": ")? + 2..];
    Some(rest.split(':').next()?.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_lines_name_their_structure() {
        let l = "[    3.104] pkernfs: refusing the image at 0x40000000: inode table: inode checksum mismatch (left untouched)";
        assert_eq!(named_structure(l).as_deref(), Some("inode table"));
        assert_eq!(named_structure("pkernfs: refusing the image at 0x40000000: superblock: checksum mismatch").as_deref(), Some("superblock"));
        assert_eq!(named_structure("pkernfs: mounted the existing image"), None);
    }

    #[test]
    fn errno_from_agent_errors() {
        assert_eq!(errno_name("mount -t pkernfs none /mnt: Structure needs cleaning (os error 117)").as_deref(), Some("EUCLEAN"));
        assert_eq!(errno_name("mount: No such device (os error 19)").as_deref(), Some("os error 19"));
        assert_eq!(errno_name("timeout"), None);
    }
}
