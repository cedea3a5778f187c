//! The oracle trait: what an oracle needs (trace events) and how it judges
//! (observations collected once, after the steps and before the host goes
//! away, plus the run's journal → its report section and findings). No
//! oracle drives or shuts anything down.
//!
//! Adding an oracle: one file with its `Oracle` implementation (its section
//! type, how it judges, its report.md lines) and one line in [`registered`].
//! Its section appears in report.json under [`Oracle::name`].

use std::path::Path;

use anyhow::Result;

use crate::console::KernelLog;
use crate::journal::Entry;
use crate::oracle::trace::TraceSummary;
use crate::report::Finding;

/// What the scenario asked of the host and what became of it: the facts
/// an oracle needs beside the logs to know what to expect.
#[derive(Debug, Clone, Default)]
pub struct RunFacts {
    /// A DMA engine was started (`start_dma` ran).
    pub dma_started: bool,
    /// The pkernfs carve-out (`[pkernfs]`): (base, length) in bytes.
    pub carve_out: Option<(u64, u64)>,
    /// Some engine was kept persistent in pkernfs across updates.
    pub persistent: bool,
    /// The IOMMU driver's files in the pkernfs image when observing began,
    /// read from the RAM file (`None`: no carve-out, or no readable image).
    pub iommu_files: Option<Vec<crate::pkernfs::host::IommuFile>>,
    /// Live updates carried out.
    pub live_updates: u32,
    /// Size of QEMU's trace log when `start_dma` finished.
    pub dma_trace_offset: u64,
    /// When the run started ([`crate::traffic::clock::now_ns`]): time zero of report.json.
    pub start_ns: u64,
    /// When the steps ended and observing began (same clock).
    pub end_ns: u64,
    /// CLOCK_REALTIME − the harness clock, ns, read back to back at the
    /// run's start and when observing began (QEMU's trace lines carry
    /// realtime stamps).
    pub clock_offset_ns: (i64, i64),
    /// Byte ranges of QEMU's trace log in which the agent had stopped every
    /// engine (the copy-based baseline quiesces its devices before the
    /// kexec and starts them again after it): translation switching off
    /// there is no device's concern.
    pub quiesced: Vec<(u64, u64)>,
}

/// The agent pages the memory oracle compares, hashed by the runner.
#[derive(Debug, Clone, Default)]
pub struct PageObservations {
    /// At `start_dma` (and when an engine was started again).
    pub before: crate::oracle::memory::PageHashes,
    /// After the steps, of the pages still watched.
    pub after: crate::oracle::memory::PageHashes,
    /// Pages a device may write (its DMA pages).
    pub allowed: Vec<lulab_proto::PhysRange>,
    /// What was judged of engines a kexec ended, at the jump.
    pub retired: crate::oracle::memory::MemoryDiff,
}

/// The NVMe engine's blocks as the runner read them from the RAM file.
#[derive(Debug, Clone, Default)]
pub struct NvmeObservations {
    /// The running engine's blocks (default: none left to read).
    pub blocks: crate::oracle::nvme::NvmeReport,
    /// `[nvme].lba_count`.
    pub lba_count: u64,
    /// Blocks judged in place when a kexec ended an earlier engine.
    pub done_before: u64,
    /// Each time a non-persistent engine was taken back after an update.
    pub restarts: Vec<crate::report::NvmeRestart>,
}

/// The RX stream as the runner saw it once the injector and the scanner
/// stopped.
#[derive(Debug, Clone, Default)]
pub struct RxObservations {
    /// Everything the injector did.
    pub sent: crate::traffic::inject::SentLog,
    /// Everything the RX scans found in the RAM file.
    pub seen: crate::oracle::rx_scan::Sightings,
    /// The agent's counters when the run ended (a hint: drop evidence only).
    pub status: Option<lulab_proto::DmaStatus>,
    /// Frames not found in the buffers, searched for in the whole RAM file.
    pub stray: Option<crate::oracle::stray::StraySection>,
    /// Frames of the run QEMU's netdev took from the socket (its capture;
    /// `None`: no capture file).
    pub taken_by_qemu: Option<std::collections::BTreeSet<u64>>,
    /// The ring and buffers the scanner read (`None` in unit tests).
    pub ring: Option<crate::oracle::rx_scan::RxRing>,
    /// The injector's frame interval, µs.
    pub frame_interval_us: u64,
}

/// What the oracles judge from.
#[derive(Debug)]
pub struct Observations<'a> {
    /// What the run asked for and did.
    pub facts: &'a RunFacts,
    /// The agent's pages before and after (None: no engine started).
    pub pages: Option<&'a PageObservations>,
    /// The NVMe blocks (None: no `[nvme]` engine).
    pub nvme: Option<&'a NvmeObservations>,
    /// The RX stream (None: no frames were injected).
    pub rx: Option<&'a RxObservations>,
    /// What the harness saw of each live update.
    pub updates: &'a [crate::oracle::timeline::UpdateEvents],
    /// With `check_isolation`: the engines that owned the devices and the
    /// update windows, as offsets into QEMU's trace log.
    pub isolation: Option<&'a crate::oracle::isolation::Watch>,
    /// The host's run directory (QEMU's logs).
    pub host_dir: &'a Path,
    /// QEMU's whole trace log.
    pub trace: &'a TraceSummary,
    /// QEMU's trace log from the end of `start_dma` on.
    pub since_dma: &'a TraceSummary,
    /// Both copies of the kernels' log.
    pub log: &'a KernelLog,
    /// The run's journal, by time.
    pub journal: &'a [Entry],
    /// With `watch_persistent_memory`: the CPU-write watcher's records and
    /// what they are judged against.
    pub watch: Option<&'a crate::watch::WatchObservations>,
}

/// One oracle's verdict.
#[derive(Debug, Default)]
pub struct Judged {
    /// Its report.json section.
    pub section: serde_json::Value,
    /// What it found.
    pub findings: Vec<Finding>,
    /// Files for the run directory, next to report.json (e.g. `ledger.json`):
    /// the harness writes them; an oracle only judges.
    pub files: Vec<(&'static str, serde_json::Value)>,
}

/// An oracle.
pub trait Oracle: Send + Sync {
    /// Its name: the key of its section in report.json.
    fn name(&self) -> &'static str;
    /// Whether its section is a typed field of report.json's top level
    /// (the older oracles: `iommu`, …) rather than one of the `sections`
    /// added since; either way it sits under [`Oracle::name`].
    fn report_field(&self) -> bool {
        false
    }
    /// QEMU trace events it reads (added to every run).
    fn trace_events(&self) -> &'static [&'static str] {
        &[]
    }
    /// Judges the observations.
    fn judge(&self, obs: &Observations) -> Result<Judged>;
    /// Its lines in report.md, from its section (None: nothing to show).
    fn markdown(&self, _section: &serde_json::Value) -> Option<String> {
        None
    }
}

/// Every oracle that judges through the trait, in report order.
pub fn registered() -> Vec<Box<dyn Oracle>> {
    vec![
        Box::new(super::ledger::LedgerOracle),
        Box::new(super::nvme::NvmeOracle),
        Box::new(super::memory::MemoryOracle),
        Box::new(super::iommu::IommuOracle),
        Box::new(super::kunit::KunitOracle),
        Box::new(super::kernel_log::KernelLogOracle),
        Box::new(super::timeline::TimelineOracle),
        Box::new(super::isolation::IsolationOracle),
        Box::new(super::cpu_writes::CpuWritesOracle),
        Box::new(super::dma_timing::DmaTimingOracle),
        Box::new(super::interrupts::InterruptOracle),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_never_shadow_a_fixed_report_field() {
        // Every optional field filled, so that each is a key.
        let mut sample = crate::report::tests::sample();
        sample.isolation = Some(Default::default());
        sample.kunit = Some(Default::default());
        // Only the typed fields: the sample's oracle sections are what is checked against them.
        sample.sections.clear();
        let fixed = serde_json::to_value(sample).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for o in registered() {
            assert!(seen.insert(o.name()), "two oracles named {}", o.name());
            let has = fixed.as_object().unwrap().contains_key(o.name());
            match o.report_field() {
                true => assert!(has, "oracle {} says it fills a report.json field, and there is none", o.name()),
                false => assert!(!has, "oracle {} shadows a report.json field", o.name()),
            }
        }
    }

    #[test]
    fn the_kernel_log_oracle_judges_from_observations_into_its_section() {
        let dir = tempfile::tempdir().unwrap();
        let paths = crate::qemu::params::RunPaths::new(dir.path());
        std::fs::write(paths.kernel_log(), "[ 1.0] ------------[ cut here ]------------\n[ 1.1] WARNING: CPU: 0 PID: 1 at x.c:1 f+0x1/0x2\n").unwrap();
        let log = KernelLog::of_run(dir.path());
        let t = TraceSummary::default();
        let facts = RunFacts::default();
        let obs = Observations { facts: &facts, pages: None, nvme: None, rx: None, updates: &[], isolation: None, host_dir: dir.path(), trace: &t, since_dma: &t, log: &log, journal: &[], watch: None };
        let o = registered().into_iter().find(|o| o.name() == "kernel_splats").unwrap();
        let j = o.judge(&obs).unwrap();
        assert_eq!(j.findings.len(), 1);
        assert_eq!(j.section[0]["kind"], "warning");
        assert!(o.markdown(&j.section).unwrap().contains("WARNING: CPU: 0 PID: 1"));
    }
}
