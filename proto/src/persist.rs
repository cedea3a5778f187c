//! The memory backings of a persistent DMA engine and what the next
//! kernel's agent reports of an upstream (LUO) one.

use serde::{Deserialize, Serialize};

/// Where a persistent engine's agent leaves the hand-over for the next
/// kernel's agent: beside its file (`file` a path in the host, or in the
/// pkernfs image: the harness finds it there from outside).
pub fn handover_path(file: &str) -> String {
    format!("{file}.handover")
}

/// What keeps a persistent engine's memory across kexec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PersistBacking {
    /// A pkernfs file; the device is marked persistent (`IOMMU_OPTION_PERSISTENT`,
    /// our kernel): translation and bus master stay on through kexec.
    #[default]
    Pkernfs,
    /// Upstream's Live Update Orchestrator: a memfd preserved in a LUO
    /// session (`/dev/liveupdate`) with the hand-over in a second memfd.
    /// The memory survives; nothing keeps the device's DMA going.
    LuoMemfd,
}

/// What the agent of the next kernel found of a LUO-preserved engine
/// (its own account; the harness judges the DMA from outside).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LuoFindings {
    /// The LUO session retrieved (`LIVEUPDATE_IOCTL_RETRIEVE_SESSION`).
    pub session: String,
    /// Pages of the retrieved memfd (ring, buffers, canary).
    pub memfd_pages: u64,
    /// Frames the previous agent held (completed, not handed back) and
    /// hashed with their descriptors at the hand-over.
    pub frames_checked: u32,
    /// Of those, frames whose descriptor and buffer are unchanged.
    pub frames_intact: u32,
    /// The canary (never mapped for the device) hashes as at the hand-over.
    pub canary_intact: bool,
    /// The memfd's pages (`/proc/self/pagemap`) are the physical pages they
    /// were at the hand-over.
    pub same_physical_pages: bool,
    /// The driver bound to the NIC when the new agent took it (`None`: none).
    pub driver_before: Option<String>,
    /// PCI COMMAND bus master when the new agent opened the device.
    pub bus_master: bool,
    /// `RCTL.EN` when the new agent opened the device.
    pub rx_enabled: bool,
    /// `RDBAH:RDBAL` found (the agent programmed its ring IOVA).
    pub ring_base: u64,
    /// `RDLEN` found.
    pub ring_len: u32,
    /// How the device differs from the one handed over, one line each
    /// (empty: resumable).
    pub broken: Vec<String>,
}
