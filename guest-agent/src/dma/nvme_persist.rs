//! NVMe reads across a live update: the agent as the VMM, as for e1000e RX
//! (see `rx_persist`). One pkernfs file holds the admin area, the I/O CQ,
//! the data buffers and a canary, mapped at the IOVAs of the anonymous
//! engine before the device is attached. The controller is enabled and its
//! queues created once; at hand-over the agent stops submitting and leaves
//! the commands in flight, which complete into pkernfs while no agent runs;
//! the next agent takes the queues over from the hand-over (SQ tail, CQ
//! head and phase, the free command ids) without touching the controller
//! and reaps those completions first.
//!
//! The file is sized before the controller is identified, so buffers are
//! reserved for the largest LBA size (4 KiB).

use std::sync::{Arc, Mutex};

use lulab_proto::{handover_path, DmaLayout, DmaRegion, IommuApi, NvmeHandover, PersistLayout, PersistSpec};

use super::guest_ram::{image_path, GuestRam, CANARY, CANARY_LEN};
use super::mem::PAGE;
use super::nvme::{self, admin_len, bring_up, Geometry, Nvme, NvmeCursor, NvmeMem, Plan, ADMIN_IOVA, BUF_IOVA, CQ_IOVA};
use super::nvme_queue::{QueuePair, CQE};
use super::vfio::{Bar, Device, Iommu};
use super::{Driver, Progress};

/// Largest LBA size the file reserves buffer space for.
const MAX_LBA: u64 = 4096;

/// The file: `[admin | CQ | buffers | canary]`, each page-aligned.
#[derive(Debug, Clone, Copy)]
struct FileLayout {
    admin_len: u64,
    prp_off: u64,
    cq_off: u64,
    cq_len: u64,
    bufs_off: u64,
    bufs_cap: u64,
    canary_off: u64,
    total: u64,
}

fn page(n: u64) -> u64 {
    n.div_ceil(PAGE) * PAGE
}

impl FileLayout {
    /// For at most `queue_depth + 1` queue entries (the controller may cap it).
    fn new(blocks_per_cmd: u32, lba_count: u64, queue_depth: u32) -> Self {
        let qmax = (queue_depth + 1) as u16;
        let (admin_len, prp_off) = admin_len(qmax, queue_depth);
        let cq_off = page(admin_len);
        let cq_len = u64::from(qmax) * CQE;
        let bufs_off = cq_off + page(cq_len);
        let bufs_cap = lba_count.div_ceil(u64::from(blocks_per_cmd)) * u64::from(blocks_per_cmd) * MAX_LBA;
        let canary_off = bufs_off + page(bufs_cap);
        Self { admin_len, prp_off, cq_off, cq_len, bufs_off, bufs_cap, canary_off, total: canary_off + CANARY_LEN }
    }

    fn mapped(&self) -> [(u64, u64, u64); 3] {
        [
            (0, page(self.admin_len), ADMIN_IOVA),
            (self.cq_off, page(self.cq_len), CQ_IOVA),
            (self.bufs_off, page(self.bufs_cap), BUF_IOVA),
        ]
    }

    fn map(&self, iommu: &Iommu, ram: &GuestRam) -> Result<(), String> {
        for (off, len, iova) in self.mapped() {
            iommu.map_file(ram.file(), off, len, iova).map_err(|e| format!("{}: {e}", ram.path))?;
        }
        Ok(())
    }
}

/// Starts (or, with `spec.resume`, takes over) a persistent NVMe read engine.
pub fn start(
    pci: &str,
    blocks_per_cmd: u32,
    lba_start: u64,
    lba_count: u64,
    queue_depth: u32,
    spec: &PersistSpec,
) -> Result<(Arc<dyn Driver>, DmaLayout), String> {
    nvme::check_request(pci, blocks_per_cmd, lba_count, queue_depth)?;
    let fl = FileLayout::new(blocks_per_cmd, lba_count, queue_depth);
    let ram = GuestRam::open(&spec.file, fl.total, !spec.resume)?;
    let resumed = if spec.resume { Some(read_handover(&spec.file, pci)?) } else { None };
    if resumed.is_none() {
        ram.fill(fl.canary_off, CANARY_LEN, CANARY);
    }
    let dev = Device::open_with(pci, IommuApi::Iommufd, &|iommu| fl.map(iommu, &ram))?;
    let bar = Bar::map(&dev, super::sys::VFIO_PCI_BAR0_REGION_INDEX)?;
    let mem = NvmeMem::File { ram, cq_off: fl.cq_off };
    let (plan, io, qsize, stride, cursor, generation) = match &resumed {
        None => {
            let g = Geometry::read(&bar, queue_depth);
            let (plan, io) = bring_up(&dev, &bar, &mem, g, (blocks_per_cmd, lba_start, lba_count))?;
            let free = (0..plan.queue_depth).rev().collect();
            (plan, io, g.qsize, g.stride, NvmeCursor { next: 0, done: 0, free }, 0)
        }
        Some(h) => {
            let plan = Plan {
                lba_start: h.lba_start,
                lba_count: h.lba_count,
                blocks_per_cmd: h.blocks_per_cmd,
                lba_size: h.lba_size,
                queue_depth: h.queue_depth,
            };
            let stride = h.stride as usize;
            let io = QueuePair::resume(
                mem.admin_at(nvme::IOSQ_OFF),
                mem.cq_at(0),
                h.qsize,
                1,
                stride,
                h.sq_tail,
                h.cq_head,
                h.cq_phase,
            );
            let cursor = NvmeCursor { next: h.next, done: h.done, free: h.free.clone() };
            (plan, io, h.qsize, stride, cursor, h.generation)
        }
    };
    if plan.slots() * plan.buf_size() > fl.bufs_cap {
        return Err(format!("nvme {pci}: LBA size {} needs more buffer space than the file reserves", plan.lba_size));
    }
    let nvme = Nvme {
        dev,
        bar,
        mem,
        io: Mutex::new(io),
        plan,
        prp_off: fl.prp_off,
        cursor: Mutex::new(cursor),
        qsize,
        stride,
        persist: Some((spec.file.clone(), generation)),
    };
    if !nvme.dev.iommu.set_persistent(true)? {
        return Err(format!("nvme {pci}: the kernel did not keep the device persistent"));
    }
    let bufs_len = plan.slots() * plan.buf_size();
    let layout = DmaLayout {
        pci: pci.to_string(),
        iommu: nvme.dev.api,
        ring: DmaRegion { iova: CQ_IOVA, len: fl.cq_len, phys: Vec::new() },
        buffers: DmaRegion { iova: BUF_IOVA, len: bufs_len, phys: Vec::new() },
        buf_size: plan.buf_size() as u32,
        buf_count: plan.slots() as u32,
        dma_pages: Vec::new(),
        canary: Vec::new(),
        persist: Some(PersistLayout {
            file: spec.file.clone(),
            image_path: image_path(&spec.file)?,
            ring_offset: fl.cq_off,
            buffers_offset: fl.bufs_off,
            canary_offset: fl.canary_off,
            canary_len: CANARY_LEN,
            persistent: true,
            resumed_from: None,
            mapped: fl.mapped().iter().map(|&(off, len, _)| (off, len)).collect(),
            resumed_nvme: resumed,
            backing: lulab_proto::PersistBacking::Pkernfs,
            luo: None,
        }),
    };
    Ok((Arc::new(nvme), layout))
}

fn read_handover(file: &str, pci: &str) -> Result<NvmeHandover, String> {
    let path = handover_path(file);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e} (no hand-over from the previous agent)"))?;
    let h: NvmeHandover = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    if h.pci != pci {
        return Err(format!("{path}: hand-over is for {}, asked for {pci}", h.pci));
    }
    if h.sq_tail >= h.qsize || h.cq_head >= h.qsize || h.free.iter().any(|c| *c >= h.queue_depth) {
        return Err(format!("{path}: queue state outside a queue of {} entries", h.qsize));
    }
    Ok(h)
}

/// The kernel-log account of an NVMe hand-over.
pub fn describe(h: &NvmeHandover) -> String {
    format!("NVMe handed over at command {} ({} reaped, {} in flight), generation {}", h.next, h.done, h.next - h.done, h.generation)
}

/// Writes the hand-over of a stopped persistent engine (nothing if not persistent).
pub fn hand_over(nvme: &Nvme, _p: &Progress) -> Result<Option<NvmeHandover>, String> {
    let Some((file, generation)) = &nvme.persist else { return Ok(None) };
    let c = nvme.cursor.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let (sq_tail, cq_head, cq_phase) = nvme.io.lock().unwrap_or_else(|e| e.into_inner()).state();
    let p = nvme.plan;
    let h = NvmeHandover {
        pci: nvme.dev.pci.clone(),
        lba_start: p.lba_start,
        lba_count: p.lba_count,
        blocks_per_cmd: p.blocks_per_cmd,
        lba_size: p.lba_size,
        queue_depth: p.queue_depth,
        qsize: nvme.qsize,
        stride: nvme.stride as u32,
        sq_tail,
        cq_head,
        cq_phase,
        next: c.next,
        done: c.done,
        free: c.free,
        generation: generation + 1,
        stopped_ns: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0),
    };
    let path = handover_path(file);
    std::fs::write(&path, serde_json::to_string(&h).map_err(|e| format!("{path}: {e}"))?).map_err(|e| format!("{path}: {e}"))?;
    Ok(Some(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_layout_regions_are_page_aligned_and_disjoint() {
        let fl = FileLayout::new(8, 512, 4);
        let m = fl.mapped();
        for w in m.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "{m:?}");
        }
        assert!(m.iter().all(|(off, len, _)| off % PAGE == 0 && len % PAGE == 0));
        assert_eq!(fl.bufs_cap, 512 * MAX_LBA);
        assert!(fl.canary_off >= m[2].0 + m[2].1);
        assert_eq!(fl.total, fl.canary_off + CANARY_LEN);
    }
}
