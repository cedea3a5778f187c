// SPDX-License-Identifier: GPL-2.0

//! File data: allocation policy, read, write, truncate, map, pin.

use super::codec::{slice, slice_mut};
use super::inode::{Ext, Inode, FLAG_PINNED};
use super::{FsError, Image, Ino, Kind, BLOCK_SIZE, CHUNK_BLOCKS};

/// Largest file size: blocks must fit the extent arithmetic.
const MAX_SIZE: u64 = 1 << 52;

impl Image<'_> {
    /// Allocates blocks until `inode` holds `want` (see the module docs for
    /// the policy). On failure everything allocated here is freed again.
    pub(crate) fn grow(&mut self, ino: Ino, inode: &mut Inode, want: u64) -> Result<(), FsError> {
        let before = inode.data_blocks;
        let r = self.grow_inner(ino, inode, want);
        if r.is_err() {
            let extra = inode.data_blocks.saturating_sub(before);
            self.ext_trim(ino, inode, extra)?;
        }
        r
    }

    fn grow_inner(&mut self, ino: Ino, inode: &mut Inode, want: u64) -> Result<(), FsError> {
        while inode.data_blocks < want {
            let have = inode.data_blocks;
            let need = want - have;
            if have.is_multiple_of(CHUNK_BLOCKS) && need >= CHUNK_BLOCKS {
                if let Some(a) = self.find_chunk() {
                    self.alloc_run(ino, inode, a, CHUNK_BLOCKS)?;
                    continue;
                }
            }
            let n = if !have.is_multiple_of(CHUNK_BLOCKS) { need.min(CHUNK_BLOCKS - have % CHUNK_BLOCKS) } else { need };
            let n = n.min(u32::MAX as u64 / 2);
            let last_end = match inode.ext_count {
                0 => 0,
                c => self.ext_get(ino, inode, c - 1)?.end(),
            };
            let run = if last_end > 0 { self.free_run(last_end, n) } else { 0 };
            if run > 0 {
                self.alloc_run(ino, inode, last_end, run)?;
                continue;
            }
            let s = self.find_free(0).ok_or(FsError::NoSpace)?;
            let run = self.free_run(s, n);
            self.alloc_run(ino, inode, s, run)?;
        }
        Ok(())
    }

    /// Marks `[s, s + n)` used, zeroes it and appends it to `inode`.
    fn alloc_run(&mut self, ino: Ino, inode: &mut Inode, s: u64, n: u64) -> Result<(), FsError> {
        self.mark(s, n, true)?;
        slice_mut(self.b, s * BLOCK_SIZE, n * BLOCK_SIZE)?.fill(0);
        let r = self.ext_push(ino, inode, Ext { start: s, len: n as u32 });
        if r.is_err() {
            self.mark(s, n, false)?;
        }
        r
    }

    /// The in-use non-directory `ino`.
    fn data_inode(&self, ino: Ino) -> Result<Inode, FsError> {
        let i = self.inode(ino)?;
        if i.kind == Kind::Dir {
            return Err(FsError::IsDir);
        }
        Ok(i)
    }

    /// Image block holding file block `fblock` and the contiguous blocks from there.
    pub(crate) fn block_of(&self, ino: Ino, inode: &Inode, fblock: u64) -> Result<Option<(u64, u64)>, FsError> {
        let mut base = 0u64;
        let mut found = None;
        self.for_each_ext(ino, inode, |_, e| {
            let len = e.len as u64;
            if fblock < base + len {
                found = Some((e.start + (fblock - base), len - (fblock - base)));
                return Ok(false);
            }
            base += len;
            Ok(true)
        })?;
        Ok(found)
    }

    /// Truncates or extends `ino` to `size` bytes; new bytes read as zero.
    /// Shrinking a pinned file is [`FsError::Busy`].
    pub fn set_size(&mut self, ino: Ino, size: u64, now_ns: u64) -> Result<(), FsError> {
        let mut inode = self.data_inode(ino)?;
        if size > MAX_SIZE {
            return Err(FsError::NoSpace);
        }
        if size < inode.size && inode.pinned() {
            return Err(FsError::Busy);
        }
        let want = size.div_ceil(BLOCK_SIZE);
        if want > inode.data_blocks {
            let r = self.grow(ino, &mut inode, want);
            self.put_inode(ino, &inode)?;
            r?;
        } else {
            let extra = inode.data_blocks - want;
            self.ext_trim(ino, &mut inode, extra)?;
        }
        if size < inode.size && !size.is_multiple_of(BLOCK_SIZE) {
            // Zero the tail of the last block so a later extension reads zeros.
            if let Some((blk, _)) = self.block_of(ino, &inode, size / BLOCK_SIZE)? {
                let from = blk * BLOCK_SIZE + size % BLOCK_SIZE;
                slice_mut(self.b, from, BLOCK_SIZE - size % BLOCK_SIZE)?.fill(0);
            }
        }
        inode.size = size;
        inode.mtime_ns = now_ns;
        self.put_inode(ino, &inode)
    }

    /// Reads from `off` into `buf`; returns the bytes read (0 at or past EOF).
    pub fn read(&self, ino: Ino, off: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        let inode = self.data_inode(ino)?;
        let end = inode.size.min(off.saturating_add(buf.len() as u64));
        let mut pos = off;
        while pos < end {
            let (blk, run) = self.block_of(ino, &inode, pos / BLOCK_SIZE)?.ok_or(FsError::InodeTable { ino })?;
            let n = (run * BLOCK_SIZE - pos % BLOCK_SIZE).min(end - pos);
            let src = slice(self.b, blk * BLOCK_SIZE + pos % BLOCK_SIZE, n)?;
            let d = (pos - off) as usize;
            buf.get_mut(d..d + n as usize).ok_or(FsError::Invalid)?.copy_from_slice(src);
            pos += n;
        }
        Ok(end.saturating_sub(off) as usize)
    }

    /// Writes `data` at `off`, extending the file; returns `data.len()`.
    pub fn write(&mut self, ino: Ino, off: u64, data: &[u8], now_ns: u64) -> Result<usize, FsError> {
        let mut inode = self.data_inode(ino)?;
        let end = off.checked_add(data.len() as u64).filter(|e| *e <= MAX_SIZE).ok_or(FsError::NoSpace)?;
        let want = end.div_ceil(BLOCK_SIZE);
        if want > inode.data_blocks {
            let r = self.grow(ino, &mut inode, want);
            self.put_inode(ino, &inode)?;
            r?;
        }
        let mut pos = off;
        while pos < end {
            let (blk, run) = self.block_of(ino, &inode, pos / BLOCK_SIZE)?.ok_or(FsError::InodeTable { ino })?;
            let n = (run * BLOCK_SIZE - pos % BLOCK_SIZE).min(end - pos);
            let s = (pos - off) as usize;
            let src = data.get(s..s + n as usize).ok_or(FsError::Invalid)?;
            slice_mut(self.b, blk * BLOCK_SIZE + pos % BLOCK_SIZE, n)?.copy_from_slice(src);
            pos += n;
        }
        inode.size = inode.size.max(end);
        inode.mtime_ns = now_ns;
        self.put_inode(ino, &inode)?;
        Ok(data.len())
    }

    /// Where file byte `off` lives: `(byte offset into the image, contiguous
    /// bytes from there)`, or `None` at or past the allocation (which is the
    /// size rounded up to 4 KiB). Add the carve-out's physical base for mmap
    /// or IOMMU mappings.
    pub fn map(&self, ino: Ino, off: u64) -> Result<Option<(u64, u64)>, FsError> {
        let inode = self.data_inode(ino)?;
        Ok(self
            .block_of(ino, &inode, off / BLOCK_SIZE)?
            .map(|(blk, run)| (blk * BLOCK_SIZE + off % BLOCK_SIZE, run * BLOCK_SIZE - off % BLOCK_SIZE)))
    }

    /// Pins or unpins `ino` (DMA-mapped files cannot be unlinked or shrunk).
    pub fn set_pinned(&mut self, ino: Ino, pinned: bool) -> Result<(), FsError> {
        let mut inode = self.data_inode(ino)?;
        inode.flags = if pinned { inode.flags | FLAG_PINNED } else { inode.flags & !FLAG_PINNED };
        self.put_inode(ino, &inode)
    }
}
