//! System tier: live update with the device kept running (persistent VT-d
//! and iommufd across kexec, guest RAM in pkernfs). Judged from outside:
//! the RX ledger over QEMU's RAM file, QEMU's VT-d trace, the memory oracle.

mod common;

use common::{our_kernel, run_scenario};
use lulab::scenario::Verdict;

#[test]
fn rx_through_one_live_update_loses_nothing() {
    if our_kernel().is_none() {
        return;
    }
    let (r, t) = run_scenario("live-update-rx");
    assert_eq!(r.outcome, Verdict::Intact, "{:#?}\n{:?}", r.reasons, r.dma);
    assert!(r.as_expected);
    assert_eq!(r.live_updates, 1);
    assert_eq!((r.dma.lost, r.dma.corrupted, r.dma.delivered), (0, 0, r.dma.sent), "{:?}", r.dma);
    assert_eq!(r.dma.bus_master_cleared, 0, "{:?}", r.dma);
    assert_eq!((r.iommu.faults, r.iommu.translation_disabled), (0, 0), "{:?}", r.iommu);
    assert_eq!(r.memory.unexpected_changes, 0, "{:?}", r.memory);
    assert!(r.memory.pages_checked > 0, "{:?}", r.memory);
    // The new agent adopted the device from the hand-over, on the same memory.
    let adopted: lulab_proto::DmaLayout =
        serde_json::from_str(&std::fs::read_to_string(t.dir().join("layout-0000:00:02.0-update1.json")).unwrap())
            .unwrap();
    let p = adopted.persist.expect("a persistent layout");
    assert!(p.persistent);
    let h = p.resumed_from.expect("resumed from a hand-over");
    assert_eq!(h.generation, 1);
    // The kernel's own account: frozen at kexec, adopted, switched atomically.
    let console = std::fs::read_to_string(t.dir().join("host").join("console.log")).unwrap_or_default();
    for line in ["persistent device(s) frozen", "adopting it", "adopted as persistent", "switched from frozen domain"] {
        assert!(console.contains(line), "console lacks {line:?}");
    }
}
