// SPDX-License-Identifier: GPL-2.0

//! Full consistency check of an image.

/// What [`super::Image::check`] counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckReport {
    /// Inodes in use (root included).
    pub inodes: u32,
    /// Directories (root included).
    pub dirs: u32,
    /// Non-directories.
    pub files: u32,
    /// Directory entries.
    pub dirents: u64,
    /// Extents of all inodes.
    pub extents: u64,
    /// Blocks marked used (metadata included).
    pub used_blocks: u64,
    /// Blocks free.
    pub free_blocks: u64,
    /// Data blocks owned by files and directories.
    pub data_blocks: u64,
    /// Extent blocks.
    pub extent_blocks: u64,
}
