// SPDX-License-Identifier: GPL-2.0

//! Block allocator: a bitmap (one bit per 4 KiB block, metadata included)
//! whose blocks are checksummed in the allocator header (block 1).

use super::codec::{crc32, crc_skipping, get32, put32, slice, slice_mut};
use super::sb::{ALLOC_HDR_BLOCK, BITMAP_START, BITS_PER_BLOCK};
use super::{FsError, Image, BLOCK_SIZE, CHUNK_BLOCKS};

/// Allocator header magic "PKAL".
pub(crate) const ALLOC_MAGIC: u32 = u32::from_le_bytes(*b"PKAL");
/// Allocator header version.
pub(crate) const ALLOC_VERSION: u32 = 1;
const HDR_CRC: usize = 8;
const HDR_CRCS: usize = 16;

impl Image<'_> {
    /// Is block `blk` marked used? (Out-of-range blocks count as used.)
    pub(crate) fn is_used(&self, blk: u64) -> bool {
        let byte = BITMAP_START * BLOCK_SIZE + blk / 8;
        match slice(self.b, byte, 1) {
            Ok(s) if blk < self.g.total_blocks => s.first().is_some_and(|v| v & (1 << (blk % 8)) != 0),
            _ => true,
        }
    }

    /// Marks `[start, start + len)` used or free and re-checksums the bitmap
    /// blocks it touched and the header.
    pub(crate) fn mark(&mut self, start: u64, len: u64, used: bool) -> Result<(), FsError> {
        let end = start.checked_add(len).filter(|e| *e <= self.g.total_blocks).ok_or(FsError::Invalid)?;
        if len == 0 {
            return Ok(());
        }
        let base = BITMAP_START * BLOCK_SIZE;
        let mut blk = start;
        while blk < end {
            // Whole bytes at a time where possible.
            if blk.is_multiple_of(8) && end - blk >= 8 {
                let n = (end - blk) / 8;
                slice_mut(self.b, base + blk / 8, n)?.fill(if used { 0xff } else { 0 });
                blk += n * 8;
                continue;
            }
            let s = slice_mut(self.b, base + blk / 8, 1)?;
            for v in s.iter_mut() {
                if used {
                    *v |= 1 << (blk % 8);
                } else {
                    *v &= !(1 << (blk % 8));
                }
            }
            blk += 1;
        }
        for k in start / BITS_PER_BLOCK..=(end - 1) / BITS_PER_BLOCK {
            let crc = crc32(slice(self.b, (BITMAP_START + k) * BLOCK_SIZE, BLOCK_SIZE)?);
            let hdr = slice_mut(self.b, ALLOC_HDR_BLOCK * BLOCK_SIZE, BLOCK_SIZE)?;
            put32(hdr, HDR_CRCS + 4 * k as usize, crc);
        }
        self.seal_alloc_header()
    }

    /// Writes an empty allocator (header + zeroed bitmap) with the metadata
    /// blocks marked used.
    pub(crate) fn init_alloc(&mut self) -> Result<(), FsError> {
        let bm = slice_mut(self.b, BITMAP_START * BLOCK_SIZE, self.g.bitmap_blocks * BLOCK_SIZE)?;
        bm.fill(0);
        let zero_crc = crc32(&[0u8; BLOCK_SIZE as usize]);
        let hdr = slice_mut(self.b, ALLOC_HDR_BLOCK * BLOCK_SIZE, BLOCK_SIZE)?;
        hdr.fill(0);
        put32(hdr, 0, ALLOC_MAGIC);
        put32(hdr, 4, ALLOC_VERSION);
        put32(hdr, 12, self.g.bitmap_blocks as u32);
        for k in 0..self.g.bitmap_blocks as usize {
            put32(hdr, HDR_CRCS + 4 * k, zero_crc);
        }
        self.mark(0, self.g.data_start, true)
    }

    fn seal_alloc_header(&mut self) -> Result<(), FsError> {
        let hdr = slice_mut(self.b, ALLOC_HDR_BLOCK * BLOCK_SIZE, BLOCK_SIZE)?;
        let crc = crc_skipping(hdr, HDR_CRC);
        put32(hdr, HDR_CRC, crc);
        Ok(())
    }

    /// Validates the allocator header and every bitmap block's checksum.
    pub(crate) fn check_alloc_checksums(&self) -> Result<(), FsError> {
        let hdr = slice(self.b, ALLOC_HDR_BLOCK * BLOCK_SIZE, BLOCK_SIZE)?;
        if get32(hdr, 0) != ALLOC_MAGIC || get32(hdr, 4) != ALLOC_VERSION {
            return Err(FsError::AllocatorHeader);
        }
        if get32(hdr, HDR_CRC) != crc_skipping(hdr, HDR_CRC) || get32(hdr, 12) as u64 != self.g.bitmap_blocks {
            return Err(FsError::AllocatorChecksum);
        }
        for k in 0..self.g.bitmap_blocks {
            let blk = slice(self.b, (BITMAP_START + k) * BLOCK_SIZE, BLOCK_SIZE)?;
            if get32(hdr, HDR_CRCS + 4 * k as usize) != crc32(blk) {
                return Err(FsError::AllocatorChecksum);
            }
        }
        Ok(())
    }

    /// Number of blocks marked used.
    pub(crate) fn used_count(&self) -> Result<u64, FsError> {
        let bytes = self.g.total_blocks.div_ceil(8);
        let bm = slice(self.b, BITMAP_START * BLOCK_SIZE, bytes)?;
        Ok(bm.iter().map(|v| v.count_ones() as u64).sum())
    }

    /// First free 2 MiB-aligned run of [`CHUNK_BLOCKS`] blocks in the data area.
    pub(crate) fn find_chunk(&self) -> Option<u64> {
        let mut a = self.g.data_start.div_ceil(CHUNK_BLOCKS) * CHUNK_BLOCKS;
        let base = BITMAP_START * BLOCK_SIZE;
        while a + CHUNK_BLOCKS <= self.g.total_blocks {
            match slice(self.b, base + a / 8, CHUNK_BLOCKS / 8) {
                Ok(s) if s.iter().all(|v| *v == 0) => return Some(a),
                Ok(_) => a += CHUNK_BLOCKS,
                Err(_) => return None,
            }
        }
        None
    }

    /// First free block at or after `from` (and the data start).
    pub(crate) fn find_free(&self, from: u64) -> Option<u64> {
        let mut blk = from.max(self.g.data_start);
        let base = BITMAP_START * BLOCK_SIZE;
        while blk < self.g.total_blocks {
            if blk.is_multiple_of(8) {
                if let Ok([0xff]) = slice(self.b, base + blk / 8, 1) {
                    blk += 8;
                    continue;
                }
            }
            if !self.is_used(blk) {
                return Some(blk);
            }
            blk += 1;
        }
        None
    }

    /// Free blocks starting at `blk`, counted up to `max`.
    pub(crate) fn free_run(&self, blk: u64, max: u64) -> u64 {
        let mut n = 0;
        while n < max && !self.is_used(blk.saturating_add(n)) {
            n += 1;
        }
        n
    }

    /// Allocates one block (for metadata: extent blocks), zeroed.
    pub(crate) fn alloc_one(&mut self) -> Result<u64, FsError> {
        let blk = self.find_free(0).ok_or(FsError::NoSpace)?;
        self.mark(blk, 1, true)?;
        slice_mut(self.b, blk * BLOCK_SIZE, BLOCK_SIZE)?.fill(0);
        Ok(blk)
    }
}

/// Recomputes every allocator checksum of a formatted image in place
/// (whatever the bitmap says). For tests that build an allocator which is
/// checksummed but disagrees with the extents; never used by the kernel.
pub fn reseal_allocator(bytes: &mut [u8]) -> Result<(), FsError> {
    let g = super::Geometry::for_len(bytes.len())?;
    let mut img = Image { b: bytes, g };
    for k in 0..g.bitmap_blocks {
        let crc = crc32(slice(img.b, (BITMAP_START + k) * BLOCK_SIZE, BLOCK_SIZE)?);
        put32(slice_mut(img.b, ALLOC_HDR_BLOCK * BLOCK_SIZE, BLOCK_SIZE)?, HDR_CRCS + 4 * k as usize, crc);
    }
    img.seal_alloc_header()
}
