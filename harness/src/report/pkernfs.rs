//! `pkernfs` in report.json: what the pkernfs steps saw, mostly from outside
//! (the carve-out read from the host's RAM file). Additive like the rest.

use serde::{Deserialize, Serialize};

/// `pkernfs` (null when the scenario has no `[pkernfs]` table).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PkernfsSection {
    /// Files the run wrote and checks after every `pkernfs_verify`.
    pub files: u64,
    /// One line per check made (`inside`/`outside`, after how many updates).
    pub checks: Vec<String>,
    /// Hashes of the whole carve-out read from the RAM file, in the order taken.
    pub carveout_hashes: Vec<CarveoutHash>,
    /// One per `pkernfs_corrupt`: what was broken and how the mount refused it.
    pub refusals: Vec<PkernfsRefusal>,
    /// One per `pkernfs_untouched`: the carve-out seen from both sides.
    pub untouched: Vec<UntouchedCheck>,
    /// The first successful mount after each live update, timed in the guest
    /// (added inside this section without a schema bump; empty when reading
    /// a report.json written before it).
    #[serde(default)]
    pub mounts: Vec<PkernfsMount>,
}

/// The first mount after a live update: the kernel opens the image then,
/// validating all of it, so this is the cost a live update pays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PkernfsMount {
    /// Live updates done (the mount follows the last of them).
    pub live_updates: u32,
    /// The kernel that mounted (`lulab`).
    pub kernel: String,
    /// Carve-out size in MiB.
    pub carveout_mib: u64,
    /// Regular files the run had written into the image.
    pub files: u64,
    /// Bytes of data in those files.
    pub data_bytes: u64,
    /// The `mount(2)` call, measured inside the guest with `CLOCK_MONOTONIC`,
    /// in microseconds (TCG: compare rows of one machine only).
    pub mount_us: u64,
    /// Regular files that `pkernfs_verify` found inside after this mount
    /// (null when the mount was another step's).
    pub files_found: Option<u64>,
}

/// One hash of the whole carve-out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarveoutHash {
    /// When: `before corrupting`, `corrupted`, `jump`, `refusal: before mount`,
    /// `refusal: after mount`, `restored`, `untouched`.
    pub at: String,
    /// Live updates done when it was taken.
    pub live_updates: u32,
    /// The kernel running then (`lulab` or `stock`).
    pub kernel: String,
    /// xxh3-128 of the carve-out, 32 hex digits.
    pub xxh3_128: String,
}

/// A corruption and the mount that had to refuse it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PkernfsRefusal {
    /// What `pkernfs_corrupt` broke: `superblock`, `inode N (name)`, `allocator`.
    pub corrupted: String,
    /// Offset of the changed byte from the carve-out's start.
    pub offset: u64,
    /// How the format code on the host refuses the corrupted image.
    pub host_error: String,
    /// The structure the scenario expects the kernel to name.
    pub expected_structure: String,
    /// The agent's mount error (null: the mount was accepted).
    pub mount_error: Option<String>,
    /// `EUCLEAN` when the mount failed with "Structure needs cleaning".
    pub errno: Option<String>,
    /// The kernel's `pkernfs: refusing the image …` line (dmesg).
    pub kernel_line: Option<String>,
    /// The structure that line names (its words before the first `:`).
    pub named_structure: Option<String>,
    /// The carve-out hashed the same right after corrupting, after the kexec
    /// and after the refused mount.
    pub untouched: bool,
    /// Refused with EUCLEAN, naming `expected_structure`, carve-out untouched.
    pub as_expected: bool,
    /// `pkernfs_restore` put the saved bytes back and the carve-out hashed as
    /// before the corruption.
    pub restored: bool,
    /// The next mount after the restore succeeded (null: none was tried).
    pub remounted: Option<bool>,
}

/// `pkernfs_untouched`: the carve-out after a live update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UntouchedCheck {
    /// Live updates done.
    pub live_updates: u32,
    /// The kernel running (`lulab` or `stock`).
    pub kernel: String,
    /// The carve-out hashes as it did right before the last jump.
    pub identical: bool,
    /// `/proc/iomem` lines over the carve-out, as the running kernel shows them.
    pub iomem: Vec<String>,
    /// One of those lines is System RAM (the kernel took the range).
    pub system_ram: bool,
}
