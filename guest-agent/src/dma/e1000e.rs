//! e1000e RX through VFIO: legacy descriptors, one buffer per descriptor
//! (descriptor `i` always points at buffer `i`), polled, or woken by the
//! device's MSI-X interrupt through a VFIO eventfd (see `rx_irq`).
//!
//! Refill contract (what the harness's ledger relies on): the agent hands a
//! completed descriptor back to the device only when
//! - at least `ring_size / 2` newer completions are still held by the agent
//!   (the most recent half of the ring is never touched), and
//! - the agent saw its completion at least [`HOLD`] ago,
//!
//! so a frame stays readable in its buffer for at least [`HOLD`] (the harness
//! scans the RAM file every ~100 ms). When the device runs out of descriptors
//! QEMU stops reading the netdev socket (back-pressure) and counts RNBC.
//! Without `refill` every descriptor is used once: `ring_size - 1` frames.

use std::collections::BTreeMap;
use std::sync::atomic::{compiler_fence, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lulab_proto::{DmaLayout, IommuApi};

use super::guest_ram::GuestRam;
use super::mem::DmaMem;
use super::vfio::{Bar, Device};
use super::{Driver, Progress};

/// Minimum time a completed buffer is left untouched before reuse.
pub const HOLD: Duration = Duration::from_millis(250);

/// IOVA of the descriptor ring.
pub(super) const RING_IOVA: u64 = 0x1000_0000;
/// IOVA of the receive buffers.
pub(super) const BUF_IOVA: u64 = 0x2000_0000;
/// Fault injection target: never mapped.
const UNMAPPED_IOVA: u64 = 0x7000_0000;
/// Bytes per legacy RX descriptor.
pub(super) const DESC: u64 = 16;

/// Register offsets (QEMU hw/net/e1000x_regs.h).
pub(super) mod reg {
    pub const CTRL: usize = 0x0000;
    pub const CTRL_EXT: usize = 0x0018;
    pub const FCTTV: usize = 0x0170;
    pub const IMS: usize = 0x00d0;
    pub const IMC: usize = 0x00d8;
    pub const EIAC: usize = 0x00dc;
    pub const IVAR: usize = 0x00e4;
    pub const RCTL: usize = 0x0100;
    pub const RDBAL: usize = 0x2800;
    pub const RDBAH: usize = 0x2804;
    pub const RDLEN: usize = 0x2808;
    pub const RDH: usize = 0x2810;
    pub const RDT: usize = 0x2818;
    pub const RFCTL: usize = 0x5008;
}

const CTRL_ASDE: u32 = 1 << 5;
const CTRL_SLU: u32 = 1 << 6;
const CTRL_RST: u32 = 1 << 26;
pub(super) const RCTL_EN: u32 = 1 << 1;
const RCTL_SBP: u32 = 1 << 2;
const RCTL_UPE: u32 = 1 << 3;
const RCTL_MPE: u32 = 1 << 4;
const RCTL_BAM: u32 = 1 << 15;
const RCTL_SECRC: u32 = 1 << 26;
const STATUS_DD: u8 = 1 << 0;

/// Statistics registers (read-to-clear: the agent accumulates them).
const COUNTERS: &[(&str, usize)] =
    &[("MPC", 0x4010), ("RNBC", 0x40a0), ("GPRC", 0x4074), ("GORCL", 0x4088), ("GORCH", 0x408c), ("TPR", 0x40d0)];

/// `RCTL.BSIZE` (with `BSEX` clear) for a buffer size.
pub(super) fn bsize_bits(buf_size: u32) -> Result<u32, String> {
    Ok(match buf_size {
        2048 => 0,
        1024 => 1 << 16,
        512 => 2 << 16,
        256 => 3 << 16,
        other => return Err(format!("e1000e: buf_size {other} unsupported (256, 512, 1024 or 2048)")),
    })
}

/// Where ring and buffers live.
#[derive(Debug)]
pub(super) enum RxMem {
    /// Anonymous agent memory (lost at kexec).
    Anon {
        /// The descriptor ring.
        ring: DmaMem,
        /// The receive buffers.
        bufs: DmaMem,
    },
    /// A pkernfs file: ring at offset 0 (survives kexec).
    File(GuestRam),
}

/// The polling position, kept between polling threads (and agents).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cursor {
    /// Next descriptor expected to complete.
    pub next: u32,
    /// Last value written to RDT.
    pub tail: u32,
    /// Descriptors the agent holds (completed, not handed back).
    pub held: u32,
}

/// A running e1000e RX engine.
#[derive(Debug)]
pub struct E1000e {
    pub(super) dev: Device,
    pub(super) bar: Bar,
    pub(super) mem: RxMem,
    pub(super) ring_size: u32,
    pub(super) buf_size: u32,
    pub(super) refill: bool,
    pub(super) cursor: Mutex<Cursor>,
    /// The poll loop's cursor as it moves, for `dma_status` (the `cursor`
    /// mutex is written only when the loop ends).
    pub(super) live: LiveCursor,
    pub(super) totals: Mutex<BTreeMap<&'static str, u64>>,
    /// Set for a persistent engine: its pkernfs file and hand-over count.
    pub(super) persist: Option<(String, u32)>,
    /// Set when the engine takes the device's interrupts (`RxInterrupts::Msix`).
    pub(super) irq: Option<super::rx_irq::RxIrq>,
}

impl E1000e {
    /// Opens `pci`, maps ring and buffers, programs RX and enables bus master.
    pub fn start(
        pci: &str,
        ring_size: u32,
        buf_size: u32,
        refill: bool,
        api: IommuApi,
        unmapped_slots: u32,
    ) -> Result<(Self, DmaLayout), String> {
        if ring_size < 8 || ring_size & 7 != 0 || ring_size > 4096 {
            return Err(format!("e1000e {pci}: ring_size {ring_size} must be a multiple of 8 in 8..=4096"));
        }
        if unmapped_slots >= ring_size {
            return Err(format!("e1000e {pci}: unmapped_slots {unmapped_slots} must be < ring_size {ring_size}"));
        }
        let bsize = bsize_bits(buf_size)?;
        let dev = Device::open(pci, api)?;
        let bar = Bar::map(&dev, super::sys::VFIO_PCI_BAR0_REGION_INDEX)?;
        let ring_len = u64::from(ring_size) * DESC;
        let bufs_len = u64::from(ring_size) * u64::from(buf_size);
        let ring = DmaMem::new(&dev.iommu, &format!("e1000e {pci} RX ring"), ring_len, RING_IOVA)?;
        let bufs = DmaMem::new(&dev.iommu, &format!("e1000e {pci} RX buffers"), bufs_len, BUF_IOVA)?;
        let nic = Self {
            dev,
            bar,
            mem: RxMem::Anon { ring, bufs },
            ring_size,
            buf_size,
            refill,
            cursor: Mutex::new(Cursor::fresh(ring_size)),
            live: LiveCursor::default(),
            totals: Mutex::new(BTreeMap::new()),
            persist: None,
            irq: None,
        };
        for i in 0..ring_size {
            let base = if i >= ring_size - unmapped_slots { UNMAPPED_IOVA } else { BUF_IOVA };
            nic.write_desc(i, base + u64::from(i) * u64::from(buf_size));
        }
        nic.program(bsize)?;
        let RxMem::Anon { ring, bufs } = &nic.mem else { unreachable!("built above") };
        let layout = DmaLayout {
            pci: pci.to_string(),
            iommu: nic.dev.api,
            ring: ring.region(ring_len),
            buffers: bufs.region(bufs_len),
            buf_size,
            buf_count: ring_size,
            dma_pages: [ring.phys.clone(), bufs.phys.clone()].concat(),
            canary: Vec::new(),
            persist: None,
        };
        Ok((nic, layout))
    }

    /// The init sequence measured in NOTES-dma.md; bus master strictly last
    /// (QEMU flushes queued frames into a disabled NIC otherwise).
    pub(super) fn program(&self, bsize: u32) -> Result<(), String> {
        let b = &self.bar;
        b.write32(reg::IMC, u32::MAX);
        // QEMU's e1000e survives vfio-pci's D3→D0 "reset": always reset it.
        b.write32(reg::CTRL, b.read32(reg::CTRL) | CTRL_RST);
        let deadline = Instant::now() + Duration::from_secs(1);
        while b.read32(reg::CTRL) & CTRL_RST != 0 {
            if Instant::now() > deadline {
                return Err(format!("e1000e {}: CTRL.RST still set after 1 s", self.dev.pci));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        b.write32(reg::IMC, u32::MAX);
        b.write32(reg::CTRL, b.read32(reg::CTRL) | CTRL_SLU | CTRL_ASDE);
        b.write32(reg::RFCTL, 0);
        b.write32(reg::RDBAL, RING_IOVA as u32);
        b.write32(reg::RDBAH, (RING_IOVA >> 32) as u32);
        b.write32(reg::RDLEN, self.ring_size * DESC as u32);
        b.write32(reg::RDH, 0);
        b.write32(reg::RDT, 0);
        b.write32(reg::RCTL, RCTL_EN | RCTL_SBP | RCTL_UPE | RCTL_MPE | RCTL_BAM | bsize | RCTL_SECRC);
        b.write32(reg::RDT, self.ring_size - 1);
        self.dev.set_bus_master(true)
    }

    fn desc(&self, i: u32) -> *mut u8 {
        let off = u64::from(i) * DESC;
        match &self.mem {
            RxMem::Anon { ring, .. } => ring.mem.at(off),
            RxMem::File(ram) => ram.at(super::rx_persist::RING_OFF + off),
        }
    }

    /// Descriptor `i` := {addr, everything else 0}.
    pub(super) fn write_desc(&self, i: u32, addr: u64) {
        let d = self.desc(i);
        // SAFETY: `d` is the 16-byte-aligned start of descriptor `i` inside the
        // ring mapping; the device does not own it (not yet handed over / DD set).
        unsafe {
            d.cast::<u64>().write_volatile(addr);
            d.add(8).cast::<u64>().write_volatile(0);
        }
    }

    /// (status, errors) of descriptor `i`.
    fn status_of(&self, i: u32) -> (u8, u8) {
        let d = self.desc(i);
        // SAFETY: bytes 12 and 13 of descriptor `i`, inside the ring mapping;
        // volatile because the device writes them.
        unsafe { (d.add(12).read_volatile(), d.add(13).read_volatile()) }
    }

    fn release(&self, i: u32) {
        let d = self.desc(i);
        // SAFETY: upper 8 bytes of descriptor `i` (length, csum, status,
        // errors, special), owned by the agent until RDT passes it.
        unsafe { d.add(8).cast::<u64>().write_volatile(0) };
        compiler_fence(Ordering::SeqCst);
    }

    /// Where polling goes on when no cursor was handed over (the agent
    /// that ran the ring died): RDT as the device has it, the descriptor
    /// there held, and every descriptor after it that the device completed
    /// held too (seen by the dead agent or not, its buffer holds a frame).
    pub(super) fn cursor_from_ring(&self) -> Cursor {
        let n = self.ring_size;
        let tail = self.bar.read32(reg::RDT) % n;
        let (mut next, mut held) = ((tail + 1) % n, 1);
        while held < n && self.status_of(next).0 & STATUS_DD != 0 {
            next = (next + 1) % n;
            held += 1;
        }
        Cursor { next, tail, held }
    }

    fn accumulate(&self) -> Vec<(String, u64)> {
        let mut t = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        for &(name, off) in COUNTERS {
            *t.entry(name).or_default() += u64::from(self.bar.read32(off));
        }
        t.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }
}

/// Where the poll loop is: next descriptor to complete, RDT, descriptors held.
#[derive(Debug, Default)]
pub struct LiveCursor {
    next: AtomicU32,
    tail: AtomicU32,
    held: AtomicU32,
}

impl LiveCursor {
    fn set(&self, next: u32, tail: u32, held: u32) {
        self.next.store(next, Ordering::Relaxed);
        self.tail.store(tail, Ordering::Relaxed);
        self.held.store(held, Ordering::Relaxed);
    }
}

impl Cursor {
    /// A freshly programmed ring: RDT one behind RDH, the slot at RDT held.
    pub fn fresh(ring_size: u32) -> Self {
        Self { next: 0, tail: ring_size - 1, held: 1 }
    }
}

impl Driver for E1000e {
    fn poll(&self, p: &Progress) {
        let n = self.ring_size;
        let c = *self.cursor.lock().unwrap_or_else(|e| e.into_inner());
        let (mut next, mut tail) = (c.next, c.tail);
        // Completion time of every descriptor the agent holds, oldest first
        // (held since now when taken over from a previous thread or agent).
        let mut held = std::collections::VecDeque::from(vec![Instant::now(); c.held as usize]);
        self.live.set(next, tail, c.held);
        if let Some(irq) = &self.irq {
            irq.arm(&self.bar);
        }
        while !p.stopping() {
            // With interrupts the ring is read only after one arrived; the
            // timeout only paces refills and the stop check.
            let woke = self.irq.as_ref().is_none_or(|irq| irq.wait(Duration::from_millis(20)));
            let mut idle = true;
            if woke {
                loop {
                    let (status, errors) = self.status_of(next);
                    if status & STATUS_DD == 0 || held.len() as u32 >= n {
                        break;
                    }
                    if errors != 0 {
                        p.count_error();
                    }
                    held.push_back(Instant::now());
                    p.completed.fetch_add(1, Ordering::Relaxed);
                    next = (next + 1) % n;
                    idle = false;
                }
            }
            if let (true, Some(irq)) = (woke, &self.irq) {
                if idle {
                    irq.count_empty();
                }
                irq.arm(&self.bar);
            }
            while self.refill && held.len() as u32 > n / 2 && held[0].elapsed() >= HOLD {
                self.release(tail);
                held.pop_front();
                tail = (tail + 1) % n;
                self.bar.write32(reg::RDT, tail);
                p.refilled.fetch_add(1, Ordering::Relaxed);
                idle = false;
            }
            if !idle {
                self.live.set(next, tail, held.len() as u32);
            } else if self.irq.is_none() {
                std::thread::sleep(Duration::from_micros(500));
            }
        }
        *self.cursor.lock().unwrap_or_else(|e| e.into_inner()) = Cursor { next, tail, held: held.len() as u32 };
    }

    fn handover(&self, p: &Progress) -> Result<Option<String>, String> {
        Ok(super::rx_persist::hand_over(self, p)?.as_ref().map(super::rx_persist::describe))
    }

    fn handover_capable(&self) -> bool {
        self.persist.is_some()
    }

    fn remap_probe(&self) -> Result<u64, String> {
        let RxMem::File(ram) = &self.mem else {
            return Err("remap probe: needs an engine on a pkernfs file (rx.persist)".into());
        };
        super::rx_persist::remap_probe(&self.dev.iommu, ram)
    }

    /// The accumulated statistics, then where the ring is now: the device's
    /// `RDH`/`RDT` and the agent's own next/tail/held (to compare when RX
    /// stops with frames left inside QEMU).
    fn counters(&self) -> Vec<(String, u64)> {
        let mut v = self.accumulate();
        v.extend(self.irq.iter().flat_map(|irq| irq.counters()));
        let l = &self.live;
        v.extend([
            ("ring_rdh".to_string(), u64::from(self.bar.read32(reg::RDH))),
            ("ring_rdt".to_string(), u64::from(self.bar.read32(reg::RDT))),
            ("agent_next".to_string(), u64::from(l.next.load(Ordering::Relaxed))),
            ("agent_tail".to_string(), u64::from(l.tail.load(Ordering::Relaxed))),
            ("agent_held".to_string(), u64::from(l.held.load(Ordering::Relaxed))),
        ]);
        v
    }

    fn quiesce(&self) -> Result<(), String> {
        if let Some(irq) = &self.irq {
            irq.finish(&self.bar);
        }
        self.bar.write32(reg::RCTL, self.bar.read32(reg::RCTL) & !RCTL_EN);
        self.dev.set_bus_master(false)
    }

    fn reset_device(&self) -> Result<(), String> {
        self.bar.write32(reg::CTRL, self.bar.read32(reg::CTRL) | CTRL_RST);
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.bar.read32(reg::CTRL) & CTRL_RST != 0 {
            if Instant::now() > deadline {
                return Err(format!("e1000e {}: CTRL.RST still set after 1 s", self.dev.pci));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        crate::port::kmsg(&format!("lulab-agent: e1000e {}: reset (CTRL.RST) under the running engine: fault injection", self.dev.pci));
        Ok(())
    }
}


#[cfg(test)]
mod tests {
    #[test]
    fn buffer_sizes_map_to_rctl_bsize() {
        assert_eq!(super::bsize_bits(2048), Ok(0));
        assert_eq!(super::bsize_bits(256), Ok(3 << 16));
        assert!(super::bsize_bits(4096).is_err());
    }
}
