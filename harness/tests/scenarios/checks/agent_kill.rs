//! The agent killed as a crashing VMM: what the kernel log and the report
//! must show beyond the verdict (the keeper held the fds, the new agent
//! took the running device back, or could not).

use std::path::Path;

use lulab::console::KernelLog;
use lulab::report::Report;

fn log_has(dir: &Path, lines: &[&str]) -> KernelLog {
    let log = KernelLog::of_run(&dir.join("host"));
    for line in lines {
        assert!(log.contains(line), "kernel log lacks {line:?}");
    }
    log
}

/// `fault-agent-kill`: killed and started again, the persistent engine taken back.
pub fn restarted(r: &Report, dir: &Path) {
    assert_eq!((r.dma.lost, r.dma.corrupted, r.dma.delivered), (0, 0, r.dma.sent), "{:?}", r.dma);
    assert_eq!(r.dma.bus_master_cleared, 0, "{:?}", r.dma);
    assert_eq!((r.iommu.faults, r.iommu.translation_disabled), (0, 0), "{:?}", r.iommu);
    assert_eq!(r.live_updates, 0);
    let log = log_has(dir, &["fd keeper pid", "crashing on request", "lulab-init: agent exited", "re-attached from fd keeper"]);
    assert_eq!(log.count(" serving on "), 2, "one agent started by /init, one started again");
    // The taken-back engine is the started one: same file, same ring and buffers.
    let (first, back) = (super::layout(dir, "layout-0000:00:02.0.json"), super::layout(dir, "layout-0000:00:02.0-reattached.json"));
    let (p0, p1) = (first.persist.expect("persistent"), back.persist.expect("persistent"));
    assert_eq!((p0.file, p0.buffers_offset), (p1.file, p1.buffers_offset));
    assert_eq!((first.ring.iova, first.buffers.iova), (back.ring.iova, back.buffers.iova));
}

/// `fault-agent-kill-nonpersistent`: nothing kept, the new agent refuses.
pub fn not_kept(r: &Report, dir: &Path) {
    // VFIO released the device with the dead agent: bus master off, and
    // what was sent after it stayed on the host side, never taken.
    assert!(r.dma.bus_master_cleared >= 1, "{:?}", r.dma);
    assert!(r.dma.queued_on_host > 0 && r.dma.delivered < r.dma.sent, "{:?}", r.dma);
    let log = log_has(dir, &["crashing on request", "lulab-init: agent exited"]);
    assert!(!log.contains("fd keeper pid"), "a non-persistent engine has no keeper");
    let refused = r.findings.iter().find(|f| f.reason == lulab::report::Reason::UpdateResumeFailed).expect("update.resume_failed");
    assert!(refused.detail.contains("no engine kept"), "{}", refused.detail);
}

/// `fault-agent-kill-handed-over`: the update went on from the dead agent's hand-over.
pub fn after_hand_over(r: &Report, dir: &Path) {
    assert_eq!(r.live_updates, 1);
    assert_eq!((r.dma.lost, r.dma.corrupted, r.dma.delivered), (0, 0, r.dma.sent), "{:?}", r.dma);
    assert_eq!((r.iommu.faults, r.iommu.translation_disabled), (0, 0), "{:?}", r.iommu);
    log_has(dir, &["fd keeper pid", "crashing on request", "adopted as persistent", "switched from frozen domain"]);
    let p = super::layout(dir, "layout-0000:00:02.0-update1.json").persist.expect("a persistent layout");
    assert_eq!(p.resumed_from.expect("resumed from the dead agent's hand-over").generation, 1);
}
