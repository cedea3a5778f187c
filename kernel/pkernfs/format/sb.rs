// SPDX-License-Identifier: GPL-2.0

//! Superblock (block 0) and the geometry it records.

use super::codec::{crc_skipping, get32, get64, put32, put64, slice};
use super::{FsError, BLOCK_SIZE, DIRENT_SIZE, FORMAT_VERSION, INODE_SIZE, MAGIC, SB_LEN};

/// Bitmap bits per bitmap block.
pub(crate) const BITS_PER_BLOCK: u64 = BLOCK_SIZE * 8;
/// Bitmap blocks the allocator header can checksum.
pub(crate) const MAX_BITMAP_BLOCKS: u64 = (BLOCK_SIZE - 16) / 4;
/// Smallest image: superblock, allocator, bitmap, 4 inode blocks, 9 data blocks.
pub const MIN_BLOCKS: u64 = 16;
/// Block of the allocator header.
pub(crate) const ALLOC_HDR_BLOCK: u64 = 1;
/// First bitmap block.
pub(crate) const BITMAP_START: u64 = 2;

const CRC_OFF: usize = 12;

/// Where everything is: a pure function of the image size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Usable image size in bytes (a multiple of [`BLOCK_SIZE`]).
    pub image_bytes: u64,
    /// Blocks in the image.
    pub total_blocks: u64,
    /// Bitmap blocks (starting at block 2).
    pub bitmap_blocks: u64,
    /// First inode-table block.
    pub itable_start: u64,
    /// Inodes in the table.
    pub inode_count: u32,
    /// First data block (everything before it is metadata).
    pub data_start: u64,
}

impl Geometry {
    /// The geometry of an image of `len` bytes (one inode per 128 KiB, at
    /// least 64, at most 65536), or [`FsError::TooSmall`].
    pub fn for_len(len: usize) -> Result<Self, FsError> {
        let total_blocks = (len as u64) / BLOCK_SIZE;
        if total_blocks < MIN_BLOCKS {
            return Err(FsError::TooSmall);
        }
        let bitmap_blocks = total_blocks.div_ceil(BITS_PER_BLOCK);
        if bitmap_blocks > MAX_BITMAP_BLOCKS {
            return Err(FsError::TooSmall);
        }
        let per_block = BLOCK_SIZE / INODE_SIZE;
        let inodes = (total_blocks / 32).clamp(64, 65536) / per_block * per_block;
        let itable_start = BITMAP_START + bitmap_blocks;
        let data_start = itable_start + inodes / per_block;
        if data_start + 4 > total_blocks {
            return Err(FsError::TooSmall);
        }
        Ok(Self {
            image_bytes: total_blocks * BLOCK_SIZE,
            total_blocks,
            bitmap_blocks,
            itable_start,
            inode_count: inodes as u32,
            data_start,
        })
    }

    /// Byte offset of inode `ino`'s slot (caller checked `1..=inode_count`).
    pub(crate) fn inode_off(&self, ino: u32) -> u64 {
        self.itable_start * BLOCK_SIZE + (ino as u64 - 1) * INODE_SIZE
    }
}

/// Encodes the superblock for `g` into `b` (at least [`SB_LEN`] bytes).
pub(crate) fn encode(b: &mut [u8], g: &Geometry, created_ns: u64) {
    if let Some(s) = b.get_mut(..SB_LEN) {
        s.fill(0);
    }
    put64(b, 0, MAGIC);
    put32(b, 8, FORMAT_VERSION);
    put64(b, 16, g.image_bytes);
    put32(b, 24, BLOCK_SIZE as u32);
    put32(b, 28, INODE_SIZE as u32);
    put64(b, 32, g.total_blocks);
    put64(b, 40, BITMAP_START);
    put64(b, 48, g.bitmap_blocks);
    put64(b, 56, g.itable_start);
    put32(b, 64, g.inode_count);
    put32(b, 68, DIRENT_SIZE as u32);
    put64(b, 72, g.data_start);
    put64(b, 80, created_ns);
    let crc = crc_skipping(b.get(..SB_LEN).unwrap_or(&[]), CRC_OFF);
    put32(b, CRC_OFF, crc);
}

/// Validates the superblock of `image`: magic, then version, then checksum,
/// then that the recorded geometry is the one for this image's size.
pub(crate) fn decode(image: &[u8]) -> Result<Geometry, FsError> {
    let b = slice(image, 0, SB_LEN as u64).map_err(|_| FsError::TooSmall)?;
    if get64(b, 0) != MAGIC {
        return Err(FsError::SuperblockMagic);
    }
    let found = get32(b, 8);
    if found != FORMAT_VERSION {
        return Err(FsError::SuperblockVersion { found });
    }
    if get32(b, CRC_OFF) != crc_skipping(b, CRC_OFF) {
        return Err(FsError::SuperblockChecksum);
    }
    let g = Geometry::for_len(image.len()).map_err(|_| FsError::SuperblockGeometry)?;
    let same = get64(b, 16) == g.image_bytes
        && get32(b, 24) as u64 == BLOCK_SIZE
        && get32(b, 28) as u64 == INODE_SIZE
        && get64(b, 32) == g.total_blocks
        && get64(b, 40) == BITMAP_START
        && get64(b, 48) == g.bitmap_blocks
        && get64(b, 56) == g.itable_start
        && get32(b, 64) == g.inode_count
        && get32(b, 68) as u64 == DIRENT_SIZE
        && get64(b, 72) == g.data_start;
    if !same {
        return Err(FsError::SuperblockGeometry);
    }
    Ok(g)
}
