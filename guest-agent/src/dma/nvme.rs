//! NVMe reads through VFIO: every LBA in `[lba_start, lba_start + lba_count)`
//! is read exactly once, `blocks_per_cmd` per command, into its own buffer
//! slot (slot `i` at `buffers.iova + i * buf_size` holds LBAs
//! `lba_start + i * blocks_per_cmd ..`), `queue_depth` commands in flight.
//! Polled completion queues, no interrupts; one I/O queue pair (qid 1).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lulab_proto::{DmaLayout, IommuApi};

use super::guest_ram::GuestRam;
use super::mem::{DmaMem, PAGE};
use super::nvme_queue::{prps, Command, QueuePair, CQE, SQE};
use super::vfio::{Bar, Device};
use super::{Driver, Progress};

/// IOVA of the I/O completion queue (reported as the layout's `ring`).
pub(super) const CQ_IOVA: u64 = 0x1000_0000;
/// IOVA of the data buffers.
pub(super) const BUF_IOVA: u64 = 0x2000_0000;
/// IOVA of the admin area: admin SQ, admin CQ, identify page, I/O SQ, PRP lists.
pub(super) const ADMIN_IOVA: u64 = 0x3000_0000;
const ADMIN_Q: u16 = 16;
/// Offsets inside the admin area.
const ASQ_OFF: u64 = 0;
const ACQ_OFF: u64 = PAGE;
const IDENTIFY_OFF: u64 = 2 * PAGE;
pub(super) const IOSQ_OFF: u64 = 3 * PAGE;
/// Upper bound on buffer memory (the host has 1 GiB).
pub(super) const MAX_BUFFERS: u64 = 256 << 20;

mod reg {
    pub const CAP: usize = 0x00;
    pub const INTMS: usize = 0x0c;
    pub const CC: usize = 0x14;
    pub const CSTS: usize = 0x1c;
    pub const AQA: usize = 0x24;
    pub const ASQ: usize = 0x28;
    pub const ACQ: usize = 0x30;
}

/// The workload, fixed at start.
#[derive(Debug, Clone, Copy)]
pub(super) struct Plan {
    pub lba_start: u64,
    pub lba_count: u64,
    pub blocks_per_cmd: u32,
    pub lba_size: u32,
    pub queue_depth: u16,
}

impl Plan {
    pub fn buf_size(&self) -> u64 {
        u64::from(self.blocks_per_cmd) * u64::from(self.lba_size)
    }
    pub fn slots(&self) -> u64 {
        self.lba_count.div_ceil(u64::from(self.blocks_per_cmd))
    }
    /// The Read command for slot `i` (the last may be short).
    fn read(&self, i: u64) -> (u64, u32) {
        let first = self.lba_start + i * u64::from(self.blocks_per_cmd);
        let n = (self.lba_start + self.lba_count - first).min(u64::from(self.blocks_per_cmd)) as u32;
        (first, n)
    }
}

/// Where the admin area, the I/O CQ and the buffers live.
#[derive(Debug)]
pub(super) enum NvmeMem {
    /// Anonymous agent memory (lost at kexec).
    Anon {
        admin: DmaMem,
        cq: DmaMem,
        /// Allocated once Identify gave the LBA size.
        bufs: Option<DmaMem>,
        /// Fault injection: the file mapped over the start of the buffers' IOVAs.
        alias: Option<std::fs::File>,
    },
    /// A pkernfs file: admin area at offset 0, then the CQ (survives kexec).
    File {
        ram: GuestRam,
        cq_off: u64,
    },
}

impl NvmeMem {
    /// Byte `off` of the admin area.
    pub fn admin_at(&self, off: u64) -> *mut u8 {
        match self {
            NvmeMem::Anon { admin, .. } => admin.mem.at(off),
            NvmeMem::File { ram, .. } => ram.at(off),
        }
    }

    /// Byte `off` of the I/O completion queue.
    pub fn cq_at(&self, off: u64) -> *mut u8 {
        match self {
            NvmeMem::Anon { cq, .. } => cq.mem.at(off),
            NvmeMem::File { ram, cq_off } => ram.at(cq_off + off),
        }
    }
}

/// Where polling stands: next slot to submit, completions reaped, free ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct NvmeCursor {
    pub next: u64,
    pub done: u64,
    pub free: Vec<u16>,
}

/// A running NVMe read engine.
#[derive(Debug)]
pub struct Nvme {
    pub(super) dev: Device,
    pub(super) bar: Bar,
    pub(super) mem: NvmeMem,
    pub(super) io: Mutex<QueuePair>,
    pub(super) plan: Plan,
    /// Offset of the per-command PRP list pages in the admin area.
    pub(super) prp_off: u64,
    pub(super) cursor: Mutex<NvmeCursor>,
    /// I/O queue entries and doorbell stride (for a hand-over).
    pub(super) qsize: u16,
    pub(super) stride: usize,
    /// Set for a persistent engine: its pkernfs file and hand-over count.
    pub(super) persist: Option<(String, u32)>,
}

/// Controller geometry read from CAP before anything is set up.
#[derive(Debug, Clone, Copy)]
pub(super) struct Geometry {
    pub qsize: u16,
    pub stride: usize,
    pub timeout: Duration,
}

impl Geometry {
    pub fn read(bar: &Bar, queue_depth: u32) -> Self {
        let cap = u64::from(bar.read32(reg::CAP)) | (u64::from(bar.read32(reg::CAP + 4)) << 32);
        let mqes = (cap & 0xffff) as u32 + 1;
        Self {
            qsize: (queue_depth + 1).min(mqes) as u16,
            stride: 4usize << ((cap >> 32) & 0xf),
            timeout: Duration::from_millis(500 * ((cap >> 24) & 0xff).max(1)),
        }
    }
}

/// Bytes of the admin area (admin queues, identify page, I/O SQ, one PRP
/// list page per command) and the offset of the PRP lists in it.
pub(super) fn admin_len(qsize: u16, queue_depth: u32) -> (u64, u64) {
    let iosq_len = u64::from(qsize) * SQE;
    let prp_off = IOSQ_OFF + iosq_len.div_ceil(PAGE) * PAGE;
    (prp_off + u64::from(queue_depth) * PAGE, prp_off)
}

/// Checks the request; the error names the device.
pub(super) fn check_request(pci: &str, blocks_per_cmd: u32, lba_count: u64, queue_depth: u32) -> Result<(), String> {
    if blocks_per_cmd == 0 || lba_count == 0 || !(1..=1023).contains(&queue_depth) {
        return Err(format!("nvme {pci}: need blocks_per_cmd ≥ 1, lba_count ≥ 1, queue_depth in 1..=1023"));
    }
    Ok(())
}

/// Enables the controller, identifies namespace 1, checks the plan against
/// the controller's limits and creates I/O queue pair 1 (CQ at `CQ_IOVA`,
/// SQ in the admin area); the memory behind both must be mapped already.
pub(super) fn bring_up(
    dev: &Device,
    bar: &Bar,
    mem: &NvmeMem,
    g: Geometry,
    (blocks_per_cmd, lba_start, lba_count): (u32, u64, u64),
) -> Result<(Plan, QueuePair), String> {
    let pci = dev.pci.as_str();
    let mut aq = QueuePair::new(mem.admin_at(ASQ_OFF), mem.admin_at(ACQ_OFF), ADMIN_Q, 0, g.stride);
    enable(dev, bar, g.timeout)?;
    let ctx = AdminCtx { bar, pci, timeout: g.timeout };
    let (lba_size, max_transfer) = identify(&ctx, &mut aq, mem.admin_at(IDENTIFY_OFF))?;
    let plan = Plan { lba_start, lba_count, blocks_per_cmd, lba_size, queue_depth: (g.qsize - 1) };
    if plan.buf_size() > max_transfer.min(512 * PAGE) {
        return Err(format!(
            "nvme {pci}: {blocks_per_cmd} blocks of {lba_size} bytes per command exceed the controller's limit of {} bytes",
            max_transfer.min(512 * PAGE)
        ));
    }
    let bufs_len = plan.slots() * plan.buf_size();
    if bufs_len > MAX_BUFFERS {
        return Err(format!("nvme {pci}: {bufs_len} bytes of buffers exceed the {MAX_BUFFERS}-byte limit"));
    }
    // Create I/O CQ 1 (PC=1, interrupts off), then I/O SQ 1 bound to it.
    let qs = u32::from(g.qsize - 1) << 16;
    ctx.admin(&mut aq, Command { opcode: 0x05, prp1: CQ_IOVA, cdw: [qs | 1, 1, 0, 0, 0, 0], ..Default::default() })?;
    let sq = Command { opcode: 0x01, prp1: ADMIN_IOVA + IOSQ_OFF, cdw: [qs | 1, (1 << 16) | 1, 0, 0, 0, 0], ..Default::default() };
    ctx.admin(&mut aq, sq)?;
    Ok((plan, QueuePair::new(mem.admin_at(IOSQ_OFF), mem.cq_at(0), g.qsize, 1, g.stride)))
}

/// Opens `pci`, initialises the controller and its I/O queues. `plan` is
/// (blocks per command, first LBA, LBAs, queue depth); `alias`: fault
/// injection, see [`alias_buffers`].
pub fn start(
    pci: &str,
    (blocks_per_cmd, lba_start, lba_count, queue_depth): (u32, u64, u64, u32),
    api: IommuApi,
    alias: Option<&str>,
) -> Result<(Arc<dyn Driver>, DmaLayout), String> {
    check_request(pci, blocks_per_cmd, lba_count, queue_depth)?;
    let dev = Device::open(pci, api)?;
    let bar = Bar::map(&dev, super::sys::VFIO_PCI_BAR0_REGION_INDEX)?;
    let g = Geometry::read(&bar, queue_depth);
    let (admin_len, prp_off) = admin_len(g.qsize, queue_depth);
    let admin = DmaMem::new(&dev.iommu, &format!("nvme {pci} admin area"), admin_len, ADMIN_IOVA)?;
    let cq_len = u64::from(g.qsize) * CQE;
    let cq = DmaMem::new(&dev.iommu, &format!("nvme {pci} I/O CQ"), cq_len, CQ_IOVA)?;
    // Buffers are sized from the LBA size, known after Identify.
    let mut mem = NvmeMem::Anon { admin, cq, bufs: None, alias: None };
    let (plan, io) = bring_up(&dev, &bar, &mem, g, (blocks_per_cmd, lba_start, lba_count))?;
    let bufs_len = plan.slots() * plan.buf_size();
    let NvmeMem::Anon { bufs, admin, cq, alias: alias_file } = &mut mem else { unreachable!("built above") };
    let name = format!("nvme {pci} data buffers");
    let bufs = match alias {
        None => bufs.insert(DmaMem::new(&dev.iommu, &name, bufs_len, BUF_IOVA)?),
        Some(path) => {
            let (m, f) = alias_buffers(&dev.iommu, &name, bufs_len, path)?;
            *alias_file = Some(f);
            bufs.insert(m)
        }
    };
    let layout = DmaLayout {
        pci: pci.to_string(),
        iommu: dev.api,
        ring: cq.region(cq_len),
        buffers: bufs.region(bufs_len),
        buf_size: plan.buf_size() as u32,
        buf_count: plan.slots() as u32,
        dma_pages: [admin.phys.clone(), cq.phys.clone(), bufs.phys.clone()].concat(),
        canary: Vec::new(),
        persist: None,
    };
    let free = (0..plan.queue_depth).rev().collect();
    let nvme = Nvme {
        dev,
        bar,
        mem,
        io: Mutex::new(io),
        plan,
        prp_off,
        cursor: Mutex::new(NvmeCursor { next: 0, done: 0, free }),
        qsize: g.qsize,
        stride: g.stride,
        persist: None,
    };
    Ok((Arc::new(nvme), layout))
}

/// Fault injection (the isolation oracle's negative control): agent memory
/// for `len` bytes of buffers, but the file at `path` (e.g. another device's
/// guest RAM in pkernfs) mapped from offset 0 at [`BUF_IOVA`] over as much
/// of them as it covers; only the rest of the buffers maps the agent's
/// memory. Reads into the first slots therefore land in the file.
fn alias_buffers(iommu: &super::vfio::Iommu, name: &str, len: u64, path: &str) -> Result<(DmaMem, std::fs::File), String> {
    let mem = super::mem::Mem::alloc(name, len)?;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).map_err(|e| format!("{name}: alias {path}: {e}"))?;
    let flen = file.metadata().map_err(|e| format!("{name}: alias {path}: stat: {e}"))?.len() / PAGE * PAGE;
    let covered = flen.min(mem.len());
    if covered == 0 {
        return Err(format!("{name}: alias {path} is shorter than a page"));
    }
    iommu.map_file(&file, 0, covered, BUF_IOVA).map_err(|e| format!("{name}: alias {path}: {e}"))?;
    if covered < mem.len() {
        iommu.map(mem.addr() + covered, BUF_IOVA + covered, mem.len() - covered).map_err(|e| format!("{name}: {e}"))?;
    }
    crate::port::kmsg(&format!(
        "lulab-agent: FAULT INJECTION: {name}: IOVA {BUF_IOVA:#x}..{:#x} maps {path} (offset 0), not the agent's buffers",
        BUF_IOVA + covered
    ));
    let phys = mem.phys()?;
    Ok((DmaMem { mem, iova: BUF_IOVA, phys }, file))
}

/// CC.EN=0 → RDY=0, admin queues, CC (IOSQES=6, IOCQES=4, 4 KiB pages) EN=1 → RDY=1.
fn enable(dev: &Device, bar: &Bar, timeout: Duration) -> Result<(), String> {
    bar.write32(reg::CC, bar.read32(reg::CC) & !1);
    wait_ready(bar, false, timeout, &dev.pci)?;
    bar.write32(reg::INTMS, u32::MAX);
    dev.set_bus_master(true)?;
    let aqa = u32::from(ADMIN_Q - 1) | (u32::from(ADMIN_Q - 1) << 16);
    bar.write32(reg::AQA, aqa);
    for (r, iova) in [(reg::ASQ, ADMIN_IOVA + ASQ_OFF), (reg::ACQ, ADMIN_IOVA + ACQ_OFF)] {
        bar.write32(r, iova as u32);
        bar.write32(r + 4, (iova >> 32) as u32);
    }
    bar.write32(reg::CC, (6 << 16) | (4 << 20) | 1);
    wait_ready(bar, true, timeout, &dev.pci)
}

fn wait_ready(bar: &Bar, ready: bool, timeout: Duration, pci: &str) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let csts = bar.read32(reg::CSTS);
        if csts & 2 != 0 {
            return Err(format!("nvme {pci}: controller fatal status (CSTS {csts:#x})"));
        }
        if (csts & 1 != 0) == ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("nvme {pci}: CSTS.RDY did not become {} within {timeout:?}", u8::from(ready)));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

struct AdminCtx<'a> {
    bar: &'a Bar,
    pci: &'a str,
    timeout: Duration,
}

impl AdminCtx<'_> {
    /// Submits one admin command and polls for its completion.
    fn admin(&self, aq: &mut QueuePair, cmd: Command) -> Result<u32, String> {
        aq.push(&cmd, 0);
        aq.ring(self.bar);
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(c) = aq.pop() {
                aq.ack(self.bar);
                if c.status != 0 {
                    return Err(format!("nvme {}: admin opcode {:#04x} failed, status {:#x}", self.pci, cmd.opcode, c.status));
                }
                return Ok(c.result);
            }
            if Instant::now() > deadline {
                return Err(format!("nvme {}: admin opcode {:#04x}: no completion within {:?}", self.pci, cmd.opcode, self.timeout));
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

/// Identify Controller (MDTS) and Namespace 1: (LBA size, max bytes per
/// command). Also checks that namespace 1 exists.
fn identify(ctx: &AdminCtx<'_>, aq: &mut QueuePair, page: *mut u8) -> Result<(u32, u64), String> {
    let prp1 = ADMIN_IOVA + IDENTIFY_OFF;
    ctx.admin(aq, Command { opcode: 0x06, prp1, cdw: [1, 0, 0, 0, 0, 0], ..Default::default() })?;
    // SAFETY: byte 77 (MDTS) of the identify page inside the admin mapping,
    // written by the controller before the completion we just consumed.
    let mdts = unsafe { page.add(77).read_volatile() };
    let max_transfer = if mdts == 0 { u64::MAX } else { PAGE << mdts.min(20) };
    ctx.admin(aq, Command { opcode: 0x06, nsid: 1, prp1, ..Default::default() })?;
    // SAFETY: bytes of the identify page inside the admin mapping, written by
    // the controller before the completion we just consumed.
    let (nsze, flbas) = unsafe { (page.cast::<u64>().read_volatile(), page.add(26).read_volatile()) };
    if nsze == 0 {
        return Err(format!("nvme {}: namespace 1 has no blocks", ctx.pci));
    }
    let fmt = usize::from(flbas & 0xf);
    // SAFETY: LBA format descriptor `fmt` (< 16) at 128 + 4*fmt, byte 2 = LBADS.
    let lbads = unsafe { page.add(128 + 4 * fmt + 2).read_volatile() };
    if !(9..=16).contains(&lbads) {
        return Err(format!("nvme {}: namespace 1 reports LBA data size 2^{lbads}", ctx.pci));
    }
    Ok((1 << lbads, max_transfer))
}

impl Nvme {
    /// Submits the Read for slot `i` with command id `cid`.
    fn submit(&self, q: &mut QueuePair, i: u64, cid: u16) {
        let (lba, n) = self.plan.read(i);
        let start = BUF_IOVA + i * self.plan.buf_size();
        let (prp1, rest) = prps(start, u64::from(n) * u64::from(self.plan.lba_size));
        let prp2 = match rest.len() {
            0 => 0,
            1 => rest[0],
            _ => {
                let off = self.prp_off + u64::from(cid) * PAGE;
                for (k, p) in rest.iter().enumerate() {
                    // SAFETY: entry k (< 512: buf_size ≤ 512 pages, checked at
                    // start) of command `cid`'s PRP list page in the admin area.
                    unsafe { self.mem.admin_at(off + 8 * k as u64).cast::<u64>().write_volatile(*p) };
                }
                ADMIN_IOVA + off
            }
        };
        let cdw = [lba as u32, (lba >> 32) as u32, n - 1, 0, 0, 0];
        q.push(&Command { opcode: 0x02, nsid: 1, prp1, prp2, cdw }, cid);
    }
}

impl Driver for Nvme {
    fn poll(&self, p: &Progress) {
        let mut q = self.io.lock().unwrap_or_else(|e| e.into_inner());
        let total = self.plan.slots();
        let c = std::mem::take(&mut *self.cursor.lock().unwrap_or_else(|e| e.into_inner()));
        let (mut next, mut done, mut free) = (c.next, c.done, c.free);
        // After a stop request: no new commands; drain what is in flight
        // (a hand-over leaves it in flight, completing into pkernfs).
        let mut drain_deadline = None;
        while done < next || next < total {
            if p.handing_over() {
                break;
            }
            let stopping = p.stopping();
            if stopping && drain_deadline.is_none() {
                drain_deadline = Some(Instant::now() + Duration::from_secs(2));
            }
            if drain_deadline.is_some_and(|d| Instant::now() > d) || (stopping && done == next) {
                break;
            }
            let mut pushed = false;
            while !stopping && next < total {
                let Some(cid) = free.pop() else { break };
                self.submit(&mut q, next, cid);
                if next >= u64::from(self.plan.queue_depth) {
                    p.refilled.fetch_add(1, Ordering::Relaxed);
                }
                next += 1;
                pushed = true;
            }
            if pushed {
                q.ring(&self.bar);
            }
            let mut reaped = false;
            while let Some(c) = q.pop() {
                if c.status != 0 {
                    p.count_error();
                }
                free.push(c.cid);
                done += 1;
                p.completed.fetch_add(1, Ordering::Relaxed);
                reaped = true;
            }
            if reaped {
                q.ack(&self.bar);
            } else if !pushed {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        *self.cursor.lock().unwrap_or_else(|e| e.into_inner()) = NvmeCursor { next, done, free };
    }

    fn handover(&self, p: &Progress) -> Result<Option<String>, String> {
        Ok(super::nvme_persist::hand_over(self, p)?.as_ref().map(super::nvme_persist::describe))
    }

    fn handover_capable(&self) -> bool {
        self.persist.is_some()
    }

    /// A non-persistent engine is stopped before kexec. QEMU maps a
    /// command's buffers when it submits the command, and a read the drive
    /// throttle still holds completes into them later: neither the bus
    /// master the PCI core clears nor the context entry the freeze zaps
    /// stops it, so it would land in the next kernel's memory (kexec puts
    /// the new kernel top-down in RAM, where anonymous buffers also are).
    fn stop_before_kexec(&self) -> bool {
        self.persist.is_none()
    }

    fn counters(&self) -> Vec<(String, u64)> {
        let p = &self.plan;
        vec![
            ("lba_size".into(), u64::from(p.lba_size)),
            ("commands_planned".into(), p.slots()),
            ("queue_depth".into(), u64::from(p.queue_depth)),
        ]
    }

    /// Disables the controller (QEMU completes whatever it still holds,
    /// throttled reads included, before CSTS.RDY drops), then bus master.
    fn quiesce(&self) -> Result<(), String> {
        let timeout = Geometry::read(&self.bar, 1).timeout;
        self.bar.write32(reg::CC, self.bar.read32(reg::CC) & !1);
        let ready = wait_ready(&self.bar, false, timeout, &self.dev.pci);
        self.dev.set_bus_master(false)?;
        ready
    }
}
