// SPDX-License-Identifier: GPL-2.0

//! [`Image`]: the filesystem on a byte slice. Namespace operations live
//! here; file data in `file.rs`, checking in `check.rs`.

use super::codec::slice_mut;
use super::dir::valid_name;
use super::inode::Inode;
use super::{sb, FsError, Geometry, Ino, Kind, Stat, BLOCK_SIZE, INLINE_EXTENTS, MAX_DEPTH, ROOT_INO};
use super::{EXTENTS_PER_BLOCK, IOMMU_DIR};

/// One entry from [`Image::readdir`]: `(next pos, ino, name, kind)`.
pub type ReaddirEntry<'a> = (u64, Ino, &'a [u8], Kind);

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
        let g = Geometry::for_len(bytes.len())?;
        let mut img = Image { b: bytes, g };
        slice_mut(img.b, 0, BLOCK_SIZE)?.fill(0);
        img.init_alloc()?;
        for ino in 1..=g.inode_count {
            img.clear_inode(ino)?;
        }
        img.put_inode(ROOT_INO, &Inode::new(Kind::Dir, 0o755, ROOT_INO, now_ns))?;
        img.create(ROOT_INO, IOMMU_DIR, Kind::Dir, 0o700, now_ns)?;
        // The superblock last: a half-formatted image has no valid magic.
        sb::encode(slice_mut(img.b, 0, BLOCK_SIZE)?, &g, now_ns);
        Ok(img)
    }

    /// Opens an existing image after validating everything ([`Image::check`]).
    /// Writes nothing, whether it succeeds or refuses.
    pub fn open(bytes: &'a mut [u8]) -> Result<Self, FsError> {
        let g = sb::decode(bytes)?;
        let img = Image { b: bytes, g };
        img.check()?;
        Ok(img)
    }

    /// The image's geometry.
    pub fn geometry(&self) -> Geometry {
        self.g
    }

    /// The image bytes (read-only).
    pub fn bytes(&self) -> &[u8] {
        self.b
    }

    /// Attributes of `ino`.
    pub fn stat(&self, ino: Ino) -> Result<Stat, FsError> {
        let i = self.inode(ino)?;
        let chain = i.ext_count.saturating_sub(INLINE_EXTENTS).div_ceil(EXTENTS_PER_BLOCK) as u64;
        Ok(Stat {
            ino,
            kind: i.kind,
            mode: i.mode,
            size: i.size,
            nlink: i.nlink,
            mtime_ns: i.mtime_ns,
            blocks: (i.data_blocks + chain) * (BLOCK_SIZE / 512),
            pinned: i.pinned(),
        })
    }

    /// The inode named `name` in directory `dir`.
    pub fn lookup(&self, dir: Ino, name: &[u8]) -> Result<Ino, FsError> {
        let d = self.dir_inode(dir)?;
        Ok(self.find(dir, &d, name)?.ok_or(FsError::NotFound)?.1.ino)
    }

    /// Steps from directory `dir` up to the root (0 for the root).
    fn depth(&self, dir: Ino) -> Result<u32, FsError> {
        let mut d = dir;
        for n in 0..=MAX_DEPTH {
            if d == ROOT_INO {
                return Ok(n);
            }
            d = self.inode(d)?.parent;
        }
        Err(FsError::Unreachable { ino: dir })
    }

    /// Creates `name` in `dir` (a file, a directory or an IOMMU file).
    pub fn create(&mut self, dir: Ino, name: &[u8], kind: Kind, mode: u16, now_ns: u64) -> Result<Ino, FsError> {
        valid_name(name)?;
        let d = self.dir_inode(dir)?;
        if self.find(dir, &d, name)?.is_some() {
            return Err(FsError::Exists);
        }
        if kind == Kind::Dir && self.depth(dir)? >= MAX_DEPTH {
            return Err(FsError::Invalid);
        }
        let ino = self.free_ino()?;
        self.put_inode(ino, &Inode::new(kind, mode, dir, now_ns))?;
        if let Err(e) = self.insert(dir, name, ino, kind) {
            self.clear_inode(ino)?;
            return Err(e);
        }
        let mut d = self.dir_inode(dir)?;
        if kind == Kind::Dir {
            d.nlink += 1;
        }
        d.mtime_ns = now_ns;
        self.put_inode(dir, &d)?;
        Ok(ino)
    }

    /// Frees every block of `ino` and its inode slot.
    fn destroy(&mut self, ino: Ino) -> Result<(), FsError> {
        let mut i = self.inode(ino)?;
        let all = i.data_blocks;
        self.ext_trim(ino, &mut i, all)?;
        self.clear_inode(ino)
    }

    /// Removes a non-directory `name` from `dir`, freeing its blocks.
    /// A pinned file is [`FsError::Busy`].
    pub fn unlink(&mut self, dir: Ino, name: &[u8]) -> Result<(), FsError> {
        let d = self.dir_inode(dir)?;
        let (off, e) = self.find(dir, &d, name)?.ok_or(FsError::NotFound)?;
        let i = self.inode(e.ino)?;
        if i.kind == Kind::Dir {
            return Err(FsError::IsDir);
        }
        if i.pinned() {
            return Err(FsError::Busy);
        }
        self.clear_dirent(off)?;
        self.destroy(e.ino)
    }

    /// Removes the empty directory `name` from `dir`.
    pub fn rmdir(&mut self, dir: Ino, name: &[u8]) -> Result<(), FsError> {
        let d = self.dir_inode(dir)?;
        let (off, e) = self.find(dir, &d, name)?.ok_or(FsError::NotFound)?;
        let i = self.dir_inode(e.ino)?;
        if !self.is_empty_dir(e.ino, &i)? {
            return Err(FsError::NotEmpty);
        }
        self.clear_dirent(off)?;
        self.destroy(e.ino)?;
        let mut d = self.dir_inode(dir)?;
        d.nlink = d.nlink.saturating_sub(1);
        self.put_inode(dir, &d)
    }

    /// The first entry of `dir` at or after slot `pos`: `(next pos, ino, name, kind)`,
    /// or `None` at the end. `.` and `..` are not stored (the VFS adds them).
    pub fn readdir(&self, dir: Ino, pos: u64) -> Result<Option<ReaddirEntry<'_>>, FsError> {
        let d = self.dir_inode(dir)?;
        let mut found = None;
        self.for_each_slot(dir, &d, |slot, _, e| {
            if let Some(e) = e.filter(|_| slot >= pos) {
                found = Some((slot + 1, e));
                return Ok(false);
            }
            Ok(true)
        })?;
        Ok(found.map(|(next, e)| (next, e.ino, self.name_of(&e), e.kind)))
    }
}
