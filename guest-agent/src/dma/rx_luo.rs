//! e1000e RX with its guest RAM in a memfd preserved by upstream's Live
//! Update Orchestrator: the comparison for [`super::rx_persist`].
//!
//! Fresh start: a memfd with the pkernfs file's layout (ring, buffers,
//! canary) is mapped into the IOAS with `IOMMU_IOAS_MAP_FILE` and the NIC is
//! programmed as usual, but not marked persistent (upstream has no such
//! thing). Its pages are resolved from `/proc/self/pagemap`.
//!
//! Hand-over (before kexec): polling stops; the cursor, a hash of every
//! held frame (descriptor + buffer) and of the canary, and the memfd's
//! physical pages go into a second memfd; both are preserved in the LUO
//! session named after the engine, whose fd stays open through the kexec.
//!
//! Resume (next kernel): retrieve the session and both memfds, `FINISH`,
//! re-check the held frames and the canary, then take the NIC exactly like
//! the pkernfs path (same IOVAs, no reset, no re-programming, polling from
//! the hand-over cursor) and say what the device looks like: upstream
//! keeps the memory, nothing keeps the device's DMA going.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

use lulab_proto::pattern::Fnv1a64;
use lulab_proto::{DmaLayout, DmaRegion, Handover, IommuApi, LuoFindings, PersistBacking, PersistLayout, PersistSpec, PhysRange};
use serde::{Deserialize, Serialize};

use super::e1000e::{bsize_bits, reg, Cursor, E1000e, RxMem, BUF_IOVA, DESC, RCTL_EN, RING_IOVA};
use super::guest_ram::{GuestRam, CANARY, CANARY_LEN};
use super::luo::{self, Luo, Session};
use super::mem::{pagemap, truncate, PAGE};
use super::rx_persist::{now_ns, on_file, FileLayout, RING_OFF};
use super::vfio::{Bar, Device};
use super::{Driver, Progress};

/// Token of the guest-RAM memfd in the session.
const RAM_TOKEN: u64 = 1;
/// Token of the hand-over memfd.
const STATE_TOKEN: u64 = 2;

/// The hand-over memfd's contents (JSON).
#[derive(Debug, Serialize, Deserialize)]
struct LuoHandover {
    handover: Handover,
    /// Frames the agent held, hashed with their descriptors.
    frames: Vec<HeldFrame>,
    /// FNV-1a of the canary.
    canary: u64,
    /// Physical pages of the whole memfd.
    phys: Vec<PhysRange>,
}

#[derive(Debug, Serialize, Deserialize)]
struct HeldFrame {
    desc: u32,
    fnv1a64: u64,
}

/// The device as the new agent found it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Found {
    driver_before: Option<String>,
    bus_master: bool,
    rx_enabled: bool,
    ring_base: u64,
    ring_len: u32,
}

/// A running engine on a LUO memfd.
#[derive(Debug)]
pub struct LuoRx {
    nic: E1000e,
    fl: FileLayout,
    name: String,
    generation: u32,
    /// From the hand-over to the kexec: closing these would unpreserve.
    preserved: Mutex<Option<(Luo, Session, File)>>,
}

/// Starts (or, with `spec.resume`, retrieves and resumes) the engine.
pub fn start(pci: &str, ring_size: u32, buf_size: u32, refill: bool, spec: &PersistSpec) -> Result<(LuoRx, DmaLayout), String> {
    if ring_size < 8 || ring_size & 7 != 0 || ring_size > 4096 {
        return Err(format!("e1000e {pci}: ring_size {ring_size} must be a multiple of 8 in 8..=4096"));
    }
    bsize_bits(buf_size)?;
    let fl = FileLayout::new(ring_size, buf_size);
    let (ram, resumed) = if spec.resume {
        let (ram, h) = retrieve(&spec.file, fl.total)?;
        (ram, Some(h))
    } else {
        let ram = GuestRam::map(luo::memfd(&spec.file, fl.total)?, fl.total, &spec.file)?;
        touch(&ram, fl.total, true);
        ram.fill(fl.canary_off, CANARY_LEN, CANARY);
        (ram, None)
    };
    // Checked before the device is taken: nothing but the old device could change them.
    let frames = resumed.as_ref().map(|h| check(&ram, &fl, h, buf_size));
    let driver_before = current_driver(pci);
    let dev = Device::open_with(pci, IommuApi::Iommufd, &|iommu| fl.map(iommu, &ram, (0, false)))?;
    let bar = Bar::map(&dev, super::sys::VFIO_PCI_BAR0_REGION_INDEX)?;
    let found = Found {
        driver_before,
        bus_master: dev.config_read16(0x4)? & (1 << 2) != 0,
        rx_enabled: bar.read32(reg::RCTL) & RCTL_EN != 0,
        ring_base: (u64::from(bar.read32(reg::RDBAH)) << 32) | u64::from(bar.read32(reg::RDBAL)),
        ring_len: bar.read32(reg::RDLEN),
    };
    let cursor = resumed.as_ref().map(|h| Cursor { next: h.handover.next, tail: h.handover.tail, held: h.handover.held });
    let nic = on_file((dev, bar), ram, (ring_size, buf_size, refill), cursor, None)?;
    let RxMem::File(ram) = &nic.mem else { unreachable!("built above") };
    touch(ram, fl.total, false);
    let base = ram.at(0) as u64;
    let ring_pages = pagemap(base, fl.bufs_off, &spec.file)?;
    let buf_pages = pagemap(base + fl.bufs_off, fl.canary_off - fl.bufs_off, &spec.file)?;
    let canary = pagemap(base + fl.canary_off, CANARY_LEN, &spec.file)?;
    let luo = match (&resumed, frames) {
        (Some(h), Some((checked, intact, canary_intact))) => {
            let now = pagemap(base, fl.total, &spec.file)?;
            let expect = Found { ring_base: RING_IOVA, ring_len: ring_size * DESC as u32, ..Found::default() };
            Some(Box::new(LuoFindings {
                session: spec.file.clone(),
                memfd_pages: fl.total / PAGE,
                frames_checked: checked,
                frames_intact: intact,
                canary_intact,
                driver_before: found.driver_before.clone(),
                bus_master: found.bus_master,
                rx_enabled: found.rx_enabled,
                ring_base: found.ring_base,
                ring_len: found.ring_len,
                same_physical_pages: now == h.phys,
                broken: device_broken(&found, &expect),
            }))
        }
        _ => None,
    };
    let layout = DmaLayout {
        pci: pci.to_string(),
        iommu: nic.dev.api,
        ring: DmaRegion { iova: RING_IOVA, len: fl.ring_len, phys: truncate(&ring_pages, fl.ring_len) },
        buffers: DmaRegion { iova: BUF_IOVA, len: fl.bufs_len, phys: truncate(&buf_pages, fl.bufs_len) },
        buf_size,
        buf_count: ring_size,
        dma_pages: [ring_pages, buf_pages].concat(),
        canary,
        persist: Some(PersistLayout {
            file: spec.file.clone(),
            image_path: String::new(),
            ring_offset: RING_OFF,
            buffers_offset: fl.bufs_off,
            canary_offset: fl.canary_off,
            canary_len: CANARY_LEN,
            persistent: false,
            resumed_from: resumed.map(|h| h.handover),
            mapped: vec![(RING_OFF, fl.bufs_off - RING_OFF), (fl.bufs_off, fl.canary_off - fl.bufs_off)],
            resumed_nvme: None,
            backing: PersistBacking::LuoMemfd,
            luo,
        }),
    };
    let generation = layout.persist.as_ref().and_then(|p| p.resumed_from.as_ref()).map_or(0, |h| h.generation);
    let engine = LuoRx { nic, fl, name: spec.file.clone(), generation, preserved: Mutex::new(None) };
    Ok((engine, layout))
}

/// The session, both memfds and the hand-over from the previous kernel.
fn retrieve(name: &str, total: u64) -> Result<(GuestRam, LuoHandover), String> {
    let l = Luo::open()?;
    let s = l.retrieve_session(name)?;
    let ram = s.retrieve(RAM_TOKEN)?;
    let state = s.retrieve(STATE_TOKEN)?;
    s.finish()?;
    let what = format!("LUO session {name:?} hand-over memfd");
    let len = state.metadata().map_err(|e| format!("{what}: stat: {e}"))?.len();
    let mut text = vec![0u8; len as usize];
    state.read_exact_at(&mut text, 0).map_err(|e| format!("{what}: read {len} bytes: {e}"))?;
    let h: LuoHandover = serde_json::from_slice(&text).map_err(|e| format!("{what}: {e}"))?;
    let size = ram.metadata().map_err(|e| format!("LUO memfd {name}: stat: {e}"))?.len();
    if size != total {
        return Err(format!("LUO memfd {name}: {size:#x} bytes after retrieval, expected {total:#x}"));
    }
    Ok((GuestRam::map(ram, total, name)?, h))
}

/// Faults every page into this process (`write`: allocating it first; only
/// before the device owns any of it).
fn touch(ram: &GuestRam, total: u64, write: bool) {
    for off in (0..total).step_by(PAGE as usize) {
        let p = ram.at(off);
        // SAFETY: `at` checks the offset; one byte of our own shared mapping.
        unsafe {
            let b = p.read_volatile();
            if write {
                p.write_volatile(b);
            }
        }
    }
}

fn digest(ram: &GuestRam, off: u64, len: u64, h: &mut Fnv1a64) {
    let mut buf = vec![0u8; len as usize];
    for (i, b) in buf.iter_mut().enumerate() {
        // SAFETY: `at` checks the offset; the device may write it, hence volatile.
        *b = unsafe { ram.at(off + i as u64).read_volatile() };
    }
    h.update(&buf);
}

/// Hash of descriptor `i` and its buffer.
fn frame_digest(ram: &GuestRam, fl: &FileLayout, i: u32, buf_size: u32) -> u64 {
    let mut h = Fnv1a64::new();
    digest(ram, RING_OFF + u64::from(i) * DESC, DESC, &mut h);
    digest(ram, fl.bufs_off + u64::from(i) * u64::from(buf_size), u64::from(buf_size), &mut h);
    h.finish()
}

fn canary_digest(ram: &GuestRam, fl: &FileLayout) -> u64 {
    let mut h = Fnv1a64::new();
    digest(ram, fl.canary_off, CANARY_LEN, &mut h);
    h.finish()
}

/// Descriptors the agent holds: `[tail, tail + held)` = `[tail, next)`.
fn held(c: Cursor, ring_size: u32) -> impl Iterator<Item = u32> {
    (0..c.held).map(move |k| (c.tail + k) % ring_size)
}

/// (frames checked, frames intact, canary intact) against the hand-over.
fn check(ram: &GuestRam, fl: &FileLayout, h: &LuoHandover, buf_size: u32) -> (u32, u32, bool) {
    let intact = h.frames.iter().filter(|f| frame_digest(ram, fl, f.desc, buf_size) == f.fnv1a64).count();
    (h.frames.len() as u32, intact as u32, canary_digest(ram, fl) == h.canary)
}

/// What stands between the handed-over device and a resumed RX stream
/// (the memory is judged from the frame and canary counts).
fn device_broken(found: &Found, expect: &Found) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(d) = found.driver_before.as_deref().filter(|d| *d != "vfio-pci") {
        out.push(format!("the next kernel bound the NIC to {d} (the host driver took it back)"));
    }
    if !found.bus_master {
        out.push("bus master off when the agent took the NIC: it cannot DMA".into());
    }
    if !found.rx_enabled {
        out.push("RX disabled (RCTL.EN clear): the NIC was reset".into());
    }
    if (found.ring_base, found.ring_len) != (expect.ring_base, expect.ring_len) {
        out.push(format!(
            "ring state lost: RDBA {:#x} / RDLEN {} (handed over at {:#x} / {})",
            found.ring_base, found.ring_len, expect.ring_base, expect.ring_len
        ));
    }
    out
}

impl LuoRx {
    fn hand_over(&self, p: &Progress) -> Result<Option<Handover>, String> {
        let RxMem::File(ram) = &self.nic.mem else { return Err("LUO engine without its memfd".into()) };
        let c = *self.nic.cursor.lock().unwrap_or_else(|e| e.into_inner());
        let n = self.nic.ring_size;
        let frames = held(c, n)
            .filter(|&i| {
                // SAFETY: status byte of descriptor `i` inside the ring (`at` checks).
                let status = unsafe { ram.at(RING_OFF + u64::from(i) * DESC + 12).read_volatile() };
                status & 1 != 0
            })
            .map(|i| HeldFrame { desc: i, fnv1a64: frame_digest(ram, &self.fl, i, self.nic.buf_size) })
            .collect();
        let handover = Handover {
            pci: self.nic.dev.pci.clone(),
            ring_size: n,
            buf_size: self.nic.buf_size,
            refill: self.nic.refill,
            next: c.next,
            tail: c.tail,
            held: c.held,
            completed: p.completed.load(std::sync::atomic::Ordering::Relaxed),
            refilled: p.refilled.load(std::sync::atomic::Ordering::Relaxed),
            generation: self.generation + 1,
            stopped_ns: now_ns(),
            irq_received: 0,
        };
        let phys = pagemap(ram.at(0) as u64, self.fl.total, &self.name)?;
        let state = LuoHandover { handover: handover.clone(), frames, canary: canary_digest(ram, &self.fl), phys };
        let json = serde_json::to_vec(&state).map_err(|e| format!("{}: hand-over: {e}", self.name))?;
        let st = luo::memfd(&format!("{}.handover", self.name), json.len() as u64)?;
        st.write_all_at(&json, 0).map_err(|e| format!("{}.handover memfd: {e}", self.name))?;
        let l = Luo::open()?;
        let s = l.create_session(&self.name)?;
        s.preserve(ram.file(), RAM_TOKEN)?;
        s.preserve(&st, STATE_TOKEN)?;
        ram.flush();
        *self.preserved.lock().unwrap_or_else(|e| e.into_inner()) = Some((l, s, st));
        Ok(Some(handover))
    }
}

impl Driver for LuoRx {
    fn poll(&self, p: &Progress) {
        self.nic.poll(p)
    }

    fn counters(&self) -> Vec<(String, u64)> {
        self.nic.counters()
    }

    fn quiesce(&self) -> Result<(), String> {
        self.nic.quiesce()
    }

    fn handover(&self, p: &Progress) -> Result<Option<String>, String> {
        Ok(self.hand_over(p)?.as_ref().map(super::rx_persist::describe))
    }

    fn handover_capable(&self) -> bool {
        true
    }
}

/// The driver `pci` is bound to now (`None`: none).
fn current_driver(pci: &str) -> Option<String> {
    let link = std::path::Path::new("/sys/bus/pci/devices").join(pci).join("driver");
    std::fs::read_link(link).ok()?.file_name().map(|n| n.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_descriptors_run_from_tail_to_next() {
        let fresh = Cursor::fresh(8);
        assert_eq!(held(fresh, 8).collect::<Vec<_>>(), [7]);
        let c = Cursor { next: 2, tail: 6, held: 4 };
        assert_eq!(held(c, 8).collect::<Vec<_>>(), [6, 7, 0, 1]);
    }

    #[test]
    fn a_reset_device_is_reported_with_every_reason() {
        let expect = Found { ring_base: RING_IOVA, ring_len: 2048 * 16, ..Found::default() };
        let kept = Found { driver_before: Some("vfio-pci".into()), bus_master: true, rx_enabled: true, ..expect.clone() };
        assert!(device_broken(&kept, &expect).is_empty());
        let reset = Found { driver_before: Some("e1000e".into()), ring_base: 0x3f00_0000, ring_len: 4096, ..Found::default() };
        let b = device_broken(&reset, &expect);
        assert_eq!(b.len(), 4, "{b:?}");
        assert!(b[0].contains("e1000e") && b[3].contains("ring state lost"), "{b:?}");
    }
}
