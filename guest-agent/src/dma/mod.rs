//! The DMA engine: takes a PCI device through VFIO (iommufd or the type1
//! container), maps agent-owned memory for it and keeps it busy from a
//! background thread that polls, or waits for the device's interrupts
//! (e1000e RX with `RxInterrupts::Msix`).
//!
//! Layers: [`sys`] (raw uAPI) → [`vfio`] (binding, IOMMU mapping, device fd,
//! BAR) and [`mem`] (pinned memory, pagemap) → the device drivers
//! [`e1000e`] and [`nvme`].

mod e1000e;
mod guest_ram;
mod irq;
pub mod keeper;
mod luo;
mod mem;
mod nvme;
mod nvme_persist;
mod nvme_queue;
mod rx_irq;
mod rx_luo;
mod rx_persist;
mod sys;
mod vfio;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use lulab_proto::{DmaConfig, DmaLayout, DmaStatus, RxInterrupts};

/// What the engine needs from a device driver.
pub trait Driver: Send + Sync + std::fmt::Debug {
    /// Keeps the device busy until `p.stopping()`; runs on its own thread.
    fn poll(&self, p: &Progress);
    /// Device-specific counters (name → value), cumulative.
    fn counters(&self) -> Vec<(String, u64)>;
    /// Stops the device's DMA (called after `poll` returned).
    fn quiesce(&self) -> Result<(), String>;
    /// After `poll` returned: leaves the device running for the next
    /// kernel's agent and writes the hand-over; returns a one-line account
    /// of it for the kernel log (`None`: not persistent).
    fn handover(&self, _p: &Progress) -> Result<Option<String>, String> {
        Ok(None)
    }
    /// Whether [`Driver::handover`] would hand the device over.
    fn handover_capable(&self) -> bool {
        false
    }
    /// Changes the device's DMA mappings while it runs: maps one more page
    /// of its memory at a spare IOVA and unmaps it again (a VMM adding and
    /// removing guest memory). Returns the IOVA used.
    fn remap_probe(&self) -> Result<u64, String> {
        Err("remap probe: only a persistent e1000e engine supports it".into())
    }
    /// Resets the device under the running engine (fault injection: a
    /// VMM that resets a device it should keep running).
    fn reset_device(&self) -> Result<(), String> {
        Err("device reset: only the e1000e engines support it".into())
    }
    /// Whether a device that is not handed over must be stopped before
    /// kexec: it may hold DMA in flight that would complete into memory the
    /// next kernel reuses, after the kernel's own safeguards (see `Nvme`).
    fn stop_before_kexec(&self) -> bool {
        false
    }
}

/// `nic` taking its interrupts when `cfg` asks for them (`base`: what the
/// agents before it received).
fn with_interrupts(mut nic: e1000e::E1000e, cfg: &DmaConfig, base: u64) -> Result<e1000e::E1000e, String> {
    if let DmaConfig::E1000eRx { interrupts: RxInterrupts::Msix, irq_left_armed, .. } = cfg {
        let generation = nic.persist.as_ref().map_or(0, |(_, g)| *g);
        nic.irq = Some(rx_irq::RxIrq::take(&nic.dev, &nic.bar, (base, generation), *irq_left_armed)?);
    }
    Ok(nic)
}

/// Counters shared between the polling thread and the request loop.
#[derive(Debug, Default)]
pub struct Progress {
    /// Completions seen.
    pub completed: AtomicU64,
    /// Descriptors / commands handed back to the device.
    pub refilled: AtomicU64,
    /// Completions with an error status.
    pub errors: AtomicU64,
    stop: AtomicBool,
    handover: AtomicBool,
    running: AtomicBool,
}

impl Progress {
    /// True once the engine was asked to stop.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// True once the engine was asked to stop for a hand-over: leave
    /// everything in flight (it completes into persistent memory).
    pub fn handing_over(&self) -> bool {
        self.handover.load(Ordering::Relaxed)
    }

    /// Counts one completion with an error status.
    pub fn count_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// A running DMA engine. Dropping it leaves the device running; the fds
/// and mappings it holds live until the agent exits (that is the point of a
/// live update: the device keeps DMAing into this memory).
#[derive(Debug)]
pub struct Engine {
    driver: Arc<dyn Driver>,
    progress: Arc<Progress>,
    thread: Option<JoinHandle<()>>,
    /// Anonymous canary (a persistent engine keeps its canary in its file).
    _canary: Option<mem::Mem>,
    stop_error: Option<String>,
}

impl Engine {
    /// Takes the device and starts DMA.
    pub fn start(cfg: &DmaConfig) -> Result<(Self, DmaLayout), String> {
        let (driver, layout) = match cfg {
            DmaConfig::E1000eRx { pci, interrupts: RxInterrupts::Msix, persist: Some(spec), .. }
                if spec.backing == lulab_proto::PersistBacking::LuoMemfd =>
            {
                return Err(format!("e1000e {pci}: interrupts = \"msix\" is for engines on pkernfs or anonymous memory (the LUO engine polls)"));
            }
            DmaConfig::E1000eRx { pci, ring_size, buf_size, refill, persist: Some(spec), .. }
                if spec.backing == lulab_proto::PersistBacking::LuoMemfd =>
            {
                let (nic, layout) = rx_luo::start(pci, *ring_size, *buf_size, *refill, spec)?;
                (Arc::new(nic) as Arc<dyn Driver>, layout)
            }
            DmaConfig::E1000eRx { pci, ring_size, buf_size, refill, persist: Some(spec), .. } => {
                let (nic, layout) = rx_persist::start(pci, *ring_size, *buf_size, *refill, spec)?;
                rx_persist::keep(&nic, cfg)?;
                let base = layout.persist.as_ref().and_then(|p| p.resumed_from.as_ref()).map_or(0, |h| h.irq_received);
                (Arc::new(with_interrupts(nic, cfg, base)?) as Arc<dyn Driver>, layout)
            }
            DmaConfig::E1000eRx { pci, ring_size, buf_size, refill, iommu, unmapped_slots, persist: None, .. } => {
                let (nic, layout) =
                    e1000e::E1000e::start(pci, *ring_size, *buf_size, *refill, *iommu, *unmapped_slots)?;
                (Arc::new(with_interrupts(nic, cfg, 0)?) as Arc<dyn Driver>, layout)
            }
            DmaConfig::NvmeRead { pci, persist: Some(_), buffers_alias: Some(_), .. } => {
                return Err(format!("nvme {pci}: buffers_alias (fault injection) is for a non-persistent engine only"));
            }
            DmaConfig::NvmeRead { pci, blocks_per_cmd, lba_start, lba_count, queue_depth, persist: Some(spec), .. } => {
                nvme_persist::start(pci, *blocks_per_cmd, *lba_start, *lba_count, *queue_depth, spec)?
            }
            DmaConfig::NvmeRead { pci, blocks_per_cmd, lba_start, lba_count, queue_depth, iommu, persist: None, buffers_alias } => {
                let plan = (*blocks_per_cmd, *lba_start, *lba_count, *queue_depth);
                nvme::start(pci, plan, *iommu, buffers_alias.as_deref())?
            }
        };
        Self::run(driver, layout)
    }

    /// Takes back the persistent engine for `pci` that an agent which died
    /// left with its fd keeper (only the e1000e RX engine on pkernfs keeps one).
    pub fn reattach(pci: &str) -> Result<(Self, DmaLayout), String> {
        let (nic, layout) = rx_persist::reattach(pci)?;
        Self::run(Arc::new(nic), layout)
    }

    /// Starts polling a device taken by [`Engine::start`] or [`Engine::reattach`].
    fn run(driver: Arc<dyn Driver>, mut layout: DmaLayout) -> Result<(Self, DmaLayout), String> {
        let canary = if layout.persist.is_some() {
            None
        } else {
            let (canary, canary_phys) = mem::canary()?;
            layout.canary = canary_phys;
            Some(canary)
        };
        crate::port::kmsg(&format!(
            "lulab-agent: DMA {} via {:?}: ring IOVA {:#x} ({} chunks), {} buffers of {} at IOVA {:#x} ({} chunks)",
            layout.pci,
            layout.iommu,
            layout.ring.iova,
            layout.ring.phys.len(),
            layout.buf_count,
            layout.buf_size,
            layout.buffers.iova,
            layout.buffers.phys.len()
        ));
        let progress = Arc::new(Progress::default());
        progress.running.store(true, Ordering::Relaxed);
        let (d, p) = (Arc::clone(&driver), Arc::clone(&progress));
        let thread = std::thread::Builder::new()
            .name("lulab-dma".into())
            .spawn(move || {
                d.poll(&p);
                p.running.store(false, Ordering::Relaxed);
            })
            .map_err(|e| format!("spawning the DMA polling thread: {e}"))?;
        let engine = Self { driver, progress, thread: Some(thread), _canary: canary, stop_error: None };
        Ok((engine, layout))
    }

    /// Current counters.
    pub fn status(&self) -> DmaStatus {
        let p = &self.progress;
        let mut device_counters = self.driver.counters();
        device_counters.push(("completion_errors".into(), p.errors.load(Ordering::Relaxed)));
        if self.stop_error.is_some() {
            device_counters.push(("quiesce_failed".into(), 1));
        }
        DmaStatus {
            completed: p.completed.load(Ordering::Relaxed),
            refilled: p.refilled.load(Ordering::Relaxed),
            device_counters,
            running: p.running.load(Ordering::Relaxed),
        }
    }

    /// Stops polling without quiescing the device and writes the hand-over
    /// for the next kernel's agent (`None` for a non-persistent engine, which
    /// is left as it is). The engine keeps its fds: the device stays
    /// attached and bus-mastering through the kexec.
    pub fn hand_over(&mut self) -> Result<Option<String>, String> {
        if self.thread.is_none() {
            return Ok(None);
        }
        if !self.driver.handover_capable() {
            return Ok(None);
        }
        self.progress.handover.store(true, Ordering::Relaxed);
        self.progress.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.driver.handover(&self.progress)
    }

    /// Before kexec, for an engine that is not handed over: stops it if
    /// its driver asks to ([`Driver::stop_before_kexec`]); `None` when left running.
    pub fn stop_before_kexec(&mut self) -> Option<DmaStatus> {
        let stop = self.thread.is_some() && !self.driver.handover_capable() && self.driver.stop_before_kexec();
        stop.then(|| self.stop())
    }

    /// [`Driver::remap_probe`] on the running device.
    pub fn remap_probe(&self) -> Result<u64, String> {
        self.driver.remap_probe()
    }

    /// [`Driver::reset_device`] on the running device.
    pub fn reset_device(&self) -> Result<(), String> {
        self.driver.reset_device()
    }

    /// Quiesces the device; returns the final counters.
    pub fn stop(&mut self) -> DmaStatus {
        self.progress.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
            if let Err(e) = self.driver.quiesce() {
                crate::port::kmsg(&format!("lulab-agent: quiescing DMA: {e}"));
                self.stop_error = Some(e);
            }
        }
        self.status()
    }
}
