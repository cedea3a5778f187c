// SPDX-License-Identifier: GPL-2.0

//! Extent lists: [`INLINE_EXTENTS`] in the inode, the rest in a chain of
//! checksummed extent blocks (magic `PKEX`, crc, count, owner, next).

use super::codec::{crc_skipping, get32, get64, put32, put64, slice, slice_mut};
use super::inode::{Ext, Inode};
use super::{FsError, Image, Ino, BLOCK_SIZE, EXTENTS_PER_BLOCK, INLINE_EXTENTS};

/// Extent block magic "PKEX".
pub(crate) const EXT_MAGIC: u32 = u32::from_le_bytes(*b"PKEX");
const CRC_OFF: usize = 4;
const HDR: usize = 32;

/// Extents held by chain block `k` of an inode with `count` extents.
fn in_block(count: u32, k: u32) -> u32 {
    let first = k.saturating_mul(EXTENTS_PER_BLOCK).saturating_add(INLINE_EXTENTS);
    count.saturating_sub(first).min(EXTENTS_PER_BLOCK)
}

impl Image<'_> {
    /// Validates extent block `blk` of `ino` (k-th in its chain) and returns
    /// its `next` pointer.
    pub(crate) fn ext_block(&self, ino: Ino, inode: &Inode, blk: u64, k: u32) -> Result<u64, FsError> {
        if blk < self.g.data_start || blk >= self.g.total_blocks {
            return Err(FsError::ExtentOutOfRange { ino });
        }
        let b = slice(self.b, blk * BLOCK_SIZE, BLOCK_SIZE)?;
        let ok = get32(b, 0) == EXT_MAGIC
            && get32(b, CRC_OFF) == crc_skipping(b, CRC_OFF)
            && get32(b, 8) == in_block(inode.ext_count, k)
            && get32(b, 12) == ino;
        if !ok {
            return Err(FsError::ExtentBlock { ino });
        }
        Ok(get64(b, 16))
    }

    /// Image block of the `k`-th chain block of `inode`.
    fn chain_at(&self, ino: Ino, inode: &Inode, k: u32) -> Result<u64, FsError> {
        let mut blk = inode.chain;
        for j in 0..k {
            blk = self.ext_block(ino, inode, blk, j)?;
        }
        Ok(blk)
    }

    /// Visits every extent of `inode` in file order; `f` returns `false` to stop.
    pub(crate) fn for_each_ext<F>(&self, ino: Ino, inode: &Inode, mut f: F) -> Result<(), FsError>
    where
        F: FnMut(u32, Ext) -> Result<bool, FsError>,
    {
        for i in 0..inode.ext_count.min(INLINE_EXTENTS) {
            let e = inode.inline.get(i as usize).copied().unwrap_or_default();
            if !f(i, e)? {
                return Ok(());
            }
        }
        let mut blk = inode.chain;
        let mut k = 0;
        while in_block(inode.ext_count, k) > 0 {
            let next = self.ext_block(ino, inode, blk, k)?;
            let b = slice(self.b, blk * BLOCK_SIZE, BLOCK_SIZE)?;
            for j in 0..in_block(inode.ext_count, k) {
                let o = HDR + 16 * j as usize;
                let e = Ext { start: get64(b, o), len: get32(b, o + 8) };
                if !f(k.saturating_mul(EXTENTS_PER_BLOCK).saturating_add(INLINE_EXTENTS + j), e)? {
                    return Ok(());
                }
            }
            blk = next;
            k = k.saturating_add(1);
        }
        Ok(())
    }

    /// Visits the extent blocks of `inode` (for the allocator check).
    pub(crate) fn for_each_ext_block<F: FnMut(u64)>(&self, ino: Ino, inode: &Inode, mut f: F) -> Result<(), FsError> {
        let mut blk = inode.chain;
        let mut k = 0;
        while in_block(inode.ext_count, k) > 0 {
            let next = self.ext_block(ino, inode, blk, k)?;
            f(blk);
            blk = next;
            k = k.saturating_add(1);
        }
        Ok(())
    }

    /// The `i`-th extent of `inode`.
    pub(crate) fn ext_get(&self, ino: Ino, inode: &Inode, i: u32) -> Result<Ext, FsError> {
        if i < INLINE_EXTENTS {
            return inode.inline.get(i as usize).copied().ok_or(FsError::Invalid);
        }
        let (k, j) = ((i - INLINE_EXTENTS) / EXTENTS_PER_BLOCK, (i - INLINE_EXTENTS) % EXTENTS_PER_BLOCK);
        let b = slice(self.b, self.chain_at(ino, inode, k)? * BLOCK_SIZE, BLOCK_SIZE)?;
        let o = HDR + 16 * j as usize;
        Ok(Ext { start: get64(b, o), len: get32(b, o + 8) })
    }

    /// Overwrites the `i`-th extent (inline: in `inode`, which the caller
    /// writes back; chained: in its block, re-checksummed).
    fn ext_set(&mut self, ino: Ino, inode: &mut Inode, i: u32, e: Ext) -> Result<(), FsError> {
        if i < INLINE_EXTENTS {
            *inode.inline.get_mut(i as usize).ok_or(FsError::Invalid)? = e;
            return Ok(());
        }
        let (k, j) = ((i - INLINE_EXTENTS) / EXTENTS_PER_BLOCK, (i - INLINE_EXTENTS) % EXTENTS_PER_BLOCK);
        let blk = self.chain_at(ino, inode, k)?;
        let b = slice_mut(self.b, blk * BLOCK_SIZE, BLOCK_SIZE)?;
        let o = HDR + 16 * j as usize;
        put64(b, o, e.start);
        put32(b, o + 8, e.len);
        put32(b, o + 12, 0);
        put32(b, 8, in_block(inode.ext_count, k));
        let crc = crc_skipping(b, CRC_OFF);
        put32(b, CRC_OFF, crc);
        Ok(())
    }

    /// Appends `e` (merging with the last extent when contiguous); the
    /// caller writes `inode` back.
    pub(crate) fn ext_push(&mut self, ino: Ino, inode: &mut Inode, e: Ext) -> Result<(), FsError> {
        if inode.ext_count > 0 {
            let last = self.ext_get(ino, inode, inode.ext_count - 1)?;
            if let Some(len) = last.len.checked_add(e.len).filter(|_| last.end() == e.start) {
                self.ext_set(ino, inode, inode.ext_count - 1, Ext { start: last.start, len })?;
                inode.data_blocks += e.len as u64;
                return Ok(());
            }
        }
        let i = inode.ext_count;
        if i >= INLINE_EXTENTS && (i - INLINE_EXTENTS).is_multiple_of(EXTENTS_PER_BLOCK) {
            self.chain_grow(ino, inode)?;
        }
        inode.ext_count += 1;
        inode.data_blocks += e.len as u64;
        self.ext_set(ino, inode, i, e)
    }

    /// Links a new, empty extent block at the end of the chain.
    fn chain_grow(&mut self, ino: Ino, inode: &mut Inode) -> Result<(), FsError> {
        let blk = self.alloc_one()?;
        let b = slice_mut(self.b, blk * BLOCK_SIZE, BLOCK_SIZE)?;
        put32(b, 0, EXT_MAGIC);
        put32(b, 12, ino);
        let crc = crc_skipping(b, CRC_OFF);
        put32(b, CRC_OFF, crc);
        let blocks = (inode.ext_count - INLINE_EXTENTS) / EXTENTS_PER_BLOCK;
        if blocks == 0 {
            inode.chain = blk;
            return Ok(());
        }
        let prev = self.chain_at(ino, inode, blocks - 1)?;
        let p = slice_mut(self.b, prev * BLOCK_SIZE, BLOCK_SIZE)?;
        put64(p, 16, blk);
        let crc = crc_skipping(p, CRC_OFF);
        put32(p, CRC_OFF, crc);
        Ok(())
    }

    /// Frees the last `n` data blocks of `inode` (trimming or dropping
    /// extents, and freeing emptied extent blocks); the caller writes
    /// `inode` back.
    pub(crate) fn ext_trim(&mut self, ino: Ino, inode: &mut Inode, mut n: u64) -> Result<(), FsError> {
        while n > 0 && inode.ext_count > 0 {
            let i = inode.ext_count - 1;
            let last = self.ext_get(ino, inode, i)?;
            let cut = n.min(last.len as u64);
            self.mark(last.end() - cut, cut, false)?;
            inode.data_blocks -= cut;
            n -= cut;
            if cut < last.len as u64 {
                self.ext_set(ino, inode, i, Ext { start: last.start, len: last.len - cut as u32 })?;
                continue;
            }
            self.ext_set(ino, inode, i, Ext::default())?;
            inode.ext_count -= 1;
            if i >= INLINE_EXTENTS && (i - INLINE_EXTENTS).is_multiple_of(EXTENTS_PER_BLOCK) {
                self.chain_shrink(ino, inode, (i - INLINE_EXTENTS) / EXTENTS_PER_BLOCK)?;
            } else if i >= INLINE_EXTENTS {
                // Re-seal the block with its new count.
                let k = (i - INLINE_EXTENTS) / EXTENTS_PER_BLOCK;
                let blk = self.chain_at(ino, inode, k)?;
                let b = slice_mut(self.b, blk * BLOCK_SIZE, BLOCK_SIZE)?;
                put32(b, 8, in_block(inode.ext_count, k));
                let crc = crc_skipping(b, CRC_OFF);
                put32(b, CRC_OFF, crc);
            }
        }
        Ok(())
    }

    /// Frees chain block `k` (now empty, the last one) and unlinks it.
    fn chain_shrink(&mut self, ino: Ino, inode: &mut Inode, k: u32) -> Result<(), FsError> {
        let blk = if k == 0 { inode.chain } else { self.chain_at_unchecked(inode, k)? };
        self.mark(blk, 1, false)?;
        if k == 0 {
            inode.chain = 0;
            return Ok(());
        }
        let prev = self.chain_at(ino, inode, k - 1)?;
        let p = slice_mut(self.b, prev * BLOCK_SIZE, BLOCK_SIZE)?;
        put64(p, 16, 0);
        let crc = crc_skipping(p, CRC_OFF);
        put32(p, CRC_OFF, crc);
        Ok(())
    }

    /// Follows `next` pointers without validating counts (the count of the
    /// chain was just lowered by the caller).
    fn chain_at_unchecked(&self, inode: &Inode, k: u32) -> Result<u64, FsError> {
        let mut blk = inode.chain;
        for _ in 0..k {
            blk = get64(slice(self.b, blk.checked_mul(BLOCK_SIZE).ok_or(FsError::Invalid)?, BLOCK_SIZE)?, 16);
        }
        Ok(blk)
    }
}
