//! RX with the device's MSI-X interrupts through a VFIO eventfd: what the
//! interrupt oracle's section must show beyond the verdict.

use std::path::Path;

use lulab::console::KernelLog;
use lulab::report::Report;

fn section(r: &Report) -> &serde_json::Value {
    r.sections.get("interrupts").filter(|s| !s.is_null()).unwrap_or_else(|| panic!("no interrupts section: {:?}", r.sections.keys()))
}

fn n(s: &serde_json::Value, k: &str) -> u64 {
    s[k].as_u64().unwrap_or_else(|| panic!("interrupts.{k}: {s}"))
}

/// `live-update-rx-irq`: the headline's evidence, and every message the
/// device sent delivered while an engine was live — the old one's before
/// the update, the new one's after it, starting with the cause the window
/// left pending — with the agents receiving them.
pub fn kept(r: &Report, dir: &Path) {
    super::live_update::rx_kept(r, dir);
    let s = section(r);
    assert!(n(s, "sent") > 0, "{s}");
    assert_eq!((n(s, "delivered_outside_agents"), n(s, "never_delivered")), (0, 0), "{s}");
    assert_eq!(n(s, "delivered") + n(s, "released_from_pending"), n(s, "sent"), "{s}");
    let agents = s["agents"].as_array().expect("agents");
    assert_eq!(agents.len(), 2, "one engine per kernel: {s}");
    assert_eq!((agents[0]["generation"].as_u64(), agents[0]["closed"].as_bool()), (Some(0), Some(true)), "{s}");
    assert_eq!(agents[1]["generation"].as_u64(), Some(1), "{s}");
    assert!(agents.iter().all(|a| a["delivered"].as_u64() > Some(0)), "interrupts before and after the update: {s}");
    assert_eq!(agents[1]["first_raised_by_pending_cause"], true, "the window's frames left the cause pending: {s}");
    let received = n(s, "received_by_agents");
    assert!(received > 0 && received <= n(s, "delivered") + n(s, "released_from_pending"), "{s}");
    // Interrupt remapping stayed on through the update (switched on once,
    // at the first boot): the old kernel kept the NIC's entry in pkernfs
    // and the new one copied the table out instead of starting its own.
    assert_eq!(s["ir_enable"], serde_json::json!([true]), "{s}");
    assert_eq!(n(s, "remapping_off_after_routing"), 0, "{s}");
    let log = KernelLog::of_run(&dir.join("host"));
    assert!(log.contains("1 interrupt-remapping entry of persistent devices kept in iommu/dmar-fed90000/root-pgtables"), "the freeze kept the NIC's entry");
    assert!(log.contains("Copied IR table for dmar0 from pkernfs (lulab live update)"), "the new kernel copied the kept table");
}

/// `live-update-rx-irq-ir-not-kept`: the new kernel threw the kept table
/// away (lulab_ir_keep=0) and switched remapping off; nothing else differs.
pub fn ir_not_kept(r: &Report, dir: &Path) {
    let s = section(r);
    assert!(n(s, "remapping_off_after_routing") >= 1, "{s}");
    assert_eq!((r.dma.lost, r.dma.corrupted), (0, 0), "{:?}", r.dma);
    let log = KernelLog::of_run(&dir.join("host"));
    assert!(log.contains("lulab_ir_keep=0: not kept, interrupt remapping goes off"), "the new kernel said why");
}

/// `live-update-rx-irq-left-armed`: messages delivered while no engine was
/// live, every frame still delivered (only the interrupt is lost).
pub fn left_armed(r: &Report, _dir: &Path) {
    let s = section(r);
    assert!(n(s, "delivered_outside_agents") > 0, "{s}");
    assert_eq!((r.dma.lost, r.dma.corrupted), (0, 0), "{:?}", r.dma);
}
