//! IOMMU oracle: VT-d faults as QEMU's emulated IOMMU saw them (trace
//! events) and as the host kernel reported them (DMAR lines on the console),
//! plus translation on/off transitions as evidence for negative controls.
//!
//! QEMU events (hw/i386/trace-events): `vtd_dmar_fault` (a recorded fault),
//! `vtd_fault_disabled` (a fault on a context with fault processing
//! disabled: the DMA still failed), `vtd_err*` (translation errors of older
//! QEMUs), `vtd_dmar_enable` (GCMD.TE written: translation on/off),
//! `vtd_reg_dmar_root` (the root table address latched by SRTP: where the
//! IOMMU walks from, and whether it stayed in pkernfs across a live update).

use serde::Serialize;

use super::registry::{Judged, Observations, Oracle};
use super::trace::TraceSummary;
use crate::report::{Finding, IommuSection, Reason};

/// Lines of each kind kept as examples.
pub const FIRST_LINES: usize = 5;

/// Trace events the harness must enable for this oracle. Note that the
/// pattern `vtd_fault*` does not match `vtd_dmar_fault`.
pub const IOMMU_TRACE_EVENTS: &[&str] = &["vtd_dmar_fault", "vtd_fault*", "vtd_err*", "vtd_dmar_enable", "vtd_reg_dmar_root"];

/// What the IOMMU oracle found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IommuReport {
    /// Faults QEMU's VT-d raised (`vtd_dmar_fault` + `vtd_fault_disabled` + `vtd_err*`).
    pub qemu_faults: u64,
    /// First fault lines of the trace log.
    pub qemu_fault_lines: Vec<String>,
    /// DMAR fault records the host kernel printed.
    pub guest_faults: u64,
    /// First of those console lines.
    pub guest_fault_lines: Vec<String>,
    /// "dmar_fault: N callbacks suppressed": the kernel stopped printing some.
    pub guest_suppressed: u64,
    /// `vtd_dmar_enable` values in order.
    pub dmar_enable: Vec<bool>,
    /// Times translation was switched off after having been on.
    pub translation_disabled: u64,
}

/// Root table addresses latched (SRTP) that lie outside `carve_out`
/// (`(base, len)` in bytes), in order: after a persistent device started
/// DMA every root table must be a unit's `root-pgtables` in pkernfs, adopted in
/// place by each next kernel; one outside means a kernel put its own tables
/// under the device.
pub fn roots_outside(roots: &[u64], carve_out: (u64, u64)) -> Vec<u64> {
    let (base, len) = carve_out;
    roots.iter().copied().filter(|&r| !(r >= base && r - base < len)).collect()
}

/// For each root table address, the path of the `iommu-root` file of
/// `files` whose first byte it is ("" for none): the tables the hardware
/// walks must be a root-pgtables file of the image, not merely lie in the
/// carve-out.
pub fn root_files(roots: &[u64], files: &[crate::pkernfs::host::IommuFile]) -> Vec<String> {
    roots
        .iter()
        .map(|&r| files.iter().find(|f| f.kind == "iommu-root" && f.gpa == r).map(|f| f.path.clone()).unwrap_or_default())
        .collect()
}

impl IommuReport {
    /// The fault count for the report: QEMU's count is exact; the kernel's
    /// is rate-limited but is all there is when tracing was off.
    pub fn faults(&self) -> u64 {
        self.qemu_faults.max(self.guest_faults)
    }

    /// Builds the report from a trace summary and the console log text.
    pub fn from_logs(trace: &TraceSummary, console: &str) -> Self {
        let is_fault = |n: &str| n == "vtd_dmar_fault" || n == "vtd_fault_disabled" || n.starts_with("vtd_err");
        let qemu_faults = trace.counts.iter().filter(|(k, _)| is_fault(k)).map(|(_, v)| v).sum();
        let guest = scan_console(console);
        let mut on = false;
        let mut translation_disabled = 0;
        for &e in &trace.dmar_enable {
            if on && !e {
                translation_disabled += 1;
            }
            on = e;
        }
        Self {
            qemu_faults,
            qemu_fault_lines: trace.examples_where(is_fault, FIRST_LINES),
            guest_faults: guest.faults,
            guest_fault_lines: guest.lines,
            guest_suppressed: guest.suppressed,
            dmar_enable: trace.dmar_enable.clone(),
            translation_disabled,
        }
    }
}

/// DMAR fault records in a console log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsoleFaults {
    /// Fault records.
    pub faults: u64,
    /// First [`FIRST_LINES`] of them.
    pub lines: Vec<String>,
    /// Sum of "callbacks suppressed" counts of the DMAR fault handler.
    pub suppressed: u64,
}

/// Finds the kernel's per-fault DMAR lines, e.g.
/// `DMAR: [DMA Read NO_PASID] Request device [00:02.0] fault addr 0x100000 [fault reason 0x06] PTE Read access is not set`
/// or `DMAR: [INTR-REMAP] Request device [00:02.0] fault index 0x4 …`.
pub fn scan_console(text: &str) -> ConsoleFaults {
    let mut out = ConsoleFaults::default();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.contains("DMAR:") && line.contains("Request device [") && line.contains("fault") {
            out.faults += 1;
            if out.lines.len() < FIRST_LINES {
                out.lines.push(line.trim().to_string());
            }
        } else if let Some(n) = suppressed_count(line) {
            out.suppressed += n;
        }
    }
    out
}

/// `dmar_fault: 12 callbacks suppressed` → 12.
fn suppressed_count(line: &str) -> Option<u64> {
    let (before, _) = line.split_once(" callbacks suppressed")?;
    let (func, n) = before.rsplit_once(": ")?;
    if !func.contains("dmar") {
        return None;
    }
    n.trim().parse().ok()
}


/// The IOMMU oracle behind the [`Oracle`] trait: report.json `iommu`.
#[derive(Debug)]
pub struct IommuOracle;

impl Oracle for IommuOracle {
    fn name(&self) -> &'static str {
        "iommu"
    }

    fn report_field(&self) -> bool {
        true
    }

    fn trace_events(&self) -> &'static [&'static str] {
        IOMMU_TRACE_EVENTS
    }

    fn judge(&self, obs: &Observations) -> anyhow::Result<Judged> {
        let (section, findings) = judge(obs);
        Ok(Judged { section: serde_json::to_value(section)?, findings, files: Vec::new() })
    }
}

/// VT-d faults, translation switched off while a device was in use, and,
/// with a device kept persistent through live updates, the root tables the
/// IOMMU latched after DMA started: every one must be the first byte of an
/// `iommu/dmar-<unit>/root-pgtables` file of the image as read when
/// observing began (when it could not be read: in the carve-out), adopted
/// in place by each new kernel, and each new kernel must have latched one.
pub fn judge(obs: &Observations) -> (IommuSection, Vec<Finding>) {
    let facts = obs.facts;
    let console = obs.log.fuller(|c| scan_console(c).faults as usize);
    let r = IommuReport::from_logs(obs.trace, console);
    let mut found = Vec::new();
    if r.faults() > 0 {
        found.push(Finding::new(Reason::IommuFault, format!("{} VT-d faults (QEMU traced {}, guest logged {})", r.faults(), r.qemu_faults, r.guest_faults)));
    }
    // Translation only has to stay on while a device is doing DMA; boot
    // switches it on, nothing before `start_dma` switches it off, and a
    // kexec while the agent had stopped every engine concerns no device.
    let quiesced = disabled_within(&obs.host_dir.join("trace.log"), &facts.quiesced);
    let in_use = r.translation_disabled.saturating_sub(quiesced);
    if in_use > 0 && facts.dma_started {
        found.push(Finding::new(Reason::IommuTranslationOff, format!(
            "VT-d translation switched off {in_use} time(s) while the device was in use (vtd_dmar_enable 0)"
        )));
    }
    let roots = &obs.since_dma.dmar_root;
    let files = facts.iommu_files.as_deref().map(|f| root_files(roots, f));
    let outside = match (&files, facts.carve_out) {
        (Some(files), _) => roots.iter().zip(files).filter(|(_, f)| f.is_empty()).map(|(r, _)| *r).collect(),
        (None, Some(c)) => roots_outside(roots, c),
        (None, None) => Vec::new(),
    };
    if facts.carve_out.is_some() && facts.persistent && facts.live_updates > 0 {
        if !outside.is_empty() {
            let list: Vec<String> = outside.iter().map(|a| format!("{a:#x}")).collect();
            found.push(Finding::new(Reason::IommuRootOutsidePkernfs, format!(
                "VT-d root table set outside pkernfs after DMA started ({}; not the first byte of any iommu/dmar-<unit>/root-pgtables file): a kernel put its own tables under the persistent device instead of adopting its root-pgtables in place",
                list.join(", ")
            )));
        }
        if (roots.len() as u64) < u64::from(facts.live_updates) {
            found.push(Finding::new(Reason::IommuRootNotAdopted, format!(
                "VT-d root table latched {} time(s) after DMA started, fewer than the {} live update(s): no evidence each new kernel adopted iommu/root-pgtables (vtd_reg_dmar_root traced?)",
                roots.len(),
                facts.live_updates
            )));
        }
    }
    let mut examples = r.qemu_fault_lines.clone();
    examples.extend(r.guest_fault_lines.iter().cloned());
    let section = IommuSection {
        faults: r.faults(),
        qemu_faults: r.qemu_faults,
        guest_faults: r.guest_faults,
        translation_disabled: r.translation_disabled,
        translation_disabled_while_quiesced: quiesced,
        examples,
        root_tables: roots.iter().map(|a| format!("{a:#x}")).collect(),
        root_tables_outside_pkernfs: outside.len() as u64,
        root_table_files: files.unwrap_or_default(),
    };
    (section, found)
}

/// `vtd_dmar_enable enable 0` lines of the trace log at `path` inside the
/// byte ranges `windows` (0 when there are none or the log is unreadable:
/// every switch-off then counts).
fn disabled_within(path: &std::path::Path, windows: &[(u64, u64)]) -> u64 {
    use std::io::{Read, Seek, SeekFrom};
    let mut n = 0;
    for &(from, to) in windows {
        let Ok(mut f) = std::fs::File::open(path) else { return 0 };
        let mut text = Vec::new();
        if f.seek(SeekFrom::Start(from)).is_err() || f.take(to.saturating_sub(from)).read_to_end(&mut text).is_err() {
            return 0;
        }
        let t = TraceSummary::from_text(&String::from_utf8_lossy(&text));
        n += t.dmar_enable.iter().filter(|on| !**on).count() as u64;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn through_the_trait_root_tables_count_only_for_a_persistent_device_across_updates() {
        use crate::oracle::registry::RunFacts;
        let dir = tempfile::tempdir().unwrap();
        let log = crate::console::KernelLog::of_run(dir.path());
        let t = TraceSummary::default();
        let since = TraceSummary { dmar_root: vec![0x4080_0000, 0x1a9_4000], ..Default::default() };
        let judge_with = |facts: RunFacts| {
            let obs = Observations { facts: &facts, pages: None, nvme: None, rx: None, updates: &[], isolation: None, host_dir: dir.path(), trace: &t, since_dma: &since, log: &log, journal: &[], watch: None };
            IommuOracle.judge(&obs).unwrap()
        };
        let carve = Some((0x4000_0000, 64 << 20));
        // A switch-off while every engine was stopped is no device's concern; any other one is.
        let lines = "1@1.000001:vtd_dmar_enable enable 1\n1@2.000001:vtd_dmar_enable enable 0\n1@3.000001:vtd_dmar_enable enable 1\n";
        std::fs::write(dir.path().join("trace.log"), lines).unwrap();
        let (on, off) = (lines.find("1@2").unwrap() as u64, lines.find("1@3").unwrap() as u64);
        let t = TraceSummary::from_text(lines);
        let off_with = |quiesced: Vec<(u64, u64)>| {
            let facts = RunFacts { dma_started: true, quiesced, ..Default::default() };
            let obs = Observations { facts: &facts, pages: None, nvme: None, rx: None, updates: &[], isolation: None, host_dir: dir.path(), trace: &t, since_dma: &since, log: &log, journal: &[], watch: None };
            let j = IommuOracle.judge(&obs).unwrap();
            (j.findings.iter().filter(|f| f.reason == Reason::IommuTranslationOff).count(), j.section["translation_disabled_while_quiesced"].as_u64())
        };
        assert_eq!(off_with(vec![]), (1, Some(0)));
        assert_eq!(off_with(vec![(on, off)]), (0, Some(1)));
        assert_eq!(off_with(vec![(off, lines.len() as u64)]), (1, Some(0)), "a window that misses the switch-off excuses nothing");
        let kept = judge_with(RunFacts { dma_started: true, carve_out: carve, persistent: true, live_updates: 3, ..Default::default() });
        let reasons: Vec<Reason> = kept.findings.iter().map(|f| f.reason).collect();
        assert_eq!(reasons, [Reason::IommuRootOutsidePkernfs, Reason::IommuRootNotAdopted], "{:#?}", kept.findings);
        assert_eq!(kept.section["root_tables_outside_pkernfs"], 1);
        assert_eq!(kept.section["root_tables"][1], "0x1a94000");
        let not_kept = judge_with(RunFacts { dma_started: true, carve_out: carve, persistent: false, live_updates: 3, ..Default::default() });
        assert!(not_kept.findings.is_empty(), "{:#?}", not_kept.findings);
        assert_eq!(not_kept.section["root_tables_outside_pkernfs"], 1, "counted for the report all the same");
    }

    const TRACE: &str = "\
7@1.1:vtd_dmar_enable enable 1
7@1.2:vtd_dmar_fault sid 0x10 fault 6 addr 0x100000 write 0
7@1.3:vtd_fault_disabled Fault processing disabled for context entry
7@1.4:vtd_dmar_enable enable 0
7@1.5:vtd_dmar_enable enable 1
7@1.6:vtd_dmar_enable enable 0
";
    const CONSOLE: &str = "\
[    1.0] DMAR: IOMMU enabled
[    2.1] DMAR: DRHD: handling fault status reg 3
[    2.1] DMAR: [DMA Read NO_PASID] Request device [00:02.0] fault addr 0x100000 [fault reason 0x06] PTE Read access is not set\r
[    2.2] DMAR: [DMA Write NO_PASID] Request device [00:02.0] fault addr 0x101000 [fault reason 0x05] PTE Write access is not set
[    2.3] dmar_fault: 151 callbacks suppressed
[    2.4] e1000e: 3 callbacks suppressed
";

    #[test]
    fn counts_faults_from_both_sides() {
        let r = IommuReport::from_logs(&TraceSummary::from_text(TRACE), CONSOLE);
        assert_eq!(r.qemu_faults, 2);
        assert_eq!(r.qemu_fault_lines.len(), 2);
        assert_eq!(r.guest_faults, 2);
        assert!(r.guest_fault_lines[0].contains("fault addr 0x100000"));
        assert!(!r.guest_fault_lines[0].ends_with('\r'));
        assert_eq!(r.guest_suppressed, 151);
        assert_eq!(r.dmar_enable, vec![true, false, true, false]);
        assert_eq!(r.translation_disabled, 2);
        assert_eq!(r.faults(), 2);
    }

    #[test]
    fn roots_are_matched_to_root_pgtables_files() {
        use crate::pkernfs::host::IommuFile;
        let file = |path: &str, kind: &str, gpa| IommuFile { path: path.into(), kind: kind.into(), gpa, len: 0x101000 };
        let files = [
            file("/iommu/dmar-fed90000/dom-3", "iommu-domain", 0x4100_0000),
            file("/iommu/dmar-fed90000/root-pgtables", "iommu-root", 0x4080_0000),
        ];
        let got = root_files(&[0x4080_0000, 0x4100_0000, 0x4080_1000, 0x0123_4000], &files);
        assert_eq!(got, ["/iommu/dmar-fed90000/root-pgtables", "", "", ""], "a domain file, a page inside the root file, and RAM are not root tables");
    }

    #[test]
    fn roots_outside_the_carve_out_are_named() {
        let carve = (1 << 30, 64 << 20);
        assert!(roots_outside(&[0x4080_0000, 0x4080_0000], carve).is_empty());
        assert_eq!(roots_outside(&[0x4080_0000, 0x0123_4000, 0x4400_0000], carve), vec![0x0123_4000, 0x4400_0000]);
        assert_eq!(roots_outside(&[0x3fff_f000], carve), vec![0x3fff_f000], "just below the base");
    }

    #[test]
    fn clean_logs_report_nothing() {
        let r = IommuReport::from_logs(
            &TraceSummary::from_text("7@1.1:vtd_dmar_enable enable 1\n"),
            "DMAR: IOMMU enabled\n",
        );
        assert_eq!((r.faults(), r.translation_disabled, r.guest_suppressed), (0, 0, 0));
    }
}
