//! The host's RAM, read from outside: the harness maps QEMU's
//! `memory-backend-file,share=on` file and translates guest-physical
//! addresses to file offsets with q35's layout.
//!
//! QEMU (and the device it emulates) writes this memory while the harness
//! reads it, so nothing here hands out `&[u8]` views of the mapping: every
//! access copies bytes in or out. A copy may observe a write in progress
//! (torn values); the oracles that read through it detect that with
//! checksums and re-reads instead of trusting a single read.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use lulab_proto::{DmaRegion, PhysRange};
use memmap2::MmapMut;

/// Start of the high RAM window on x86: RAM above the PCI hole begins here.
pub const FOUR_GIB: u64 = 1 << 32;

/// Errors of [`GuestMemory`]; each names the address or file involved.
#[derive(Debug, thiserror::Error)]
pub enum GuestMemoryError {
    /// The RAM file could not be opened or mapped.
    #[error("Cannot map RAM file {path}")]
    Map {
        /// The RAM file.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is smaller than the machine's RAM.
    #[error("RAM file {path} has {file_len} bytes, the machine has {ram_size}")]
    TooSmall {
        /// The RAM file.
        path: PathBuf,
        /// Its length.
        file_len: u64,
        /// Expected RAM size.
        ram_size: u64,
    },
    /// The range is not backed by RAM (in the PCI hole, past the end, or
    /// straddling the hole).
    #[error("Guest-physical range {gpa:#x}+{len:#x} is not RAM (below-4G RAM ends at {below_4g:#x}, RAM size {ram_size:#x})")]
    NotRam {
        /// Start of the range.
        gpa: u64,
        /// Length of the range.
        len: u64,
        /// Size of the below-4G RAM window.
        below_4g: u64,
        /// Total RAM.
        ram_size: u64,
    },
    /// An IOVA offset falls outside a DMA region's backing chunks.
    #[error("IOVA {iova:#x}+{len:#x} is outside region at IOVA {region_iova:#x} (len {region_len:#x}, backed by {backed:#x} bytes)")]
    OutsideRegion {
        /// Device address asked for.
        iova: u64,
        /// Length asked for.
        len: u64,
        /// Region start.
        region_iova: u64,
        /// Region length.
        region_len: u64,
        /// Bytes covered by the region's phys chunks.
        backed: u64,
    },
}

/// Bytes of RAM QEMU's q35 places below 4 GiB for a machine with `ram_size`
/// bytes (`pc_q35_init`: 2 GiB when RAM is at least 2.75 GiB, else up to 2.75 GiB).
pub fn q35_below_4g(ram_size: u64) -> u64 {
    let lowmem = if ram_size >= 0xb000_0000 { 0x8000_0000 } else { 0xb000_0000 };
    ram_size.min(lowmem)
}

/// The host's RAM file, mapped read-write.
#[derive(Debug)]
pub struct GuestMemory {
    path: PathBuf,
    map: MmapMut,
    ram_size: u64,
    below_4g: u64,
}

impl GuestMemory {
    /// Maps `path` (QEMU's RAM backing file) for a machine with `ram_size`
    /// bytes of RAM.
    pub fn open(path: &Path, ram_size: u64) -> Result<Self, GuestMemoryError> {
        let map_err = |source| GuestMemoryError::Map { path: path.to_path_buf(), source };
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(map_err)?;
        Self::from_file(&file, path, ram_size)
    }

    /// Maps an already open RAM file (`path` is only used in messages).
    pub fn from_file(file: &File, path: &Path, ram_size: u64) -> Result<Self, GuestMemoryError> {
        let map_err = |source| GuestMemoryError::Map { path: path.to_path_buf(), source };
        let file_len = file.metadata().map_err(map_err)?.len();
        if file_len < ram_size {
            return Err(GuestMemoryError::TooSmall { path: path.to_path_buf(), file_len, ram_size });
        }
        let len =
            usize::try_from(ram_size).map_err(|_| map_err(std::io::Error::other("RAM size does not fit in usize")))?;
        // SAFETY: the mapping is shared with QEMU, which writes it concurrently.
        // That is the point of the oracle; this module never creates references
        // into the mapping (all access copies through raw pointers), so Rust's
        // aliasing rules are not relied on for bytes QEMU may change.
        let map = unsafe { memmap2::MmapOptions::new().len(len).map_mut(file) }.map_err(map_err)?;
        Ok(Self { path: path.to_path_buf(), map, ram_size, below_4g: q35_below_4g(ram_size) })
    }

    /// The mapped file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Total RAM in bytes.
    pub fn ram_size(&self) -> u64 {
        self.ram_size
    }

    /// RAM below 4 GiB (the rest starts at [`FOUR_GIB`]).
    pub fn below_4g(&self) -> u64 {
        self.below_4g
    }

    /// Every RAM range in guest-physical terms.
    pub fn ram_ranges(&self) -> Vec<PhysRange> {
        let mut v = vec![PhysRange { gpa: 0, len: self.below_4g }];
        if self.ram_size > self.below_4g {
            v.push(PhysRange { gpa: FOUR_GIB, len: self.ram_size - self.below_4g });
        }
        v
    }

    /// File offset of `gpa..gpa+len`, which must lie in one RAM window.
    pub fn offset_of(&self, gpa: u64, len: u64) -> Result<usize, GuestMemoryError> {
        let not_ram = || GuestMemoryError::NotRam { gpa, len, below_4g: self.below_4g, ram_size: self.ram_size };
        let end = gpa.checked_add(len).ok_or_else(not_ram)?;
        let offset = if end <= self.below_4g {
            gpa
        } else if gpa >= FOUR_GIB && end - FOUR_GIB <= self.ram_size - self.below_4g {
            self.below_4g + (gpa - FOUR_GIB)
        } else {
            return Err(not_ram());
        };
        usize::try_from(offset).map_err(|_| not_ram())
    }

    /// Copies `buf.len()` bytes at `gpa` into `buf`.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestMemoryError> {
        let off = self.offset_of(gpa, buf.len() as u64)?;
        // SAFETY: `offset_of` checked off..off+len lies inside the mapping
        // (ram_size bytes); `buf` is a distinct Rust allocation, so the regions
        // do not overlap. Bytes may change under us (QEMU writes): we copy them
        // out without forming a reference into the mapping.
        unsafe { std::ptr::copy_nonoverlapping(self.map.as_ptr().add(off), buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Copies `data` into guest memory at `gpa`.
    pub fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), GuestMemoryError> {
        let off = self.offset_of(gpa, data.len() as u64)?;
        // SAFETY: bounds checked by `offset_of`; `data` cannot alias the
        // mapping mutably because we hold `&mut self` and never hand out
        // references into it.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.map.as_mut_ptr().add(off), data.len()) };
        Ok(())
    }

    /// Reads a whole [`PhysRange`].
    pub fn read_range(&self, range: PhysRange) -> Result<Vec<u8>, GuestMemoryError> {
        let mut v = vec![0; range.len as usize];
        self.read(range.gpa, &mut v)?;
        Ok(v)
    }

    /// Reads `N` bytes at `gpa`.
    pub fn read_array<const N: usize>(&self, gpa: u64) -> Result<[u8; N], GuestMemoryError> {
        let mut a = [0; N];
        self.read(gpa, &mut a)?;
        Ok(a)
    }

    /// Flushes the mapping to the file (tests that reopen the file).
    pub fn flush(&self) -> std::io::Result<()> {
        self.map.flush()
    }

    /// Copies bytes at `offset` (relative to the region's IOVA) out of a DMA region.
    pub fn read_region(&self, region: &DmaRegion, offset: u64, buf: &mut [u8]) -> Result<(), GuestMemoryError> {
        let mut done = 0usize;
        for (gpa, len) in region_pieces(region, offset, buf.len() as u64)? {
            let n = len as usize;
            self.read(gpa, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    /// Writes `data` at `offset` (relative to the region's IOVA) into a DMA region.
    pub fn write_region(&mut self, region: &DmaRegion, offset: u64, data: &[u8]) -> Result<(), GuestMemoryError> {
        let mut done = 0usize;
        for (gpa, len) in region_pieces(region, offset, data.len() as u64)? {
            let n = len as usize;
            self.write(gpa, &data[done..done + n])?;
            done += n;
        }
        Ok(())
    }
}

/// Guest-physical address of byte `offset` of a DMA region.
pub fn region_gpa(region: &DmaRegion, offset: u64) -> Result<u64, GuestMemoryError> {
    Ok(region_pieces(region, offset, 1)?[0].0)
}

/// Splits `offset..offset+len` of a region into guest-physical pieces
/// `(gpa, len)`, following the region's phys chunks in IOVA order.
pub fn region_pieces(region: &DmaRegion, offset: u64, len: u64) -> Result<Vec<(u64, u64)>, GuestMemoryError> {
    let backed: u64 = region.phys.iter().map(|p| p.len).sum();
    let outside = || GuestMemoryError::OutsideRegion {
        iova: region.iova.wrapping_add(offset),
        len,
        region_iova: region.iova,
        region_len: region.len,
        backed,
    };
    let end = offset.checked_add(len).ok_or_else(outside)?;
    if end > region.len || end > backed {
        return Err(outside());
    }
    let mut pieces = Vec::new();
    let (mut pos, mut chunk_start) = (offset, 0u64);
    for chunk in &region.phys {
        let chunk_end = chunk_start + chunk.len;
        if pos < end && pos < chunk_end {
            let take = end.min(chunk_end) - pos;
            pieces.push((chunk.gpa + (pos - chunk_start), take));
            pos += take;
        }
        chunk_start = chunk_end;
    }
    if len == 0 {
        pieces.push((region.phys.first().map_or(0, |c| c.gpa + offset), 0));
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(size: u64) -> (tempfile::NamedTempFile, GuestMemory) {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(size).unwrap();
        let m = GuestMemory::open(f.path(), size).unwrap();
        (f, m)
    }

    #[test]
    fn q35_layout() {
        assert_eq!(q35_below_4g(1 << 30), 1 << 30);
        assert_eq!(q35_below_4g(0xb000_0000 - 4096), 0xb000_0000 - 4096);
        assert_eq!(q35_below_4g(0xb000_0000), 0x8000_0000);
        assert_eq!(q35_below_4g(8 << 30), 0x8000_0000);
        assert_eq!(q35_below_4g(0xc000_0000 - 1), 0x8000_0000);
    }

    #[test]
    fn offsets_follow_the_hole() {
        let (_f, m) = mem(1 << 20);
        assert_eq!(m.offset_of(0x1000, 16).unwrap(), 0x1000);
        let e = m.offset_of((1 << 20) - 8, 16).unwrap_err().to_string();
        assert!(e.contains("0xffff8"), "{e}");
        let big = GuestMemory { below_4g: 0x8000_0000, ram_size: 0xc000_0000, ..m };
        assert_eq!(big.offset_of(FOUR_GIB + 0x10, 8).unwrap(), 0x8000_0010);
        assert!(big.offset_of(0x9000_0000, 8).is_err(), "PCI hole is not RAM");
        assert!(big.offset_of(FOUR_GIB + 0x4000_0000, 1).is_err(), "past the end");
        assert_eq!(big.ram_ranges().len(), 2);
    }

    #[test]
    fn read_write_round_trip_through_file() {
        let (f, mut m) = mem(64 << 10);
        m.write(0x2345, b"hello").unwrap();
        assert_eq!(m.read_array::<5>(0x2345).unwrap(), *b"hello");
        m.flush().unwrap();
        let raw = std::fs::read(f.path()).unwrap();
        assert_eq!(&raw[0x2345..0x234a], b"hello");
    }

    #[test]
    fn regions_split_across_chunks() {
        let (_f, mut m) = mem(64 << 10);
        let region = DmaRegion {
            iova: 0x10_0000,
            len: 0x2000,
            phys: vec![PhysRange { gpa: 0x8000, len: 0x1000 }, PhysRange { gpa: 0x3000, len: 0x1000 }],
        };
        assert_eq!(region_gpa(&region, 0x1004).unwrap(), 0x3004);
        m.write_region(&region, 0xffe, &[1, 2, 3, 4]).unwrap();
        assert_eq!(m.read_array::<2>(0x8ffe).unwrap(), [1, 2]);
        assert_eq!(m.read_array::<2>(0x3000).unwrap(), [3, 4]);
        let mut b = [0; 4];
        m.read_region(&region, 0xffe, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4]);
        let e = m.read_region(&region, 0x1fff, &mut b).unwrap_err().to_string();
        assert!(e.contains("0x101fff"), "{e}");
    }
}
