// SPDX-License-Identifier: GPL-2.0

//! pkernfs on-memory format: ALL filesystem metadata logic, on a byte slice
//! (the carve-out image). Compiled into the kernel (`fs/pkernfs/`, where a
//! thin VFS adapter calls it under a mutex on the memremapped carve-out) and
//! into the lulab harness (which parses and checks the carve-out from the
//! host's RAM file, and property-tests it against a model). Never keep a
//! second hand-written copy.
//!
//! Pure `core`: no allocation, no floats, no `unsafe`, no recursion, and no
//! panicking index on image bytes (all access goes through `get`/checked
//! arithmetic), so any input is safe to [`Image::open`].
//!
//! # Layout (all integers little endian; block = 4 KiB)
//!
//! | blocks | structure | contents |
//! |---|---|---|
//! | 0 | superblock | magic `PKERNFS1`, version, crc32, geometry (first [`SB_LEN`] bytes checksummed) |
//! | 1 | allocator header | magic `PKAL`, version, crc32 of the block, one crc32 per bitmap block |
//! | 2 .. 2+B | allocator bitmap | bit *i* (LSB first) = block *i* in use; metadata blocks are marked |
//! | .. +I | inode table | [`INODE_SIZE`]-byte inodes, inode *n* in slot *n*−1, each with its crc32 |
//! | data_start .. | data | file and directory extents, extent blocks |
//!
//! Inode: kind, flags (pinned), mode, nlink, crc, version, size, mtime,
//! parent, extent count, first extent block, data block count, then
//! [`INLINE_EXTENTS`] extents `(start block u64, length u32, 0u32)` in file
//! order. More extents go to a chain of checksummed extent blocks (magic
//! `PKEX`, owner inode, next block). Directory data is an array of
//! [`DIRENT_SIZE`]-byte entries (ino, crc, kind, name length, name); a free
//! entry is all zeros.
//!
//! Geometry is a pure function of the image size ([`Geometry::for_len`]), so
//! an image found in a carve-out of another size is refused.
//!
//! # Allocation policy
//! File data is allocated in [`CHUNK_BLOCKS`]-block (2 MiB) chunks aligned to
//! 2 MiB in the image whenever the file offset is 2 MiB-aligned and at least
//! 2 MiB is still needed (so huge mappings work when the carve-out base is
//! 2 MiB-aligned); otherwise 4 KiB blocks, extending the last extent in place
//! when the following blocks are free, else first fit. Newly allocated blocks
//! are zeroed; shrinking zeroes the tail of the last block, so extended bytes
//! always read as zero.

// Unused parts of the API on either side are fine; the kernel's cfg names
// are unknown to the harness build.
#![allow(dead_code, unreachable_pub, unexpected_cfgs)]

mod alloc;
mod check;
mod codec;
mod dir;
mod error;
mod extent;
mod file;
mod image;
mod inode;
mod rename;
mod sb;

#[cfg(CONFIG_PKERNFS_KUNIT_TEST)]
mod kunit;

pub use alloc::reseal_allocator;
pub use check::CheckReport;
pub use codec::crc32;
pub use error::FsError;
pub use image::Image;
pub use sb::Geometry;

/// Inode number (1-based; 0 is never a valid inode).
pub type Ino = u32;
/// The root directory.
pub const ROOT_INO: Ino = 1;
/// Superblock magic: "PKERNFS1", little endian.
pub const MAGIC: u64 = u64::from_le_bytes(*b"PKERNFS1");
/// On-memory format version; bumped on every incompatible change.
pub const FORMAT_VERSION: u32 = 2;
/// Allocation granule and metadata block size.
pub const BLOCK_SIZE: u64 = 4096;
/// Blocks per 2 MiB chunk (the preferred data allocation).
pub const CHUNK_BLOCKS: u64 = 512;
/// Bytes of the superblock covered by its checksum.
pub const SB_LEN: usize = 128;
/// Bytes per inode.
pub const INODE_SIZE: u64 = 256;
/// Extents stored in the inode itself.
pub const INLINE_EXTENTS: u32 = 8;
/// Extents per extent block.
pub const EXTENTS_PER_BLOCK: u32 = 254;
/// Bytes per directory entry.
pub const DIRENT_SIZE: u64 = 256;
/// Longest name in bytes.
pub const NAME_MAX: usize = 240;
/// Deepest directory nesting accepted (bounds the cycle check).
pub const MAX_DEPTH: u32 = 256;
/// Name of the directory made by [`Image::format`] for IOMMU files.
pub const IOMMU_DIR: &[u8] = b"iommu";

/// What an inode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// `iommu/dmar-<unit>/root-pgtables`: IOMMU root/context tables (data like a file).
    IommuRoot,
    /// `iommu/dmar-<unit>/dom-N`: a persistent IOMMU domain's page tables (data like a file).
    IommuDomain,
    /// `iommu/dmar-<unit>/pasid-<sid>`: a persistent device's scalable-mode
    /// PASID directory and table (data like a file).
    IommuPasid,
}

impl Kind {
    /// On-memory code (0 = free inode).
    pub const fn code(self) -> u8 {
        match self {
            Kind::File => 1,
            Kind::Dir => 2,
            Kind::IommuRoot => 3,
            Kind::IommuDomain => 4,
            Kind::IommuPasid => 5,
        }
    }

    /// Decodes an on-memory code; `None` for free (0) or unknown codes.
    pub const fn from_code(c: u8) -> Option<Kind> {
        match c {
            1 => Some(Kind::File),
            2 => Some(Kind::Dir),
            3 => Some(Kind::IommuRoot),
            4 => Some(Kind::IommuDomain),
            5 => Some(Kind::IommuPasid),
            _ => None,
        }
    }

    /// True for kinds whose data is file bytes (everything but directories).
    pub const fn has_data(self) -> bool {
        !matches!(self, Kind::Dir)
    }
}

/// Attributes of an inode, for the VFS `getattr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Inode number.
    pub ino: Ino,
    /// Kind.
    pub kind: Kind,
    /// Permission bits (`0o7777`).
    pub mode: u16,
    /// Size in bytes (directories: bytes of entry slots).
    pub size: u64,
    /// Link count (files 1; directories 2 + subdirectories).
    pub nlink: u32,
    /// Last modification, nanoseconds since the epoch.
    pub mtime_ns: u64,
    /// Allocated space in 512-byte units (as `st_blocks`), extent blocks included.
    pub blocks: u64,
    /// Pinned (DMA-mapped): unlink and shrink are refused.
    pub pinned: bool,
}
