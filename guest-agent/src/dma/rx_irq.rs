//! The e1000e RX engine's interrupts (`RxInterrupts::Msix`): the RX queue's
//! cause (`RXQ0`) goes to MSI-X vector 0 (IVAR), which vfio-pci routes to an
//! eventfd ([`MsixEventfd`]). The device masks the cause itself when it
//! sends (EIAC auto-clear/auto-mask with `CTRL_EXT.IAME` clear); the engine
//! reads the ring only after an interrupt and enables the cause again
//! (IMS) once it has, so a frame arriving meanwhile raises the next one.
//!
//! Markers for the harness's interrupt oracle, which reads QEMU's trace
//! and never the agent: the engine writes [`MARK_LIVE`] to `FCTTV` (a
//! flow-control timer register nothing here uses; QEMU traces every
//! register write) before it routes the vector, and [`MARK_DONE`] after
//! its last read of the eventfd. An interrupt the device delivers between
//! an engine's two markers reached an eventfd that engine reads; one
//! delivered outside every such span reached no agent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::e1000e::reg;
use super::irq::MsixEventfd;
use super::vfio::{Bar, Device};

/// `ICR.RXQ0`: receive queue 0 (the RX cause in MSI-X mode).
const RXQ0: u32 = 1 << 20;
/// `CTRL_EXT.IAME`: set, QEMU would not auto-mask on send.
const CTRL_EXT_IAME: u32 = 1 << 27;
/// `CTRL_EXT.EIAME`.
const CTRL_EXT_EIAME: u32 = 1 << 24;
/// `IVAR`: RxQ0 → vector 0, entry valid.
const IVAR_RXQ0_VEC0: u32 = 0x8;

/// `FCTTV` value (high nibble) an engine writes before it takes interrupts;
/// the low 12 bits are its generation (hand-overs before it).
pub const MARK_LIVE: u32 = 0xa000;
/// `FCTTV` value (high nibble) an engine writes after its last eventfd read.
pub const MARK_DONE: u32 = 0xd000;

/// How long the device must stay quiet once the cause is masked before
/// the last read (QEMU's EITR timer can still send one ~128 µs later).
const QUIET: Duration = Duration::from_millis(10);

/// A running engine's interrupt state.
#[derive(Debug)]
pub struct RxIrq {
    fd: MsixEventfd,
    /// Interrupts the agents before this one received (hand-over).
    base: u64,
    here: AtomicU64,
    empty_wakes: AtomicU64,
    left_armed: bool,
    generation: u32,
}

impl RxIrq {
    /// Marks the engine live, routes vector 0 to a new eventfd and points
    /// the RX cause at it (the cause itself stays masked until [`RxIrq::arm`]).
    pub fn take(dev: &Device, bar: &Bar, (base, generation): (u64, u32), left_armed: bool) -> Result<Self, String> {
        bar.write32(reg::FCTTV, MARK_LIVE | (generation & 0xfff));
        let fd = MsixEventfd::route(dev, 0)?;
        bar.write32(reg::CTRL_EXT, bar.read32(reg::CTRL_EXT) & !(CTRL_EXT_IAME | CTRL_EXT_EIAME));
        bar.write32(reg::IVAR, IVAR_RXQ0_VEC0);
        bar.write32(reg::EIAC, RXQ0);
        crate::port::kmsg(&format!("lulab-agent: e1000e {}: RX interrupts on MSI-X vector 0 (eventfd), generation {generation}", dev.pci));
        Ok(Self { fd, base, here: AtomicU64::new(0), empty_wakes: AtomicU64::new(0), left_armed, generation })
    }

    /// Enables the RX cause: a cause already pending (frames that arrived
    /// while it was masked) raises an interrupt at once.
    pub fn arm(&self, bar: &Bar) {
        bar.write32(reg::IMS, RXQ0);
    }

    /// Waits up to `timeout`; true when an interrupt arrived.
    pub fn wait(&self, timeout: Duration) -> bool {
        let n = self.fd.wait(timeout);
        self.here.fetch_add(n, Ordering::Relaxed);
        n > 0
    }

    /// Counts a wake-up that found no new frame (the device's throttling
    /// timer sends a second message after most interrupts).
    pub fn count_empty(&self) {
        self.empty_wakes.fetch_add(1, Ordering::Relaxed);
    }

    /// Interrupts received by every agent so far.
    pub fn received(&self) -> u64 {
        self.base + self.here.load(Ordering::Relaxed)
    }

    /// The engine stops taking interrupts: masks the cause, reads what is
    /// still on its way until the device is quiet, and marks itself done.
    /// Frames arriving later leave the cause pending in the device (with
    /// the fault `irq_left_armed` the cause is enabled again after the
    /// marker: the next frame raises an interrupt no agent reads). Returns
    /// the interrupts received by every agent so far.
    pub fn finish(&self, bar: &Bar) -> u64 {
        bar.write32(reg::IMC, RXQ0);
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.wait(QUIET) && Instant::now() < deadline {}
        bar.write32(reg::FCTTV, MARK_DONE | (self.generation & 0xfff));
        if self.left_armed {
            // After the marker: what the cause raises from here on reaches
            // an eventfd nobody reads, then the old kernel's vector.
            self.arm(bar);
        }
        self.received()
    }

    /// Counters for `dma_status`.
    pub fn counters(&self) -> Vec<(String, u64)> {
        vec![
            ("irq_received".into(), self.received()),
            ("irq_received_here".into(), self.here.load(Ordering::Relaxed)),
            ("irq_pending".into(), u64::from(self.fd.pending())),
            ("irq_empty_wakes".into(), self.empty_wakes.load(Ordering::Relaxed)),
        ]
    }
}
