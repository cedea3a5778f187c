// SPDX-License-Identifier: GPL-2.0

//! The IOMMU side of pkernfs: `include/linux/pkernfs.h`, implemented over
//! the on-memory format. Each IOMMU unit has its own directory,
//! `iommu/dmar-<unit>/` (`unit`: its register base address in hex, the same
//! in every kernel), holding its root/context tables in `root-pgtables`
//! (kind `IommuRoot`) and each persistent domain's page tables in
//! `dom-<id>` (kind `IommuDomain`; domain IDs are per unit, so two units
//! never share a file), and in scalable mode each persistent device's PASID
//! directory and table in `pasid-<sid>` (kind `IommuPasid`). Each file is
//! created zeroed on first use, found again after kexec, physically
//! contiguous (one extent: the hardware walks it by physical address), and
//! pinned, so the VFS cannot unlink or shrink it. The VFS shows them as
//! read-only regular files.
//!
//! The image is opened (formatted when blank) on first use, as by a mount:
//! the IOMMU comes up at boot, before anything mounts pkernfs.

use core::ffi::{c_int, c_void};

use kernel::prelude::*;

use crate::layout::format::{FsError, Image, Ino, Kind, IOMMU_DIR, ROOT_INO};
use crate::ops;

/// `PKERNFS_IOMMU_ROOT_LEN` of pkernfs.h: a root table and two context
/// tables per bus (scalable mode splits a bus's 256 functions in two), then
/// the unit's interrupt-remapping table as kept at kexec (65536 × 16 bytes).
pub(crate) const ROOT_LEN: u64 = (1 + 2 * 256) * 4096 + 65536 * 16;
/// The name of the root tables' file in a unit's directory.
pub(crate) const ROOT_NAME: &[u8] = b"root-pgtables";
/// Allocation tried first: whole 2 MiB chunks, which the format keeps contiguous.
const CHUNK: u64 = 2 << 20;

/// `struct pkernfs_region` of pkernfs.h.
#[repr(C)]
pub(crate) struct Region {
    phys: u64,
    virt: *mut c_void,
    len: usize,
    created: bool,
}

/// Where an IOMMU file's bytes are in the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Found {
    /// Inode number.
    pub(crate) ino: Ino,
    /// Byte offset of its single extent in the image.
    pub(crate) off: u64,
    /// Its size in bytes.
    pub(crate) len: u64,
    /// Created by this call (zeroed), rather than found.
    pub(crate) created: bool,
}

/// Why an IOMMU file could not be had; mapped to the errnos of pkernfs.h.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IommuError {
    /// The format refused (`FsError::errno`).
    Fs(FsError),
    /// The name holds another kind, or the same kind with another size.
    Mismatch,
    /// An existing file is not one extent (never made by this code).
    NotContiguous,
}

impl From<FsError> for IommuError {
    fn from(e: FsError) -> Self {
        IommuError::Fs(e)
    }
}

impl IommuError {
    fn errno(self) -> c_int {
        match self {
            IommuError::Fs(e) => ops::errno(e),
            IommuError::Mismatch => EEXIST.to_errno(),
            IommuError::NotContiguous => EIO.to_errno(),
        }
    }
}

/// `dmar-<unit in lower-case hex>` into `buf`: a unit's directory in `iommu/`.
pub(crate) fn unit_dir_name(unit: u64, buf: &mut [u8; 21]) -> &[u8] {
    buf[..5].copy_from_slice(b"dmar-");
    let digits = (64 - unit.leading_zeros()).div_ceil(4).max(1) as usize;
    for i in 0..digits {
        let nibble = (unit >> (4 * (digits - 1 - i))) & 0xf;
        buf[5 + i] = b"0123456789abcdef"[nibble as usize];
    }
    &buf[..5 + digits]
}

/// `dom-<id>` into `buf`; returns the name's bytes.
pub(crate) fn domain_name(id: u32, buf: &mut [u8; 16]) -> &[u8] {
    buf[..4].copy_from_slice(b"dom-");
    let mut digits = [0u8; 10];
    let (mut n, mut k) = (id, 0);
    loop {
        digits[k] = b'0' + (n % 10) as u8;
        k += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..k {
        buf[4 + i] = digits[k - 1 - i];
    }
    &buf[..4 + k]
}

/// Image offset of `ino`'s first byte if its `len` bytes are one extent.
fn extent_of(img: &Image<'_>, ino: Ino, len: u64) -> Result<Option<u64>, FsError> {
    Ok(match img.map(ino, 0)? {
        Some((at, n)) if n >= len => Some(at),
        _ => None,
    })
}

/// Sizes the new `ino` to `len` bytes in one extent: whole 2 MiB chunks
/// first (trimmed back to `len`), else the format's first fit.
fn size_contiguous(img: &mut Image<'_>, ino: Ino, len: u64, now_ns: u64) -> Result<u64, IommuError> {
    let chunked = len.div_ceil(CHUNK) * CHUNK;
    if img.set_size(ino, chunked, now_ns).is_ok() {
        img.set_size(ino, len, now_ns)?;
        if let Some(at) = extent_of(img, ino, len)? {
            return Ok(at);
        }
    }
    img.set_size(ino, 0, now_ns)?;
    img.set_size(ino, len, now_ns)?;
    extent_of(img, ino, len)?.ok_or(IommuError::Fs(FsError::NoSpace))
}

/// Create-or-open `iommu/<unit>/<name>` of `kind` and `len` bytes (`len`
/// 0: open only). A new file is zeroed, one extent, and pinned; the unit's
/// directory is made with its first file. On failure nothing of either is
/// left in the image.
pub(crate) fn open_or_create(
    img: &mut Image<'_>,
    unit: &[u8],
    name: &[u8],
    kind: Kind,
    len: u64,
    now_ns: u64,
) -> Result<Found, IommuError> {
    let top = img.lookup(ROOT_INO, IOMMU_DIR)?;
    let (dir, new_dir) = match img.lookup(top, unit) {
        Ok(dir) => (dir, false),
        Err(FsError::NotFound) if len != 0 => (img.create(top, unit, Kind::Dir, 0o500, now_ns)?, true),
        Err(e) => return Err(e.into()),
    };
    let found = file_in(img, dir, name, kind, len, now_ns);
    if found.is_err() && new_dir {
        let _ = img.rmdir(top, unit);
    }
    found
}

/// [`open_or_create`] in the unit's directory `dir`.
fn file_in(img: &mut Image<'_>, dir: Ino, name: &[u8], kind: Kind, len: u64, now_ns: u64) -> Result<Found, IommuError> {
    match img.lookup(dir, name) {
        Ok(ino) => {
            let st = img.stat(ino)?;
            if st.kind != kind || (len != 0 && st.size != len) || st.size == 0 {
                return Err(IommuError::Mismatch);
            }
            let off = extent_of(img, ino, st.size)?.ok_or(IommuError::NotContiguous)?;
            Ok(Found { ino, off, len: st.size, created: false })
        }
        Err(FsError::NotFound) if len != 0 => {
            let ino = img.create(dir, name, kind, 0o400, now_ns)?;
            let made = size_contiguous(img, ino, len, now_ns).and_then(|off| {
                img.set_pinned(ino, true)?;
                Ok(off)
            });
            match made {
                Ok(off) => Ok(Found { ino, off, len, created: true }),
                Err(e) => {
                    // Undo the create; the format rolls its own steps back.
                    let _ = img.unlink(dir, name);
                    Err(e)
                }
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Unpins and removes `iommu/<unit>/<name>`, which must be of `kind`.
pub(crate) fn remove(img: &mut Image<'_>, unit: &[u8], name: &[u8], kind: Kind) -> Result<(), IommuError> {
    let top = img.lookup(ROOT_INO, IOMMU_DIR)?;
    let dir = img.lookup(top, unit)?;
    let ino = img.lookup(dir, name)?;
    if img.stat(ino)?.kind != kind {
        return Err(IommuError::Mismatch);
    }
    img.set_pinned(ino, false)?;
    img.unlink(dir, name)?;
    Ok(())
}

extern "C" {
    /// `vfs.c`: wall-clock time in nanoseconds (for mtimes).
    fn pkernfs_now_ns() -> u64;
}

/// Opens the image if needed and runs `f` on it with the carve-out's
/// virtual and physical base and the time; 0 or a negative errno.
fn with_open_image(f: impl FnOnce(&mut Image<'static>, usize, u64, u64) -> Result<(), c_int>) -> c_int {
    // SAFETY: a plain C function without preconditions.
    let now = unsafe { pkernfs_now_ns() };
    ops::with_state(|s| {
        if s.base() == 0 {
            return ENODEV.to_errno();
        }
        let err = ops::open_locked(s, now);
        if err != 0 {
            return err;
        }
        let (base, phys) = (s.base(), s.phys());
        match s.image() {
            Some(img) => f(img, base, phys, now).err().unwrap_or(0),
            None => ENODEV.to_errno(),
        }
    })
}

/// Fills the caller's `struct pkernfs_region`.
///
/// # Safety
/// `r` must be valid for a write of `struct pkernfs_region`.
unsafe fn put_region(r: *mut Region, base: usize, phys: u64, found: Found) {
    let region = Region {
        phys: phys + found.off,
        virt: (base + found.off as usize) as *mut c_void,
        len: found.len as usize,
        created: found.created,
    };
    // SAFETY: guaranteed by the caller.
    unsafe { r.write(region) };
}

/// `pkernfs_available()` of pkernfs.h: a usable carve-out was given.
#[no_mangle]
pub extern "C" fn pkernfs_available() -> bool {
    ops::with_state(|s| s.base() != 0)
}

/// `pkernfs_iommu_root()` of pkernfs.h.
#[no_mangle]
pub extern "C" fn pkernfs_iommu_root(unit: u64, r: *mut Region) -> c_int {
    let mut u = [0u8; 21];
    region_of(unit_dir_name(unit, &mut u), ROOT_NAME, Kind::IommuRoot, ROOT_LEN, r)
}

/// Create-or-open `iommu/<unit>/<name>` into the caller's region `r`
/// (`-EINVAL` when null); 0 or a negative errno.
fn region_of(unit: &[u8], name: &[u8], kind: Kind, len: u64, r: *mut Region) -> c_int {
    if r.is_null() {
        return EINVAL.to_errno();
    }
    with_open_image(|img, base, phys, now| {
        let found = open_or_create(img, unit, name, kind, len, now).map_err(IommuError::errno)?;
        // SAFETY: `r` is the caller's non-null `struct pkernfs_region *`.
        unsafe { put_region(r, base, phys, found) };
        Ok(())
    })
}

/// `pkernfs_iommu_domain()` of pkernfs.h.
#[no_mangle]
pub extern "C" fn pkernfs_iommu_domain(unit: u64, id: u32, len: usize, r: *mut Region) -> c_int {
    let (mut u, mut buf) = ([0u8; 21], [0u8; 16]);
    region_of(unit_dir_name(unit, &mut u), domain_name(id, &mut buf), Kind::IommuDomain, len as u64, r)
}

/// `pasid-<sid in 4 hex digits>` into `buf`: a device's PASID tables.
pub(crate) fn pasid_name(sid: u16, buf: &mut [u8; 10]) -> &[u8] {
    buf[..6].copy_from_slice(b"pasid-");
    for i in 0..4 {
        buf[6 + i] = b"0123456789abcdef"[usize::from((sid >> (4 * (3 - i))) & 0xf)];
    }
    &buf[..]
}

/// `pkernfs_iommu_pasid()` of pkernfs.h.
#[no_mangle]
pub extern "C" fn pkernfs_iommu_pasid(unit: u64, sid: u16, len: usize, r: *mut Region) -> c_int {
    let (mut u, mut buf) = ([0u8; 21], [0u8; 10]);
    region_of(unit_dir_name(unit, &mut u), pasid_name(sid, &mut buf), Kind::IommuPasid, len as u64, r)
}

/// `pkernfs_iommu_pasid_remove()` of pkernfs.h.
#[no_mangle]
pub extern "C" fn pkernfs_iommu_pasid_remove(unit: u64, sid: u16) -> c_int {
    let (mut u, mut buf) = ([0u8; 21], [0u8; 10]);
    let (unit, name) = (unit_dir_name(unit, &mut u), pasid_name(sid, &mut buf));
    with_open_image(|img, _, _, _| remove(img, unit, name, Kind::IommuPasid).map_err(IommuError::errno))
}

/// `pkernfs_iommu_domain_remove()` of pkernfs.h.
#[no_mangle]
pub extern "C" fn pkernfs_iommu_domain_remove(unit: u64, id: u32) -> c_int {
    let (mut u, mut buf) = ([0u8; 21], [0u8; 16]);
    let (unit, name) = (unit_dir_name(unit, &mut u), domain_name(id, &mut buf));
    with_open_image(|img, _, _, _| remove(img, unit, name, Kind::IommuDomain).map_err(IommuError::errno))
}

#[cfg(CONFIG_PKERNFS_KUNIT_TEST)]
#[kunit_tests(pkernfs_iommu)]
mod tests {
    use super::*;

    /// The directory of the unit most tests use (QEMU's VT-d at 0xfed90000).
    const U: &[u8] = b"dmar-fed90000";

    /// `iommu/<U>/`.
    fn unit_dir(img: &Image<'_>) -> Ino {
        let top = img.lookup(ROOT_INO, IOMMU_DIR).expect("iommu/");
        img.lookup(top, U).expect("iommu/dmar-fed90000/")
    }

    extern "C" {
        /// `vfs.c`: marks the running KUnit test skipped.
        fn pkernfs_kunit_skip(why: *const core::ffi::c_char);
    }

    /// A formatted image on a zeroed vmalloc buffer of `len` bytes.
    fn buffer(len: usize) -> VVec<u8> {
        VVec::from_elem(0u8, len, GFP_KERNEL).expect("vmalloc")
    }

    #[test]
    fn domain_names() {
        let mut b = [0u8; 16];
        assert_eq!(domain_name(0, &mut b), b"dom-0");
        assert_eq!(domain_name(42, &mut b), b"dom-42");
        assert_eq!(domain_name(u32::MAX, &mut b), b"dom-4294967295");
    }

    #[test]
    fn pasid_names() {
        let mut b = [0u8; 10];
        assert_eq!(pasid_name(0x0010, &mut b), b"pasid-0010");
        assert_eq!(pasid_name(0xffff, &mut b), b"pasid-ffff");
    }

    #[test]
    fn unit_dir_names() {
        let mut b = [0u8; 21];
        assert_eq!(unit_dir_name(0xfed9_0000, &mut b), b"dmar-fed90000");
        assert_eq!(unit_dir_name(0, &mut b), b"dmar-0");
        assert_eq!(unit_dir_name(u64::MAX, &mut b), b"dmar-ffffffffffffffff");
    }

    #[test]
    fn two_units_never_share_a_file() {
        let mut v = buffer(16 << 20);
        let mut img = Image::format(&mut v, 1).expect("format");
        let (mut n, mut ua, mut ub) = ([0u8; 16], [0u8; 21], [0u8; 21]);
        let (a, b) = (unit_dir_name(0xfed9_0000, &mut ua), unit_dir_name(0xfed9_1000, &mut ub));
        let ra = open_or_create(&mut img, a, ROOT_NAME, Kind::IommuRoot, ROOT_LEN, 2).expect("root a");
        let rb = open_or_create(&mut img, b, ROOT_NAME, Kind::IommuRoot, ROOT_LEN, 2).expect("root b");
        assert!(ra.created && rb.created);
        assert_ne!(ra.ino, rb.ino);
        assert!(ra.off + ROOT_LEN <= rb.off || rb.off + ROOT_LEN <= ra.off);
        // The same domain ID on both units: two files.
        let da = open_or_create(&mut img, a, domain_name(3, &mut n), Kind::IommuDomain, 4096, 3).expect("a/dom-3");
        let db = open_or_create(&mut img, b, domain_name(3, &mut n), Kind::IommuDomain, 8192, 3).expect("b/dom-3");
        assert_ne!(da.ino, db.ino);
        assert_eq!((da.len, db.len), (4096, 8192));
        // Removing one unit's domain leaves the other's.
        remove(&mut img, a, domain_name(3, &mut n), Kind::IommuDomain).expect("remove a/dom-3");
        let again = open_or_create(&mut img, b, domain_name(3, &mut n), Kind::IommuDomain, 0, 4).expect("b/dom-3 kept");
        assert_eq!(again, Found { created: false, ..db });
        assert_eq!(
            open_or_create(&mut img, a, domain_name(3, &mut n), Kind::IommuDomain, 0, 4),
            Err(IommuError::Fs(FsError::NotFound))
        );
        // Open only on a unit never used makes no directory.
        let mut uc = [0u8; 21];
        let c = unit_dir_name(0xfed9_2000, &mut uc);
        assert_eq!(open_or_create(&mut img, c, ROOT_NAME, Kind::IommuRoot, 0, 5), Err(IommuError::Fs(FsError::NotFound)));
        let top = img.lookup(ROOT_INO, IOMMU_DIR).expect("iommu/");
        assert_eq!(img.lookup(top, c), Err(FsError::NotFound));
        assert!(img.check().is_ok());
    }

    #[test]
    fn root_is_created_once_then_found_contiguous_and_pinned() {
        let mut v = buffer(16 << 20);
        let mut img = Image::format(&mut v, 1).expect("format");
        let a = open_or_create(&mut img, U, ROOT_NAME, Kind::IommuRoot, ROOT_LEN, 2).expect("create");
        assert!(a.created);
        assert_eq!(a.len, ROOT_LEN);
        assert_eq!(a.off % 4096, 0);
        let b = open_or_create(&mut img, U, ROOT_NAME, Kind::IommuRoot, ROOT_LEN, 3).expect("open");
        assert_eq!(b, Found { created: false, ..a });
        let st = img.stat(a.ino).expect("stat");
        assert_eq!((st.kind, st.size, st.pinned), (Kind::IommuRoot, ROOT_LEN, true));
        let dir = unit_dir(&img);
        assert_eq!(img.unlink(dir, ROOT_NAME), Err(FsError::Busy));
        assert!(img.check().is_ok());
        // Reopening the image (as after kexec) finds the same extent.
        drop(img);
        let mut img = Image::open(&mut v).expect("reopen");
        let c = open_or_create(&mut img, U, ROOT_NAME, Kind::IommuRoot, ROOT_LEN, 4).expect("found");
        assert_eq!(c, b);
    }

    #[test]
    fn domains_check_kind_and_size_and_are_removed() {
        let mut v = buffer(16 << 20);
        let mut img = Image::format(&mut v, 1).expect("format");
        let mut n = [0u8; 16];
        let d7 = open_or_create(&mut img, U, domain_name(7, &mut n), Kind::IommuDomain, 3 << 20, 2).expect("dom-7");
        assert!(d7.created);
        // Open only (len 0) finds it with its size.
        let again = open_or_create(&mut img, U, domain_name(7, &mut n), Kind::IommuDomain, 0, 3).expect("open");
        assert_eq!(again, Found { created: false, ..d7 });
        // Another size or kind under that name is refused.
        assert_eq!(
            open_or_create(&mut img, U, domain_name(7, &mut n), Kind::IommuDomain, 4096, 3),
            Err(IommuError::Mismatch)
        );
        assert_eq!(
            open_or_create(&mut img, U, domain_name(7, &mut n), Kind::IommuRoot, 3 << 20, 3),
            Err(IommuError::Mismatch)
        );
        // Open only of an absent domain.
        assert_eq!(
            open_or_create(&mut img, U, domain_name(8, &mut n), Kind::IommuDomain, 0, 3),
            Err(IommuError::Fs(FsError::NotFound))
        );
        // A regular file in the way is not taken for a domain.
        let dir = unit_dir(&img);
        img.create(dir, b"dom-9", Kind::File, 0o600, 4).expect("file");
        assert_eq!(
            open_or_create(&mut img, U, domain_name(9, &mut n), Kind::IommuDomain, 4096, 5),
            Err(IommuError::Mismatch)
        );
        assert_eq!(remove(&mut img, U, b"dom-9", Kind::IommuDomain), Err(IommuError::Mismatch));
        remove(&mut img, U, domain_name(7, &mut n), Kind::IommuDomain).expect("remove");
        assert_eq!(img.lookup(dir, b"dom-7"), Err(FsError::NotFound));
        assert!(img.check().is_ok());
    }

    #[test]
    fn no_contiguous_space_is_enospc_and_leaves_nothing() {
        let mut v = buffer(8 << 20);
        let mut img = Image::format(&mut v, 1).expect("format");
        let mut n = [0u8; 16];
        // A first domain made and removed: `iommu/` keeps the block its entry took.
        open_or_create(&mut img, U, domain_name(0, &mut n), Kind::IommuDomain, 4096, 2).expect("dom-0");
        remove(&mut img, U, domain_name(0, &mut n), Kind::IommuDomain).expect("remove dom-0");
        let free = img.check().expect("check").free_blocks;
        let r = open_or_create(&mut img, U, domain_name(1, &mut n), Kind::IommuDomain, 64 << 20, 2);
        assert_eq!(r, Err(IommuError::Fs(FsError::NoSpace)));
        assert_eq!(r.map_err(IommuError::errno), Err(ENOSPC.to_errno()));
        let dir = unit_dir(&img);
        assert_eq!(img.lookup(dir, b"dom-1"), Err(FsError::NotFound));
        assert_eq!(img.check().expect("check").free_blocks, free);
        // A unit's first file failing takes its new directory back with it.
        let r = open_or_create(&mut img, b"dmar-1000", domain_name(1, &mut n), Kind::IommuDomain, 64 << 20, 3);
        assert_eq!(r, Err(IommuError::Fs(FsError::NoSpace)));
        let top = img.lookup(ROOT_INO, IOMMU_DIR).expect("iommu/");
        assert_eq!(img.lookup(top, b"dmar-1000"), Err(FsError::NotFound));
        assert_eq!(img.check().expect("check").free_blocks, free);
    }

    #[test]
    fn without_a_carveout_the_api_says_enodev() {
        if pkernfs_available() {
            // SAFETY: a NUL-terminated literal; called from a KUnit test.
            unsafe { pkernfs_kunit_skip(c"carve-out present: not touching the live image at boot".as_ptr()) };
            return;
        }
        let mut r = Region { phys: 0, virt: core::ptr::null_mut(), len: 0, created: false };
        assert_eq!(pkernfs_iommu_root(0xfed9_0000, &mut r), ENODEV.to_errno());
        assert_eq!(pkernfs_iommu_domain(0xfed9_0000, 1, 4096, &mut r), ENODEV.to_errno());
        assert_eq!(pkernfs_iommu_domain_remove(0xfed9_0000, 1), ENODEV.to_errno());
    }
}
