//! Where lost frames went: when the ledger finds frames lost, the harness
//! searches the whole guest RAM (the host's RAM file, every RAM window) for
//! this run's frames outside the agent's RX buffers. A device whose
//! translation went away (VT-d off, a kernel that rebuilt the tables, a
//! domain dropped at kexec) writes its frames where its IOVAs point in the
//! new setting; finding them there, intact, tells a kernel engineer that
//! the DMA was misdirected, not stopped, and where it landed.

use std::collections::BTreeSet;

use lulab_proto::PhysRange;
use memchr::memmem;
use serde::{Deserialize, Serialize};

use crate::guest_memory::GuestMemory;
use crate::traffic::frame::{decode, ETHERTYPE, MAGIC};

/// Bytes searched per read (windows overlap by one frame header).
const CHUNK: u64 = 64 << 20;
/// Frames listed in the report.
const EXAMPLES: usize = 16;

/// One of this run's frames found outside the agent's buffers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StrayFrame {
    /// Its sequence number.
    pub seq: u64,
    /// Guest-physical address of its first byte.
    pub gpa: u64,
}

/// report.json `dma.stray` (present when frames were lost).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StraySection {
    /// Guest RAM searched, bytes (all of it, minus the agent's buffers).
    pub searched_bytes: u64,
    /// Intact frames of this run found outside the buffers.
    pub found: u64,
    /// How many of the lost frames are among them.
    pub lost_found: u64,
    /// Lowest and highest address of a stray frame.
    pub lowest_gpa: Option<u64>,
    /// See `lowest_gpa`.
    pub highest_gpa: Option<u64>,
    /// The first few, by address.
    pub examples: Vec<StrayFrame>,
}

impl StraySection {
    /// One line for a finding.
    pub fn summary(&self) -> String {
        match (self.lowest_gpa, self.highest_gpa) {
            (Some(lo), Some(hi)) => format!(
                "{} of them found intact elsewhere in guest RAM ({} stray frames of this run at GPA {lo:#x}..={hi:#x}): the DMA was misdirected",
                self.lost_found, self.found
            ),
            _ => format!("none found anywhere else in guest RAM ({} MiB searched)", self.searched_bytes >> 20),
        }
    }
}

/// The bytes every frame of `run_id` carries at offset 12: ethertype, magic, run id.
fn needle(run_id: u64) -> Vec<u8> {
    let mut n = ETHERTYPE.to_be_bytes().to_vec();
    n.extend_from_slice(&MAGIC);
    n.extend_from_slice(&run_id.to_le_bytes());
    n
}

/// Searches `haystack` (guest RAM from `base`) for intact frames of
/// `run_id`; returns (seq, gpa) of each.
fn frames_in(haystack: &[u8], base: u64, run_id: u64) -> Vec<(u64, u64)> {
    let n = needle(run_id);
    memmem::find_iter(haystack, &n)
        .filter(|&at| at >= 12)
        .filter_map(|at| decode(&haystack[at - 12..], run_id).ok().map(|f| (f.seq, base + (at - 12) as u64)))
        .collect()
}

/// Searches all of `mem` but `exclude` for frames of `run_id`; `lost` are
/// the sequence numbers the ledger could not find.
pub fn search(mem: &GuestMemory, run_id: u64, exclude: &[PhysRange], lost: &BTreeSet<u64>) -> anyhow::Result<StraySection> {
    let mut s = StraySection::default();
    let mut found: Vec<(u64, u64)> = Vec::new();
    // Longer than any frame: one that starts before the overlap ends in its window.
    let overlap = 4096u64;
    for window in mem.ram_ranges() {
        let mut at = window.gpa;
        let end = window.gpa + window.len;
        while at < end {
            let len = CHUNK.min(end - at);
            let buf = mem.read_range(PhysRange { gpa: at, len })?;
            let hits = frames_in(&buf, at, run_id);
            // A frame that starts in the overlap is found again by the next window.
            let next = if at + len < end { at + len - overlap } else { end };
            found.extend(hits.into_iter().filter(|(_, gpa)| *gpa < next || next == end));
            at = next;
        }
    }
    found.retain(|(_, gpa)| !exclude.iter().any(|r| *gpa >= r.gpa && *gpa < r.gpa + r.len));
    found.sort_by_key(|(_, gpa)| *gpa);
    found.dedup();
    s.searched_bytes = mem.ram_size() - exclude.iter().map(|r| r.len).sum::<u64>().min(mem.ram_size());
    s.found = found.len() as u64;
    s.lost_found = found.iter().map(|(seq, _)| *seq).collect::<BTreeSet<_>>().intersection(lost).count() as u64;
    s.lowest_gpa = found.first().map(|f| f.1);
    s.highest_gpa = found.last().map(|f| f.1);
    s.examples = found.iter().take(EXAMPLES).map(|&(seq, gpa)| StrayFrame { seq, gpa }).collect();
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::frame::encode;

    #[test]
    fn frames_of_the_run_are_found_where_they_lie_and_others_are_not() {
        let run = 0x1234_5678_9abc_def0;
        let mut ram = vec![0u8; 1 << 20];
        for (seq, off) in [(7u64, 0x1000usize), (9, 0x8_0010)] {
            let f = encode(run, seq, 1, 100);
            ram[off..off + f.len()].copy_from_slice(&f);
        }
        let other = encode(run + 1, 3, 1, 100);
        ram[0x4000..0x4000 + other.len()].copy_from_slice(&other);
        let mut broken = encode(run, 11, 1, 100);
        broken[60] ^= 1;
        ram[0x6000..0x6000 + broken.len()].copy_from_slice(&broken);
        assert_eq!(frames_in(&ram, 0x10_0000, run), [(7, 0x10_1000), (9, 0x18_0010)]);
    }

    #[test]
    fn the_whole_ram_file_is_searched_across_chunks_and_buffers_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ram");
        let size = 2 * CHUNK + (1 << 20);
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(size).unwrap();
        let mut mem = GuestMemory::open(&path, size).unwrap();
        let run = 42;
        // One across the first chunk boundary, one in the excluded buffers, one near the end.
        for (seq, gpa) in [(1u64, CHUNK - 30), (2, 0x20_0000), (3, size - 4096)] {
            mem.write(gpa, &encode(run, seq, 1, 60)).unwrap();
        }
        let buffers = [PhysRange { gpa: 0x20_0000, len: 0x1000 }];
        let lost: BTreeSet<u64> = [1, 2, 5].into();
        let s = search(&mem, run, &buffers, &lost).unwrap();
        assert_eq!(s.examples, [StrayFrame { seq: 1, gpa: CHUNK - 30 }, StrayFrame { seq: 3, gpa: size - 4096 }]);
        assert_eq!((s.found, s.lost_found), (2, 1));
        assert_eq!(s.searched_bytes, size - 0x1000);
        assert!(s.summary().contains("1 of them found intact elsewhere"), "{}", s.summary());
    }
}
