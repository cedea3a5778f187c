// SPDX-License-Identifier: GPL-2.0

//! File data: read, write, truncate, map, pin.

use super::{FsError, Image, Ino};

impl Image<'_> {
    /// Truncates or extends `ino` to `size` bytes; new bytes read as zero.
    /// Shrinking a pinned file is [`FsError::Busy`].
    pub fn set_size(&mut self, ino: Ino, size: u64, now_ns: u64) -> Result<(), FsError> {
        let _ = (ino, size, now_ns);
        Err(FsError::Invalid)
    }

    /// Reads from `off` into `buf`; returns the bytes read (0 at or past EOF).
    pub fn read(&self, ino: Ino, off: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        let _ = (ino, off, buf);
        Err(FsError::Invalid)
    }

    /// Writes `data` at `off`, extending the file; returns `data.len()`.
    pub fn write(&mut self, ino: Ino, off: u64, data: &[u8], now_ns: u64) -> Result<usize, FsError> {
        let _ = (ino, off, data, now_ns);
        Err(FsError::Invalid)
    }

    /// Where file byte `off` lives: `(byte offset into the image, contiguous
    /// bytes from there within the allocation)`, or `None` past the allocation.
    pub fn map(&self, ino: Ino, off: u64) -> Result<Option<(u64, u64)>, FsError> {
        let _ = (ino, off);
        Err(FsError::Invalid)
    }

    /// Pins or unpins `ino` (DMA-mapped files cannot be unlinked or shrunk).
    pub fn set_pinned(&mut self, ino: Ino, pinned: bool) -> Result<(), FsError> {
        let _ = (ino, pinned);
        Err(FsError::Invalid)
    }
}
