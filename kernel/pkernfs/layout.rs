// SPDX-License-Identifier: GPL-2.0

//! pkernfs on-memory layout helpers, shared by the kernel (`fs/pkernfs/`) and
//! the lulab harness (which reads pkernfs metadata out of guest RAM).
//!
//! Pure `core` code: no allocation, no kernel or std APIs, so the same file
//! compiles in both places. Never keep a second hand-written copy.
//!
//! The filesystem format itself (superblock, allocator, inodes, extents,
//! directories and every operation on them) is [`format`]: `layout::format`
//! in the kernel, `lulab::pkernfs::format` in the harness.

/// The on-memory format and all metadata operations (`format/mod.rs`).
#[path = "format/mod.rs"]
pub mod format;

/// Magic number at offset 0 of the superblock: "PKERNFS1", little endian.
pub const MAGIC: u64 = u64::from_le_bytes(*b"PKERNFS1");
/// On-memory format version; bumped on every incompatible change.
pub const FORMAT_VERSION: u32 = format::FORMAT_VERSION;
/// Allocation unit of the carve-out.
pub const BLOCK_SIZE: u64 = 2 << 20;
/// Size of an encoded [`Header`] in bytes.
pub const HEADER_LEN: usize = 24;

/// CRC-32 (IEEE 802.3, reflected, as zlib's `crc32`) of `data`.
pub const fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    let mut i = 0;
    while i < data.len() {
        crc ^= data[i] as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            bit += 1;
        }
        i += 1;
    }
    !crc
}

/// Rounds `x` up to a multiple of `align` (a power of two); `None` on overflow.
pub const fn align_up(x: u64, align: u64) -> Option<u64> {
    if align == 0 || align & (align - 1) != 0 {
        return None;
    }
    match x.checked_add(align - 1) {
        Some(v) => Some(v & !(align - 1)),
        None => None,
    }
}

/// Number of [`BLOCK_SIZE`] blocks needed to hold `bytes`.
pub const fn blocks_for(bytes: u64) -> u64 {
    bytes.div_ceil(BLOCK_SIZE)
}

/// The checksummed superblock header at the start of the carve-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Format version ([`FORMAT_VERSION`] when written by this code).
    pub version: u32,
    /// Size of the carve-out in bytes.
    pub size: u64,
}

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// The buffer is shorter than [`HEADER_LEN`].
    Short,
    /// Offset 0 does not hold [`MAGIC`]: not a pkernfs image.
    BadMagic,
    /// The stored checksum does not match: corrupted metadata.
    BadChecksum,
}

impl Header {
    /// Encodes as: magic u64 | version u32 | crc32 u32 | size u64 (little endian).
    /// The checksum covers the other 20 bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC.to_le_bytes());
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[16..24].copy_from_slice(&self.size.to_le_bytes());
        let crc = header_crc(&b);
        b[12..16].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a header; a corrupted one is refused, never trusted.
    pub fn decode(b: &[u8]) -> Result<Self, HeaderError> {
        if b.len() < HEADER_LEN {
            return Err(HeaderError::Short);
        }
        let mut w = [0u8; HEADER_LEN];
        w.copy_from_slice(&b[..HEADER_LEN]);
        let u64_at = |o: usize| u64::from_le_bytes([w[o], w[o + 1], w[o + 2], w[o + 3], w[o + 4], w[o + 5], w[o + 6], w[o + 7]]);
        let u32_at = |o: usize| u32::from_le_bytes([w[o], w[o + 1], w[o + 2], w[o + 3]]);
        if u64_at(0) != MAGIC {
            return Err(HeaderError::BadMagic);
        }
        if u32_at(12) != header_crc(&w) {
            return Err(HeaderError::BadChecksum);
        }
        Ok(Self { version: u32_at(8), size: u64_at(16) })
    }
}

/// CRC of a header with its checksum field taken as zero.
fn header_crc(b: &[u8; HEADER_LEN]) -> u32 {
    let mut z = *b;
    z[12..16].copy_from_slice(&[0; 4]);
    crc32(&z)
}
