//! `[pkernfs]`: the carve-out given to pkernfs on the host's command line and
//! the files a scenario writes into it.

use serde::{Deserialize, Serialize};

use super::{HostSpec, Step};
use crate::pkernfs::format::{Geometry, BLOCK_SIZE, DIRENT_SIZE};

/// `pkernfs_corrupt`'s `what`: the structure broken in the RAM file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorruptWhat {
    /// A superblock byte (checksum mismatch).
    Superblock,
    /// A byte of one inode (inode checksum mismatch).
    Inode,
    /// A bitmap bit of the allocator (bitmap checksum mismatch).
    Allocator,
}

/// `[pkernfs]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PkernfsSpec {
    /// Carve-out size.
    #[serde(default = "default_size_mib")]
    pub size_mib: u64,
    /// Carve-out physical base (a guest-physical address below 4 GiB).
    #[serde(default = "default_base_mib")]
    pub base_mib: u64,
    /// Mount point in the host.
    #[serde(default = "default_mount")]
    pub mount: String,
    /// Files written by `pkernfs_prepare` (relative to the mount point).
    #[serde(default)]
    pub files: Vec<PkernfsFile>,
    /// The file `pkernfs_mmap` keeps writing through a shared mapping.
    pub mmap: Option<PkernfsMmap>,
}

/// `[[pkernfs.files]]`: `size` bytes of the agent's pattern of `seed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PkernfsFile {
    /// Path below the mount point (directories are created).
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Pattern seed.
    pub seed: u64,
}

/// `[pkernfs.mmap]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PkernfsMmap {
    /// Path below the mount point.
    pub name: String,
    /// Bytes mapped.
    pub size: u64,
    /// Pattern seed of the last pass.
    pub seed: u64,
    /// How long the agent keeps writing.
    pub until_ms: u64,
}

/// The directory below the mount point that `pkernfs_fill` replaces.
pub const FILL_DIR: &str = "fill";

fn default_size_mib() -> u64 {
    64
}
fn default_base_mib() -> u64 {
    1024
}
fn default_mount() -> String {
    "/mnt/pkernfs".into()
}

impl PkernfsSpec {
    /// Kernel command-line words that carve the range out (`memmap=…!…`,
    /// e820 persistent RAM) and donate it to pkernfs (`pkernfs=SIZE@BASE`).
    /// The harness passes the same words to every kexec.
    pub fn cmdline(&self) -> Vec<String> {
        vec![
            format!("memmap={}M!{}M", self.size_mib, self.base_mib),
            format!("pkernfs={}M@{}M", self.size_mib, self.base_mib),
        ]
    }

    /// Carve-out physical base in bytes.
    pub fn base(&self) -> u64 {
        self.base_mib << 20
    }

    /// Carve-out size in bytes.
    pub fn size(&self) -> u64 {
        self.size_mib << 20
    }

    /// Absolute path of `pkernfs_fill`'s directory.
    pub fn fill_dir(&self) -> String {
        self.path(FILL_DIR)
    }

    /// Absolute path of a file below the mount point.
    pub fn path(&self, name: &str) -> String {
        format!("{}/{}", self.mount.trim_end_matches('/'), name.trim_start_matches('/'))
    }

    pub(super) fn validate(&self, host: &HostSpec) -> Result<(), String> {
        if self.size_mib == 0 || !self.size_mib.is_multiple_of(2) || !self.base_mib.is_multiple_of(2) {
            return Err(format!(
                "pkernfs: size_mib = {} and base_mib = {} must be positive multiples of 2 (2 MiB mappings)",
                self.size_mib, self.base_mib
            ));
        }
        // q35 puts up to 2.75 GiB of RAM below 4 GiB (2 GiB once RAM is
        // 2.75 GiB or more) and the rest from 4 GiB up: the carve-out lies in
        // one of the two (the harness translates its GPAs to RAM-file offsets).
        let end = self.base_mib + self.size_mib;
        let low = crate::guest_memory::q35_below_4g(host.memory_mib << 20) >> 20;
        let high = 4096 + host.memory_mib - low;
        let in_low = self.base_mib >= 16 && end <= low;
        let in_high = high > 4096 && self.base_mib >= 4096 && end <= high;
        if !in_low && !in_high {
            let high = if high > 4096 { format!(" or its high RAM [4096 MiB, {high} MiB)") } else { String::new() };
            return Err(format!(
                "pkernfs: carve-out [{} MiB, {end} MiB) must lie in the host's low RAM [16 MiB, {low} MiB){high} (host.memory_mib = {})",
                self.base_mib, host.memory_mib
            ));
        }
        let total: u64 = self.files.iter().map(|f| f.size).sum::<u64>() + self.mmap.as_ref().map_or(0, |m| m.size);
        if total >= self.size() {
            return Err(format!("pkernfs: files need {total} bytes, more than the {} MiB carve-out", self.size_mib));
        }
        if self.names().any(|n| n.is_empty()) {
            return Err("pkernfs.files: empty name".into());
        }
        if let Some(n) = self.names().find(|n| n.trim_start_matches('/').split('/').next() == Some(FILL_DIR)) {
            return Err(format!("pkernfs.files: {n:?} is below {FILL_DIR}/, which `pkernfs_fill` replaces"));
        }
        Ok(())
    }

    /// Names of `[[pkernfs.files]]` and `[pkernfs.mmap]`.
    fn names(&self) -> impl Iterator<Item = &String> {
        self.files.iter().map(|f| &f.name).chain(self.mmap.iter().map(|m| &m.name))
    }

    /// `pkernfs_fill` (step number `n`): the tree must fit the carve-out's
    /// inode table and data area next to the named files (the allocator's
    /// exact layout aside: one inode per file and directory, whole blocks).
    fn validate_fill(&self, n: usize, files: u64, file_size: u64) -> Result<(), String> {
        let at = format!("step {n} (pkernfs_fill)");
        if files == 0 {
            return Err(format!("{at}: files = 0; write at least one"));
        }
        let g = Geometry::for_len(self.size() as usize)
            .map_err(|e| format!("pkernfs.size_mib: {} MiB holds no image: {}", self.size_mib, e.describe()))?;
        let dirs: std::collections::BTreeSet<&str> = self.names().filter_map(|n| n.rsplit_once('/').map(|(d, _)| d)).collect();
        // Root, the fill directory, the named files and their directories.
        let inodes = files + 2 + self.names().count() as u64 + dirs.len() as u64;
        if inodes > u64::from(g.inode_count) {
            return Err(format!(
                "{at}: files = {files} need {inodes} inodes with the named files, but a {} MiB carve-out has {} (pkernfs.size_mib)",
                self.size_mib, g.inode_count
            ));
        }
        let blocks = |bytes: u64| bytes.div_ceil(BLOCK_SIZE);
        let named: u64 = self.files.iter().map(|f| blocks(f.size)).sum::<u64>() + self.mmap.as_ref().map_or(0, |m| blocks(m.size));
        let need = files.saturating_mul(blocks(file_size)).saturating_add(named).saturating_add(blocks(files * DIRENT_SIZE));
        let have = g.total_blocks - g.data_start;
        if need > have {
            return Err(format!(
                "{at}: files = {files} of file_size = {file_size} need {} MiB of blocks, but a {} MiB carve-out has {} MiB for data (pkernfs.size_mib)",
                need.saturating_mul(BLOCK_SIZE) >> 20,
                self.size_mib,
                (have * BLOCK_SIZE) >> 20
            ));
        }
        Ok(())
    }

    /// The corruption steps in order: every `pkernfs_corrupt` is restored
    /// before the next one, refusals and restores follow a corruption, and an
    /// inode corruption names a file this table writes.
    pub(super) fn validate_steps(&self, steps: &[Step]) -> Result<(), String> {
        let (mut corrupted, mut updated) = (false, false);
        for (i, s) in steps.iter().enumerate() {
            match s {
                Step::PkernfsFill { files, file_size, .. } => self.validate_fill(i + 1, *files, *file_size)?,
                Step::LiveUpdate { .. } => updated = true,
                Step::PkernfsCorrupt { what, file } => {
                    if corrupted {
                        return Err("steps: `pkernfs_corrupt` twice without `pkernfs_restore` in between".into());
                    }
                    corrupted = true;
                    match (what, file) {
                        (CorruptWhat::Inode, Some(f)) if !self.files.iter().any(|x| &x.name == f) && self.mmap.as_ref().is_none_or(|m| &m.name != f) => {
                            return Err(format!("steps: pkernfs_corrupt file = {f:?} is not in [[pkernfs.files]] or [pkernfs.mmap]"));
                        }
                        (CorruptWhat::Superblock | CorruptWhat::Allocator, Some(_)) => {
                            return Err("steps: pkernfs_corrupt `file` only goes with what = \"inode\"".into());
                        }
                        _ => {}
                    }
                }
                Step::PkernfsExpectRefused { structure } => {
                    if !corrupted {
                        return Err("steps: `pkernfs_expect_refused` needs a `pkernfs_corrupt` before it".into());
                    }
                    if structure.trim().is_empty() {
                        return Err("steps: pkernfs_expect_refused structure is empty".into());
                    }
                }
                Step::PkernfsRestore if !corrupted => {
                    return Err("steps: `pkernfs_restore` needs a `pkernfs_corrupt` before it".into());
                }
                Step::PkernfsRestore => corrupted = false,
                Step::PkernfsUntouched if !updated => {
                    return Err("steps: `pkernfs_untouched` compares with a live update's jump: put a `live_update` first".into());
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Scenario;

    #[test]
    fn pkernfs_table_parses_and_gives_the_cmdline() {
        let s = Scenario::parse(
            r#"
description = "d"
expect = "intact"
[host]
kernel = "lulab"
memory_mib = 2048
iommu = true
[pkernfs]
size_mib = 64
base_mib = 1024
[[pkernfs.files]]
name = "big"
size = 9437184
seed = 1
[pkernfs.mmap]
name = "ram"
size = 4194304
seed = 2
until_ms = 500
[[steps]]
do = "boot"
[[steps]]
do = "pkernfs_prepare"
[[steps]]
do = "pkernfs_mmap"
[[steps]]
do = "pkernfs_verify"
"#,
            "t.toml",
        )
        .unwrap();
        let pk = s.pkernfs.unwrap();
        assert_eq!(pk.cmdline(), ["memmap=64M!1024M", "pkernfs=64M@1024M"]);
        assert_eq!(pk.path("big"), "/mnt/pkernfs/big");
    }

    #[test]
    fn pkernfs_steps_need_the_table_and_the_range_must_be_ram() {
        let base = "description = \"d\"\nexpect = \"intact\"\n[[steps]]\ndo = \"boot\"\n[[steps]]\ndo = \"pkernfs_verify\"\n";
        let e = Scenario::parse(base, "t.toml").unwrap_err().to_string();
        assert!(e.contains("[pkernfs]"), "{e}");
        let e = Scenario::parse(&format!("{base}[pkernfs]\nbase_mib = 1024\n"), "t.toml").unwrap_err().to_string();
        assert!(e.contains("host.memory_mib"), "{e}");
        // High RAM: with 4 GiB, q35 has [0, 2 GiB) and [4 GiB, 6 GiB); the hole between is no RAM.
        let at = |mem: u64, at_mib: u64| Scenario::parse(&format!("{base}[host]\nkernel = \"lulab\"\nmemory_mib = {mem}\n[pkernfs]\nsize_mib = 64\nbase_mib = {at_mib}\n"), "t.toml").map_err(|e| e.to_string());
        assert_eq!(at(4096, 4352).unwrap().pkernfs.unwrap().cmdline(), ["memmap=64M!4352M", "pkernfs=64M@4352M"]);
        assert!(at(4096, 1024).is_ok() && at(2560, 2400).is_ok(), "low RAM: up to 2.75 GiB below the hole when RAM is smaller");
        let e = at(4096, 3072).unwrap_err();
        assert!(e.contains("[3072 MiB, 3136 MiB) must lie in the host's low RAM [16 MiB, 2048 MiB) or its high RAM [4096 MiB, 6144 MiB)"), "{e}");
        let e = at(4096, 6112).unwrap_err();
        assert!(e.contains("high RAM [4096 MiB, 6144 MiB)"), "crosses the end of high RAM: {e}");
        let e = at(2048, 4352).unwrap_err();
        assert!(e.contains("low RAM [16 MiB, 2048 MiB) (host.memory_mib = 2048)"), "no high RAM to name: {e}");
    }

    const PK: &str = "description = \"d\"\nexpect = \"intact\"\n[host]\nkernel = \"lulab\"\nmemory_mib = 2048\niommu = true\n[pkernfs]\n[[pkernfs.files]]\nname = \"big\"\nsize = 4096\nseed = 1\n[[steps]]\ndo = \"boot\"\n";

    fn steps(extra: &str) -> Result<Scenario, String> {
        Scenario::parse(&format!("{PK}{extra}"), "t.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn corruption_steps_parse_in_order() {
        use super::super::{KernelChoice, Step};
        use super::CorruptWhat;
        let s = steps(
            "[[steps]]\ndo = \"pkernfs_corrupt\"\nwhat = \"inode\"\nfile = \"big\"\n[[steps]]\ndo = \"live_update\"\n\
             [[steps]]\ndo = \"pkernfs_expect_refused\"\nstructure = \"inode table\"\n[[steps]]\ndo = \"pkernfs_restore\"\n\
             [[steps]]\ndo = \"live_update\"\nkernel = \"stock\"\n[[steps]]\ndo = \"pkernfs_untouched\"\n",
        )
        .unwrap();
        assert_eq!(s.steps[1], Step::PkernfsCorrupt { what: CorruptWhat::Inode, file: Some("big".into()) });
        assert_eq!(s.steps[2], Step::LiveUpdate { kernel: None, cmdline: vec![], resume: true });
        assert_eq!(s.steps[5], Step::LiveUpdate { kernel: Some(KernelChoice::Stock), cmdline: vec![], resume: true });
        assert_eq!(s.live_updates(), 2);
        assert_eq!(s.kernels(), [KernelChoice::Lulab, KernelChoice::Stock]);
    }

    #[test]
    fn fill_steps_parse_and_must_fit_the_carve_out() {
        use super::super::Step;
        let fill = |files: u64, size: u64| format!("[[steps]]\ndo = \"pkernfs_fill\"\nfiles = {files}\nfile_size = {size}\nseed = 3\n");
        let s = steps(&fill(500, 4096)).unwrap();
        assert_eq!(s.steps[1], Step::PkernfsFill { files: 500, file_size: 4096, seed: 3 });
        assert_eq!(s.pkernfs.unwrap().fill_dir(), "/mnt/pkernfs/fill");
        // 64 MiB: 512 inodes (one per 128 KiB), about 63 MiB of data blocks.
        let e = steps(&fill(1000, 4096)).unwrap_err();
        assert!(e.contains("step 2 (pkernfs_fill)") && e.contains("512") && e.contains("pkernfs.size_mib"), "{e}");
        let e = steps(&fill(10, 8 << 20)).unwrap_err();
        assert!(e.contains("file_size = 8388608") && e.contains("64 MiB carve-out"), "{e}");
        let e = steps(&fill(0, 4096)).unwrap_err();
        assert!(e.contains("files = 0"), "{e}");
        let e = steps("[[steps]]\ndo = \"pkernfs_fill\"\nfiles = 5\nseed = 1\n").unwrap_err();
        assert!(e.contains("missing field `file_size`") && e.contains("t.toml:"), "{e}");
        let e = Scenario::parse(&PK.replace("name = \"big\"", "name = \"fill/big\""), "t.toml").unwrap_err().to_string();
        assert!(e.contains("\"fill/big\"") && e.contains("pkernfs_fill"), "{e}");
    }

    #[test]
    fn corruption_steps_out_of_order_are_refused() {
        let c = "[[steps]]\ndo = \"pkernfs_corrupt\"\nwhat = \"superblock\"\n";
        let e = steps(&format!("{c}{c}")).unwrap_err();
        assert!(e.contains("without `pkernfs_restore`"), "{e}");
        let e = steps("[[steps]]\ndo = \"pkernfs_restore\"\n").unwrap_err();
        assert!(e.contains("needs a `pkernfs_corrupt`"), "{e}");
        let e = steps("[[steps]]\ndo = \"pkernfs_expect_refused\"\nstructure = \"superblock\"\n").unwrap_err();
        assert!(e.contains("needs a `pkernfs_corrupt`"), "{e}");
        let e = steps("[[steps]]\ndo = \"pkernfs_corrupt\"\nwhat = \"inode\"\nfile = \"nope\"\n").unwrap_err();
        assert!(e.contains("\"nope\""), "{e}");
        let e = steps("[[steps]]\ndo = \"pkernfs_corrupt\"\nwhat = \"superblok\"\n").unwrap_err();
        assert!(e.contains("superblok"), "{e}");
        let e = steps("[[steps]]\ndo = \"pkernfs_untouched\"\n").unwrap_err();
        assert!(e.contains("live_update"), "{e}");
        let e = steps("[[steps]]\ndo = \"live_update\"\nkernel = \"debian\"\n").unwrap_err();
        assert!(e.contains("debian"), "{e}");
    }
}
