// SPDX-License-Identifier: GPL-2.0

//! Directory entries: [`DIRENT_SIZE`]-byte checksummed slots in the
//! directory's data blocks (ino, crc, kind, name length, name). A free slot
//! is all zeros.

use super::codec::{crc_skipping, get32, put32, slice, slice_mut};
use super::inode::Inode;
use super::{FsError, Image, Ino, Kind, BLOCK_SIZE, DIRENT_SIZE, NAME_MAX};

const CRC_OFF: usize = 4;
const NAME_OFF: usize = 16;
const PER_BLOCK: u64 = BLOCK_SIZE / DIRENT_SIZE;

/// A decoded used directory entry (the name stays in the image).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dirent {
    pub ino: Ino,
    pub kind: Kind,
    /// Byte offset of the name in the image.
    pub name_off: u64,
    pub name_len: usize,
}

/// Checks a name for a new entry.
pub(crate) fn valid_name(name: &[u8]) -> Result<(), FsError> {
    if name.len() > NAME_MAX {
        return Err(FsError::NameTooLong);
    }
    if name.is_empty() || name == b"." || name == b".." || name.iter().any(|c| *c == b'/' || *c == 0) {
        return Err(FsError::Invalid);
    }
    Ok(())
}

/// Decodes the slot at `b`: `None` if free; errors name directory `dir`.
fn decode(b: &[u8], off: u64, dir: Ino) -> Result<Option<Dirent>, FsError> {
    let ino = get32(b, 0);
    if ino == 0 {
        return if b.iter().all(|v| *v == 0) { Ok(None) } else { Err(FsError::DirentChecksum { ino: dir }) };
    }
    if get32(b, CRC_OFF) != crc_skipping(b, CRC_OFF) {
        return Err(FsError::DirentChecksum { ino: dir });
    }
    let kind = b.get(8).and_then(|c| Kind::from_code(*c)).ok_or(FsError::DirentChecksum { ino: dir })?;
    let name_len = b.get(9).copied().unwrap_or(0) as usize;
    let name = b.get(NAME_OFF..NAME_OFF + name_len).ok_or(FsError::DirentChecksum { ino: dir })?;
    let tail_clean = b.get(NAME_OFF + name_len..).is_some_and(|t| t.iter().all(|v| *v == 0));
    if valid_name(name).is_err() || !tail_clean || b.get(10..NAME_OFF).is_some_and(|r| r.iter().any(|v| *v != 0)) {
        return Err(FsError::DirentChecksum { ino: dir });
    }
    Ok(Some(Dirent { ino, kind, name_off: off + NAME_OFF as u64, name_len }))
}

impl Image<'_> {
    /// Visits every slot of directory `dir` in order: `f(slot, image offset,
    /// entry)`; `f` returns `false` to stop.
    pub(crate) fn for_each_slot<F>(&self, dir: Ino, inode: &Inode, mut f: F) -> Result<(), FsError>
    where
        F: FnMut(u64, u64, Option<Dirent>) -> Result<bool, FsError>,
    {
        let mut slot = 0u64;
        let mut go = true;
        self.for_each_ext(dir, inode, |_, e| {
            for blk in e.start..e.end() {
                for j in 0..PER_BLOCK {
                    let off = blk * BLOCK_SIZE + j * DIRENT_SIZE;
                    let d = decode(slice(self.b, off, DIRENT_SIZE)?, off, dir)?;
                    go = f(slot, off, d)?;
                    slot += 1;
                    if !go {
                        return Ok(false);
                    }
                }
            }
            Ok(true)
        })
    }

    /// The name of an entry.
    pub(crate) fn name_of(&self, d: &Dirent) -> &[u8] {
        slice(self.b, d.name_off, d.name_len as u64).unwrap_or(&[])
    }

    /// Finds `name` in `dir`: `(slot offset, entry)`.
    pub(crate) fn find(&self, dir: Ino, inode: &Inode, name: &[u8]) -> Result<Option<(u64, Dirent)>, FsError> {
        let mut found = None;
        self.for_each_slot(dir, inode, |_, off, d| {
            if let Some(d) = d.filter(|d| self.name_of(d) == name) {
                found = Some((off, d));
                return Ok(false);
            }
            Ok(true)
        })?;
        Ok(found)
    }

    /// Writes an entry at image offset `off`.
    pub(crate) fn put_dirent(&mut self, off: u64, ino: Ino, kind: Kind, name: &[u8]) -> Result<(), FsError> {
        valid_name(name)?;
        let b = slice_mut(self.b, off, DIRENT_SIZE)?;
        b.fill(0);
        put32(b, 0, ino);
        super::codec::put(b, 8, &[kind.code(), name.len() as u8]);
        super::codec::put(b, NAME_OFF, name);
        let crc = crc_skipping(b, CRC_OFF);
        put32(b, CRC_OFF, crc);
        Ok(())
    }

    /// Frees the entry at image offset `off`.
    pub(crate) fn clear_dirent(&mut self, off: u64) -> Result<(), FsError> {
        slice_mut(self.b, off, DIRENT_SIZE)?.fill(0);
        Ok(())
    }

    /// Adds `name → ino` to `dir` (whose inode the caller re-reads),
    /// growing the directory by one block when it is full.
    pub(crate) fn insert(&mut self, dir: Ino, name: &[u8], ino: Ino, kind: Kind) -> Result<(), FsError> {
        let mut inode = self.dir_inode(dir)?;
        let mut free = None;
        self.for_each_slot(dir, &inode, |_, off, d| {
            if d.is_none() {
                free = Some(off);
                return Ok(false);
            }
            Ok(true)
        })?;
        let off = match free {
            Some(off) => off,
            None => {
                let old = inode.data_blocks;
                let r = self.grow(dir, &mut inode, old + 1);
                if r.is_ok() {
                    inode.size = inode.data_blocks * BLOCK_SIZE;
                }
                self.put_inode(dir, &inode)?;
                r?;
                let (blk, _) = self.block_of(dir, &inode, old)?.ok_or(FsError::InodeTable { ino: dir })?;
                blk * BLOCK_SIZE
            }
        };
        self.put_dirent(off, ino, kind, name)
    }

    /// True if `dir` has no entries.
    pub(crate) fn is_empty_dir(&self, dir: Ino, inode: &Inode) -> Result<bool, FsError> {
        let mut empty = true;
        self.for_each_slot(dir, inode, |_, _, d| {
            empty = d.is_none();
            Ok(empty)
        })?;
        Ok(empty)
    }
}
