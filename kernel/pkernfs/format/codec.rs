// SPDX-License-Identifier: GPL-2.0

//! Little-endian field access on byte slices and CRC-32. Every access is
//! bounds-checked (`get`), so untrusted bytes can never cause a panic.

use super::FsError;

/// CRC-32 lookup table (IEEE 802.3, reflected polynomial), built at compile time.
const CRC_TABLE: [u32; 256] = crc_table();

const fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
            bit += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

/// Continues a CRC-32 over `data` (start with `!0`, finish with `!`).
pub(crate) fn crc32_update(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = CRC_TABLE[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// CRC-32 (as zlib's `crc32`) of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    !crc32_update(!0, data)
}

/// CRC-32 of `data` with the 4 bytes at `field` taken as zero (the stored checksum).
pub(crate) fn crc_skipping(data: &[u8], field: usize) -> u32 {
    let end = field.saturating_add(4).min(data.len());
    let head = data.get(..field).unwrap_or(data);
    let tail = data.get(end..).unwrap_or(&[]);
    let c = crc32_update(!0, head);
    let c = crc32_update(c, &[0u8; 4][..end.saturating_sub(field)]);
    !crc32_update(c, tail)
}

/// Sub-slice `[off, off + len)` or [`FsError::Invalid`].
pub(crate) fn slice(b: &[u8], off: u64, len: u64) -> Result<&[u8], FsError> {
    let (s, e) = range(off, len)?;
    b.get(s..e).ok_or(FsError::Invalid)
}

/// Mutable sub-slice `[off, off + len)` or [`FsError::Invalid`].
pub(crate) fn slice_mut(b: &mut [u8], off: u64, len: u64) -> Result<&mut [u8], FsError> {
    let (s, e) = range(off, len)?;
    b.get_mut(s..e).ok_or(FsError::Invalid)
}

fn range(off: u64, len: u64) -> Result<(usize, usize), FsError> {
    let s = usize::try_from(off).map_err(|_| FsError::Invalid)?;
    let l = usize::try_from(len).map_err(|_| FsError::Invalid)?;
    Ok((s, s.checked_add(l).ok_or(FsError::Invalid)?))
}

/// Reads `N` bytes at `off` (zeros if out of range: callers check lengths first).
fn arr<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    let mut a = [0u8; N];
    if let Some(s) = off.checked_add(N).and_then(|e| b.get(off..e)) {
        a.copy_from_slice(s);
    }
    a
}

/// Little-endian u16 at `off` of a fixed-size record (0 if out of range).
pub(crate) fn get16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(arr(b, off))
}

/// Little-endian u32 at `off` of a fixed-size record (0 if out of range).
pub(crate) fn get32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(arr(b, off))
}

/// Little-endian u64 at `off` of a fixed-size record (0 if out of range).
pub(crate) fn get64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(arr(b, off))
}

/// Writes `v` at `off` (ignored if out of range: records are fixed-size).
pub(crate) fn put(b: &mut [u8], off: usize, v: &[u8]) {
    if let Some(d) = off.checked_add(v.len()).and_then(|e| b.get_mut(off..e)) {
        d.copy_from_slice(v);
    }
}

/// Writes a little-endian u16.
pub(crate) fn put16(b: &mut [u8], off: usize, v: u16) {
    put(b, off, &v.to_le_bytes());
}

/// Writes a little-endian u32.
pub(crate) fn put32(b: &mut [u8], off: usize, v: u32) {
    put(b, off, &v.to_le_bytes());
}

/// Writes a little-endian u64.
pub(crate) fn put64(b: &mut [u8], off: usize, v: u64) {
    put(b, off, &v.to_le_bytes());
}
