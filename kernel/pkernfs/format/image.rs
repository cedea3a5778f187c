// SPDX-License-Identifier: GPL-2.0

//! [`Image`]: the filesystem on a byte slice. Namespace operations live
//! here; file data in `file.rs`, checking in `check.rs`.

use super::{CheckReport, FsError, Geometry, Ino, Kind, Stat};

/// A pkernfs image borrowed mutably for the duration of a mount (or a check).
#[derive(Debug)]
pub struct Image<'a> {
    pub(crate) b: &'a mut [u8],
    pub(crate) g: Geometry,
}

impl<'a> Image<'a> {
    /// Formats `bytes` as an empty pkernfs: superblock, allocator, inode
    /// table, the root directory and the `iommu/` directory.
    pub fn format(bytes: &'a mut [u8], now_ns: u64) -> Result<Self, FsError> {
        let _ = (bytes, now_ns);
        Err(FsError::Invalid)
    }

    /// Opens an existing image after validating everything ([`Image::check`]).
    /// Writes nothing, whether it succeeds or refuses.
    pub fn open(bytes: &'a mut [u8]) -> Result<Self, FsError> {
        let _ = bytes;
        Err(FsError::Invalid)
    }

    /// The image's geometry.
    pub fn geometry(&self) -> Geometry {
        self.g
    }

    /// The image bytes (read-only).
    pub fn bytes(&self) -> &[u8] {
        self.b
    }

    /// Full consistency check: superblock, allocator, every inode, extent
    /// and directory entry, and the tree. Counts what it saw.
    pub fn check(&self) -> Result<CheckReport, FsError> {
        Err(FsError::Invalid)
    }

    /// Attributes of `ino`.
    pub fn stat(&self, ino: Ino) -> Result<Stat, FsError> {
        let _ = ino;
        Err(FsError::Invalid)
    }

    /// The inode named `name` in directory `dir`.
    pub fn lookup(&self, dir: Ino, name: &[u8]) -> Result<Ino, FsError> {
        let _ = (dir, name);
        Err(FsError::Invalid)
    }

    /// Creates `name` in `dir` (a file, a directory or an IOMMU file).
    pub fn create(&mut self, dir: Ino, name: &[u8], kind: Kind, mode: u16, now_ns: u64) -> Result<Ino, FsError> {
        let _ = (dir, name, kind, mode, now_ns);
        Err(FsError::Invalid)
    }

    /// Removes a non-directory `name` from `dir`, freeing its blocks.
    /// A pinned file is [`FsError::Busy`].
    pub fn unlink(&mut self, dir: Ino, name: &[u8]) -> Result<(), FsError> {
        let _ = (dir, name);
        Err(FsError::Invalid)
    }

    /// Removes the empty directory `name` from `dir`.
    pub fn rmdir(&mut self, dir: Ino, name: &[u8]) -> Result<(), FsError> {
        let _ = (dir, name);
        Err(FsError::Invalid)
    }

    /// Moves `odir/oname` to `ndir/nname`, replacing an existing non-directory
    /// target (or an empty directory when the source is a directory); refuses
    /// to move a directory below itself.
    pub fn rename(&mut self, odir: Ino, oname: &[u8], ndir: Ino, nname: &[u8]) -> Result<(), FsError> {
        let _ = (odir, oname, ndir, nname);
        Err(FsError::Invalid)
    }

    /// The first entry of `dir` at or after slot `pos`: `(next pos, ino, name, kind)`,
    /// or `None` at the end. `.` and `..` are not stored (the VFS adds them).
    pub fn readdir(&self, dir: Ino, pos: u64) -> Result<Option<(u64, Ino, &[u8], Kind)>, FsError> {
        let _ = (dir, pos);
        Err(FsError::Invalid)
    }
}
