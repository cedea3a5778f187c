//! Findings: why a run is broken, each with a reason from a closed list a
//! scenario can name (`expect_reasons`) and a line for people.

use serde::{Deserialize, Serialize};

/// Why a run is broken (or, for [`Reason::RunError`], could not be carried
/// out). The list is closed: scenarios name these in `expect_reasons`, and
/// report.json's `findings[].reason` carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Reason {
    /// The run stopped before its steps were done for a cause outside the
    /// system under test (the outcome is `error`).
    #[serde(rename = "run.error")]
    RunError,
    /// Frames sent to the NIC never reached the agent's buffers.
    #[serde(rename = "dma.lost")]
    DmaLost,
    /// Frames in the agent's buffers do not hold what was sent.
    #[serde(rename = "dma.corrupted")]
    DmaCorrupted,
    /// The NIC stopped taking frames (QEMU stopped reading its backend).
    #[serde(rename = "dma.stalled")]
    DmaStalled,
    /// Duplicate frames, or frames nobody sent, in the buffers.
    #[serde(rename = "dma.unexpected")]
    DmaUnexpected,
    /// NVMe blocks that never arrived.
    #[serde(rename = "nvme.lost")]
    NvmeLost,
    /// NVMe blocks with the wrong data.
    #[serde(rename = "nvme.corrupted")]
    NvmeCorrupted,
    /// Agent pages (DMA buffers, canary) changed although no device may write them.
    #[serde(rename = "memory.changed")]
    MemoryChanged,
    /// A guest CPU stored into persistent memory where the phase of the run
    /// allows no such store (the CPU-write watcher, `watch_persistent_memory`).
    #[serde(rename = "memory.cpu_write")]
    MemoryCpuWrite,
    /// VT-d faults (QEMU's trace or the guest's log).
    #[serde(rename = "iommu.fault")]
    IommuFault,
    /// VT-d translation switched off while a device was in use.
    #[serde(rename = "iommu.translation_off")]
    IommuTranslationOff,
    /// A root table outside pkernfs latched after DMA started.
    #[serde(rename = "iommu.root_outside_pkernfs")]
    IommuRootOutsidePkernfs,
    /// Fewer root-table latches than live updates: no evidence of adoption.
    #[serde(rename = "iommu.root_not_adopted")]
    IommuRootNotAdopted,
    /// DMA translated outside the device's own pages (isolation oracle).
    #[serde(rename = "isolation.breach")]
    IsolationBreach,
    /// A device's translations missing from the trace (isolation oracle).
    #[serde(rename = "isolation.untraced")]
    IsolationUntraced,
    /// KUnit tests failed, or their KTAP output stopped mid-way.
    #[serde(rename = "kunit.failed")]
    KunitFailed,
    /// The new agent could not take its engine over after an update
    /// (refused by the kernel, no hand-over, memory moved, file not pinned).
    #[serde(rename = "update.resume_failed")]
    UpdateResumeFailed,
    /// The kernel loaded a kexec image that is not a kernel.
    #[serde(rename = "update.bad_image_loaded")]
    UpdateBadImageLoaded,
    /// A DMA-backing pkernfs file was not refused unlink/truncate (EBUSY).
    #[serde(rename = "pkernfs.not_busy")]
    PkernfsNotBusy,
    /// A pkernfs file or the fill tree holds the wrong size or data, inside or outside.
    #[serde(rename = "pkernfs.data")]
    PkernfsData,
    /// pkernfs refused to mount an intact image after an update.
    #[serde(rename = "pkernfs.mount_refused")]
    PkernfsMountRefused,
    /// The carve-out changed (or was taken as System RAM) where nothing may write it.
    #[serde(rename = "pkernfs.carveout_changed")]
    PkernfsCarveoutChanged,
    /// A corrupted image was accepted, or refused the wrong way.
    #[serde(rename = "pkernfs.corruption_mishandled")]
    PkernfsCorruptionMishandled,
    /// Upstream LUO kept the memory but not the device, or not even the memory.
    #[serde(rename = "luo.not_kept")]
    LuoNotKept,
    /// The kernel printed a warning, BUG, oops, sanitizer or lockdep
    /// report, RCU stall or hung task (the kernel-log oracle).
    #[serde(rename = "kernel.warning")]
    KernelWarning,
    /// A kernel of the run panicked (the first boot's or a kexec'd one):
    /// the steps after it could not run.
    #[serde(rename = "kernel.panic")]
    KernelPanic,
    /// The VM's guest RAM (`[guest_ram]`) was missing, short or changed
    /// after a live update (inside, or outside from the RAM file).
    #[serde(rename = "guest_ram.changed")]
    GuestRamChanged,
    /// The device delivered an interrupt that no agent received: it
    /// reached a CPU while no agent's eventfd was routed from it, or never
    /// reached one (QEMU's trace; the interrupt oracle).
    #[serde(rename = "irq.lost")]
    IrqLost,
    /// Interrupt remapping was switched off while a persistent device's
    /// interrupts were routed through it (`vtd_ir_enable 0` after an engine
    /// took them): its handles pointed at nothing meanwhile.
    #[serde(rename = "irq.remapping_off")]
    IrqRemappingOff,
}

impl Reason {
    /// Every reason, in documentation order.
    pub const ALL: &'static [Reason] = &[
        Reason::RunError,
        Reason::DmaLost,
        Reason::DmaCorrupted,
        Reason::DmaStalled,
        Reason::DmaUnexpected,
        Reason::NvmeLost,
        Reason::NvmeCorrupted,
        Reason::MemoryChanged,
        Reason::MemoryCpuWrite,
        Reason::IommuFault,
        Reason::IommuTranslationOff,
        Reason::IommuRootOutsidePkernfs,
        Reason::IommuRootNotAdopted,
        Reason::IsolationBreach,
        Reason::IsolationUntraced,
        Reason::KunitFailed,
        Reason::UpdateResumeFailed,
        Reason::UpdateBadImageLoaded,
        Reason::PkernfsNotBusy,
        Reason::PkernfsData,
        Reason::PkernfsMountRefused,
        Reason::PkernfsCarveoutChanged,
        Reason::PkernfsCorruptionMishandled,
        Reason::LuoNotKept,
        Reason::KernelWarning,
        Reason::KernelPanic,
        Reason::GuestRamChanged,
        Reason::IrqLost,
        Reason::IrqRemappingOff,
    ];

    /// The name scenarios and report.json use (`dma.lost`).
    pub fn name(self) -> String {
        crate::wire_name(&self)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// One finding: its reason and what exactly was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{detail}")]
pub struct Finding {
    /// From the closed list.
    pub reason: Reason,
    /// For people: counts, addresses, the first lines quoted.
    pub detail: String,
}

impl Finding {
    /// A finding of `reason`.
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Self { reason, detail: detail.into() }
    }

    /// `Err(Finding)` as an `anyhow` result, for a step that found the
    /// system under test failing.
    pub fn err<T>(reason: Reason, detail: impl Into<String>) -> anyhow::Result<T> {
        Err(Self::new(reason, detail).into())
    }

    /// The finding in `e`'s chain (with any context added on the way up).
    pub fn in_chain(e: &anyhow::Error) -> Option<&Finding> {
        e.chain().find_map(|c| c.downcast_ref::<Finding>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_a_dotted_name_and_round_trips() {
        let mut seen = std::collections::BTreeSet::new();
        for r in Reason::ALL {
            let n = r.name();
            assert!(n.contains('.') && seen.insert(n.clone()), "{n}");
            let back: Reason = serde_json::from_value(serde_json::Value::String(n)).unwrap();
            assert_eq!(back, *r);
        }
    }

    #[test]
    fn the_documented_list_names_every_reason() {
        let doc = std::fs::read_to_string(crate::workspace_root().join("scenarios/README.md")).unwrap();
        for r in Reason::ALL {
            assert!(doc.contains(&format!("`{r}`")), "scenarios/README.md does not document `{r}`");
        }
    }
}
