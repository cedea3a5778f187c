//! System tier: the two controls of the DMA ledger on the stock kernel.
//! The positive control must come out intact, the negative control (a stock
//! kexec under RX load) broken — each for reasons the oracles can name.

mod common;

use common::{assert_one_update_with_the_device_stopped, run_scenario, system_tier_available};
use lulab::scenario::Verdict;

#[test]
fn baseline_rx_is_intact() {
    if !system_tier_available() {
        return;
    }
    let (r, _t) = run_scenario("baseline-rx");
    assert_eq!(r.outcome, Verdict::Intact, "reasons: {:#?}", r.reasons);
    assert!(r.as_expected);
    assert_eq!(r.dma.sent, 600);
    assert_eq!(r.dma.delivered, r.dma.sent, "{:?}", r.dma);
    assert_eq!((r.dma.lost, r.dma.corrupted, r.dma.queued_on_host), (0, 0, 0));
    assert_eq!(r.nvme.blocks_read, 512, "{:?}", r.nvme);
    assert_eq!((r.nvme.lost, r.nvme.corrupted), (0, 0));
    assert_eq!(r.iommu.faults, 0);
    assert!(r.memory.pages_checked > 0 && r.memory.unexpected_changes == 0, "{:?}", r.memory);
    assert!(r.memory.dma_pages_changed > 0, "the device wrote into its buffers");
    assert_eq!(r.live_updates, 0);
    assert!(r.updates.is_empty(), "{:#?}", r.updates);
}

#[test]
fn stock_kexec_rx_is_broken_and_says_why() {
    if !system_tier_available() {
        return;
    }
    let (r, _t) = run_scenario("stock-kexec-rx");
    assert_eq!(r.outcome, Verdict::Broken);
    assert!(r.as_expected);
    assert_eq!(r.live_updates, 1);
    // Frames flowed before the kexec (300 were written before the jump), not after.
    assert!(r.dma.delivered >= 200 && r.dma.delivered < r.dma.sent, "{:?}", r.dma);
    // What a stock kexec does, each seen from outside the guest:
    assert!(r.dma.bus_master_cleared >= 1, "bus master cleared (QEMU trace): {:?}", r.dma);
    assert!(r.iommu.translation_disabled >= 1, "VT-d translation switched off: {:?}", r.iommu);
    assert!(r.dma.queued_on_host + r.dma.lost > 0, "frames after the kexec never arrive: {:?}", r.dma);
    let why = r.reasons.join("\n");
    assert!(why.contains("RX stalled") || why.contains("lost"), "{why}");
    assert!(why.contains("translation switched off"), "{why}");
    assert_one_update_with_the_device_stopped(&r, "stock");
}

#[test]
fn iommu_fault_rx_is_broken_with_counted_faults() {
    if !system_tier_available() {
        return;
    }
    let (r, _t) = run_scenario("iommu-fault-rx");
    assert_eq!(r.outcome, Verdict::Broken);
    assert!(r.as_expected);
    // 256 descriptors, the last 64 on an unmapped IOVA: exactly the 192 mapped
    // slots receive, every frame after them faults in VT-d and is lost.
    assert_eq!(r.dma.delivered, 192, "{:?}", r.dma);
    assert_eq!(r.dma.lost, r.dma.sent - 192, "{:?}", r.dma);
    assert!(r.iommu.qemu_faults > 0 && r.iommu.guest_faults > 0, "{:?}", r.iommu);
    assert!(r.iommu.examples.iter().any(|l| l.contains("vtd_dmar_fault")), "{:?}", r.iommu.examples);
    assert!(r.reasons.iter().any(|l| l.contains("VT-d faults")), "{:?}", r.reasons);
}
