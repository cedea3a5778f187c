//! Live update with the device kept running (persistent VT-d and iommufd
//! across kexec, guest RAM in pkernfs): what each scenario's report and run
//! directory must show beyond its verdict — the kernel's own account, the
//! agent's adopted layouts, QEMU's root tables and translations.

use std::path::Path;

use lulab::console::KernelLog;
use lulab::report::Report;

/// `live-update-rx`.
pub fn rx(r: &Report, dir: &Path) {
    super::watcher::clean(r, dir);
    rx_kept(r, dir);
}

/// `live-update-rx-smp4-caching`: the headline's evidence on 4 vCPUs with caching mode.
pub fn rx_smp4_caching(r: &Report, dir: &Path) {
    rx_kept(r, dir);
}

/// `live-update-rx-high-carveout`: the headline's evidence, and the root
/// table the IOMMU latched lies above 4 GiB (in the carve-out at 4352 MiB).
pub fn rx_high_carveout(r: &Report, dir: &Path) {
    rx_kept(r, dir);
    for root in &r.iommu.root_tables {
        let at = u64::from_str_radix(root.trim_start_matches("0x"), 16).unwrap_or_else(|e| panic!("root table {root}: {e}"));
        assert!((4352 << 20..4416 << 20).contains(&at), "root table {root} is not in the carve-out [4352 MiB, 4416 MiB)");
    }
}

/// One live update of RX with the device kept running, judged from every side.
pub(super) fn rx_kept(r: &Report, dir: &Path) {
    assert_eq!(r.live_updates, 1);
    assert_eq!((r.dma.lost, r.dma.corrupted, r.dma.delivered), (0, 0, r.dma.sent), "{:?}", r.dma);
    assert_eq!(r.dma.bus_master_cleared, 0, "{:?}", r.dma);
    assert_eq!((r.iommu.faults, r.iommu.translation_disabled), (0, 0), "{:?}", r.iommu);
    assert_eq!(r.memory.unexpected_changes, 0, "{:?}", r.memory);
    assert!(r.memory.pages_checked > 0, "{:?}", r.memory);
    assert_eq!(r.updates.len(), 1);
    assert!(r.updates[0].dma_while_agent_down.unwrap_or(0) > 0, "the device kept DMAing with no agent: {:?}", r.updates[0]);
    // The new agent adopted the device from the hand-over, on the same memory.
    let adopted = super::layout(dir, "layout-0000:00:02.0-update1.json");
    let p = adopted.persist.expect("a persistent layout");
    assert!(p.persistent);
    let h = p.resumed_from.expect("resumed from a hand-over");
    assert_eq!(h.generation, 1);
    // The kernel's own account: root tables and the domain in pkernfs,
    // adopted in place, switched atomically, the rebuilt domain sealed again.
    let log = KernelLog::of_run(&dir.join("host"));
    adopted_in_place(&log, dir, "00:02.0", "0010");
    assert_eq!(log.count(" sealed: "), 2, "sealed at the mark, and the rebuilt domain after the switch");
    // QEMU's account: the only root table latched after DMA started (the
    // new kernel's SRTP) is the first byte of the root-pgtables file of
    // QEMU's one VT-d unit (registers at 0xfed90000), as read from the image.
    assert!(!r.iommu.root_tables.is_empty(), "{:?}", r.iommu);
    assert_eq!(r.iommu.root_tables_outside_pkernfs, 0, "{:?}", r.iommu);
    assert_eq!(r.iommu.root_table_files, vec!["/iommu/dmar-fed90000/root-pgtables"; r.iommu.root_tables.len()], "{:?}", r.iommu);
}

/// Whether the run's host ran VT-d in scalable mode (QEMU's command line).
fn scalable(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("host/qemu.argv")).is_ok_and(|a| a.contains("x-scalable-mode=on"))
}

/// The kernel's own account of one persistent device (`bdf`, source id
/// `sid` in hex) through one update: root tables (and in scalable mode its
/// PASID directory and table) moved into pkernfs, the domain sealed, all
/// adopted in place by the next kernel in the mode the host ran, switched
/// atomically to the rebuilt domain.
fn adopted_in_place(log: &KernelLog, dir: &Path, bdf: &str, sid: &str) {
    let (mode, pasid_moved, pasid_adopted) = if scalable(dir) {
        ("scalable", format!("{bdf}: PASID directory and table now in iommu/dmar-fed90000/pasid-{sid}"), "adopted its PASID directory in pkernfs")
    } else {
        ("legacy", "context table(s) now in iommu/dmar-fed90000/root-pgtables".to_string(), "adopted as persistent")
    };
    let lines = [
        "context table(s) now in iommu/dmar-fed90000/root-pgtables".to_string(),
        pasid_moved,
        "kept in iommu/dmar-fed90000/root-pgtables".into(),
        "adopting it".into(),
        format!("in place ({mode} mode): 1 persistent context entry kept"),
        "adopted as persistent".into(),
        pasid_adopted.into(),
        "switched from frozen domain".into(),
        "sealed: ".into(),
    ];
    for line in &lines {
        assert!(log.contains(line), "kernel log lacks {line:?}");
    }
    assert_eq!(log.contains("translation never off (scalable mode)"), mode == "scalable", "the switch was the {mode}-mode one");
}

/// `live-update-rx-scalable`: the headline in VT-d scalable mode.
pub fn rx_scalable(r: &Report, dir: &Path) {
    assert!(scalable(dir), "the host ran in scalable mode");
    rx(r, dir);
}

/// `live-update-nvme-scalable`: NVMe reads through an update in scalable mode.
pub fn nvme_scalable(r: &Report, dir: &Path) {
    assert!(scalable(dir), "the host ran in scalable mode");
    nvme(r, dir);
    adopted_in_place(&KernelLog::of_run(&dir.join("host")), dir, "00:03.0", "0018");
}

/// `live-update-nvme`.
pub fn nvme(r: &Report, dir: &Path) {
    super::watcher::clean(r, dir);
    assert_eq!(r.live_updates, 1);
    assert_eq!((r.nvme.blocks_read, r.nvme.lost, r.nvme.corrupted), (4096, 0, 0), "{:?}", r.nvme);
    assert_eq!((r.iommu.faults, r.iommu.translation_disabled), (0, 0), "{:?}", r.iommu);
    assert_eq!(r.memory.unexpected_changes, 0, "{:?}", r.memory);
    let adopted = super::layout(dir, "layout-0000:00:03.0-update1.json");
    let h = adopted.persist.and_then(|p| p.resumed_nvme).expect("resumed from an NVMe hand-over");
    assert!(h.next > h.done, "commands were in flight at the hand-over: {h:?}");
    assert!(h.next < 4096 / 8, "the reads were not finished before the update: {h:?}");
}

/// `live-update-soak`.
pub fn soak(r: &Report, dir: &Path) {
    super::watcher::clean(r, dir);
    assert_eq!(r.live_updates, 20);
    assert_eq!(r.updates.len(), 20);
    assert_eq!((r.dma.lost, r.dma.corrupted, r.dma.delivered), (0, 0, r.dma.sent), "{:?}", r.dma);
    assert_eq!((r.iommu.faults, r.iommu.translation_disabled), (0, 0), "{:?}", r.iommu);
    // Frames can only land while no agent runs if the stream still runs:
    // on a loaded machine the last updates may come after its last frame.
    let last_sent = r.dma.last_sent_ms.expect("the injector wrote frames");
    let covered: Vec<_> = r.updates.iter().filter(|u| u.agent_up.is_some_and(|up| up <= last_sent)).collect();
    assert!(covered.len() >= 10, "only {} of 20 updates ended before the stream did (last frame at {last_sent} ms)", covered.len());
    for u in covered {
        assert!(u.dma_while_agent_down.unwrap_or(0) > 0, "update {}: the device stopped while no agent ran: {u:?}", u.index);
    }
}

/// `live-update-isolation`.
pub fn isolation(r: &Report, _: &Path) {
    let iso = r.isolation.as_ref().expect("the isolation oracle ran");
    assert_eq!((iso.foreign, iso.cross_device), (0, 0), "{iso:?}");
    for dev in ["0000:00:02.0", "0000:00:03.0"] {
        assert!(iso.translations.get(dev).copied().unwrap_or(0) > 0, "no translations traced for {dev}: {iso:?}");
    }
    assert_eq!((r.dma.lost, r.dma.corrupted), (0, 0), "{:?}", r.dma);
    assert_eq!((r.nvme.lost, r.nvme.corrupted, r.nvme.blocks_read), (0, 0, 2048), "{:?}", r.nvme);
    assert_eq!(r.iommu.faults, 0, "{:?}", r.iommu);
}

/// A resume the kernel refused to switch: attach failed with EINVAL, the
/// device stayed on its frozen domain (no fault, translation on, frames
/// still landing), the refusal logged as `refusal` and not as `other`.
fn switch_refused(r: &Report, dir: &Path, refusal: &str, other: &str) {
    assert!(r.reasons.iter().any(|s| s.contains("Invalid argument")), "{:#?}", r.reasons);
    assert_eq!((r.iommu.faults, r.iommu.translation_disabled), (0, 0), "{:?}", r.iommu);
    assert_eq!(r.dma.corrupted, 0, "{:?}", r.dma);
    assert!(r.updates[0].dma_while_agent_down.unwrap_or(0) > 0, "still translating through the frozen domain: {:?}", r.updates[0]);
    let log = KernelLog::of_run(&dir.join("host"));
    assert!(log.contains(refusal), "the kernel's refusal {refusal:?} is logged");
    assert!(!log.contains(other), "{other:?} is another refusal");
    assert!(!log.contains("switched from frozen domain"));
}

/// Negative control of the kernel's check before the atomic switch: the
/// resuming agent maps the buffers 2 MiB off. `live-update-remap-mismatch`.
pub fn remap_mismatch(r: &Report, dir: &Path) {
    switch_refused(r, dir, "rebuilt mappings differ from the frozen ones", "where the frozen one is");
}

/// Negative control of the switch check for permissions: the same pages at
/// the same IOVAs, rebuilt read-only. `live-update-read-only-rebuild`.
pub fn read_only_rebuild(r: &Report, dir: &Path) {
    switch_refused(r, dir, "is read-only where the frozen one is read-write: not switching", "rebuilt mappings differ from the frozen ones");
}

/// Negative control of the root-table oracle: a new kernel that copies the
/// VT-d tables out of pkernfs (kdump path, `lulab_vtd_adopt=copy`) keeps the
/// DMA going, but QEMU sees a root table outside the carve-out.
/// `live-update-root-copied`.
pub fn root_copied(r: &Report, dir: &Path) {
    assert!(r.iommu.root_tables_outside_pkernfs >= 1, "{:?}", r.iommu);
    assert!(r.reasons.iter().any(|s| s.contains("root table set outside pkernfs")), "{:#?}", r.reasons);
    // Only the root table is wrong: the device kept DMAing, nothing was lost.
    assert_eq!((r.dma.lost, r.dma.corrupted), (0, 0), "{:?}", r.dma);
    assert_eq!((r.iommu.faults, r.iommu.translation_disabled), (0, 0), "{:?}", r.iommu);
    let log = KernelLog::of_run(&dir.join("host"));
    assert!(log.contains("lulab_vtd_adopt=copy: copying the tables out of pkernfs"), "the knob took effect");
}

/// The unseal/reseal path: mappings changed on a sealed persistent domain
/// before each of two updates; each change puts the device back on the live
/// tables, each kexec seals the domain again, nothing is lost.
/// `live-update-remap`.
pub fn remap(r: &Report, dir: &Path) {
    assert_eq!(r.live_updates, 2);
    assert_eq!((r.dma.lost, r.dma.corrupted), (0, 0), "{:?}", r.dma);
    assert_eq!((r.iommu.faults, r.iommu.translation_disabled, r.iommu.root_tables_outside_pkernfs), (0, 0, 0), "{:?}", r.iommu);
    assert!(r.updates.iter().all(|u| u.dma_while_agent_down.unwrap_or(0) > 0), "{:?}", r.updates);
    let log = KernelLog::of_run(&dir.join("host"));
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
/// `live-update-isolation-nonpersistent`.
pub fn isolation_nonpersistent(r: &Report, dir: &Path) {
    assert_eq!(r.live_updates, 1);
    assert_eq!((r.dma.lost, r.dma.corrupted, r.dma.delivered), (0, 0, r.dma.sent), "{:?}", r.dma);
    assert_eq!((r.nvme.blocks_read, r.nvme.lost, r.nvme.corrupted), (16384, 0, 0), "{:?}", r.nvme);
    // Reads were unfinished at the kexec; the next agent read on from where they stood.
    let [restart] = r.nvme.restarts.as_slice() else { panic!("one NVMe restart expected: {:?}", r.nvme) };
    assert!(restart.resumed_at_lba > 0 && restart.resumed_at_lba < 16384, "{restart:?}");
    let retaken = super::layout(dir, &format!("layout-{NVME}-update1.json"));
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
    let log = KernelLog::of_run(&dir.join("host"));
    assert!(log.contains(&format!("{NVME}: not persistent: stopped before kexec")), "the agent quiesced the NVMe before the kexec");
}

/// Negative control of the isolation oracle: the same run with the NVMe's
/// buffer IOVAs mapping the e1000e's guest-RAM file; every oracle must see it.
/// `live-update-isolation-breach`.
pub fn isolation_breach(r: &Report, _: &Path) {
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

/// `luo-memfd-rx`: upstream's LUO keeps the memory, not the DMA (the same
/// stream as `live-update-rx`; `lulab compare` puts the two side by side).
pub fn luo_memfd(luo: &Report, dir: &Path) {
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
    super::one_update_with_the_device_stopped(luo, "lulab");
    assert!(luo.reasons.iter().any(|r| r.contains("LUO kept the memory but not the device")), "{:#?}", luo.reasons);
    let log = KernelLog::of_run(&dir.join("host"));
    assert!(log.contains("liveupdate number"), "the next kernel retrieved LUO state from KHO");
}
