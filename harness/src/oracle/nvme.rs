//! NVMe ledger: the harness writes a known pattern into every block of the
//! NVMe backing file ([`nvme_pattern::fill`]); the agent reads each LBA of
//! `[lba_start, lba_start + lba_count)` into its own 512-byte slot of the
//! buffers region (LBA `lba_start + k` at offset `k * 512`); the ledger
//! checks every slot from the RAM file.
//!
//! A slot is *read* when it holds exactly the expected block, *lost* when it
//! is still all zeroes (the agent's buffers start zeroed: fresh anonymous or
//! pkernfs memory), and *corrupted* otherwise (including the right pattern
//! of the wrong LBA: a misdirected DMA).

use lulab_proto::DmaRegion;
use serde::Serialize;

use crate::guest_memory::{GuestMemory, GuestMemoryError};

/// The backing-file block pattern.
pub mod nvme_pattern {
    use std::io::{Seek, SeekFrom, Write};
    use std::ops::Range;

    use xxhash_rust::xxh3::xxh3_64;

    /// Logical block size.
    pub const BLOCK: usize = 512;
    /// First bytes of every block.
    pub const MAGIC: [u8; 8] = *b"LULABNVM";

    /// The expected content of `lba` in run `run_id`:
    /// magic, run id (LE), LBA (LE), filler, xxh3 of bytes 0..504 (LE).
    pub fn block(run_id: u64, lba: u64) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        b[..8].copy_from_slice(&MAGIC);
        b[8..16].copy_from_slice(&run_id.to_le_bytes());
        b[16..24].copy_from_slice(&lba.to_le_bytes());
        crate::traffic::frame::fill_payload(run_id ^ 0x4e56_4d45, lba, &mut b[24..BLOCK - 8]);
        let sum = xxh3_64(&b[..BLOCK - 8]);
        b[BLOCK - 8..].copy_from_slice(&sum.to_le_bytes());
        b
    }

    /// Writes the pattern of `lbas` into `file` (the NVMe backing file).
    pub fn fill(file: &mut std::fs::File, lbas: Range<u64>, run_id: u64) -> std::io::Result<()> {
        file.seek(SeekFrom::Start(lbas.start * BLOCK as u64))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        for lba in lbas {
            w.write_all(&block(run_id, lba))?;
        }
        w.flush()
    }
}

/// Lost / corrupted LBAs listed in a report.
pub const FIRST_LBAS: usize = 8;

/// Errors of the NVMe ledger.
#[derive(Debug, thiserror::Error)]
pub enum NvmeLedgerError {
    /// The buffers region cannot hold one slot per LBA.
    #[error("NVMe buffers of {pci} hold {len:#x} bytes, {lba_count} LBAs need {need:#x}")]
    TooSmall {
        /// Device.
        pci: String,
        /// Region length.
        len: u64,
        /// LBAs expected.
        lba_count: u64,
        /// Bytes needed.
        need: u64,
    },
    /// Guest memory could not be read.
    #[error("Cannot read NVMe buffers")]
    Memory(#[from] GuestMemoryError),
}

/// The NVMe verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NvmeReport {
    /// LBAs expected.
    pub blocks_expected: u64,
    /// Slots holding exactly their block.
    pub blocks_read: u64,
    /// Slots holding something else.
    pub corrupted: u64,
    /// Slots still zero.
    pub lost: u64,
    /// A few corrupted LBAs.
    pub first_corrupted_lbas: Vec<u64>,
    /// A few lost LBAs.
    pub first_lost_lbas: Vec<u64>,
    /// Slots from the first on that hold their block, up to the first that
    /// does not (still zero, or being written right now).
    pub in_place_prefix: u64,
}

/// Checks the agent's NVMe buffers.
#[derive(Debug, Clone)]
pub struct NvmeLedger {
    buffers: DmaRegion,
    lba_start: u64,
    lba_count: u64,
    run_id: u64,
}

impl NvmeLedger {
    /// A ledger for `buffers` (from the agent's `DmaLayout`) holding
    /// `lba_count` blocks from `lba_start`, written in run `run_id`.
    pub fn new(
        pci: &str,
        buffers: &DmaRegion,
        lba_start: u64,
        lba_count: u64,
        run_id: u64,
    ) -> Result<Self, NvmeLedgerError> {
        let need = lba_count * nvme_pattern::BLOCK as u64;
        if buffers.len < need {
            return Err(NvmeLedgerError::TooSmall { pci: pci.into(), len: buffers.len, lba_count, need });
        }
        Ok(Self { buffers: buffers.clone(), lba_start, lba_count, run_id })
    }

    /// First LBA this ledger expects.
    pub fn lba_start(&self) -> u64 {
        self.lba_start
    }

    /// Checks every slot.
    pub fn check(&self, mem: &GuestMemory) -> Result<NvmeReport, NvmeLedgerError> {
        let mut r = NvmeReport { blocks_expected: self.lba_count, ..NvmeReport::default() };
        let mut slot = [0u8; nvme_pattern::BLOCK];
        for k in 0..self.lba_count {
            let lba = self.lba_start + k;
            mem.read_region(&self.buffers, k * nvme_pattern::BLOCK as u64, &mut slot)?;
            if slot == nvme_pattern::block(self.run_id, lba) {
                r.blocks_read += 1;
                if r.in_place_prefix == k {
                    r.in_place_prefix += 1;
                }
            } else if slot.iter().all(|b| *b == 0) {
                r.lost += 1;
                if r.first_lost_lbas.len() < FIRST_LBAS {
                    r.first_lost_lbas.push(lba);
                }
            } else {
                r.corrupted += 1;
                if r.first_corrupted_lbas.len() < FIRST_LBAS {
                    r.first_corrupted_lbas.push(lba);
                }
            }
        }
        Ok(r)
    }
}


/// The NVMe oracle behind the [`Oracle`](super::registry::Oracle) trait:
/// report.json `nvme`; blocks that never arrived are `nvme.lost`, blocks
/// with the wrong data `nvme.corrupted`.
#[derive(Debug)]
pub struct NvmeOracle;

impl super::registry::Oracle for NvmeOracle {
    fn name(&self) -> &'static str {
        "nvme"
    }

    fn report_field(&self) -> bool {
        true
    }

    fn judge(&self, obs: &super::registry::Observations) -> anyhow::Result<super::registry::Judged> {
        use crate::report::{Finding, NvmeSection, Reason};
        let Some(n) = obs.nvme else {
            return Ok(super::registry::Judged { section: serde_json::to_value(NvmeSection::default())?, findings: Vec::new(), files: Vec::new() });
        };
        let r = &n.blocks;
        let mut findings = Vec::new();
        if r.lost > 0 {
            findings.push(Finding::new(Reason::NvmeLost, format!("{} of {} NVMe blocks never arrived (first LBAs {:?})", r.lost, n.lba_count, r.first_lost_lbas)));
        }
        if r.corrupted > 0 {
            findings.push(Finding::new(Reason::NvmeCorrupted, format!("{} NVMe blocks hold wrong data (first LBAs {:?})", r.corrupted, r.first_corrupted_lbas)));
        }
        let section = NvmeSection { blocks_read: n.done_before + r.blocks_read, corrupted: r.corrupted, lost: r.lost, restarts: n.restarts.clone() };
        Ok(super::registry::Judged { section: serde_json::to_value(section)?, findings, files: Vec::new() })
    }
}

#[cfg(test)]
mod tests {
    use super::nvme_pattern::{block, fill, BLOCK};
    use super::*;
    use lulab_proto::PhysRange;

    #[test]
    fn pattern_is_distinct_per_lba_and_run() {
        assert_ne!(block(1, 0), block(1, 1));
        assert_ne!(block(1, 0), block(2, 0));
        assert_eq!(&block(1, 5)[16..24], &5u64.to_le_bytes());
    }

    #[test]
    fn fill_writes_blocks_at_their_lba() {
        let mut f = tempfile::tempfile().unwrap();
        fill(&mut f, 4..8, 9).unwrap();
        let mut raw = Vec::new();
        use std::io::{Read, Seek};
        f.rewind().unwrap();
        f.read_to_end(&mut raw).unwrap();
        assert_eq!(raw.len(), 8 * BLOCK);
        assert_eq!(&raw[6 * BLOCK..7 * BLOCK], &block(9, 6));
        assert!(raw[..4 * BLOCK].iter().all(|b| *b == 0));
    }

    #[test]
    fn read_corrupted_lost_and_misdirected() {
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(1 << 20).unwrap();
        let mut mem = GuestMemory::open(file.path(), 1 << 20).unwrap();
        let region = DmaRegion { iova: 0x4000_0000, len: 0x2000, phys: vec![PhysRange { gpa: 0x8000, len: 0x2000 }] };
        let ledger = NvmeLedger::new("0000:00:03.0", &region, 100, 16, 3).unwrap();
        for k in 0..14u64 {
            mem.write(0x8000 + k * 512, &block(3, 100 + k)).unwrap();
        }
        mem.write(0x8000 + 2 * 512 + 77, &[0xee]).unwrap(); // damaged
        mem.write(0x8000 + 5 * 512, &block(3, 999)).unwrap(); // wrong LBA
        let r = ledger.check(&mem).unwrap();
        assert_eq!((r.blocks_read, r.corrupted, r.lost), (12, 2, 2));
        assert_eq!(r.first_corrupted_lbas, vec![102, 105]);
        assert_eq!(r.first_lost_lbas, vec![114, 115]);
        assert!(NvmeLedger::new("x", &region, 0, 17, 3).is_err());
        assert_eq!(r.in_place_prefix, 2, "slot 2 is damaged");
        mem.write(0x8000 + 2 * 512 + 77, &[block(3, 102)[77]]).unwrap();
        assert_eq!(ledger.check(&mem).unwrap().in_place_prefix, 5, "slot 5 holds another LBA");
        let all = NvmeLedger::new("0000:00:03.0", &region, 100, 5, 3).unwrap();
        assert_eq!(all.check(&mem).unwrap().in_place_prefix, 5);
    }
}
