//! What a scenario file cannot say, per file stem: run after the generic
//! verdict check on the same report and run directory. Only evidence beyond
//! the verdict belongs here (the verdict is asserted once, in `main.rs`).

mod agent_kill;
mod guest_ram;
mod interrupts;
mod kernel;
mod live_update;
mod pkernfs;
mod stock;
mod watcher;

use std::path::Path;

use lulab::report::Report;

/// Checks on a finished run: its report and its run directory.
pub type Check = fn(&Report, &Path);

/// Every stem with checks, and its checks.
const ALL: &[(&str, Check)] = &[
    ("baseline-rx", stock::baseline_rx),
    ("stock-kexec-rx", stock::stock_kexec_rx),
    ("iommu-fault-rx", stock::iommu_fault_rx),
    ("lulab-baseline-rx", kernel::lulab_baseline_rx),
    ("lulab-kexec-rx", kernel::lulab_kexec_rx),
    ("kernel-boot", kernel::kernel_boot),
    ("live-update-rx", live_update::rx),
    ("live-update-rx-smp4-caching", live_update::rx_smp4_caching),
    ("live-update-rx-high-carveout", live_update::rx_high_carveout),
    ("live-update-nvme", live_update::nvme),
    ("live-update-rx-scalable", live_update::rx_scalable),
    ("live-update-rx-irq", interrupts::kept),
    ("live-update-rx-irq-left-armed", interrupts::left_armed),
    ("live-update-rx-irq-ir-not-kept", interrupts::ir_not_kept),
    ("live-update-nvme-scalable", live_update::nvme_scalable),
    ("live-update-soak", live_update::soak),
    ("live-update-isolation", live_update::isolation),
    ("live-update-remap-mismatch", live_update::remap_mismatch),
    ("live-update-read-only-rebuild", live_update::read_only_rebuild),
    ("live-update-read-only-rebuild-scalable", live_update::read_only_rebuild),
    ("live-update-root-copied", live_update::root_copied),
    ("live-update-remap", live_update::remap),
    ("live-update-isolation-nonpersistent", live_update::isolation_nonpersistent),
    ("live-update-isolation-breach", live_update::isolation_breach),
    ("luo-memfd-rx", live_update::luo_memfd),
    ("pkernfs-kexec", pkernfs::kexec),
    ("pkernfs-corrupt", pkernfs::corrupt),
    ("pkernfs-stock-roundtrip", pkernfs::stock_roundtrip),
    ("pkernfs-mount-64m", pkernfs::mount_64m),
    ("pkernfs-mount-256m", pkernfs::mount_256m),
    ("pkernfs-mount-1g", pkernfs::mount_1g),
    ("plugin-catches-write", watcher::catches_write),
    ("live-update-guest-ram", guest_ram::kept_in_pkernfs),
    ("copy-update-guest-ram", guest_ram::copied),
    ("copy-update-no-save", guest_ram::not_kept),
    ("fault-agent-kill", agent_kill::restarted),
    ("fault-agent-kill-nonpersistent", agent_kill::not_kept),
    ("fault-agent-kill-handed-over", agent_kill::after_hand_over),
];

/// Stems that have checks.
pub const NAMES: [&str; ALL.len()] = {
    let mut v = [""; ALL.len()];
    let mut i = 0;
    while i < ALL.len() {
        v[i] = ALL[i].0;
        i += 1;
    }
    v
};

/// The checks for `stem`, if it has any.
pub fn for_scenario(stem: &str) -> Option<Check> {
    ALL.iter().find(|(s, _)| *s == stem).map(|(_, c)| *c)
}

/// The timeline of a broken control: one update to `kernel`, frames before
/// the kexec and none DMAed while no agent ran (the device stopped). Only
/// what the device did is asserted, never whether a message arrived: a lost
/// reply to `kexec_exec` is bounded by the request and named as such.
pub fn one_update_with_the_device_stopped(r: &Report, kernel: &str) {
    assert_eq!(r.updates.len(), 1, "{:#?}", r.updates);
    let u = &r.updates[0];
    assert_eq!((u.index, u.kernel.as_str()), (1, kernel));
    assert!(u.last_dma_before.is_some(), "frames flowed before the kexec: {u:?}");
    assert_eq!(u.dma_while_agent_down, Some(0), "the device stopped: {u:?}");
}

/// A layout file the agent wrote into the run directory.
pub fn layout(dir: &Path, file: &str) -> lulab_proto::DmaLayout {
    let p = dir.join(file);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}
