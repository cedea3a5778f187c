//! System tier: live update with the device kept running (persistent VT-d
//! and iommufd across kexec, guest RAM in pkernfs). Judged from outside:
//! the RX ledger over QEMU's RAM file, QEMU's VT-d trace, the memory oracle.

mod common;

use common::{intact_run, negative_control};
use lulab::console::KernelLog;

#[test]
fn rx_through_one_live_update_loses_nothing() {
    let Some((r, t)) = intact_run("live-update-rx") else { return };
    assert_eq!(r.live_updates, 1);
    assert_eq!((r.dma.lost, r.dma.corrupted, r.dma.delivered), (0, 0, r.dma.sent), "{:?}", r.dma);
    assert_eq!(r.dma.bus_master_cleared, 0, "{:?}", r.dma);
    assert_eq!((r.iommu.faults, r.iommu.translation_disabled), (0, 0), "{:?}", r.iommu);
    assert_eq!(r.memory.unexpected_changes, 0, "{:?}", r.memory);
    assert!(r.memory.pages_checked > 0, "{:?}", r.memory);
    assert_eq!(r.updates.len(), 1);
    assert!(r.updates[0].dma_while_agent_down.unwrap_or(0) > 0, "the device kept DMAing with no agent: {:?}", r.updates[0]);
    // The new agent adopted the device from the hand-over, on the same memory.
    let adopted: lulab_proto::DmaLayout =
        serde_json::from_str(&std::fs::read_to_string(t.dir().join("layout-0000:00:02.0-update1.json")).unwrap())
            .unwrap();
    let p = adopted.persist.expect("a persistent layout");
    assert!(p.persistent);
    let h = p.resumed_from.expect("resumed from a hand-over");
    assert_eq!(h.generation, 1);
    // The kernel's own account: root tables and the domain in pkernfs,
    // adopted in place, switched atomically, the rebuilt domain sealed again.
    let log = KernelLog::of_run(&t.dir().join("host"));
    for line in [
        "context table(s) now in iommu/root-pgtables",
        "kept in iommu/root-pgtables",
        "adopting it",
        "in place: 1 persistent context entry kept",
        "adopted as persistent",
        "switched from frozen domain",
        "sealed: ",
    ] {
        assert!(log.contains(line), "kernel log lacks {line:?}");
    }
    assert_eq!(log.count(" sealed: "), 2, "sealed at the mark, and the rebuilt domain after the switch");
    // QEMU's account: the only root table latched after DMA started (the
    // new kernel's SRTP) is iommu/root-pgtables in the carve-out.
    assert!(!r.iommu.root_tables.is_empty(), "{:?}", r.iommu);
    assert_eq!(r.iommu.root_tables_outside_pkernfs, 0, "{:?}", r.iommu);
}

#[test]
fn nvme_reads_in_flight_across_a_live_update_land_in_the_right_buffers() {
    let Some((r, t)) = intact_run("live-update-nvme") else { return };
    assert_eq!(r.live_updates, 1);
    assert_eq!((r.nvme.blocks_read, r.nvme.lost, r.nvme.corrupted), (4096, 0, 0), "{:?}", r.nvme);
    assert_eq!((r.iommu.faults, r.iommu.translation_disabled), (0, 0), "{:?}", r.iommu);
    assert_eq!(r.memory.unexpected_changes, 0, "{:?}", r.memory);
    let adopted: lulab_proto::DmaLayout =
        serde_json::from_str(&std::fs::read_to_string(t.dir().join("layout-0000:00:03.0-update1.json")).unwrap())
            .unwrap();
    let h = adopted.persist.and_then(|p| p.resumed_nvme).expect("resumed from an NVMe hand-over");
    assert!(h.next > h.done, "commands were in flight at the hand-over: {h:?}");
    assert!(h.next < 4096 / 8, "the reads were not finished before the update: {h:?}");
}

#[test]
fn rx_through_twenty_live_updates_in_a_row_stays_intact() {
    let Some((r, _t)) = intact_run("live-update-soak") else { return };
    assert_eq!(r.live_updates, 20);
    assert_eq!(r.updates.len(), 20);
    assert_eq!((r.dma.lost, r.dma.corrupted, r.dma.delivered), (0, 0, r.dma.sent), "{:?}", r.dma);
    assert_eq!((r.iommu.faults, r.iommu.translation_disabled), (0, 0), "{:?}", r.iommu);
    for u in &r.updates {
        assert!(u.dma_while_agent_down.unwrap_or(0) > 0, "update {}: the device stopped while no agent ran: {u:?}", u.index);
    }
}

#[test]
fn two_devices_in_separate_persistent_domains_dma_only_into_their_own_pages() {
    let Some((r, _t)) = intact_run("live-update-isolation") else { return };
    let iso = r.isolation.as_ref().expect("the isolation oracle ran");
    assert_eq!((iso.foreign, iso.cross_device), (0, 0), "{iso:?}");
    for dev in ["0000:00:02.0", "0000:00:03.0"] {
        assert!(iso.translations.get(dev).copied().unwrap_or(0) > 0, "no translations traced for {dev}: {iso:?}");
    }
    assert_eq!((r.dma.lost, r.dma.corrupted), (0, 0), "{:?}", r.dma);
    assert_eq!((r.nvme.lost, r.nvme.corrupted, r.nvme.blocks_read), (0, 0, 2048), "{:?}", r.nvme);
    assert_eq!(r.iommu.faults, 0, "{:?}", r.iommu);
}

/// Negative control of the kernel's check before the atomic switch: the
/// resuming agent maps the buffers 2 MiB off, the kernel refuses to switch
/// and the device stays on its frozen domain (no fault, translation on).
#[test]
fn rebuilt_mappings_that_differ_from_the_frozen_ones_are_refused() {
    let Some((r, t)) = negative_control("live-update-remap-mismatch") else { return };
    assert!(r.reasons.iter().any(|s| s.contains("Invalid argument")), "{:#?}", r.reasons);
    assert_eq!((r.iommu.faults, r.iommu.translation_disabled), (0, 0), "{:?}", r.iommu);
    assert_eq!(r.dma.corrupted, 0, "{:?}", r.dma);
    assert!(r.updates[0].dma_while_agent_down.unwrap_or(0) > 0, "still translating through the frozen domain: {:?}", r.updates[0]);
    let log = KernelLog::of_run(&t.dir().join("host"));
    assert!(log.contains("rebuilt mappings differ from the frozen ones"), "the kernel's refusal is logged");
    assert!(!log.contains("switched from frozen domain"));
}

/// Negative control of the root-table oracle: a new kernel that copies the
/// VT-d tables out of pkernfs (kdump path, `lulab_vtd_adopt=copy`) keeps the
/// DMA going, but QEMU sees a root table outside the carve-out.
#[test]
fn a_kernel_that_copies_the_root_table_out_of_pkernfs_is_caught() {
    let Some((r, t)) = negative_control("live-update-root-copied") else { return };
    assert!(r.iommu.root_tables_outside_pkernfs >= 1, "{:?}", r.iommu);
    assert!(r.reasons.iter().any(|s| s.contains("root table set outside pkernfs")), "{:#?}", r.reasons);
    // Only the root table is wrong: the device kept DMAing, nothing was lost.
    assert_eq!((r.dma.lost, r.dma.corrupted), (0, 0), "{:?}", r.dma);
    assert_eq!((r.iommu.faults, r.iommu.translation_disabled), (0, 0), "{:?}", r.iommu);
    let log = KernelLog::of_run(&t.dir().join("host"));
    assert!(log.contains("lulab_vtd_adopt=copy: copying the tables out of pkernfs"), "the knob took effect");
}

/// The unseal/reseal path: mappings changed on a sealed persistent domain
/// before each of two updates; each change puts the device back on the live
/// tables, each kexec seals the domain again, nothing is lost.
#[test]
fn mappings_changed_after_sealing_are_sealed_again_at_kexec() {
    let Some((r, t)) = intact_run("live-update-remap") else { return };
    assert_eq!(r.live_updates, 2);
    assert_eq!((r.dma.lost, r.dma.corrupted), (0, 0), "{:?}", r.dma);
    assert_eq!((r.iommu.faults, r.iommu.translation_disabled, r.iommu.root_tables_outside_pkernfs), (0, 0, 0), "{:?}", r.iommu);
    assert!(r.updates.iter().all(|u| u.dma_while_agent_down.unwrap_or(0) > 0), "{:?}", r.updates);
    let log = KernelLog::of_run(&t.dir().join("host"));
    assert_eq!(log.count("mappings changed: back on its live tables"), 2, "one unseal per probe");
    // Sealed at each mark (3 kernels) and again at each kexec (2).
    let fuller = log.fuller(|c| c.matches(" sealed: ").count());
    assert_eq!(log.count(" sealed: "), 5, "{}", fuller.lines().filter(|l| l.contains("lulab: ")).collect::<Vec<_>>().join("\n"));
}

const NIC: &str = "0000:00:02.0";
const NVME: &str = "0000:00:03.0";

/// The e1000e persistent, the NVMe in a different, non-persistent domain
/// with the same IOVAs: the NVMe loses its translation at the kexec, the
/// next kernel's nvme driver takes it, the new agent takes it back and reads
/// on; its DMA never lands in the e1000e's guest RAM, before, during or after.
#[test]
fn a_non_persistent_second_device_never_reaches_the_persistent_guest_ram() {
    let Some((r, t)) = intact_run("live-update-isolation-nonpersistent") else { return };
    assert_eq!(r.live_updates, 1);
    assert_eq!((r.dma.lost, r.dma.corrupted, r.dma.delivered), (0, 0, r.dma.sent), "{:?}", r.dma);
    assert_eq!((r.nvme.blocks_read, r.nvme.lost, r.nvme.corrupted), (16384, 0, 0), "{:?}", r.nvme);
    // Reads were unfinished at the kexec; the next agent read on from where they stood.
    let [restart] = r.nvme.restarts.as_slice() else { panic!("one NVMe restart expected: {:?}", r.nvme) };
    assert!(restart.resumed_at_lba > 0 && restart.resumed_at_lba < 16384, "{restart:?}");
    let retaken: lulab_proto::DmaLayout =
        serde_json::from_str(&std::fs::read_to_string(t.dir().join(format!("layout-{NVME}-update1.json"))).unwrap()).unwrap();
    assert!(retaken.persist.is_none() && retaken.iommu == lulab_proto::IommuApi::Iommufd, "{retaken:?}");
    let iso = r.isolation.as_ref().expect("the isolation oracle ran");
    assert_eq!((iso.foreign, iso.cross_device, iso.updates), (0, 0, 1), "{iso:#?}");
    let (nic, nvme) = (&iso.devices[NIC], &iso.devices[NVME]);
    assert!(nic.persistent && !nvme.persistent, "{iso:#?}");
    assert_eq!((nic.outside_own_pages, nic.unowned), (0, 0), "the NIC stayed in its pages throughout: {nic:?}");
    let p = &nic.translations;
    assert!(p.before_update > 0 && p.during_update > 0 && p.after_update > 0, "the NIC translated through the frozen domain too: {nic:?}");
    assert_eq!((nvme.into_other_devices, nvme.outside_own_pages), (0, 0), "{nvme:?}");
    assert!(nvme.translations.before_update > 0 && nvme.translations.after_update > 0 && nvme.own_pages > 0, "{nvme:?}");
    assert!(nvme.unowned > 0, "the NVMe was not the agent's during the update (next kernel's driver): {nvme:?}");
    assert_eq!(r.iommu.faults, 0, "{:?}", r.iommu);
    assert_eq!(r.memory.unexpected_changes, 0, "{:?}", r.memory);
    assert!(r.updates[0].dma_while_agent_down.unwrap_or(0) > 0, "{:?}", r.updates[0]);
    let log = KernelLog::of_run(&t.dir().join("host"));
    assert!(log.contains(&format!("{NVME}: not persistent: stopped before kexec")), "the agent quiesced the NVMe before the kexec");
}

/// Negative control of the isolation oracle: the same run with the NVMe's
/// buffer IOVAs mapping the e1000e's guest-RAM file; every oracle must see it.
#[test]
fn nvme_reads_mapped_onto_the_nics_guest_ram_are_caught_by_every_oracle() {
    let Some((r, _t)) = negative_control("live-update-isolation-breach") else { return };
    let iso = r.isolation.as_ref().expect("the isolation oracle ran");
    let nvme = &iso.devices[NVME];
    assert!(iso.cross_device > 0 && nvme.into_other_devices > 0, "{iso:#?}");
    assert!(nvme.breaches.before_update > 0 && nvme.breaches.after_update > 0, "before and after the update: {nvme:?}");
    assert!(iso.examples.iter().any(|e| e.starts_with(NVME) && e.contains(&format!("({NIC}'s page)"))), "{:?}", iso.examples);
    let why = r.reasons.join("\n");
    assert!(why.contains("isolation:") && why.contains("into another device's guest RAM"), "{why}");
    // The RX ledger: the ring was overwritten with disk blocks.
    assert!(r.dma.lost + r.dma.corrupted > 0, "{:?}", r.dma);
    assert!(why.contains("lost") || why.contains("corrupted"), "{why}");
    // The memory oracle: the e1000e's canary, never mapped for the e1000e, changed.
    assert!(r.memory.unexpected_changes > 0, "{:?}", r.memory);
    assert!(why.contains("changed although no device may write them"), "{why}");
}
