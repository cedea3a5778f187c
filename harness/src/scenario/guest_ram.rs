//! `[guest_ram]`: the VM's guest RAM as the agent (acting as the VMM) holds
//! it, and how it survives a live update. `keep = "pkernfs"` keeps it in a
//! pkernfs file that stays in place through the kexec (the live update);
//! `keep = "copy"` keeps it in a tmpfs file that the agent saves to a disk
//! of the host before the kexec and restores after it (how VMMs update
//! today: the copy-based baseline of `lulab bench downtime`); `keep =
//! "none"` does neither (the negative control: the RAM is gone).

use serde::{Deserialize, Serialize};

use super::{HostSpec, PkernfsSpec};

/// How the guest RAM survives a live update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestRamKeep {
    /// A pkernfs file: nothing to do, it stays where it is.
    Pkernfs,
    /// A tmpfs file, saved to the save disk before the kexec, restored after.
    Copy,
    /// A tmpfs file, not saved (the guest RAM check's negative control).
    None,
}

/// `[guest_ram]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestRamSpec {
    /// Bytes of guest RAM, in MiB.
    pub size_mib: u64,
    /// Pattern seed of its contents.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// How it survives a live update.
    pub keep: GuestRamKeep,
}

fn default_seed() -> u64 {
    1
}

/// The guest RAM file's name below the pkernfs mount point.
pub const PKERNFS_NAME: &str = "vm-ram";
/// The guest RAM file in the host's tmpfs (`keep = "copy"` / `"none"`).
pub const TMPFS_PATH: &str = "/tmp/lulab-vm-ram";
/// The save disk's NVMe serial number (the host kernel's nvme driver
/// drives it; the NVMe under test is `lulab0`).
pub const SAVE_DISK_SERIAL: &str = "lulab-save";
/// The host kernel keeps this much RAM for itself besides a tmpfs guest RAM.
const KERNEL_HEADROOM_MIB: u64 = 768;
/// Room in the carve-out for the engines' own pkernfs files.
const ENGINE_FILES_MIB: u64 = 32;

impl GuestRamSpec {
    /// Bytes.
    pub fn size(&self) -> u64 {
        self.size_mib << 20
    }

    /// Where the agent keeps it in the host.
    pub fn path(&self, pk: Option<&PkernfsSpec>) -> String {
        match (self.keep, pk) {
            (GuestRamKeep::Pkernfs, Some(pk)) => pk.path(PKERNFS_NAME),
            _ => TMPFS_PATH.into(),
        }
    }

    /// Whether the host needs the save disk.
    pub fn needs_save_disk(&self) -> bool {
        self.keep == GuestRamKeep::Copy
    }

    pub(super) fn validate(&self, host: &HostSpec, pk: Option<&PkernfsSpec>) -> Result<(), String> {
        if self.size_mib == 0 {
            return Err("guest_ram.size_mib: must be at least 1".into());
        }
        match (self.keep, pk) {
            (GuestRamKeep::Pkernfs, None) => Err("guest_ram.keep: \"pkernfs\" keeps the guest RAM in pkernfs: add a [pkernfs] table".into()),
            (GuestRamKeep::Pkernfs, Some(pk)) if self.size_mib + ENGINE_FILES_MIB > pk.size_mib => Err(format!(
                "guest_ram.size_mib: {} MiB and {ENGINE_FILES_MIB} MiB for the engines' files do not fit a {} MiB carve-out (pkernfs.size_mib)",
                self.size_mib, pk.size_mib
            )),
            (GuestRamKeep::Copy | GuestRamKeep::None, _) => {
                let carve = pk.map_or(0, |p| p.size_mib);
                let need = self.size_mib + carve + KERNEL_HEADROOM_MIB;
                if host.memory_mib < need {
                    return Err(format!(
                        "guest_ram.size_mib: {} MiB in tmpfs, a {carve} MiB carve-out and {KERNEL_HEADROOM_MIB} MiB for the kernel need host.memory_mib >= {need} (it is {})",
                        self.size_mib, host.memory_mib
                    ));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;

    fn parse(guest_ram: &str, memory_mib: u64) -> Result<Scenario, String> {
        let text = format!(
            "description = \"t\"\nexpect = \"intact\"\n[host]\nkernel = \"lulab\"\nmemory_mib = {memory_mib}\n[pkernfs]\nsize_mib = 128\nbase_mib = 1024\n[guest_ram]\n{guest_ram}\n[[steps]]\ndo = \"boot\"\n[[steps]]\ndo = \"fill_guest_ram\"\n"
        );
        Scenario::parse(&text, "t.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn each_keep_parses_and_places_the_file() {
        let s = parse("size_mib = 64\nkeep = \"pkernfs\"", 2048).unwrap();
        let g = s.guest_ram.as_ref().unwrap();
        assert_eq!((g.size(), g.seed), (64 << 20, 1));
        assert_eq!(g.path(s.pkernfs.as_ref()), "/mnt/pkernfs/vm-ram");
        assert!(!g.needs_save_disk());
        let s = parse("size_mib = 64\nkeep = \"copy\"\nseed = 9", 2048).unwrap();
        let g = s.guest_ram.as_ref().unwrap();
        assert_eq!((g.path(s.pkernfs.as_ref()).as_str(), g.seed), (TMPFS_PATH, 9));
        assert!(g.needs_save_disk());
    }

    #[test]
    fn what_does_not_fit_is_refused_with_its_field_and_line() {
        let e = parse("size_mib = 100\nkeep = \"pkernfs\"", 2048).unwrap_err();
        assert!(e.contains("t.toml") && e.contains("guest_ram.size_mib") && e.contains("128 MiB carve-out"), "{e}");
        let e = parse("size_mib = 1200\nkeep = \"copy\"", 2048).unwrap_err();
        assert!(e.contains("host.memory_mib >= 2096"), "{e}");
        let e = parse("size_mib = 0\nkeep = \"none\"", 2048).unwrap_err();
        assert!(e.contains("at least 1"), "{e}");
        let e = parse("size_mib = 8\nkeep = \"disk\"", 2048).unwrap_err();
        assert!(e.contains("line 11") && e.contains("keep"), "{e}");
    }

    #[test]
    fn the_copy_baseline_takes_only_a_non_persistent_nvme() {
        let base = |tables: &str| {
            format!("description = \"t\"\nexpect = \"intact\"\n[host]\nkernel = \"lulab\"\nmemory_mib = 2048\n[pkernfs]\nsize_mib = 128\n[guest_ram]\nsize_mib = 16\nkeep = \"copy\"\n{tables}[[steps]]\ndo = \"boot\"\n")
        };
        Scenario::parse(&base("[nvme]\nlba_count = 64\nblocks_per_cmd = 8\nqueue_depth = 4\npersist = false\n"), "t.toml").unwrap();
        for tables in ["[nvme]\nlba_count = 64\nblocks_per_cmd = 8\nqueue_depth = 4\npersist = true\n", "[rx]\nring_size = 64\nrate_fps = 10.0\nframe_size = 256\nframes = 10\n"] {
            let e = Scenario::parse(&base(tables), "t.toml").unwrap_err().to_string();
            assert!(e.contains("guest_ram.keep") && e.contains("non-persistent [nvme]"), "{e}");
        }
    }

    #[test]
    fn fill_guest_ram_needs_the_table() {
        let text = "description = \"t\"\nexpect = \"intact\"\n[[steps]]\ndo = \"boot\"\n[[steps]]\ndo = \"fill_guest_ram\"\n";
        let e = Scenario::parse(text, "t.toml").unwrap_err().to_string();
        assert!(e.contains("[guest_ram]"), "{e}");
    }
}
