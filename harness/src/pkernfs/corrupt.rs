//! Corruption helpers for negative tests: each breaks exactly one named
//! structure of a pkernfs image (bytes, or a carve-out in the RAM file) and
//! says which error `Image::open` must refuse it with.

use super::format::{reseal_allocator, FsError, Geometry, Ino, BLOCK_SIZE, INODE_SIZE};

/// What a helper changed and what `open` must answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corruption {
    /// Byte offset (in the image) of the flipped byte.
    pub offset: u64,
    /// The error `Image::open` must return.
    pub expected: FsError,
}

fn flip(bytes: &mut [u8], offset: u64, mask: u8) -> anyhow::Result<()> {
    let len = bytes.len();
    let b = usize::try_from(offset)
        .ok()
        .and_then(|o| bytes.get_mut(o))
        .ok_or_else(|| anyhow::anyhow!("offset {offset:#x} is outside the {len}-byte pkernfs image"))?;
    *b ^= mask;
    Ok(())
}

fn geometry(bytes: &[u8]) -> anyhow::Result<Geometry> {
    Geometry::for_len(bytes.len()).map_err(|e| anyhow::anyhow!("no pkernfs geometry for {} bytes: {}", bytes.len(), e.describe()))
}

/// Flips a bit of the superblock's recorded image size: a checksum error.
pub fn corrupt_superblock(bytes: &mut [u8]) -> anyhow::Result<Corruption> {
    flip(bytes, 16, 0x01)?;
    Ok(Corruption { offset: 16, expected: FsError::SuperblockChecksum })
}

/// Flips a bit of the superblock magic: not a pkernfs image.
pub fn corrupt_superblock_magic(bytes: &mut [u8]) -> anyhow::Result<Corruption> {
    flip(bytes, 0, 0x20)?;
    Ok(Corruption { offset: 0, expected: FsError::SuperblockMagic })
}

/// Changes the format version (a foreign image from a future format).
pub fn corrupt_superblock_version(bytes: &mut [u8]) -> anyhow::Result<Corruption> {
    flip(bytes, 8, 0x40)?;
    let found = u32::from_le_bytes(bytes.get(8..12).and_then(|s| s.try_into().ok()).unwrap_or([0; 4]));
    Ok(Corruption { offset: 8, expected: FsError::SuperblockVersion { found } })
}

/// Flips a bit of inode `ino`'s mode: an inode checksum error naming `ino`.
pub fn corrupt_inode(bytes: &mut [u8], ino: Ino) -> anyhow::Result<Corruption> {
    let g = geometry(bytes)?;
    anyhow::ensure!(ino >= 1 && ino <= g.inode_count, "inode {ino} is outside 1..={}", g.inode_count);
    let offset = g.itable_start * BLOCK_SIZE + (ino as u64 - 1) * INODE_SIZE + 2;
    flip(bytes, offset, 0x04)?;
    Ok(Corruption { offset, expected: FsError::InodeChecksum { ino } })
}

/// Flips the bitmap bit of the image's last block: an allocator checksum error.
pub fn corrupt_allocator(bytes: &mut [u8]) -> anyhow::Result<Corruption> {
    let g = geometry(bytes)?;
    let last = g.total_blocks - 1;
    let offset = 2 * BLOCK_SIZE + last / 8;
    flip(bytes, offset, 1 << (last % 8))?;
    Ok(Corruption { offset, expected: FsError::AllocatorChecksum })
}

/// Flips the bitmap bit of `block` and re-seals the allocator checksums:
/// the allocator is intact but disagrees with the extents.
pub fn corrupt_allocator_consistently(bytes: &mut [u8], block: u64) -> anyhow::Result<Corruption> {
    let offset = 2 * BLOCK_SIZE + block / 8;
    flip(bytes, offset, 1 << (block % 8))?;
    reseal_allocator(bytes).map_err(|e| anyhow::anyhow!("resealing the allocator: {}", e.describe()))?;
    Ok(Corruption { offset, expected: FsError::AllocatorMismatch { block } })
}
