//! NVMe reads through VFIO: every LBA in `[lba_start, lba_start + lba_count)`
//! is read exactly once, `blocks_per_cmd` per command, into its own buffer
//! slot (slot `i` at `buffers.iova + i * buf_size` holds LBAs
//! `lba_start + i * blocks_per_cmd ..`), `queue_depth` commands in flight.
//! Polled completion queues, no interrupts; one I/O queue pair (qid 1).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lulab_proto::{DmaLayout, IommuApi};

use super::mem::{DmaMem, PAGE};
use super::nvme_queue::{prps, Command, QueuePair, CQE, SQE};
use super::vfio::{Bar, Device};
use super::{Driver, Progress};

/// IOVA of the I/O completion queue (reported as the layout's `ring`).
const CQ_IOVA: u64 = 0x1000_0000;
/// IOVA of the data buffers.
const BUF_IOVA: u64 = 0x2000_0000;
/// IOVA of the admin area: admin SQ, admin CQ, identify page, I/O SQ, PRP lists.
const ADMIN_IOVA: u64 = 0x3000_0000;
const ADMIN_Q: u16 = 16;
/// Offsets inside the admin area.
const ASQ_OFF: u64 = 0;
const ACQ_OFF: u64 = PAGE;
const IDENTIFY_OFF: u64 = 2 * PAGE;
const IOSQ_OFF: u64 = 3 * PAGE;
/// Upper bound on buffer memory (the host has 1 GiB).
const MAX_BUFFERS: u64 = 256 << 20;

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
struct Plan {
    lba_start: u64,
    lba_count: u64,
    blocks_per_cmd: u32,
    lba_size: u32,
    queue_depth: u16,
}

impl Plan {
    fn buf_size(&self) -> u64 {
        u64::from(self.blocks_per_cmd) * u64::from(self.lba_size)
    }
    fn slots(&self) -> u64 {
        self.lba_count.div_ceil(u64::from(self.blocks_per_cmd))
    }
    /// The Read command for slot `i` (the last may be short).
    fn read(&self, i: u64) -> (u64, u32) {
        let first = self.lba_start + i * u64::from(self.blocks_per_cmd);
        let n = (self.lba_start + self.lba_count - first).min(u64::from(self.blocks_per_cmd)) as u32;
        (first, n)
    }
}

/// A running NVMe read engine.
#[derive(Debug)]
pub struct Nvme {
    dev: Device,
    bar: Bar,
    admin: DmaMem,
    _cq: DmaMem,
    _bufs: DmaMem,
    io: Mutex<QueuePair>,
    plan: Plan,
    /// Offset of the per-command PRP list pages in the admin area.
    prp_off: u64,
}

/// Opens `pci`, initialises the controller and its I/O queues.
pub fn start(
    pci: &str,
    blocks_per_cmd: u32,
    lba_start: u64,
    lba_count: u64,
    queue_depth: u32,
    api: IommuApi,
) -> Result<(Arc<dyn Driver>, DmaLayout), String> {
    if blocks_per_cmd == 0 || lba_count == 0 || !(1..=1023).contains(&queue_depth) {
        return Err(format!("nvme {pci}: need blocks_per_cmd ≥ 1, lba_count ≥ 1, queue_depth in 1..=1023"));
    }
    let dev = Device::open(pci, api)?;
    let bar = Bar::map(&dev, super::sys::VFIO_PCI_BAR0_REGION_INDEX)?;
    let cap = u64::from(bar.read32(reg::CAP)) | (u64::from(bar.read32(reg::CAP + 4)) << 32);
    let mqes = (cap & 0xffff) as u32 + 1;
    let qsize = (queue_depth + 1).min(mqes) as u16;
    let stride = 4usize << ((cap >> 32) & 0xf);
    let timeout = Duration::from_millis(500 * ((cap >> 24) & 0xff).max(1));
    let iosq_len = u64::from(qsize) * SQE;
    let prp_off = IOSQ_OFF + iosq_len.div_ceil(PAGE) * PAGE;
    let admin_len = prp_off + u64::from(queue_depth) * PAGE;
    let admin = DmaMem::new(&dev.iommu, &format!("nvme {pci} admin area"), admin_len, ADMIN_IOVA)?;
    let cq_len = u64::from(qsize) * CQE;
    let cq = DmaMem::new(&dev.iommu, &format!("nvme {pci} I/O CQ"), cq_len, CQ_IOVA)?;

    let mut aq = QueuePair::new(admin.mem.at(ASQ_OFF), admin.mem.at(ACQ_OFF), ADMIN_Q, 0, stride);
    enable(&dev, &bar, timeout)?;
    let ctx = AdminCtx { bar: &bar, pci, timeout };
    let (lba_size, max_transfer) = identify(&ctx, &mut aq, &admin)?;
    let plan = Plan { lba_start, lba_count, blocks_per_cmd, lba_size, queue_depth: (qsize - 1) };
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
    let bufs = DmaMem::new(&dev.iommu, &format!("nvme {pci} data buffers"), bufs_len, BUF_IOVA)?;
    // Create I/O CQ 1 (PC=1, interrupts off), then I/O SQ 1 bound to it.
    let qs = u32::from(qsize - 1) << 16;
    ctx.admin(&mut aq, Command { opcode: 0x05, prp1: CQ_IOVA, cdw: [qs | 1, 1, 0, 0, 0, 0], ..Default::default() })?;
    let sq = Command { opcode: 0x01, prp1: ADMIN_IOVA + IOSQ_OFF, cdw: [qs | 1, (1 << 16) | 1, 0, 0, 0, 0], ..Default::default() };
    ctx.admin(&mut aq, sq)?;
    let io = QueuePair::new(admin.mem.at(IOSQ_OFF), cq.mem.at(0), qsize, 1, stride);
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
    let nvme = Nvme { dev, bar, admin, _cq: cq, _bufs: bufs, io: Mutex::new(io), plan, prp_off };
    Ok((Arc::new(nvme), layout))
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
fn identify(ctx: &AdminCtx<'_>, aq: &mut QueuePair, admin: &DmaMem) -> Result<(u32, u64), String> {
    let prp1 = ADMIN_IOVA + IDENTIFY_OFF;
    let page = admin.mem.at(IDENTIFY_OFF);
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
                    unsafe { self.admin.mem.at(off + 8 * k as u64).cast::<u64>().write_volatile(*p) };
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
        let mut free: Vec<u16> = (0..self.plan.queue_depth).rev().collect();
        let (mut next, mut done) = (0u64, 0u64);
        // After a stop request: no new commands; drain what is in flight.
        let mut drain_deadline = None;
        while done < next || next < total {
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
    }

    fn counters(&self) -> Vec<(String, u64)> {
        let p = &self.plan;
        vec![
            ("lba_size".into(), u64::from(p.lba_size)),
            ("commands_planned".into(), p.slots()),
            ("queue_depth".into(), u64::from(p.queue_depth)),
        ]
    }

    fn quiesce(&self) -> Result<(), String> {
        self.dev.set_bus_master(false)
    }
}
