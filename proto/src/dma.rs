//! DMA engine configuration, persistence across kexec, and what the agent
//! reports back about it.

use serde::{Deserialize, Serialize};

use crate::persist::{LuoFindings, PersistBacking};

/// Which device and how to drive it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "device", rename_all = "snake_case")]
pub enum DmaConfig {
    /// e1000e RX: legacy descriptors, one buffer per descriptor (descriptor
    /// `i` always points at buffer `i`; a buffer holds the whole frame from
    /// the Ethernet header on, the descriptor's `length` excludes the CRC).
    ///
    /// Refill contract: a completed descriptor is handed back to the device
    /// only while the agent still holds the `ring_size / 2` most recent
    /// completions and at least 250 ms after the agent saw it complete, so
    /// the harness (scanning the RAM file every ~100 ms) sees every frame
    /// before its buffer can be reused. Without `refill` every descriptor is
    /// used once (`ring_size - 1` frames, RDT stays one behind RDH).
    E1000eRx {
        /// PCI address, e.g. `0000:00:02.0`.
        pci: String,
        /// Descriptors in the RX ring (multiple of 8).
        ring_size: u32,
        /// Bytes per receive buffer (2048).
        buf_size: u32,
        /// Keep refilling descriptors as they complete.
        refill: bool,
        /// Which kernel interface maps memory for the device.
        iommu: IommuApi,
        /// Fault injection: the last `unmapped_slots` descriptors point at an
        /// IOVA with nothing mapped, so the device's writes there must fault in
        /// the IOMMU (the IOMMU oracle's negative control). 0 in real runs.
        #[serde(default)]
        unmapped_slots: u32,
        /// Live update: keep ring, buffers and the agent's canary in a
        /// pkernfs file and the device's translation across kexec (our
        /// kernel, iommufd). `None`: anonymous memory, nothing persists.
        #[serde(default)]
        persist: Option<PersistSpec>,
        /// How the engine learns of received frames (default: it polls the ring).
        #[serde(default)]
        interrupts: RxInterrupts,
        /// Fault injection (false in real runs): with MSI-X, hand over with
        /// the RX interrupt still enabled in the device, so interrupts
        /// raised while no agent runs go to the old kernel's vector.
        #[serde(default)]
        irq_left_armed: bool,
    },
    /// NVMe: read each LBA of namespace 1 in `[lba_start, lba_start +
    /// lba_count)` exactly once, `blocks_per_cmd` per Read command, into its
    /// own buffer slot: slot `i` (at `buffers.iova + i * buf_size`, where
    /// `buf_size = blocks_per_cmd * LBA size`) holds LBAs
    /// `lba_start + i * blocks_per_cmd ..` (the last slot may be short).
    /// The I/O completion queue is the layout's `ring`; admin queues,
    /// identify page, I/O SQ and PRP lists are in `dma_pages` only.
    NvmeRead {
        /// PCI address, e.g. `0000:00:03.0`.
        pci: String,
        /// Logical blocks per read command (at most the controller's MDTS).
        blocks_per_cmd: u32,
        /// First LBA read.
        lba_start: u64,
        /// Number of LBAs read (each once).
        lba_count: u64,
        /// Commands kept in flight (1..=1023, capped by the controller's MQES).
        queue_depth: u32,
        /// Which kernel interface maps memory for the device.
        iommu: IommuApi,
        /// Live update: admin area, queues, buffers and canary in a pkernfs
        /// file, the controller kept enabled across kexec (see `E1000eRx`).
        #[serde(default)]
        persist: Option<PersistSpec>,
        /// Fault injection (the isolation oracle's negative control; `None`
        /// in real runs, only without `persist`, iommufd only): map this
        /// file (e.g. another engine's guest RAM in pkernfs) from offset 0 at
        /// the buffers' IOVA, for at most the buffers' length, instead of the
        /// agent's own buffer memory; the rest of the buffers stays the
        /// agent's. The layout still reports the agent's buffers, so reads
        /// DMAed into the file show up as another device's pages.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        buffers_alias: Option<String>,
    },
}

/// How an RX engine learns that frames arrived.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RxInterrupts {
    /// Its thread polls the ring's descriptors (the device's interrupts masked).
    #[default]
    Poll,
    /// MSI-X vector 0 through a VFIO eventfd, as a VMM takes a device's
    /// interrupts: one interrupt per batch, auto-masked by the device when
    /// sent and enabled again once the engine has read the ring; the ring
    /// is read only when an interrupt arrived. At a hand-over the interrupt
    /// is masked in the device (frames arriving set its cause, pending),
    /// and the resuming engine unmasks it.
    Msix,
}

/// The userspace DMA-mapping interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IommuApi {
    /// iommufd where the kernel has `/dev/iommu`, else the type1 container.
    Auto,
    /// `/dev/iommu` + the VFIO device cdev.
    Iommufd,
    /// `/dev/vfio/vfio` container + group.
    Type1,
}

/// Where a persistent DMA engine keeps its memory, and whether it starts
/// fresh or adopts a device left running by the previous kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistSpec {
    /// The pkernfs file (e.g. `/mnt/pkernfs/guest-ram-0000:00:02.0`): ring at
    /// offset 0, buffers after it, then the canary; the agent mounts pkernfs
    /// at its directory if needed and creates the file on a fresh start.
    pub file: String,
    /// Adopt after a live update: read the hand-over state the previous
    /// agent wrote (`<file>.handover`), map the same file at the same IOVAs,
    /// attach (the kernel switches from the frozen domain) and go on
    /// refilling the same ring. `false`: program the device from scratch.
    pub resume: bool,
    /// Fault injection (0 in real runs): on resume, map the buffers this
    /// many bytes above their IOVA, so the rebuilt mappings differ from the
    /// frozen ones and the kernel must refuse to switch.
    #[serde(default)]
    pub iova_skew: u64,
    /// Fault injection (false in real runs): on resume, map the buffers
    /// readable only by the device, so the rebuilt mappings' permissions
    /// differ from the frozen ones and the kernel must refuse to switch.
    #[serde(default)]
    pub read_only: bool,
    /// What keeps the memory across kexec (default: pkernfs). With
    /// [`PersistBacking::LuoMemfd`], `file` is the memfd's name and the LUO
    /// session's name.
    #[serde(default)]
    pub backing: PersistBacking,
}

/// What an agent leaves in pkernfs (`<file>.handover`, JSON) for the agent
/// of the next kernel, written after its polling stopped and just before
/// kexec. Ring positions are descriptor indices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    /// PCI address of the device.
    pub pci: String,
    /// Descriptors in the ring.
    pub ring_size: u32,
    /// Bytes per buffer.
    pub buf_size: u32,
    /// Refill mode of the engine.
    pub refill: bool,
    /// Next descriptor the agent expects the device to complete.
    pub next: u32,
    /// The value last written to RDT (first descriptor the device does not own).
    pub tail: u32,
    /// Descriptors the agent held (completed, not yet handed back).
    pub held: u32,
    /// Completions seen by every agent so far.
    pub completed: u64,
    /// Descriptors handed back by every agent so far.
    pub refilled: u64,
    /// Hand-overs so far (1 after the first live update).
    pub generation: u32,
    /// `CLOCK_REALTIME` ns when polling stopped.
    pub stopped_ns: u64,
    /// MSI-X interrupts every agent so far received (engines with
    /// [`RxInterrupts::Msix`]; 0 otherwise).
    #[serde(default)]
    pub irq_received: u64,
}

/// A guest-physical range (an offset into the host's RAM file once mapped
/// through the machine's memory layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhysRange {
    /// Guest-physical start address.
    pub gpa: u64,
    /// Length in bytes.
    pub len: u64,
}

/// Where the device's DMA lands, as the agent set it up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmaLayout {
    /// PCI address of the device.
    pub pci: String,
    /// The interface actually used.
    pub iommu: IommuApi,
    /// Descriptor ring (e1000e RX ring, or the NVMe completion queue).
    pub ring: DmaRegion,
    /// Data buffers: buffer `i` starts at `buffers.iova + i * buf_size`.
    pub buffers: DmaRegion,
    /// Bytes per buffer.
    pub buf_size: u32,
    /// Number of buffers (= ring size for e1000e).
    pub buf_count: u32,
    /// Every page mapped for the device (the device may write only these;
    /// includes page padding after ring/buffers and NVMe admin structures).
    pub dma_pages: Vec<PhysRange>,
    /// Other agent pages the device must never write (for the memory oracle's
    /// "unexpected change" check): a 16 KiB canary region, never mapped for
    /// the device, filled with the repeated ASCII pattern `lulab-canary-never-dma-`.
    pub canary: Vec<PhysRange>,
    /// Set for a persistent engine: its memory is a pkernfs file, and the
    /// `phys` lists above are empty (the agent cannot see physical
    /// addresses of pkernfs pages; the harness finds them in the image);
    /// or a LUO memfd, whose `phys` lists the agent fills.
    #[serde(default)]
    pub persist: Option<PersistLayout>,
}

/// Where a persistent engine's regions are in its pkernfs file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistLayout {
    /// Path inside the guest (under the pkernfs mount).
    pub file: String,
    /// Path relative to the pkernfs root (for the host-side parser).
    pub image_path: String,
    /// File offset of the ring (`ring.len` bytes).
    pub ring_offset: u64,
    /// File offset of the buffers (`buffers.len` bytes).
    pub buffers_offset: u64,
    /// File offset and length of the canary (never mapped for the device).
    pub canary_offset: u64,
    /// Canary length in bytes.
    pub canary_len: u64,
    /// Whether the kernel accepted the device as persistent.
    pub persistent: bool,
    /// Hand-over the engine resumed from (`None` on a fresh start).
    pub resumed_from: Option<Handover>,
    /// Every file range mapped for the device (offset, length), in IOVA
    /// order of the regions; the memory oracle's DMA pages.
    #[serde(default)]
    pub mapped: Vec<(u64, u64)>,
    /// NVMe: the hand-over the engine resumed from.
    #[serde(default)]
    pub resumed_nvme: Option<NvmeHandover>,
    /// What keeps the memory (a memfd's `phys` lists are filled by the agent
    /// from `/proc/self/pagemap`; `image_path` is then empty).
    #[serde(default)]
    pub backing: PersistBacking,
    /// LUO only, after a live update: what the new agent found.
    #[serde(default)]
    pub luo: Option<Box<LuoFindings>>,
}

/// What an NVMe read engine leaves for the next kernel's agent
/// (`<file>.handover`, JSON): the controller stays enabled with its queues,
/// commands submitted and not yet reaped complete into pkernfs memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvmeHandover {
    /// PCI address of the controller.
    pub pci: String,
    /// First LBA read.
    pub lba_start: u64,
    /// LBAs read in all.
    pub lba_count: u64,
    /// LBAs per Read command.
    pub blocks_per_cmd: u32,
    /// Bytes per LBA (from Identify).
    pub lba_size: u32,
    /// Commands kept in flight.
    pub queue_depth: u16,
    /// I/O queue entries.
    pub qsize: u16,
    /// Doorbell stride in bytes.
    pub stride: u32,
    /// I/O SQ tail (next slot the agent fills).
    pub sq_tail: u16,
    /// I/O CQ head (next entry the agent reads) and its phase.
    pub cq_head: u16,
    /// Expected phase bit at `cq_head`.
    pub cq_phase: bool,
    /// Next slot (command) to submit.
    pub next: u64,
    /// Completions reaped so far.
    pub done: u64,
    /// Command ids not in flight.
    pub free: Vec<u16>,
    /// Hand-overs so far.
    pub generation: u32,
    /// `CLOCK_REALTIME` ns when polling stopped.
    pub stopped_ns: u64,
}

/// One IOMMU-mapped region and where it lives in guest-physical memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmaRegion {
    /// Device-visible address.
    pub iova: u64,
    /// Length in bytes.
    pub len: u64,
    /// Backing guest-physical chunks, in IOVA order.
    pub phys: Vec<PhysRange>,
}

/// Counters of the running DMA engine (agent side: a hint; the harness
/// judges from the RAM file and QEMU).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmaStatus {
    /// Completions the agent saw (descriptors with DD set / NVMe CQEs).
    pub completed: u64,
    /// e1000e: descriptors handed back to the device; NVMe: commands
    /// submitted after the first `queue_depth`.
    pub refilled: u64,
    /// Device statistics read by the agent (name → value). e1000e: the
    /// read-to-clear registers `MPC`, `RNBC`, `GPRC`, `GORCL`, `GORCH`, `TPR`,
    /// accumulated since start. NVMe: `lba_size`, `commands_planned`,
    /// `queue_depth`. Both: `completion_errors` (descriptors with error bits /
    /// CQEs with a non-zero status) and `quiesce_failed` after a failed stop.
    /// e1000e also: where the ring is now, `ring_rdh`, `ring_rdt` (the
    /// device's registers) and `agent_next`, `agent_tail`, `agent_held`.
    pub device_counters: Vec<(String, u64)>,
    /// Whether the polling thread runs (NVMe: false once every read completed).
    pub running: bool,
}

impl DmaConfig {
    /// The PCI address of the device this configuration drives.
    pub fn pci(&self) -> &str {
        match self {
            DmaConfig::E1000eRx { pci, .. } | DmaConfig::NvmeRead { pci, .. } => pci,
        }
    }
}
