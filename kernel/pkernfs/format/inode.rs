// SPDX-License-Identifier: GPL-2.0

//! Inodes: fixed [`INODE_SIZE`]-byte checksummed records in the inode table.

use super::codec::{crc_skipping, get16, get32, get64, put16, put32, put64, slice, slice_mut};
use super::{FsError, Image, Ino, Kind, INLINE_EXTENTS, INODE_SIZE};

/// Inode record version.
pub(crate) const INODE_VERSION: u16 = 1;
/// Flag: pinned (DMA-mapped).
pub(crate) const FLAG_PINNED: u8 = 1;
const CRC_OFF: usize = 8;
const EXT_OFF: usize = 64;

/// An extent: `len` blocks starting at image block `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Ext {
    /// First image block.
    pub start: u64,
    /// Length in blocks (never 0 in a stored extent).
    pub len: u32,
}

impl Ext {
    /// One past the last block.
    pub(crate) fn end(&self) -> u64 {
        self.start.saturating_add(self.len as u64)
    }
}

/// A decoded in-use inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Inode {
    pub kind: Kind,
    pub flags: u8,
    pub mode: u16,
    pub nlink: u32,
    pub size: u64,
    pub mtime_ns: u64,
    /// Directory holding this inode's entry (the root's parent is itself).
    pub parent: Ino,
    /// Extents in total (inline and chained).
    pub ext_count: u32,
    /// First extent block, 0 when none.
    pub chain: u64,
    /// Sum of extent lengths.
    pub data_blocks: u64,
    pub inline: [Ext; INLINE_EXTENTS as usize],
}

impl Inode {
    /// A fresh inode with no data.
    pub(crate) fn new(kind: Kind, mode: u16, parent: Ino, now_ns: u64) -> Self {
        let nlink = if kind == Kind::Dir { 2 } else { 1 };
        let inline = [Ext::default(); INLINE_EXTENTS as usize];
        Self { kind, flags: 0, mode: mode & 0o7777, nlink, size: 0, mtime_ns: now_ns, parent, ext_count: 0, chain: 0, data_blocks: 0, inline }
    }

    /// Pinned (DMA-mapped)?
    pub(crate) fn pinned(&self) -> bool {
        self.flags & FLAG_PINNED != 0
    }

    fn encode(&self, b: &mut [u8]) {
        b.fill(0);
        put(b, 0, &[self.kind.code(), self.flags]);
        put16(b, 2, self.mode);
        put32(b, 4, self.nlink);
        put16(b, 12, INODE_VERSION);
        put64(b, 16, self.size);
        put64(b, 24, self.mtime_ns);
        put32(b, 32, self.parent);
        put32(b, 36, self.ext_count);
        put64(b, 40, self.chain);
        put64(b, 48, self.data_blocks);
        for (i, e) in self.inline.iter().enumerate() {
            put64(b, EXT_OFF + 16 * i, e.start);
            put32(b, EXT_OFF + 16 * i + 8, e.len);
        }
        let crc = crc_skipping(b, CRC_OFF);
        put32(b, CRC_OFF, crc);
    }

    /// Decodes a slot: `Ok(None)` for a free (all-zero) slot; checksum,
    /// version and kind errors name `ino`.
    fn decode(b: &[u8], ino: Ino) -> Result<Option<Self>, FsError> {
        if get32(b, CRC_OFF) != crc_skipping(b, CRC_OFF) {
            return Err(FsError::InodeChecksum { ino });
        }
        Self::parse(b, ino)
    }

    /// Decodes a slot without verifying its checksum (already verified).
    fn parse(b: &[u8], ino: Ino) -> Result<Option<Self>, FsError> {
        let code = b.first().copied().unwrap_or(0);
        if code == 0 {
            let clean = b.iter().enumerate().all(|(i, v)| *v == 0 || (CRC_OFF..CRC_OFF + 4).contains(&i));
            return if clean { Ok(None) } else { Err(FsError::InodeTable { ino }) };
        }
        let kind = Kind::from_code(code).ok_or(FsError::InodeTable { ino })?;
        if get16(b, 12) != INODE_VERSION {
            return Err(FsError::InodeTable { ino });
        }
        let mut inline = [Ext::default(); INLINE_EXTENTS as usize];
        for (i, e) in inline.iter_mut().enumerate() {
            *e = Ext { start: get64(b, EXT_OFF + 16 * i), len: get32(b, EXT_OFF + 16 * i + 8) };
        }
        Ok(Some(Self {
            kind,
            flags: b.get(1).copied().unwrap_or(0),
            mode: get16(b, 2),
            nlink: get32(b, 4),
            size: get64(b, 16),
            mtime_ns: get64(b, 24),
            parent: get32(b, 32),
            ext_count: get32(b, 36),
            chain: get64(b, 40),
            data_blocks: get64(b, 48),
            inline,
        }))
    }
}

fn put(b: &mut [u8], off: usize, v: &[u8]) {
    super::codec::put(b, off, v)
}

impl Image<'_> {
    /// Is `ino` a valid inode number for this image?
    pub(crate) fn ino_valid(&self, ino: Ino) -> bool {
        ino >= 1 && ino <= self.g.inode_count
    }

    /// The slot of `ino`, decoded (`None` = free).
    pub(crate) fn inode_slot(&self, ino: Ino) -> Result<Option<Inode>, FsError> {
        if !self.ino_valid(ino) {
            return Err(FsError::Invalid);
        }
        Inode::decode(slice(self.b, self.g.inode_off(ino), INODE_SIZE)?, ino)
    }

    /// The slot of `ino` decoded without re-verifying its checksum: for the
    /// later passes of `check`, after the first pass verified every slot.
    pub(crate) fn inode_verified(&self, ino: Ino) -> Option<Inode> {
        let b = slice(self.b, self.g.inode_off(ino), INODE_SIZE).ok()?;
        if !self.ino_valid(ino) || b.first() == Some(&0) {
            return None;
        }
        Inode::parse(b, ino).ok().flatten()
    }

    /// The in-use inode `ino`, or [`FsError::NotFound`].
    pub(crate) fn inode(&self, ino: Ino) -> Result<Inode, FsError> {
        self.inode_slot(ino)?.ok_or(FsError::NotFound)
    }

    /// The in-use directory `ino`, or [`FsError::NotDir`].
    pub(crate) fn dir_inode(&self, ino: Ino) -> Result<Inode, FsError> {
        let i = self.inode(ino)?;
        if i.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        Ok(i)
    }

    /// Writes `inode` into slot `ino` with a fresh checksum.
    pub(crate) fn put_inode(&mut self, ino: Ino, inode: &Inode) -> Result<(), FsError> {
        if !self.ino_valid(ino) {
            return Err(FsError::Invalid);
        }
        let off = self.g.inode_off(ino);
        inode.encode(slice_mut(self.b, off, INODE_SIZE)?);
        Ok(())
    }

    /// Frees slot `ino` (all zeros + the checksum of zeros).
    pub(crate) fn clear_inode(&mut self, ino: Ino) -> Result<(), FsError> {
        if !self.ino_valid(ino) {
            return Err(FsError::Invalid);
        }
        let off = self.g.inode_off(ino);
        let b = slice_mut(self.b, off, INODE_SIZE)?;
        b.fill(0);
        let crc = crc_skipping(b, CRC_OFF);
        put32(b, CRC_OFF, crc);
        Ok(())
    }

    /// A free inode number.
    pub(crate) fn free_ino(&self) -> Result<Ino, FsError> {
        for ino in 2..=self.g.inode_count {
            // Kind byte first (cheap); the chosen slot is then fully decoded.
            let kind = slice(self.b, self.g.inode_off(ino), 1)?;
            if kind.first() == Some(&0) && self.inode_slot(ino)?.is_none() {
                return Ok(ino);
            }
        }
        Err(FsError::NoSpace)
    }
}
