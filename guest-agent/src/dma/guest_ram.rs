//! Guest RAM in a pkernfs file: the memory a persistent DMA engine gives
//! its device. It survives kexec (pkernfs keeps the file in the carve-out),
//! is mapped into this process shared (the kernel inserts the carve-out's
//! pages, 2 MiB at a time where it can) and into the device's IOAS with
//! `IOMMU_IOAS_MAP_FILE` (by physical address: the pages have no struct page).
//! A LUO memfd ([`super::rx_luo`]) is mapped the same way ([`GuestRam::map`]).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;

use super::mem::PAGE;

/// Canary bytes at the end of an engine's file (never mapped for the device).
pub const CANARY_LEN: u64 = 4 * PAGE;
/// The canary pattern (as in anonymous mode).
pub const CANARY: &[u8] = b"lulab-canary-never-dma-";

/// The file's path relative to the pkernfs mount (its directory).
pub fn image_path(file: &str) -> Result<String, String> {
    Path::new(file)
        .file_name()
        .map(|n| format!("/{}", n.to_string_lossy()))
        .ok_or_else(|| format!("{file}: no file name"))
}

/// The pkernfs file, mapped.
#[derive(Debug)]
pub struct GuestRam {
    file: File,
    ptr: *mut u8,
    len: usize,
    /// Path inside the guest.
    pub path: String,
}

// SAFETY: `GuestRam` owns its mapping; access goes through raw pointers with
// volatile accesses chosen by the users (the device writes it anyway).
unsafe impl Send for GuestRam {}
// SAFETY: as above.
unsafe impl Sync for GuestRam {}

/// Mounts pkernfs at `dir` unless something is mounted there already.
pub fn ensure_mounted(dir: &Path) -> Result<(), String> {
    let mounts = std::fs::read_to_string("/proc/mounts").map_err(|e| format!("/proc/mounts: {e}"))?;
    let d = dir.to_string_lossy();
    if mounts.lines().any(|l| l.split_whitespace().nth(1) == Some(&d)) {
        return Ok(());
    }
    crate::fs::mount("pkernfs", "none", &d).map(|_| ())
}

impl GuestRam {
    /// Opens `path` (mounting pkernfs at its directory if needed). `create`:
    /// a new file of `len` bytes (an old one is replaced); else the existing
    /// file, which must be exactly `len` bytes.
    pub fn open(path: &str, len: u64, create: bool) -> Result<Self, String> {
        let p = Path::new(path);
        let dir = p.parent().ok_or_else(|| format!("{path}: no directory"))?;
        ensure_mounted(dir)?;
        let len = len.div_ceil(PAGE) * PAGE;
        if create {
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("{path}: removing the old file: {e}")),
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .open(p)
            .map_err(|e| format!("{path}: {e}"))?;
        if create {
            file.set_len(len).map_err(|e| format!("{path}: truncate to {len:#x}: {e}"))?;
        }
        let size = file.metadata().map_err(|e| format!("{path}: stat: {e}"))?.len();
        if size != len {
            return Err(format!("{path}: {size:#x} bytes, expected {len:#x} (not the file the previous agent left?)"));
        }
        Self::map(file, len, path)
    }

    /// Maps all `len` bytes of an open file (a pkernfs file or a memfd)
    /// shared; `path` names it in errors.
    pub fn map(file: File, len: u64, path: &str) -> Result<Self, String> {
        // SAFETY: a fresh shared mapping of the whole file; pkernfs inserts
        // the carve-out's pages at fault time, shmem its folios.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!("{path}: mmap {len:#x}: {}", std::io::Error::last_os_error()));
        }
        Ok(Self { file, ptr: ptr.cast(), len: len as usize, path: path.into() })
    }

    /// The open file (for `IOMMU_IOAS_MAP_FILE`).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Raw pointer to byte `off`.
    pub fn at(&self, off: u64) -> *mut u8 {
        assert!(off < self.len as u64, "{}: offset {off:#x} beyond {:#x}", self.path, self.len);
        // SAFETY: `off` is inside the mapping (checked above).
        unsafe { self.ptr.add(off as usize) }
    }

    /// Fills `[off, off + len)` with `pattern` repeated.
    pub fn fill(&self, off: u64, len: u64, pattern: &[u8]) {
        for (i, b) in (off..off + len).zip(pattern.iter().cycle()) {
            // SAFETY: `at` checks the offset; our own mapping.
            unsafe { self.at(i).write_volatile(*b) };
        }
    }

    /// Makes the file's data durable enough for the next kernel: pkernfs
    /// writes the carve-out directly, so this is a CPU store barrier.
    pub fn flush(&self) {
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping this struct owns.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
