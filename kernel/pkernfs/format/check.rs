// SPDX-License-Identifier: GPL-2.0

//! Full consistency check of an image, without allocating: ownership of
//! blocks and inode references are verified window by window with a small
//! bitmap on the stack.

use super::codec::{crc32, slice};
use super::inode::Inode;
use super::sb::{self, BITMAP_START, BITS_PER_BLOCK};
use super::{FsError, Image, Ino, Kind, BLOCK_SIZE, INLINE_EXTENTS, MAX_DEPTH, ROOT_INO};

/// Bits in the on-stack scratch bitmap of a window.
const WINDOW: u64 = 8192;

/// What [`Image::check`] counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckReport {
    /// Inodes in use (root included).
    pub inodes: u32,
    /// Directories (root included).
    pub dirs: u32,
    /// Non-directories.
    pub files: u32,
    /// Directory entries.
    pub dirents: u64,
    /// Extents of all inodes.
    pub extents: u64,
    /// Blocks marked used (metadata included).
    pub used_blocks: u64,
    /// Blocks free.
    pub free_blocks: u64,
    /// Data blocks owned by files and directories.
    pub data_blocks: u64,
    /// Extent blocks.
    pub extent_blocks: u64,
}

/// A window `[base, base + WINDOW)` of block or inode numbers.
struct Scratch {
    base: u64,
    bits: [u8; (WINDOW / 8) as usize],
}

impl Scratch {
    fn new(base: u64) -> Self {
        Self { base, bits: [0; (WINDOW / 8) as usize] }
    }

    /// Sets the bits of `[start, end)` inside the window; returns the first
    /// number that was already set.
    fn set(&mut self, start: u64, end: u64) -> Option<u64> {
        let (lo, hi) = (start.max(self.base), end.min(self.base + WINDOW));
        for n in lo..hi {
            let i = (n - self.base) as usize;
            let byte = self.bits.get_mut(i / 8)?;
            if *byte & (1 << (i % 8)) != 0 {
                return Some(n);
            }
            *byte |= 1 << (i % 8);
        }
        None
    }

    fn get(&self, n: u64) -> bool {
        let i = n.wrapping_sub(self.base) as usize;
        self.bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
    }
}

impl Image<'_> {
    /// Full consistency check: superblock, allocator, every inode, extent
    /// and directory entry, and the tree. Counts what it saw.
    pub fn check(&self) -> Result<CheckReport, FsError> {
        sb::decode(self.b)?;
        self.check_alloc_checksums()?;
        let mut r = CheckReport::default();
        for ino in 1..=self.g.inode_count {
            if let Some(i) = self.inode_slot(ino)? {
                self.check_inode(ino, &i, &mut r)?;
            } else if ino == ROOT_INO {
                return Err(FsError::RootInode);
            }
        }
        self.check_blocks()?;
        r.used_blocks = self.used_count()?;
        r.free_blocks = self.g.total_blocks - r.used_blocks;
        for ino in 1..=self.g.inode_count {
            if let Some(i) = self.used(ino).filter(|i| i.kind == Kind::Dir) {
                r.dirents += self.check_dir(ino, &i)?;
            }
        }
        self.check_refs()?;
        self.check_tree()?;
        Ok(r)
    }

    /// An in-use inode already validated by the first pass (no re-checksum).
    fn used(&self, ino: Ino) -> Option<Inode> {
        self.inode_verified(ino)
    }

    /// Fields of one inode and its extent list.
    fn check_inode(&self, ino: Ino, i: &Inode, r: &mut CheckReport) -> Result<(), FsError> {
        let bad = FsError::InodeTable { ino };
        if ino == ROOT_INO && (i.kind != Kind::Dir || i.parent != ROOT_INO) {
            return Err(FsError::RootInode);
        }
        if !self.ino_valid(i.parent) || i.mode > 0o7777 || i.flags & !1 != 0 {
            return Err(bad);
        }
        let size_ok = match i.kind {
            Kind::Dir => Some(i.size) == i.data_blocks.checked_mul(BLOCK_SIZE) && i.nlink >= 2 && i.flags == 0,
            _ => i.size.div_ceil(BLOCK_SIZE) == i.data_blocks && i.nlink == 1,
        };
        let chained = i.ext_count > INLINE_EXTENTS;
        let unused_inline = i.inline.iter().skip(i.ext_count as usize).all(|e| e.start == 0 && e.len == 0);
        if !size_ok || chained != (i.chain != 0) || !unused_inline || (i.ext_count == 0) != (i.data_blocks == 0) {
            return Err(bad);
        }
        let mut sum = 0u64;
        self.for_each_ext(ino, i, |_, e| {
            let inside = e.len > 0 && e.start >= self.g.data_start && e.end() <= self.g.total_blocks;
            if !inside {
                return Err(FsError::ExtentOutOfRange { ino });
            }
            sum += e.len as u64;
            Ok(true)
        })?;
        if sum != i.data_blocks {
            return Err(bad);
        }
        self.for_each_ext_block(ino, i, |_| r.extent_blocks += 1)?;
        r.inodes += 1;
        r.extents += i.ext_count as u64;
        r.data_blocks += sum;
        if i.kind == Kind::Dir {
            r.dirs += 1;
        } else {
            r.files += 1;
        }
        Ok(())
    }

    /// Every block is owned exactly once (metadata, an extent or an extent
    /// block) and the bitmap says used exactly for owned blocks.
    fn check_blocks(&self) -> Result<(), FsError> {
        let mut base = 0;
        while base < self.g.total_blocks {
            let mut s = Scratch::new(base);
            s.set(0, self.g.data_start);
            for ino in 1..=self.g.inode_count {
                let Some(i) = self.used(ino) else { continue };
                let mut dup = None;
                self.for_each_ext(ino, &i, |_, e| {
                    dup = dup.or(s.set(e.start, e.end()));
                    Ok(true)
                })?;
                self.for_each_ext_block(ino, &i, |b| dup = dup.or(s.set(b, b + 1)))?;
                if let Some(block) = dup {
                    return Err(FsError::ExtentOverlap { block });
                }
            }
            for blk in base..(base + WINDOW).min(self.g.total_blocks) {
                if s.get(blk) != self.is_used(blk) {
                    return Err(FsError::AllocatorMismatch { block: blk });
                }
            }
            base += WINDOW;
        }
        // Bits past the end of the image must be clear.
        let bm = slice(self.b, BITMAP_START * BLOCK_SIZE, self.g.bitmap_blocks * BLOCK_SIZE)?;
        for blk in self.g.total_blocks..self.g.bitmap_blocks * BITS_PER_BLOCK {
            if bm.get((blk / 8) as usize).is_some_and(|v| v & (1 << (blk % 8)) != 0) {
                return Err(FsError::AllocatorMismatch { block: blk });
            }
        }
        Ok(())
    }

    /// Entries of directory `dir`: well formed, unique names, pointing to
    /// in-use inodes of the same kind whose parent is `dir`; link count.
    fn check_dir(&self, dir: Ino, d: &Inode) -> Result<u64, FsError> {
        let bad = FsError::DirentTarget { ino: dir };
        let (mut n, mut subdirs) = (0u64, 0u32);
        // Duplicate names: a bitmap of name hashes filters the pairs to
        // compare, so only a name whose hash was seen before is looked up
        // among the other entries (linear in entries, not quadratic).
        let mut hashes = Scratch::new(0);
        self.for_each_slot(dir, d, |slot, _, e| {
            let Some(e) = e else { return Ok(true) };
            let t = self.used(e.ino).filter(|_| self.ino_valid(e.ino) && e.ino != ROOT_INO).ok_or(bad)?;
            if t.kind != e.kind || t.parent != dir {
                return Err(bad);
            }
            let name = self.name_of(&e);
            let h = u64::from(crc32(name)) % WINDOW;
            if hashes.set(h, h + 1).is_some() {
                self.for_each_slot(dir, d, |s2, _, e2| match e2 {
                    Some(e2) if s2 != slot && self.name_of(&e2) == name => Err(bad),
                    _ => Ok(true),
                })?;
            }
            n += 1;
            subdirs += (t.kind == Kind::Dir) as u32;
            Ok(true)
        })?;
        if d.nlink != subdirs + 2 {
            return Err(FsError::InodeTable { ino: dir });
        }
        Ok(n)
    }

    /// Every in-use inode but the root is named by exactly one entry.
    fn check_refs(&self) -> Result<(), FsError> {
        let mut base = 1u64;
        while base <= self.g.inode_count as u64 {
            let mut s = Scratch::new(base);
            for dir in 1..=self.g.inode_count {
                let Some(d) = self.used(dir).filter(|i| i.kind == Kind::Dir) else { continue };
                self.for_each_slot(dir, &d, |_, _, e| match e.and_then(|e| s.set(e.ino as u64, e.ino as u64 + 1)) {
                    Some(_) => Err(FsError::DirentTarget { ino: dir }),
                    None => Ok(true),
                })?;
            }
            let top = (base + WINDOW - 1).min(self.g.inode_count as u64);
            for ino in base as Ino..=top as Ino {
                if ino != ROOT_INO && self.used(ino).is_some() && !s.get(ino as u64) {
                    return Err(FsError::Unreachable { ino });
                }
            }
            base += WINDOW;
        }
        Ok(())
    }

    /// Every directory reaches the root within [`MAX_DEPTH`] steps (no cycles).
    fn check_tree(&self) -> Result<(), FsError> {
        for ino in 2..=self.g.inode_count {
            if self.used(ino).is_none_or(|i| i.kind != Kind::Dir) {
                continue;
            }
            let mut d = ino;
            let mut n = 0;
            while d != ROOT_INO {
                n += 1;
                d = self.used(d).filter(|_| n <= MAX_DEPTH + 1).ok_or(FsError::Unreachable { ino })?.parent;
            }
        }
        Ok(())
    }
}
