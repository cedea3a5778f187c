//! `report.json` (a stable interface: fields are added, never renamed) and
//! `report.md`, written into a run's output directory.

pub mod browser;
pub mod compare;
mod finding;
mod guest_ram;
pub mod html;
mod luo;
mod markdown;
mod pkernfs;
pub mod plots;
mod timeline;

pub use crate::oracle::timeline::UpdateTimeline;
pub use finding::{Finding, Reason};
pub use guest_ram::{GuestRamSection, GuestRamUpdate};
pub use luo::{LuoSection, LuoUpdate};
pub use markdown::mount_table;
pub use pkernfs::{CarveoutHash, PkernfsMount, PkernfsRefusal, PkernfsSection, UntouchedCheck};

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::scenario::Verdict;

/// Version of the report.json layout. Bumped only when a field is added
/// (2: `pkernfs`; 3: `updates`; 4: `luo`; 5: `findings`, outcome `error`), and not for every one: fields
/// inside a section (`pkernfs.mounts`) are added without a bump, so existing
/// snapshots and readers keep working.
pub const SCHEMA: u32 = 6;

/// One scenario run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: u32,
    /// Scenario name (file stem).
    pub scenario: String,
    /// The scenario's description.
    pub description: String,
    /// What the scenario expected.
    pub expect: Verdict,
    /// What the oracles concluded.
    pub outcome: Verdict,
    /// `outcome == expect`, and for `broken` with `expect_reasons` the
    /// findings' reasons are exactly those.
    pub as_expected: bool,
    /// Why the outcome is broken or error (empty when intact), one line per
    /// finding: `findings[i].detail`.
    pub reasons: Vec<String>,
    /// The same findings with their reason from the closed list (schema 5).
    #[serde(default)]
    pub findings: Vec<Finding>,
    /// The scenario's `expect_reasons` (schema 5; empty when it names none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expect_reasons: Vec<Reason>,
    /// Versions of everything involved.
    pub versions: Versions,
    /// e1000e RX ledger.
    pub dma: DmaSection,
    /// NVMe ledger.
    pub nvme: NvmeSection,
    /// VT-d.
    pub iommu: IommuSection,
    /// Memory oracle.
    pub memory: MemorySection,
    /// Live updates performed.
    pub live_updates: u32,
    /// Per live update, in order: kexec → new kernel → agent back, and the
    /// DMA around it (schema 3; empty without live updates). Times are ms
    /// since the run started; see [`UpdateTimeline`] for each field.
    #[serde(default)]
    pub updates: Vec<UpdateTimeline>,
    /// Isolation oracle (scenarios with `check_isolation`): where each
    /// device's DMA was translated to, from QEMU's IOTLB trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<crate::oracle::isolation::IsolationSection>,
    /// In-kernel KUnit results parsed from the console's KTAP (null when the
    /// kernel printed none, e.g. the stock kernel).
    pub kunit: Option<crate::ktap::Counts>,
    /// pkernfs evidence (schema 2; null when the scenario has no `[pkernfs]`).
    pub pkernfs: Option<PkernfsSection>,
    /// Upstream LUO evidence (schema 4; null unless the RX engine's memory
    /// is a LUO-preserved memfd).
    pub luo: Option<LuoSection>,
    /// The VM's guest RAM through the updates (absent without `[guest_ram]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_ram: Option<GuestRamSection>,
    /// The sections of the oracles behind the `Oracle` trait, each under
    /// its name (schema 6: `kernel_splats`, the kernel-log oracle: every
    /// warning, BUG, oops, sanitizer or lockdep report, RCU stall and hung
    /// task the host's kernels printed, with its console line and first lines).
    #[serde(flatten)]
    pub sections: BTreeMap<String, serde_json::Value>,
    /// Faults the scenario injected (schema 6): each step's kind, the
    /// moment aimed at and when it actually hit and ended.
    #[serde(default)]
    pub faults: Vec<crate::fault::FaultHit>,
    /// Times QEMU hung up the agent socket mid-request and the harness
    /// reconnected and sent the request again: `<request> at <ms> ms`.
    /// A hint about the host, never a verdict (the request was answered).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agent_reconnects: Vec<String>,
    /// Milestones in milliseconds (names are stable; the set grows).
    pub timings_ms: BTreeMap<String, u64>,
    /// Where the run's host files are.
    pub run_dir: String,
}

/// `versions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versions {
    /// QEMU, from the QMP greeting.
    pub qemu: String,
    /// Kernel release and package version.
    pub kernel: String,
    /// This harness.
    pub lulab: String,
}

/// `dma`: every injected frame accounted for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmaSection {
    /// Frames written to the NIC's backend.
    pub sent: u64,
    /// Found intact in the RX buffers (read from the RAM file).
    pub delivered: u64,
    /// Found damaged.
    pub corrupted: u64,
    /// Dropped by the device, with evidence (counters / QEMU trace).
    pub dropped_by_device: u64,
    /// Taken by QEMU from its socket and freed by its net layer while the
    /// NIC's link was down or the VM stopped (QEMU's capture as evidence).
    #[serde(default)]
    pub dropped_by_qemu: u64,
    /// Sent and never seen: the failure this lab exists to catch.
    pub lost: u64,
    /// Generated but never accepted by QEMU (back-pressure; not sent).
    pub queued_on_host: u64,
    /// Times QEMU refused a write (EAGAIN).
    pub backpressure_events: u64,
    /// A few lost sequence numbers, for the report reader.
    pub first_lost_seqs: Vec<u64>,
    /// Times the guest cleared the NIC's PCI bus-master bit (QEMU trace).
    pub bus_master_cleared: u64,
    /// Injection → seen in the RAM file, microseconds (scan-granular).
    pub latency_us: LatencySection,
    /// When the injector wrote its last frame into QEMU's socket, ms since
    /// the run started (the `updates[]` clock): a live update after it has
    /// no stream to keep landing while no agent runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sent_ms: Option<u64>,
    /// When frames were lost: where else in guest RAM this run's frames
    /// were found (the whole RAM file searched, the agent's buffers left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stray: Option<crate::oracle::stray::StraySection>,
}

/// Latency summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencySection {
    /// Samples.
    pub count: u64,
    /// Minimum.
    pub min: u64,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Maximum.
    pub max: u64,
}

/// `nvme`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvmeSection {
    /// Blocks found with the right pattern.
    pub blocks_read: u64,
    /// Blocks with a wrong pattern.
    pub corrupted: u64,
    /// Blocks expected and not found.
    pub lost: u64,
    /// A non-persistent engine ended by a live update and started again
    /// after it (absent when none was).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restarts: Vec<NvmeRestart>,
}

/// `nvme.restarts[]`: a non-persistent NVMe engine loses its translation
/// and memory at the kexec; the harness judged its blocks from the RAM file
/// just before, and the next agent read on from the first block not in place.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvmeRestart {
    /// The live update (1-based).
    pub live_update: u32,
    /// Blocks the ended engine had in place just before the kexec.
    pub verified_at_kexec: u64,
    /// First LBA the next engine read: every block before it was in place.
    pub resumed_at_lba: u64,
}

/// `iommu`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IommuSection {
    /// VT-d faults (QEMU trace + guest DMAR log).
    pub faults: u64,
    /// Faults QEMU traced.
    pub qemu_faults: u64,
    /// Faults the guest kernel logged.
    pub guest_faults: u64,
    /// Times translation was switched off (`vtd_dmar_enable 0`).
    pub translation_disabled: u64,
    /// Of those, while the agent had stopped every engine (the copy-based
    /// baseline's kexec): no device was in use, so none is a finding.
    #[serde(default)]
    pub translation_disabled_while_quiesced: u64,
    /// Example fault lines.
    pub examples: Vec<String>,
    /// Root table addresses the IOMMU latched (SRTP, `vtd_reg_dmar_root`)
    /// after DMA started, in order, hex.
    #[serde(default)]
    pub root_tables: Vec<String>,
    /// Of those, outside the pkernfs carve-out: with a persistent device,
    /// each is a kernel that put its own tables under the device.
    #[serde(default)]
    pub root_tables_outside_pkernfs: u64,
    /// The pkernfs file each of `root_tables` is, in the same order, as
    /// read from the image when observing began (`/iommu/dmar-<unit>/
    /// root-pgtables`; empty for one that is not the first byte of such a
    /// file, which counts as outside). Empty when the image was not read.
    #[serde(default)]
    pub root_table_files: Vec<String>,
}

/// `memory`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemorySection {
    /// Pages hashed before and after.
    pub pages_checked: u64,
    /// Pages that changed although the device was not allowed to write them.
    pub unexpected_changes: u64,
    /// Device-writable pages that changed (expected under DMA).
    pub dma_pages_changed: u64,
    /// A few unexpected page addresses (hex GPA).
    pub first_unexpected: Vec<String>,
    /// With `watch_persistent_memory`: guest CPU stores into the carve-out
    /// that the phase of the run did not allow (see `cpu_writes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_writes_outside_allowed: Option<u64>,
}

impl Report {
    /// Reads a `report.json` (or a run directory holding one); the error
    /// names the file and, for bad JSON, the line and column.
    pub fn read(path: &Path) -> Result<Self> {
        let file = if path.is_dir() { path.join("report.json") } else { path.to_path_buf() };
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{}: not a lulab report.json", file.display()))
    }

    /// Writes `report.json`, `report.md` and `report.html` into `dir`
    /// (the HTML plots the samples of `dir`'s `dma-samples.json`, if any).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self)? + "\n";
        std::fs::write(dir.join("report.json"), json).with_context(|| format!("writing {}/report.json", dir.display()))?;
        std::fs::write(dir.join("report.md"), self.markdown())
            .with_context(|| format!("writing {}/report.md", dir.display()))?;
        let samples = crate::oracle::dma_timing::Samples::read(dir)?;
        std::fs::write(dir.join("report.html"), self.html(samples.as_ref())?)
            .with_context(|| format!("writing {}/report.html", dir.display()))?;
        Ok(())
    }

    /// The self-contained HTML page, with plots of `samples`.
    pub fn html(&self, samples: Option<&crate::oracle::dma_timing::Samples>) -> Result<String> {
        html::render(self, samples)
    }

    /// Regenerates report.json, report.md and report.html of run directory
    /// `dir` from its raw data: the DMA timing again from QEMU's trace
    /// (`host/trace.log`) and `dma-timing-inputs.json` (which also rewrites
    /// `dma-samples.json`), each update's downtime breakdown from it and
    /// `journal.jsonl`, the other sections as the run judged them
    /// (their inputs, the RAM file and the live host, are gone).
    pub fn regenerate(dir: &Path) -> Result<Self> {
        use crate::oracle::dma_timing::{Inputs, INPUTS_FILE, SAMPLES_FILE};
        let mut report = Self::read(dir)?;
        if dir.join(INPUTS_FILE).exists() {
            let (t, samples) = Inputs::read(dir)?.judge(&dir.join("host").join("trace.log"))?;
            t.annotate(&mut report.updates);
            let journal = dir.join(crate::journal::FILE);
            if journal.exists() {
                crate::oracle::downtime::annotate(&mut report.updates, &crate::journal::read(&journal)?, Some(&t));
            }
            report.sections.insert("dma_timing".into(), serde_json::to_value(&t)?);
            write_json(&dir.join(SAMPLES_FILE), &samples)?;
        }
        report.write(dir)?;
        Ok(report)
    }

    /// The Markdown summary.
    pub fn markdown(&self) -> String {
        markdown::render(self)
    }
}

/// Writes `value` as JSON to `path`: pretty for a reader, compact past
/// 1 MiB (per-frame data of a long run).
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    if text.len() > 1 << 20 {
        text = serde_json::to_string(value)?;
    }
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
pub(crate) mod tests;
