//! Putting the stages together: kernel → initramfs → machine parameters, and
//! run directories under `reports/`.

use std::path::PathBuf;

use anyhow::Result;

use crate::image::{ImageSpec, Initramfs};
use crate::kernel::{stock, KernelArtifacts};
use crate::qemu::{MachineParams, NvmeParams};
use crate::scenario::KernelChoice;

/// The command-line word that makes the virtio console a kernel console.
const HVC_CONSOLE: &str = "console=hvc0";

/// A kernel and the initramfs built for it.
#[derive(Debug, Clone)]
pub struct BootSet {
    /// The kernel.
    pub kernel: KernelArtifacts,
    /// Its initramfs.
    pub initramfs: Initramfs,
}

impl BootSet {
    /// Debian's stock kernel with our initramfs (fetched/built once, then cached).
    pub fn stock() -> Result<Self> {
        let kernel = stock::fetch(&stock::StockSpec::default())?;
        Self::for_kernel(kernel)
    }

    /// Our kernel (linux-source-7.3 + `kernel/`, built once and cached) with
    /// our initramfs. Its console runs at KERN_INFO so the KUnit KTAP and the
    /// pkernfs banner reach the console log.
    pub fn lulab() -> Result<Self> {
        let kernel = crate::kernel::build::build(&crate::kernel::build::KernelSpec::lulab())?;
        Self::for_kernel(kernel)
    }

    /// The kernel `choice` names.
    pub fn for_choice(choice: KernelChoice) -> Result<Self> {
        match choice {
            KernelChoice::Stock => Self::stock(),
            KernelChoice::Lulab => Self::lulab(),
        }
    }

    /// Our initramfs for any kernel.
    pub fn for_kernel(kernel: KernelArtifacts) -> Result<Self> {
        let initramfs = ImageSpec::host(&kernel)?.build()?;
        Ok(Self { kernel, initramfs })
    }

    fn is_lulab(&self) -> bool {
        self.kernel.name == "lulab"
    }

    /// `base` as this kernel boots with it. Ours also prints its log on the
    /// virtio console (`console=hvc0`, ahead of `console=ttyS0` so the UART
    /// stays /dev/console), which never loses a character; the stock kernel
    /// does not: its virtio_console drops the boot log it replays, and keeps
    /// spinning on a reset device at kexec.
    pub fn cmdline(&self, base: &[String]) -> Vec<String> {
        let mut words: Vec<String> = base.iter().filter(|w| *w != HVC_CONSOLE).cloned().collect();
        if self.is_lulab() {
            words.insert(0, HVC_CONSOLE.into());
        }
        words
    }

    /// The default host: e1000e and an NVMe controller whose backing file
    /// (in `run_dir`) the harness creates.
    pub fn machine(&self, run_dir: &std::path::Path) -> Result<MachineParams> {
        std::fs::create_dir_all(run_dir)?;
        let backing = run_dir.join("nvme.img");
        let f = std::fs::File::create(&backing)?;
        f.set_len(64 << 20)?;
        let mut m = MachineParams::new(&self.kernel.bzimage, &self.initramfs.path);
        if self.is_lulab() {
            for w in m.cmdline.iter_mut().filter(|w| w.starts_with("loglevel=")) {
                *w = "loglevel=7".into();
            }
        }
        m.cmdline = self.cmdline(&m.cmdline);
        m.nvme = Some(NvmeParams { backing, throttle_iops: None });
        Ok(m)
    }
}

/// A fresh run directory `reports/<UTC timestamp>-<name>` (or below `$LULAB_RUNS`).
pub fn new_run_dir(name: &str) -> Result<PathBuf> {
    let base = std::env::var_os("LULAB_RUNS")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("reports"));
    let stamp = timestamp();
    for n in 0.. {
        let suffix = if n == 0 { String::new() } else { format!("-{n}") };
        let dir = base.join(format!("{stamp}-{name}{suffix}"));
        if std::fs::create_dir_all(&base).is_ok() && std::fs::create_dir(&dir).is_ok() {
            return Ok(dir);
        }
    }
    unreachable!("the loop only ends by returning")
}

/// UTC `YYYYmmdd-HHMMSS`.
fn timestamp() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamp_shape() {
        let t = super::timestamp();
        assert_eq!(t.len(), 15, "{t}");
        assert!(t.starts_with("20"), "{t}");
    }
}
