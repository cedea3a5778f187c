//! `[pkernfs]`: the carve-out given to pkernfs on the host's command line and
//! the files a scenario writes into it.

use serde::{Deserialize, Serialize};

use super::HostSpec;

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
        // q35 puts at most 2 GiB of RAM below 4 GiB (offset in the RAM file = GPA).
        let end = self.base_mib + self.size_mib;
        if self.base_mib < 16 || end > host.memory_mib.min(2048) {
            return Err(format!(
                "pkernfs: carve-out [{} MiB, {end} MiB) must lie in the host's low RAM [16 MiB, {} MiB) (host.memory_mib)",
                self.base_mib,
                host.memory_mib.min(2048)
            ));
        }
        let total: u64 = self.files.iter().map(|f| f.size).sum::<u64>() + self.mmap.as_ref().map_or(0, |m| m.size);
        if total >= self.size() {
            return Err(format!("pkernfs: files need {total} bytes, more than the {} MiB carve-out", self.size_mib));
        }
        if self.files.iter().map(|f| &f.name).chain(self.mmap.iter().map(|m| &m.name)).any(|n| n.is_empty()) {
            return Err("pkernfs.files: empty name".into());
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
    }
}
