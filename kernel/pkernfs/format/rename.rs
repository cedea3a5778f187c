// SPDX-License-Identifier: GPL-2.0

//! `rename`: the one namespace operation that touches two directories.

use super::dir::valid_name;
use super::{FsError, Image, Ino, Kind, MAX_DEPTH, ROOT_INO};

impl Image<'_> {
    /// Moves `odir/oname` to `ndir/nname`, replacing an existing non-directory
    /// target (or an empty directory when the source is a directory); refuses
    /// to move a directory below itself ([`FsError::Invalid`]) and to replace
    /// a pinned file ([`FsError::Busy`]).
    pub fn rename(&mut self, odir: Ino, oname: &[u8], ndir: Ino, nname: &[u8]) -> Result<(), FsError> {
        valid_name(nname)?;
        let od = self.dir_inode(odir)?;
        let nd = self.dir_inode(ndir)?;
        let (soff, src) = self.find(odir, &od, oname)?.ok_or(FsError::NotFound)?;
        let target = self.find(ndir, &nd, nname)?;
        if target.is_some_and(|(_, t)| t.ino == src.ino) {
            return Ok(());
        }
        if src.kind == Kind::Dir {
            self.check_move(src.ino, ndir)?;
        }
        match target {
            Some((toff, t)) => {
                self.check_replace(src.kind, t.ino)?;
                self.put_dirent(toff, src.ino, src.kind, nname)?;
                self.clear_dirent(soff)?;
                self.drop_replaced(ndir, t.ino)?;
            }
            None => {
                self.insert(ndir, nname, src.ino, src.kind)?;
                self.clear_dirent(soff)?;
            }
        }
        let mut s = self.inode(src.ino)?;
        s.parent = ndir;
        self.put_inode(src.ino, &s)?;
        if src.kind == Kind::Dir && odir != ndir {
            let mut o = self.dir_inode(odir)?;
            o.nlink = o.nlink.saturating_sub(1);
            self.put_inode(odir, &o)?;
            let mut n = self.dir_inode(ndir)?;
            n.nlink += 1;
            self.put_inode(ndir, &n)?;
        }
        Ok(())
    }

    /// Refuses moving directory `src` into `ndir` if `ndir` is `src` or below
    /// it, or if the moved subtree would end up deeper than [`MAX_DEPTH`].
    fn check_move(&self, src: Ino, ndir: Ino) -> Result<(), FsError> {
        let mut d = ndir;
        let mut depth = 0;
        while d != ROOT_INO {
            if d == src || depth > MAX_DEPTH {
                return Err(FsError::Invalid);
            }
            d = self.inode(d)?.parent;
            depth += 1;
        }
        if depth + 1 + self.height(src)? > MAX_DEPTH {
            return Err(FsError::Invalid);
        }
        Ok(())
    }

    /// Levels of directories below `top` (0 if it has no subdirectories).
    fn height(&self, top: Ino) -> Result<u32, FsError> {
        let mut h = 0;
        for ino in 1..=self.g.inode_count {
            match self.inode_slot(ino)? {
                Some(i) if i.kind == Kind::Dir => {}
                _ => continue,
            }
            let (mut d, mut n) = (ino, 0);
            while d != top && d != ROOT_INO && n <= MAX_DEPTH {
                d = self.inode(d)?.parent;
                n += 1;
            }
            if d == top {
                h = h.max(n);
            }
        }
        Ok(h)
    }

    /// Can an entry of kind `src` replace inode `t`?
    fn check_replace(&self, src: Kind, t: Ino) -> Result<(), FsError> {
        let ti = self.inode(t)?;
        match (src == Kind::Dir, ti.kind == Kind::Dir) {
            (true, false) => Err(FsError::NotDir),
            (false, true) => Err(FsError::IsDir),
            (true, true) if !self.is_empty_dir(t, &ti)? => Err(FsError::NotEmpty),
            _ if ti.pinned() => Err(FsError::Busy),
            _ => Ok(()),
        }
    }

    /// Frees inode `t`, just replaced in `ndir`.
    fn drop_replaced(&mut self, ndir: Ino, t: Ino) -> Result<(), FsError> {
        let mut ti = self.inode(t)?;
        let was_dir = ti.kind == Kind::Dir;
        let all = ti.data_blocks;
        self.ext_trim(t, &mut ti, all)?;
        self.clear_inode(t)?;
        if was_dir {
            let mut n = self.dir_inode(ndir)?;
            n.nlink = n.nlink.saturating_sub(1);
            self.put_inode(ndir, &n)?;
        }
        Ok(())
    }
}
