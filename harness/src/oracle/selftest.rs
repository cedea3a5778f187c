//! Oracle self-tests (issue 4 acceptance): on a synthetic RAM image with an
//! RX ring and buffers at chosen GPAs, each oracle must fail exactly when
//! and where it should.

use lulab_proto::{DmaLayout, DmaRegion, IommuApi, PhysRange};
use proptest::prelude::*;

use super::ledger::{DeviceEvidence, Ledger, LedgerReport};
use super::memory;
use super::rx_scan::{RxRing, RxScanner, DESC_LEN, STATUS_DD, STATUS_EOP};
use crate::guest_memory::GuestMemory;
use crate::traffic::frame;
use crate::traffic::inject::{SentFrame, SentLog};

const RUN: u64 = 0xfeed;
const RING: u32 = 256;
const BUF: u32 = 2048;
const FRAME: usize = 200;
const CANARY: u64 = 0x38_0000;

/// A fake host: 4 MiB RAM, ring at 1 MiB, buffers split over two chunks.
struct Image {
    _file: tempfile::NamedTempFile,
    mem: GuestMemory,
    layout: DmaLayout,
}

impl Image {
    fn new() -> Self {
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(4 << 20).unwrap();
        let mem = GuestMemory::open(file.path(), 4 << 20).unwrap();
        let half = u64::from(RING * BUF / 2);
        let ring = DmaRegion { iova: 0x1000, len: 4096, phys: vec![PhysRange { gpa: 0x10_0000, len: 4096 }] };
        let buffers = DmaRegion {
            iova: 0x10_0000,
            len: 2 * half,
            phys: vec![PhysRange { gpa: 0x30_0000, len: half }, PhysRange { gpa: 0x20_0000, len: half }],
        };
        let dma_pages = vec![ring.phys[0], buffers.phys[0], buffers.phys[1]];
        let layout = DmaLayout {
            pci: "0000:00:02.0".into(),
            iommu: IommuApi::Type1,
            ring,
            buffers,
            buf_size: BUF,
            buf_count: RING,
            dma_pages,
            canary: vec![PhysRange { gpa: CANARY, len: 0x4000 }],
            persist: None,
        };
        Self { _file: file, mem, layout }
    }

    /// Does what the e1000e does for frame `seq`: buffer first, then the
    /// descriptor with DD|EOP, in slot `seq % RING`.
    fn deliver(&mut self, seq: u64) {
        let slot = seq % u64::from(RING);
        let f = frame::encode(RUN, seq, 0, frame::payload_len_for(FRAME) as u16);
        self.mem.write_region(&self.layout.buffers, slot * u64::from(BUF), &f).unwrap();
        let mut d = [0u8; DESC_LEN];
        d[..8].copy_from_slice(&(self.layout.buffers.iova + slot * u64::from(BUF)).to_le_bytes());
        d[8..10].copy_from_slice(&(f.len() as u16).to_le_bytes());
        d[12] = STATUS_DD | STATUS_EOP;
        self.mem.write_region(&self.layout.ring, slot * DESC_LEN as u64, &d).unwrap();
    }

    fn buffer_gpa(&self, slot: u64) -> u64 {
        crate::guest_memory::region_gpa(&self.layout.buffers, slot * u64::from(BUF)).unwrap()
    }

    fn scanner(&self) -> RxScanner {
        RxScanner::new(RxRing::from_layout(&self.layout).unwrap(), RUN)
    }
}

fn sent(n: u64) -> SentLog {
    let frames = (0..n).map(|seq| SentFrame { seq, due_ns: 0, written_ns: Some(1) }).collect();
    SentLog { run_id: RUN, frame_size: FRAME, frames, ..SentLog::default() }
}

fn account(img: &Image, n: u64) -> LedgerReport {
    let mut s = img.scanner();
    s.scan(&img.mem).unwrap();
    Ledger::account(&sent(n), s.sightings(), &DeviceEvidence::default())
}

#[test]
fn positive_control_is_intact() {
    let mut img = Image::new();
    (0..200).for_each(|s| img.deliver(s));
    let r = account(&img, 200);
    assert_eq!((r.delivered, r.corrupted, r.lost), (200, 0, 0), "{r:?}");
    assert!(r.intact());
}

#[test]
fn one_corrupted_byte_is_exactly_one_corrupted_frame() {
    let mut img = Image::new();
    (0..200).for_each(|s| img.deliver(s));
    let gpa = img.buffer_gpa(137) + 60;
    let b = img.mem.read_array::<1>(gpa).unwrap()[0];
    img.mem.write(gpa, &[b ^ 0x01]).unwrap();
    let r = account(&img, 200);
    assert_eq!((r.delivered, r.corrupted, r.lost), (199, 1, 0), "{r:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Whichever byte of the frame is hit (MACs, magic, seq, length,
    /// payload, checksum), the ledger reports one corrupted frame, no loss.
    #[test]
    fn any_corrupted_byte_is_one_corrupted_frame(pos in 0usize..FRAME, xor in 1u8..=255, slot in 0u64..50) {
        let mut img = Image::new();
        (0..50).for_each(|s| img.deliver(s));
        let gpa = img.buffer_gpa(slot) + pos as u64;
        let b = img.mem.read_array::<1>(gpa).unwrap()[0];
        img.mem.write(gpa, &[b ^ xor]).unwrap();
        let r = account(&img, 50);
        prop_assert_eq!((r.delivered, r.corrupted, r.lost), (49, 1, 0), "{:?}", r);
    }
}

#[test]
fn one_removed_frame_is_exactly_one_lost() {
    let mut img = Image::new();
    (0..200).for_each(|s| img.deliver(s));
    // Clear DD of descriptor 77.
    img.mem.write_region(&img.layout.ring, 77 * DESC_LEN as u64 + 12, &[0]).unwrap();
    let r = account(&img, 200);
    assert_eq!((r.delivered, r.corrupted, r.lost, r.first_lost_seqs.clone()), (199, 0, 1, vec![77]), "{r:?}");
    // Zeroing the buffer instead (DD left set) is also exactly one loss.
    let mut img = Image::new();
    (0..200).for_each(|s| img.deliver(s));
    let gpa = img.buffer_gpa(12);
    img.mem.write(gpa, &[0u8; BUF as usize]).unwrap();
    let r = account(&img, 200);
    assert_eq!((r.delivered, r.corrupted, r.lost, r.foreign), (199, 0, 1, 1), "{r:?}");
}

#[test]
fn repeated_scans_follow_a_refilled_ring() {
    let mut img = Image::new();
    let mut s = img.scanner();
    for seq in 0..2000 {
        img.deliver(seq);
        if seq % 100 == 99 {
            s.scan(&img.mem).unwrap();
        }
    }
    s.scan(&img.mem).unwrap();
    let r = Ledger::account(&sent(2000), s.sightings(), &DeviceEvidence::default());
    assert_eq!((r.delivered, r.lost, r.duplicates), (2000, 0, 0), "{r:?}");
    assert_eq!(s.scans(), 21);
}

#[test]
fn a_frame_delivered_twice_is_a_duplicate() {
    let mut img = Image::new();
    (0..10).for_each(|s| img.deliver(s));
    let f = img.mem.read_range(PhysRange { gpa: img.buffer_gpa(3), len: u64::from(BUF) }).unwrap();
    img.deliver(10);
    let gpa10 = img.buffer_gpa(10);
    img.mem.write(gpa10, &f).unwrap(); // slot 10 now holds seq 3 again
    let r = account(&img, 11);
    assert_eq!((r.duplicates, r.lost), (1, 1), "{r:?}");
}

#[test]
fn one_changed_non_dma_page_is_reported_exactly() {
    let mut img = Image::new();
    (0..100).for_each(|s| img.deliver(s));
    let mut watched = img.layout.dma_pages.clone();
    watched.extend(img.layout.canary.iter().copied());
    let before = memory::hash_pages(&img.mem, &watched).unwrap();
    (100..150).for_each(|s| img.deliver(s)); // the device writes its pages
    img.mem.write(CANARY + 0x2010, &[0x5a]).unwrap(); // a stray write
    let after = memory::hash_pages(&img.mem, &watched).unwrap();
    let d = memory::diff(&before, &after, &img.layout.dma_pages);
    assert_eq!(d.unexpected, vec![CANARY + 0x2000]);
    assert!(d.allowed_changed > 0);
}
