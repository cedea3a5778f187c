//! System tier: the upstream comparison. The same RX stream through one live
//! update, once with the guest RAM in pkernfs and the device kept running
//! (live-update-rx), once with the guest RAM in a memfd preserved by
//! upstream's Live Update Orchestrator (luo-memfd-rx): the memory survives
//! both, the DMA only the first. Writes the side-by-side table into the run
//! directory (`comparison.md`) and prints it.

mod common;

use common::{our_kernel, run_scenario, TestRun};
use lulab::console::KernelLog;
use lulab::report::compare::side_by_side;
use lulab::scenario::Verdict;

#[test]
fn luo_keeps_the_memory_but_not_the_dma_pkernfs_keeps_both() {
    if our_kernel().is_none() {
        return;
    }
    let (ours, _ours_run) = run_scenario("live-update-rx");
    let (luo, luo_run) = run_scenario("luo-memfd-rx");
    let table = side_by_side(&[&ours, &luo]);
    let t = TestRun::new("luo-vs-pkernfs");
    std::fs::write(t.dir().join("comparison.md"), &table).unwrap();
    println!("{table}");

    // Ours: nothing lost, frames DMAed while no agent ran.
    assert_eq!(ours.outcome, Verdict::Intact, "{:#?}", ours.reasons);
    assert_eq!((ours.dma.lost, ours.dma.delivered), (0, ours.dma.sent), "{:?}", ours.dma);
    assert!(ours.updates[0].dma_while_agent_down.unwrap_or(0) > 0, "{:?}", ours.updates);

    // Upstream: broken as expected, for the right reasons.
    assert_eq!(luo.outcome, Verdict::Broken);
    assert!(luo.as_expected, "{:#?}", luo.reasons);
    assert_eq!(luo.live_updates, 1);
    let section = luo.luo.as_ref().expect("a luo section");
    assert_eq!(section.updates.len(), 1, "the new agent retrieved the session once: {section:#?}");
    let u = &section.updates[0];
    // The memory survived: same pages, every held frame and the canary intact.
    assert!(section.memory_survived, "{section:#?}");
    assert!(u.found.frames_checked > 0 && u.found.memfd_pages > 0, "{u:#?}");
    assert_eq!(luo.memory.unexpected_changes, 0, "{:?}", luo.memory);
    // The DMA did not: the device was not kept, frames never arrived.
    assert!(!section.device_survived && !u.found.broken.is_empty(), "{u:#?}");
    assert!(luo.dma.lost + luo.dma.queued_on_host > 0, "{:?}", luo.dma);
    assert!(luo.dma.delivered < luo.dma.sent, "{:?}", luo.dma);
    assert!(luo.dma.bus_master_cleared > 0 || luo.iommu.translation_disabled > 0, "{:?} {:?}", luo.dma, luo.iommu);
    common::assert_one_update_with_the_device_stopped(&luo, "lulab");
    assert!(luo.reasons.iter().any(|r| r.contains("LUO kept the memory but not the device")), "{:#?}", luo.reasons);
    let log = KernelLog::of_run(&luo_run.dir().join("host"));
    assert!(log.contains("liveupdate number"), "the next kernel retrieved LUO state from KHO");
}
