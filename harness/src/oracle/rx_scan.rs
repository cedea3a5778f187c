//! The RX scanner: reads the e1000e's legacy RX ring and buffers straight out
//! of the RAM file and records every frame it finds.
//!
//! Legacy descriptor (16 bytes): `addr u64, len u16, csum u16, status u8
//! (DD = bit 0, EOP = bit 1), errors u8, special u16`. Buffer `i` (at
//! `buffers.iova + i * buf_size`) belongs to descriptor `i`. The device
//! writes the buffer first and the descriptor's DD last; the scanner reads
//! the descriptor, then the buffer, then the descriptor again and ignores
//! the slot this time round if the descriptor changed in between.
//!
//! Call [`RxScanner::scan`] repeatedly during a run (the agent leaves the most
//! recent half of the ring untouched, so ~100 ms polls see every frame) and
//! once at the end. Findings accumulate: a frame seen intact once stays
//! delivered even when its buffer is reused later.

use std::collections::{BTreeMap, HashMap, HashSet};

use lulab_proto::{DmaLayout, DmaRegion};
use xxhash_rust::xxh3::xxh3_64;

use crate::guest_memory::{GuestMemory, GuestMemoryError};
use crate::traffic::clock::now_ns;
use crate::traffic::frame::{self, FrameError};

/// Size of a legacy RX descriptor.
pub const DESC_LEN: usize = 16;
/// Descriptor Done.
pub const STATUS_DD: u8 = 1 << 0;
/// End Of Packet.
pub const STATUS_EOP: u8 = 1 << 1;

/// Errors of the scanner.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The layout the agent reported is inconsistent.
    #[error("Bad RX layout of {pci}: {what}")]
    Layout {
        /// Device.
        pci: String,
        /// What is wrong.
        what: String,
    },
    /// Guest memory could not be read.
    #[error("Cannot read RX ring or buffers")]
    Memory(#[from] GuestMemoryError),
}

/// Where ring and buffers live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RxRing {
    /// Descriptor ring.
    pub ring: DmaRegion,
    /// Buffers.
    pub buffers: DmaRegion,
    /// Descriptors (= buffers).
    pub ring_size: u32,
    /// Bytes per buffer.
    pub buf_size: u32,
}

impl RxRing {
    /// Checks and takes the layout the agent reported for e1000e RX.
    pub fn from_layout(l: &DmaLayout) -> Result<Self, ScanError> {
        let bad = |what: String| ScanError::Layout { pci: l.pci.clone(), what };
        let n = u64::from(l.buf_count);
        if n == 0 || l.buf_size == 0 {
            return Err(bad(format!("buf_count {} buf_size {}", l.buf_count, l.buf_size)));
        }
        if l.ring.len < n * DESC_LEN as u64 {
            return Err(bad(format!("ring of {:#x} bytes < {n} descriptors", l.ring.len)));
        }
        if l.buffers.len < n * u64::from(l.buf_size) {
            return Err(bad(format!("buffers of {:#x} bytes < {n} x {}", l.buffers.len, l.buf_size)));
        }
        Ok(Self { ring: l.ring.clone(), buffers: l.buffers.clone(), ring_size: l.buf_count, buf_size: l.buf_size })
    }
}

/// A frame seen intact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Descriptor slot it was found in.
    pub slot: u32,
    /// Send timestamp carried in the frame.
    pub sent_ns: u64,
    /// When the scanner first saw it.
    pub seen_ns: u64,
}

/// A buffer with DD set that holds a damaged lulab frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// Descriptor slot.
    pub slot: u32,
    /// The sequence number the damaged header claims, if it has one
    /// (untrusted: the damage may be in the seq field itself).
    pub claimed_seq: Option<u64>,
    /// What was wrong.
    pub error: String,
}

/// Everything the scans found; the input of [`crate::oracle::ledger::Ledger`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sightings {
    /// seq → first intact sighting.
    pub delivered: BTreeMap<u64, Delivery>,
    /// (slot, hash of the buffer) → damaged frame; keyed so that re-scanning
    /// the same buffer does not count it twice.
    pub corrupted: HashMap<(u32, u64), Corruption>,
    /// Intact frames found a second time in another slot.
    pub duplicates: u64,
    /// Distinct (slot, content) of DD buffers that hold no lulab frame.
    pub foreign: u64,
    /// Distinct (slot, seq) of intact frames of another run.
    pub stale: u64,
}

/// What one scan saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Descriptors with DD set.
    pub done: u32,
    /// Frames seen intact for the first time.
    pub new_delivered: u64,
    /// New damaged buffers.
    pub new_corrupted: u64,
    /// Slots skipped because the descriptor changed while reading.
    pub torn: u32,
}

/// Scans one device's RX ring; see the module docs.
#[derive(Debug, Clone)]
pub struct RxScanner {
    ring: RxRing,
    run_id: u64,
    sightings: Sightings,
    seen_other: HashSet<(u32, u64)>,
    seen_dup: HashSet<(u32, u64)>,
    scans: u64,
}

impl RxScanner {
    /// A scanner for frames of `run_id`.
    pub fn new(ring: RxRing, run_id: u64) -> Self {
        Self {
            ring,
            run_id,
            sightings: Sightings::default(),
            seen_other: HashSet::new(),
            seen_dup: HashSet::new(),
            scans: 0,
        }
    }

    /// The ring and buffers it reads.
    pub fn ring(&self) -> &RxRing {
        &self.ring
    }

    /// What all scans so far found.
    pub fn sightings(&self) -> &Sightings {
        &self.sightings
    }

    /// Number of completed scans.
    pub fn scans(&self) -> u64 {
        self.scans
    }

    /// Reads the whole ring once.
    pub fn scan(&mut self, mem: &GuestMemory) -> Result<ScanStats, ScanError> {
        let n = self.ring.ring_size as usize;
        let mut descs = vec![0u8; n * DESC_LEN];
        mem.read_region(&self.ring.ring, 0, &mut descs)?;
        let mut buf = vec![0u8; self.ring.buf_size as usize];
        let mut stats = ScanStats::default();
        for slot in 0..n {
            let desc: [u8; DESC_LEN] = descs[slot * DESC_LEN..][..DESC_LEN].try_into().expect("16 bytes");
            if desc[12] & STATUS_DD == 0 {
                continue;
            }
            stats.done += 1;
            let off = slot as u64 * u64::from(self.ring.buf_size);
            mem.read_region(&self.ring.buffers, off, &mut buf)?;
            let mut again = [0u8; DESC_LEN];
            mem.read_region(&self.ring.ring, (slot * DESC_LEN) as u64, &mut again)?;
            if again != desc {
                stats.torn += 1;
                continue;
            }
            self.classify(slot as u32, &desc, &buf, &mut stats);
        }
        self.scans += 1;
        Ok(stats)
    }

    fn classify(&mut self, slot: u32, desc: &[u8; DESC_LEN], buf: &[u8], stats: &mut ScanStats) {
        let desc_len = usize::from(u16::from_le_bytes([desc[8], desc[9]]));
        let result = frame::decode(buf, self.run_id).and_then(|f| {
            // The device reports the frame length (+4 when it keeps the CRC).
            if desc_len == f.frame_len || desc_len == f.frame_len + 4 {
                Ok(f)
            } else {
                Err(FrameError::BadLength { seq: f.seq, payload_len: f.payload_len, len: desc_len })
            }
        });
        let claimed = match result {
            Ok(f) => return self.delivered(slot, f.seq, f.sent_ns, stats),
            Err(FrameError::Foreign { .. }) => {
                let key = (slot, xxh3_64(&buf[..desc_len.clamp(1, buf.len())]));
                self.sightings.foreign += u64::from(self.seen_other.insert(key));
                return;
            }
            Err(FrameError::WrongRun { seq, .. }) => {
                self.sightings.stale += u64::from(self.seen_other.insert((slot, seq)));
                return;
            }
            Err(FrameError::BadChecksum { seq, .. } | FrameError::BadLength { seq, .. }) => Some(seq),
            Err(FrameError::BadMagic { .. } | FrameError::TooShort { .. }) => None,
        };
        let key = (slot, xxh3_64(buf));
        if let std::collections::hash_map::Entry::Vacant(e) = self.sightings.corrupted.entry(key) {
            let error = result.expect_err("classified as damaged").to_string();
            e.insert(Corruption { slot, claimed_seq: claimed, error });
            stats.new_corrupted += 1;
        }
    }

    fn delivered(&mut self, slot: u32, seq: u64, sent_ns: u64, stats: &mut ScanStats) {
        match self.sightings.delivered.get(&seq) {
            None => {
                self.sightings.delivered.insert(seq, Delivery { slot, sent_ns, seen_ns: now_ns() });
                stats.new_delivered += 1;
            }
            Some(d) if d.slot != slot && self.seen_dup.insert((slot, seq)) => {
                self.sightings.duplicates += 1;
            }
            Some(_) => {}
        }
    }
}
