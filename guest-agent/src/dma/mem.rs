//! Memory the agent owns and pins for DMA: anonymous mappings (hugetlb, else
//! THP-advised, else 4 KiB pages), locked, mapped through the IOMMU at an
//! IOVA the agent chooses, with their guest-physical backing resolved from
//! `/proc/self/pagemap` so the harness can find them in the RAM file.

use std::os::unix::fs::FileExt;

use lulab_proto::{DmaRegion, PhysRange};

use super::vfio::Iommu;

/// Base page size (x86-64).
pub const PAGE: u64 = 4096;
const HUGE: u64 = 2 << 20;

/// An anonymous, locked mapping; unmapped on drop.
#[derive(Debug)]
pub struct Mem {
    ptr: *mut u8,
    len: usize,
    /// What it is for, in error messages.
    pub name: String,
}

// SAFETY: `Mem` owns its mapping; concurrent access goes through raw
// pointers with volatile/atomic accesses chosen by the users (the device
// writes this memory anyway, so nothing relies on Rust aliasing rules).
unsafe impl Send for Mem {}
// SAFETY: as above.
unsafe impl Sync for Mem {}

fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

impl Mem {
    /// `len` bytes (rounded up to pages), zeroed, resident and locked.
    /// Tries hugetlb pages first, then a THP-advised 2 MiB-aligned mapping,
    /// then plain pages; physical contiguity is a bonus, never assumed.
    pub fn alloc(name: &str, len: u64) -> Result<Self, String> {
        let len = round_up(len.max(1), PAGE);
        let name = name.to_string();
        if len >= HUGE {
            if let Some(ptr) = mmap(round_up(len, HUGE), libc::MAP_HUGETLB | libc::MAP_POPULATE | libc::MAP_LOCKED) {
                return Ok(Self { ptr, len: round_up(len, HUGE) as usize, name });
            }
        }
        let mem = Self::thp(&name, len)?;
        // SAFETY: locks exactly our own mapping; faults every page in.
        if unsafe { libc::mlock(mem.ptr.cast(), mem.len) } != 0 {
            return Err(format!("{name}: mlock {:#x} bytes: {}", mem.len, std::io::Error::last_os_error()));
        }
        Ok(mem)
    }

    /// An anonymous mapping, 2 MiB-aligned and advised for THP when large.
    fn thp(name: &str, len: u64) -> Result<Self, String> {
        if len < HUGE {
            let ptr = mmap(len, 0).ok_or_else(|| format!("{name}: mmap {len:#x}: {}", std::io::Error::last_os_error()))?;
            return Ok(Self { ptr, len: len as usize, name: name.into() });
        }
        let len = round_up(len, HUGE);
        let over = len + HUGE;
        let raw = mmap(over, 0).ok_or_else(|| format!("{name}: mmap {over:#x}: {}", std::io::Error::last_os_error()))?;
        let start = round_up(raw as u64, HUGE);
        let (head, tail) = (start - raw as u64, (raw as u64 + over) - (start + len));
        // SAFETY: both ranges are the unused head/tail of the mapping just
        // created; nothing references them.
        unsafe {
            if head > 0 {
                libc::munmap(raw.cast(), head as usize);
            }
            if tail > 0 {
                libc::munmap((start + len) as *mut libc::c_void, tail as usize);
            }
            // Advice only: failing (THP off) leaves 4 KiB pages, still correct.
            libc::madvise(start as *mut libc::c_void, len as usize, libc::MADV_HUGEPAGE);
        }
        Ok(Self { ptr: start as *mut u8, len: len as usize, name: name.into() })
    }

    /// Start address in this process.
    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }

    /// Length in bytes (page-rounded).
    pub fn len(&self) -> u64 {
        self.len as u64
    }

    /// Raw pointer to byte `off`.
    pub fn at(&self, off: u64) -> *mut u8 {
        assert!(off < self.len as u64, "{}: offset {off:#x} beyond {:#x}", self.name, self.len);
        // SAFETY: `off` is inside the mapping (checked above).
        unsafe { self.ptr.add(off as usize) }
    }

    /// Fills the whole mapping with `pattern` repeated.
    pub fn fill(&self, pattern: &[u8]) {
        for (i, b) in (0..self.len).zip(pattern.iter().cycle()) {
            // SAFETY: `i < len`, inside our own mapping.
            unsafe { self.ptr.add(i).write_volatile(*b) };
        }
    }

    /// Guest-physical chunks backing the mapping, in address order,
    /// adjacent pages coalesced. Call after IOMMU mapping (pinning may
    /// migrate pages, the pin then holds them in place).
    pub fn phys(&self) -> Result<Vec<PhysRange>, String> {
        pagemap(self.addr(), self.len as u64, &self.name)
    }
}

/// Guest-physical chunks backing `[addr, addr + len)` of this process (every
/// page must be present), in address order, adjacent pages coalesced.
pub fn pagemap(addr: u64, len: u64, name: &str) -> Result<Vec<PhysRange>, String> {
    let pages = len / PAGE;
    let f = std::fs::File::open("/proc/self/pagemap").map_err(|e| format!("/proc/self/pagemap: {e}"))?;
    let mut raw = vec![0u8; pages as usize * 8];
    f.read_exact_at(&mut raw, addr / PAGE * 8)
        .map_err(|e| format!("/proc/self/pagemap: reading {pages} entries for {name}: {e}"))?;
    let mut pfns = Vec::with_capacity(pages as usize);
    for (i, e) in raw.chunks_exact(8).enumerate() {
        let e = u64::from_le_bytes(e.try_into().expect("8-byte chunk"));
        let pfn = e & ((1 << 55) - 1);
        if e >> 63 == 0 || pfn == 0 {
            return Err(format!("{name}: page {i} not present or PFN hidden (pagemap entry {e:#x}; root needed)"));
        }
        pfns.push(pfn);
    }
    Ok(coalesce(&pfns))
}

impl Drop for Mem {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping this struct owns.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

fn mmap(len: u64, extra: libc::c_int) -> Option<*mut u8> {
    // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra,
            -1,
            0,
        )
    };
    (p != libc::MAP_FAILED).then_some(p.cast())
}

/// Page frame numbers (in virtual order) → physical ranges, adjacent coalesced.
pub fn coalesce(pfns: &[u64]) -> Vec<PhysRange> {
    let mut out: Vec<PhysRange> = Vec::new();
    for &pfn in pfns {
        let gpa = pfn * PAGE;
        match out.last_mut() {
            Some(r) if r.gpa + r.len == gpa => r.len += PAGE,
            _ => out.push(PhysRange { gpa, len: PAGE }),
        }
    }
    out
}

/// Agent memory mapped for the device at a fixed IOVA.
#[derive(Debug)]
pub struct DmaMem {
    /// The memory.
    pub mem: Mem,
    /// Device-visible address of its first byte.
    pub iova: u64,
    /// Its guest-physical backing, resolved after pinning.
    pub phys: Vec<PhysRange>,
}

impl DmaMem {
    /// Allocates `len` bytes and maps them at `iova` through `iommu`.
    pub fn new(iommu: &Iommu, name: &str, len: u64, iova: u64) -> Result<Self, String> {
        let mem = Mem::alloc(name, len)?;
        iommu.map(mem.addr(), iova, mem.len()).map_err(|e| format!("{name}: {e}"))?;
        let phys = mem.phys()?;
        Ok(Self { mem, iova, phys })
    }

    /// The layout entry for the first `len` bytes (the rest is page padding,
    /// still in `phys` of [`DmaMem::phys`] and so in `dma_pages`).
    pub fn region(&self, len: u64) -> DmaRegion {
        DmaRegion { iova: self.iova, len, phys: truncate(&self.phys, len) }
    }
}

/// The first `len` bytes of `ranges`.
pub fn truncate(ranges: &[PhysRange], len: u64) -> Vec<PhysRange> {
    let mut left = len;
    let mut out = Vec::new();
    for r in ranges {
        if left == 0 {
            break;
        }
        let take = r.len.min(left);
        out.push(PhysRange { gpa: r.gpa, len: take });
        left -= take;
    }
    out
}

/// The canary: agent memory never mapped for the device, filled with a
/// known pattern. The harness's memory oracle checks it never changes.
pub fn canary() -> Result<(Mem, Vec<PhysRange>), String> {
    let mem = Mem::alloc("canary", 4 * PAGE)?;
    mem.fill(b"lulab-canary-never-dma-");
    let phys = mem.phys()?;
    Ok((mem, phys))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesces_adjacent_pages_only() {
        let r = coalesce(&[10, 11, 12, 20, 21, 5]);
        assert_eq!(
            r,
            vec![
                PhysRange { gpa: 10 * PAGE, len: 3 * PAGE },
                PhysRange { gpa: 20 * PAGE, len: 2 * PAGE },
                PhysRange { gpa: 5 * PAGE, len: PAGE },
            ]
        );
        assert!(coalesce(&[]).is_empty());
    }

    #[test]
    fn truncates_to_the_region_length() {
        let r = [PhysRange { gpa: 0x1000, len: 0x2000 }, PhysRange { gpa: 0x9000, len: 0x1000 }];
        assert_eq!(truncate(&r, 0x2800), vec![r[0], PhysRange { gpa: 0x9000, len: 0x800 }]);
        assert_eq!(truncate(&r, 0x1000), vec![PhysRange { gpa: 0x1000, len: 0x1000 }]);
    }
}
