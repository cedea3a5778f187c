//! The DMA ledger's two controls on Debian's stock kernel, and the IOMMU
//! oracle's fault control: each for reasons the oracles can name.

use std::path::Path;

use lulab::report::Report;

pub fn baseline_rx(r: &Report, _: &Path) {
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

pub fn stock_kexec_rx(r: &Report, _: &Path) {
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
    super::one_update_with_the_device_stopped(r, "stock");
}

pub fn iommu_fault_rx(r: &Report, _: &Path) {
    // 256 descriptors, the last 64 on an unmapped IOVA: exactly the 192 mapped
    // slots receive, every frame after them faults in VT-d and is lost.
    assert_eq!(r.dma.delivered, 192, "{:?}", r.dma);
    assert_eq!(r.dma.lost, r.dma.sent - 192, "{:?}", r.dma);
    assert!(r.iommu.qemu_faults > 0 && r.iommu.guest_faults > 0, "{:?}", r.iommu);
    assert!(r.iommu.examples.iter().any(|l| l.contains("vtd_dmar_fault")), "{:?}", r.iommu.examples);
    assert!(r.reasons.iter().any(|l| l.contains("VT-d faults")), "{:?}", r.reasons);
}
