//! e1000e RX across a live update: the agent as the VMM.
//!
//! Fresh start (old kernel): ring, buffers and a canary live in one pkernfs
//! file; the file is mapped into the IOAS with `IOMMU_IOAS_MAP_FILE` before
//! the device is attached; the device is programmed as usual and marked
//! persistent (`IOMMU_OPTION_PERSISTENT`).
//!
//! Hand-over (before kexec): polling stops, the cursor (next descriptor,
//! RDT, descriptors held) goes to `<file>.handover`; the device is left
//! running with its bus master on, and the fds stay open.
//!
//! Resume (new kernel): same file, same IOVAs mapped into a new IOAS before
//! attach (the kernel compares them with the frozen domain and switches
//! atomically), no reset, no re-programming: polling goes on from the
//! hand-over cursor, and descriptors the device completed while no agent
//! ran are found complete.

use std::collections::BTreeMap;
use std::sync::Mutex;

use lulab_proto::{handover_path, DmaConfig, DmaLayout, DmaRegion, Handover, IommuApi, PersistLayout, PersistSpec};

use super::e1000e::{bsize_bits, reg, Cursor, E1000e, RxMem, BUF_IOVA, DESC, RCTL_EN, RING_IOVA};
use super::guest_ram::{image_path, GuestRam, CANARY, CANARY_LEN};
use super::mem::PAGE;
use super::vfio::{Bar, Device, Iommu};
use super::keeper;
use super::Progress;

/// File offset of the ring.
pub const RING_OFF: u64 = 0;

/// Where each region sits in the file.
#[derive(Debug, Clone, Copy)]
pub(super) struct FileLayout {
    pub ring_len: u64,
    pub bufs_off: u64,
    pub bufs_len: u64,
    pub canary_off: u64,
    pub total: u64,
}

impl FileLayout {
    pub fn new(ring_size: u32, buf_size: u32) -> Self {
        let ring_len = u64::from(ring_size) * DESC;
        let bufs_off = ring_len.div_ceil(PAGE) * PAGE;
        let bufs_len = u64::from(ring_size) * u64::from(buf_size);
        let canary_off = (bufs_off + bufs_len).div_ceil(PAGE) * PAGE;
        Self { ring_len, bufs_off, bufs_len, canary_off, total: canary_off + CANARY_LEN }
    }

    /// Maps ring and buffers (page-rounded) at their IOVAs (for fault
    /// injection: buffers `skew` bytes higher, or not writable by the device).
    pub fn map(&self, iommu: &Iommu, ram: &GuestRam, (skew, read_only): (u64, bool)) -> Result<(), String> {
        let ring = self.bufs_off - RING_OFF;
        iommu.map_file(ram.file(), RING_OFF, ring, RING_IOVA).map_err(|e| format!("{}: ring: {e}", ram.path))?;
        let bufs = self.canary_off - self.bufs_off;
        let at = (self.bufs_off, bufs);
        iommu.map_file_as(ram.file(), at, BUF_IOVA + skew, !read_only).map_err(|e| format!("{}: buffers: {e}", ram.path))
    }
}

pub(super) fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// An e1000e engine on guest RAM in a file (ring at [`RING_OFF`], buffers at
/// [`BUF_IOVA`]): without a `cursor` the descriptors are written and the
/// device programmed from scratch; with one (taken over after a live
/// update) the device is left as it is and polling goes on from there.
pub(super) fn on_file(
    (dev, bar): (Device, Bar),
    ram: GuestRam,
    (ring_size, buf_size, refill): (u32, u32, bool),
    cursor: Option<Cursor>,
    persist: Option<(String, u32)>,
) -> Result<E1000e, String> {
    let fresh = cursor.is_none();
    let nic = E1000e {
        dev,
        bar,
        mem: RxMem::File(ram),
        ring_size,
        buf_size,
        refill,
        cursor: Mutex::new(cursor.unwrap_or(Cursor::fresh(ring_size))),
        live: Default::default(),
        totals: Mutex::new(BTreeMap::new()),
        persist,
        irq: None,
    };
    if fresh {
        for i in 0..ring_size {
            nic.write_desc(i, BUF_IOVA + u64::from(i) * u64::from(buf_size));
        }
        nic.program(bsize_bits(buf_size)?)?;
    }
    Ok(nic)
}

/// Starts (or, with `spec.resume`, adopts) a persistent e1000e RX engine.
pub fn start(pci: &str, ring_size: u32, buf_size: u32, refill: bool, spec: &PersistSpec) -> Result<(E1000e, DmaLayout), String> {
    if ring_size < 8 || ring_size & 7 != 0 || ring_size > 4096 {
        return Err(format!("e1000e {pci}: ring_size {ring_size} must be a multiple of 8 in 8..=4096"));
    }
    bsize_bits(buf_size)?;
    let fl = FileLayout::new(ring_size, buf_size);
    // Opening mounts pkernfs if needed, so the hand-over is read after it.
    let ram = GuestRam::open(&spec.file, fl.total, !spec.resume)?;
    let resumed = match spec.resume {
        true => Some(read_handover(&spec.file, pci, ring_size, buf_size).map_err(|why| quiesce_refused(pci, &fl, &ram, why))?),
        false => None,
    };
    if resumed.is_none() {
        ram.fill(fl.canary_off, CANARY_LEN, CANARY);
    }
    let skew = if spec.resume { spec.iova_skew } else { 0 };
    if skew % PAGE != 0 {
        return Err(format!("e1000e {pci}: iova_skew {skew:#x} is not page aligned"));
    }
    let read_only = spec.resume && spec.read_only;
    let dev = Device::open_with(pci, IommuApi::Iommufd, &|iommu| fl.map(iommu, &ram, (skew, read_only)))?;
    let bar = Bar::map(&dev, super::sys::VFIO_PCI_BAR0_REGION_INDEX)?;
    let cursor = resumed.as_ref().map(|h| Cursor { next: h.next, tail: h.tail, held: h.held });
    let generation = resumed.as_ref().map_or(0, |h| h.generation);
    let nic = on_file((dev, bar), ram, (ring_size, buf_size, refill), cursor, Some((spec.file.clone(), generation)))?;
    let persistent = nic.dev.iommu.set_persistent(true)?;
    if !persistent {
        return Err(format!("e1000e {pci}: the kernel did not keep the device persistent"));
    }
    let layout = layout(&nic, &fl, spec, resumed)?;
    Ok((nic, layout))
}

/// Gives the engine's fds to an fd keeper, so that the device and its
/// domain outlive this agent (see `keeper`); `cfg` is its start request.
pub fn keep(nic: &E1000e, cfg: &DmaConfig) -> Result<(), String> {
    let pci = &nic.dev.pci;
    let (iommufd, (ioas, devid, hwpt)) = nic.dev.iommufd_parts().ok_or_else(|| format!("e1000e {pci}: a persistent engine goes through iommufd"))?;
    let generation = nic.persist.as_ref().map_or(0, |(_, g)| *g);
    let rec = keeper::Record { keeper: 0, device_fd: 0, iommufd: 0, ioas, devid, hwpt, config: cfg.clone(), generation };
    keeper::keep(&nic.dev.fd, iommufd, rec).map(|_| ())
}

/// Takes back the engine an agent that died left with its fd keeper: the
/// same device fd and domain, the same pkernfs file; nothing is reset or
/// programmed. Polling goes on from where the ring shows the device is
/// (see `E1000e::cursor_from_ring`).
pub fn reattach(pci: &str) -> Result<(E1000e, DmaLayout), String> {
    let (rec, fd, iommufd) = keeper::take(pci)?;
    let DmaConfig::E1000eRx { ring_size, buf_size, refill, persist: Some(spec), .. } = &rec.config else {
        return Err(format!("{pci}: the kept engine is not a persistent e1000e RX engine"));
    };
    let fl = FileLayout::new(*ring_size, *buf_size);
    let ram = GuestRam::open(&spec.file, fl.total, false)?;
    let dev = Device::from_kept(pci, fd, iommufd, (rec.ioas, rec.devid, rec.hwpt))?;
    let bar = Bar::map(&dev, super::sys::VFIO_PCI_BAR0_REGION_INDEX)?;
    let any = Cursor::fresh(*ring_size);
    let nic = on_file((dev, bar), ram, (*ring_size, *buf_size, *refill), Some(any), Some((spec.file.clone(), rec.generation)))?;
    let c = nic.cursor_from_ring();
    *nic.cursor.lock().unwrap_or_else(|e| e.into_inner()) = c;
    crate::port::kmsg(&format!(
        "lulab-agent: e1000e {pci}: re-attached from fd keeper pid {}: RDT {}, next descriptor {}, {} held",
        rec.keeper, c.tail, c.next, c.held
    ));
    let layout = layout(&nic, &fl, spec, None)?;
    Ok((nic, layout))
}

/// The layout of a persistent engine on its file.
fn layout(nic: &E1000e, fl: &FileLayout, spec: &PersistSpec, resumed: Option<Handover>) -> Result<DmaLayout, String> {
    let (pci, ring_size, buf_size) = (&nic.dev.pci, nic.ring_size, nic.buf_size);
    let image_path = image_path(&spec.file)?;
    Ok(DmaLayout {
        pci: pci.to_string(),
        iommu: nic.dev.api,
        ring: DmaRegion { iova: RING_IOVA, len: fl.ring_len, phys: Vec::new() },
        buffers: DmaRegion { iova: BUF_IOVA, len: fl.bufs_len, phys: Vec::new() },
        buf_size,
        buf_count: ring_size,
        dma_pages: Vec::new(),
        canary: Vec::new(),
        persist: Some(PersistLayout {
            file: spec.file.clone(),
            image_path,
            ring_offset: RING_OFF,
            buffers_offset: fl.bufs_off,
            canary_offset: fl.canary_off,
            canary_len: CANARY_LEN,
            persistent: true,
            resumed_from: resumed,
            mapped: vec![(RING_OFF, fl.bufs_off - RING_OFF), (fl.bufs_off, fl.canary_off - fl.bufs_off)],
            resumed_nvme: None,
            backing: lulab_proto::PersistBacking::Pkernfs,
            luo: None,
        }),
    })
}

/// A hand-over this agent cannot trust: it takes the device anyway (same
/// file at the same IOVAs, so the kernel's switch check accepts it and
/// translation stays on) and stops its DMA on purpose, rather than leave
/// it writing into a ring whose state nobody knows. Returns the refusal.
fn quiesce_refused(pci: &str, fl: &FileLayout, ram: &GuestRam, why: String) -> String {
    let quiesced = Device::open_with(pci, IommuApi::Iommufd, &|iommu| fl.map(iommu, ram, (0, false))).and_then(|dev| {
        let bar = Bar::map(&dev, super::sys::VFIO_PCI_BAR0_REGION_INDEX)?;
        bar.write32(reg::RCTL, bar.read32(reg::RCTL) & !RCTL_EN);
        dev.set_bus_master(false)
    });
    let said = match quiesced {
        Ok(()) => format!("{why}: refusing to resume from it; the device was quiesced (receiver and bus master off)"),
        Err(q) => format!("{why}: refusing to resume from it; quiescing the device failed too: {q}"),
    };
    crate::port::kmsg(&format!("lulab-agent: e1000e {pci}: {said}"));
    said
}

fn read_handover(file: &str, pci: &str, ring_size: u32, buf_size: u32) -> Result<Handover, String> {
    let path = handover_path(file);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e} (no hand-over from the previous agent)"))?;
    let h: Handover = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    if h.pci != pci || h.ring_size != ring_size || h.buf_size != buf_size {
        return Err(format!(
            "{path}: hand-over is for {} (ring {}, buffers {}), asked for {pci} (ring {ring_size}, buffers {buf_size})",
            h.pci, h.ring_size, h.buf_size
        ));
    }
    if h.next >= ring_size || h.tail >= ring_size || h.held > ring_size {
        return Err(format!("{path}: cursor next {} / tail {} outside a ring of {ring_size}", h.next, h.tail));
    }
    Ok(h)
}

/// Spare IOVA for [`remap_probe`], above ring and buffers.
pub const PROBE_IOVA: u64 = 0x3000_0000;

/// Maps the file's first page at [`PROBE_IOVA`] and unmaps it: on our kernel
/// each change moves a sealed persistent domain back to its live tables
/// (sealed again at kexec).
pub fn remap_probe(iommu: &Iommu, ram: &GuestRam) -> Result<u64, String> {
    iommu.map_file(ram.file(), 0, PAGE, PROBE_IOVA)?;
    iommu.unmap(PROBE_IOVA, PAGE)?;
    Ok(PROBE_IOVA)
}

/// The kernel-log account of an RX hand-over.
pub fn describe(h: &Handover) -> String {
    format!("handed over at descriptor {} (RDT {}, {} held), generation {}", h.next, h.tail, h.held, h.generation)
}

/// Writes the hand-over of a stopped persistent engine (`None` if not persistent).
pub fn hand_over(nic: &E1000e, p: &Progress) -> Result<Option<Handover>, String> {
    let Some((file, generation)) = &nic.persist else { return Ok(None) };
    let irq_received = nic.irq.as_ref().map_or(0, |irq| irq.finish(&nic.bar));
    let c = *nic.cursor.lock().unwrap_or_else(|e| e.into_inner());
    let h = Handover {
        pci: nic.dev.pci.clone(),
        ring_size: nic.ring_size,
        buf_size: nic.buf_size,
        refill: nic.refill,
        next: c.next,
        tail: c.tail,
        held: c.held,
        completed: p.completed.load(std::sync::atomic::Ordering::Relaxed),
        refilled: p.refilled.load(std::sync::atomic::Ordering::Relaxed),
        generation: generation + 1,
        stopped_ns: now_ns(),
        irq_received,
    };
    if let RxMem::File(ram) = &nic.mem {
        ram.flush();
    }
    let path = handover_path(file);
    let text = serde_json::to_string(&h).map_err(|e| format!("{path}: {e}"))?;
    std::fs::write(&path, text).map_err(|e| format!("{path}: {e}"))?;
    Ok(Some(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_layout_is_page_aligned_and_disjoint() {
        let fl = FileLayout::new(256, 2048);
        assert_eq!(fl.ring_len, 4096);
        assert_eq!(fl.bufs_off, 4096);
        assert_eq!(fl.canary_off, 4096 + 256 * 2048);
        assert_eq!(fl.total, fl.canary_off + CANARY_LEN);
        let odd = FileLayout::new(8, 256);
        assert_eq!((odd.ring_len, odd.bufs_off, odd.canary_off), (128, 4096, 8192));
    }

    #[test]
    fn image_path_is_relative_to_the_mount() {
        assert_eq!(image_path("/mnt/pkernfs/guest-ram").as_deref(), Ok("/guest-ram"));
    }
}
