// SPDX-License-Identifier: GPL-2.0

//! Errors of the format module: corruption variants name the broken
//! structure; the rest map to errno values for the VFS adapter.

use super::Ino;

/// Why an operation or an image was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsError {
    /// The superblock does not start with [`super::MAGIC`]: not a pkernfs image.
    SuperblockMagic,
    /// The superblock names a format version this code does not understand.
    SuperblockVersion {
        /// Version found in the image.
        found: u32,
    },
    /// The superblock checksum does not match its contents.
    SuperblockChecksum,
    /// The superblock's geometry (sizes, region offsets) is inconsistent or
    /// does not match the carve-out it was found in.
    SuperblockGeometry,
    /// The allocator header or a bitmap block fails its checksum.
    AllocatorChecksum,
    /// The allocator header has a bad magic or version.
    AllocatorHeader,
    /// Block `block` is marked used but owned by nothing, or owned but marked free.
    AllocatorMismatch {
        /// Image block index.
        block: u64,
    },
    /// Inode `ino`'s checksum does not match its contents.
    InodeChecksum {
        /// The inode.
        ino: Ino,
    },
    /// Inode `ino` is well checksummed but its fields are inconsistent
    /// (kind, version, link count, size vs extents, parent).
    InodeTable {
        /// The inode.
        ino: Ino,
    },
    /// The root directory (inode 1) is missing or not a directory.
    RootInode,
    /// An extent or extent block of inode `ino` points outside the data area.
    ExtentOutOfRange {
        /// The inode.
        ino: Ino,
    },
    /// An extent block of inode `ino` fails its checksum, magic or owner.
    ExtentBlock {
        /// The inode.
        ino: Ino,
    },
    /// Two extents (of one or two inodes) claim block `block`.
    ExtentOverlap {
        /// Image block index.
        block: u64,
    },
    /// A directory entry of directory `ino` fails its checksum or is malformed.
    DirentChecksum {
        /// The directory.
        ino: Ino,
    },
    /// Directory `ino` holds an entry to a free inode, a duplicate name, an
    /// inode linked twice, or a kind that does not match the inode.
    DirentTarget {
        /// The directory.
        ino: Ino,
    },
    /// Inode `ino` is in use but no directory entry reaches it, or the
    /// directory tree has a cycle through it.
    Unreachable {
        /// The inode.
        ino: Ino,
    },
    /// No such file or directory.
    NotFound,
    /// The name already exists.
    Exists,
    /// Not a directory.
    NotDir,
    /// Is a directory.
    IsDir,
    /// Directory not empty.
    NotEmpty,
    /// No free block or inode left in the carve-out.
    NoSpace,
    /// Name longer than [`super::NAME_MAX`] bytes.
    NameTooLong,
    /// The file is pinned (DMA-mapped): unlink or shrink refused.
    Busy,
    /// Invalid argument (bad name, bad inode number, rename into itself, …).
    Invalid,
    /// The buffer is too small (or too large) for a pkernfs image.
    TooSmall,
}

impl FsError {
    /// Positive errno for the VFS adapter (corruption maps to `EUCLEAN`).
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => 2,     // ENOENT
            FsError::Busy => 16,        // EBUSY
            FsError::Exists => 17,      // EEXIST
            FsError::NotDir => 20,      // ENOTDIR
            FsError::IsDir => 21,       // EISDIR
            FsError::Invalid => 22,     // EINVAL
            FsError::NoSpace => 28,     // ENOSPC
            FsError::NameTooLong => 36, // ENAMETOOLONG
            FsError::NotEmpty => 39,    // ENOTEMPTY
            FsError::TooSmall => 22,    // EINVAL
            _ => 117,                   // EUCLEAN: structure needs cleaning
        }
    }

    /// True for the variants that mean "the image is corrupted".
    pub fn is_corruption(&self) -> bool {
        self.errno() == 117
    }

    /// A short message naming the broken structure (for `pr_err!`).
    pub fn describe(&self) -> &'static str {
        match self {
            FsError::SuperblockMagic => "superblock: bad magic (not a pkernfs image)",
            FsError::SuperblockVersion { .. } => "superblock: unsupported format version",
            FsError::SuperblockChecksum => "superblock: checksum mismatch",
            FsError::SuperblockGeometry => "superblock: geometry does not match the carve-out",
            FsError::AllocatorChecksum => "allocator: bitmap checksum mismatch",
            FsError::AllocatorHeader => "allocator: bad header magic or version",
            FsError::AllocatorMismatch { .. } => "allocator: bitmap disagrees with the extents",
            FsError::InodeChecksum { .. } => "inode table: inode checksum mismatch",
            FsError::InodeTable { .. } => "inode table: inconsistent inode",
            FsError::RootInode => "inode table: root directory missing",
            FsError::ExtentOutOfRange { .. } => "extents: extent outside the data area",
            FsError::ExtentBlock { .. } => "extents: bad extent block",
            FsError::ExtentOverlap { .. } => "extents: block owned twice",
            FsError::DirentChecksum { .. } => "directory: entry checksum mismatch",
            FsError::DirentTarget { .. } => "directory: entry points to a wrong inode",
            FsError::Unreachable { .. } => "directory: inode not reachable from the root",
            FsError::NotFound => "no such file or directory",
            FsError::Exists => "file exists",
            FsError::NotDir => "not a directory",
            FsError::IsDir => "is a directory",
            FsError::NotEmpty => "directory not empty",
            FsError::NoSpace => "no space left in the carve-out",
            FsError::NameTooLong => "name too long",
            FsError::Busy => "file is pinned (DMA-mapped)",
            FsError::Invalid => "invalid argument",
            FsError::TooSmall => "carve-out too small (or too large) for pkernfs",
        }
    }
}
