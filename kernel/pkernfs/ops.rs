// SPDX-License-Identifier: GPL-2.0

//! The Rust side of the VFS boundary (`vfs.h`) of the C shim: one `extern "C"` function per
//! operation the C shim (`vfs.c`) forwards. Each takes pkernfs' global mutex
//! and calls the on-memory format ([`crate::format::Image`]) on the
//! memremapped carve-out. User memory is copied through a kernel bounce buffer
//! outside the mutex, so the mutex is never held across a user page fault
//! (`mmap` takes it under `mmap_lock`; a fault takes `mmap_lock`).

use core::ffi::{c_int, c_void};

use kernel::prelude::*;
use kernel::uaccess::{UserPtr, UserSlice};

use crate::layout::format::{FsError, Image, Ino, Kind, ROOT_INO, SB_LEN};

/// `struct pkernfs_stat` of vfs.h (kept in step by hand: two small structs).
#[repr(C)]
pub(crate) struct PkStat {
    size: u64,
    mtime_ns: u64,
    blocks: u64,
    ino: u32,
    nlink: u32,
    mode: u16,
    kind: u8,
    pad: [u8; 5],
}

/// `enum pkernfs_kind` of vfs.h.
fn kind_code(k: Kind) -> u8 {
    match k {
        Kind::File => 0,
        Kind::Dir => 1,
        Kind::IommuRoot => 2,
        Kind::IommuDomain => 3,
        Kind::IommuPasid => 4,
    }
}

/// `PKERNFS_ROOT_INO` of vfs.h.
const C_ROOT_INO: Ino = 1;
const _: () = assert!(ROOT_INO == C_ROOT_INO);
/// The C side's name buffer holds `NAME_MAX` (255) bytes plus a NUL.
const C_NAME_MAX: usize = 255;

/// Bytes copied per mutex hold by read/write.
const CHUNK: usize = 64 * 1024;

/// The carve-out and, once mounted, the image on it.
pub(crate) struct State {
    /// Kernel virtual address of the memremapped carve-out (0: none).
    base: usize,
    /// Its length in bytes.
    len: usize,
    /// Its physical address.
    phys: u64,
    /// The open image; `None` until the first successful mount.
    image: Option<Image<'static>>,
}

kernel::sync::global_lock! {
    // SAFETY: `init` is called in the module initializer before the
    // filesystem is registered, i.e. before any other use.
    unsafe(uninit) static STATE: Mutex<State> = State { base: 0, len: 0, phys: 0, image: None };
}

/// Initialises the lock and records the carve-out; called once from module init.
pub(crate) fn init(base: *mut u8, phys: u64, len: u64) {
    // SAFETY: called exactly once, from module init, before registration.
    unsafe { STATE.init() };
    let mut s = STATE.lock();
    s.base = base as usize;
    s.len = len as usize;
    s.phys = phys;
}

pub(crate) fn errno(e: FsError) -> c_int {
    -e.errno()
}

/// `name` as a slice.
///
/// # Safety
/// `name` must be valid for reads of `len` bytes for the call's duration.
unsafe fn name<'a>(name: *const u8, len: usize) -> &'a [u8] {
    // SAFETY: guaranteed by the caller (a dentry name pinned by the VFS).
    unsafe { core::slice::from_raw_parts(name, len) }
}

/// Runs `f` on the mounted image.
fn with_image<T>(f: impl FnOnce(&mut Image<'static>) -> Result<T, FsError>) -> Result<T, c_int> {
    let mut s = STATE.lock();
    match s.image.as_mut() {
        Some(img) => f(img).map_err(errno),
        None => Err(ENODEV.to_errno()),
    }
}

fn ret(r: Result<(), c_int>) -> c_int {
    r.err().unwrap_or(0)
}

/// Opens the image on the carve-out if it is not open yet, formatting it
/// only if it is blank; 0 or a negative errno (the reason logged).
pub(crate) fn open_locked(s: &mut State, now_ns: u64) -> c_int {
    if s.image.is_some() {
        return 0;
    }
    if s.base == 0 {
        pr_err!("pkernfs: no usable carve-out (boot with memmap=SIZE!BASE pkernfs=SIZE@BASE)\n");
        return ENXIO.to_errno();
    }
    // SAFETY: [base, base+len) is the carve-out memremapped at init and never
    // unmapped; no `Image` exists (checked above), so this is the only reference.
    let bytes: &'static mut [u8] = unsafe { core::slice::from_raw_parts_mut(s.base as *mut u8, s.len) };
    let blank = bytes[..SB_LEN].iter().all(|b| *b == 0);
    let opened = if blank { Image::format(bytes, now_ns) } else { Image::open(bytes) };
    match opened {
        Ok(img) => {
            pr_info!(
                "pkernfs: {} image of {} MiB at {:#x}\n",
                if blank { "formatted a new" } else { "mounted the existing" },
                s.len >> 20,
                s.phys
            );
            s.image = Some(img);
            0
        }
        Err(e) => {
            pr_err!("pkernfs: refusing the image at {:#x}: {} (left untouched)\n", s.phys, e.describe());
            errno(e)
        }
    }
}

/// Opens the image on first mount, formatting it only if it is blank.
#[no_mangle]
pub(crate) extern "C" fn pkernfs_rs_mount(now_ns: u64) -> c_int {
    open_locked(&mut STATE.lock(), now_ns)
}

/// Runs `f` on the carve-out's state, under the mutex.
pub(crate) fn with_state<T>(f: impl FnOnce(&mut State) -> T) -> T {
    f(&mut STATE.lock())
}

impl State {
    /// Kernel virtual address of the carve-out (0: none).
    pub(crate) fn base(&self) -> usize {
        self.base
    }

    /// Physical address of the carve-out.
    pub(crate) fn phys(&self) -> u64 {
        self.phys
    }

    /// The open image, if any.
    pub(crate) fn image(&mut self) -> Option<&mut Image<'static>> {
        self.image.as_mut()
    }
}

/// Attributes of `ino` into `st`.
#[no_mangle]
pub(crate) extern "C" fn pkernfs_rs_stat(ino: u32, st: *mut PkStat) -> c_int {
    ret(with_image(|img| img.stat(ino as Ino)).map(|s| {
        let out = PkStat {
            size: s.size,
            mtime_ns: s.mtime_ns,
            blocks: s.blocks,
            ino: s.ino,
            nlink: s.nlink,
            mode: s.mode,
            kind: kind_code(s.kind),
            pad: [0; 5],
        };
        // SAFETY: the C caller passes a valid, writable `struct pkernfs_stat`.
        unsafe { st.write(out) };
    }))
}

fn kind_from(c: u8) -> Option<Kind> {
    [Kind::File, Kind::Dir, Kind::IommuRoot, Kind::IommuDomain, Kind::IommuPasid].into_iter().find(|k| kind_code(*k) == c)
}

/// Looks `name` up in `dir`.
#[no_mangle]
pub(crate) extern "C" fn pkernfs_rs_lookup(dir: u32, nm: *const u8, len: usize, ino: *mut u32) -> c_int {
    // SAFETY: the dentry name is valid for `len` bytes during the call.
    let nm = unsafe { name(nm, len) };
    ret(with_image(|img| img.lookup(dir, nm)).map(|i| {
        // SAFETY: the C caller passes a valid `u32` out-pointer.
        unsafe { ino.write(i) }
    }))
}

/// Creates `name` in `dir`.
#[no_mangle]
pub(crate) extern "C" fn pkernfs_rs_create(
    dir: u32,
    nm: *const u8,
    len: usize,
    kind: u8,
    mode: u16,
    now_ns: u64,
    ino: *mut u32,
) -> c_int {
    // SAFETY: the dentry name is valid for `len` bytes during the call.
    let nm = unsafe { name(nm, len) };
    let Some(kind) = kind_from(kind) else { return EINVAL.to_errno() };
    ret(with_image(|img| img.create(dir, nm, kind, mode, now_ns)).map(|i| {
        // SAFETY: the C caller passes a valid `u32` out-pointer.
        unsafe { ino.write(i) }
    }))
}

/// Removes the file `name` from `dir`.
#[no_mangle]
pub(crate) extern "C" fn pkernfs_rs_unlink(dir: u32, nm: *const u8, len: usize) -> c_int {
    // SAFETY: the dentry name is valid for `len` bytes during the call.
    let nm = unsafe { name(nm, len) };
    ret(with_image(|img| img.unlink(dir, nm)))
}

/// Removes the empty directory `name` from `dir`.
#[no_mangle]
pub(crate) extern "C" fn pkernfs_rs_rmdir(dir: u32, nm: *const u8, len: usize) -> c_int {
    // SAFETY: the dentry name is valid for `len` bytes during the call.
    let nm = unsafe { name(nm, len) };
    ret(with_image(|img| img.rmdir(dir, nm)))
}

/// Moves `odir/oname` to `ndir/nname`, replacing a file there.
#[no_mangle]
pub(crate) extern "C" fn pkernfs_rs_rename(
    odir: u32,
    on: *const u8,
    olen: usize,
    ndir: u32,
    nn: *const u8,
    nlen: usize,
) -> c_int {
    // SAFETY: both dentry names are valid for their lengths during the call.
    let (on, nn) = unsafe { (name(on, olen), name(nn, nlen)) };
    ret(with_image(|img| img.rename(odir, on, ndir, nn)))
}

/// The entry of `dir` at `*pos`: 1 with the entry, 0 at the end.
#[no_mangle]
pub(crate) extern "C" fn pkernfs_rs_readdir(
    dir: u32,
    pos: *mut u64,
    ino: *mut u32,
    kind: *mut u8,
    out: *mut u8,
    out_len: *mut usize,
) -> c_int {
    // SAFETY: `pos` is a valid in/out pointer from the C caller.
    let p = unsafe { pos.read() };
    let r = with_image(|img| {
        Ok(img.readdir(dir, p)?.map(|(next, i, nm, k)| {
            let n = nm.len().min(C_NAME_MAX);
            // SAFETY: `out` has room for NAME_MAX + 1 bytes and the other
            // pointers are valid out-pointers (vfs.c `pk_iterate`).
            unsafe {
                core::ptr::copy_nonoverlapping(nm.as_ptr(), out, n);
                out_len.write(n);
                ino.write(i);
                kind.write(kind_code(k));
                pos.write(next);
            }
        }))
    });
    match r {
        Ok(Some(())) => 1,
        Ok(None) => 0,
        Err(e) => e,
    }
}

/// Reads up to `len` bytes at `off` into user memory.
#[no_mangle]
pub(crate) extern "C" fn pkernfs_rs_read(ino: u32, off: u64, buf: *mut c_void, len: usize) -> isize {
    let mut w = UserSlice::new(UserPtr::from_ptr(buf), len).writer();
    let mut bounce = match KVec::<u8>::from_elem(0u8, len.min(CHUNK), GFP_KERNEL) {
        Ok(v) => v,
        Err(_) => return ENOMEM.to_errno() as isize,
    };
    let mut done = 0usize;
    while done < len {
        let want = (len - done).min(CHUNK);
        let got = match with_image(|img| img.read(ino, off + done as u64, &mut bounce[..want])) {
            Ok(n) => n,
            Err(e) if done == 0 => return e as isize,
            Err(_) => break,
        };
        if got == 0 {
            break;
        }
        if w.write_slice(&bounce[..got]).is_err() {
            return if done == 0 { EFAULT.to_errno() as isize } else { done as isize };
        }
        done += got;
    }
    done as isize
}

/// Writes `len` bytes of user memory at `off`, growing the file.
#[no_mangle]
pub(crate) extern "C" fn pkernfs_rs_write(ino: u32, off: u64, buf: *const c_void, len: usize, now_ns: u64) -> isize {
    let mut r = UserSlice::new(UserPtr::from_ptr(buf as *mut c_void), len).reader();
    let mut bounce = match KVec::<u8>::from_elem(0u8, len.min(CHUNK), GFP_KERNEL) {
        Ok(v) => v,
        Err(_) => return ENOMEM.to_errno() as isize,
    };
    let mut done = 0usize;
    while done < len {
        let want = (len - done).min(CHUNK);
        if r.read_slice(&mut bounce[..want]).is_err() {
            return if done == 0 { EFAULT.to_errno() as isize } else { done as isize };
        }
        match with_image(|img| img.write(ino, off + done as u64, &bounce[..want], now_ns)) {
            Ok(n) => done += n,
            Err(e) if done == 0 => return e as isize,
            Err(_) => break,
        }
    }
    done as isize
}

/// Truncates or extends `ino` to `size` bytes.
#[no_mangle]
pub(crate) extern "C" fn pkernfs_rs_set_size(ino: u32, size: u64, now_ns: u64) -> c_int {
    ret(with_image(|img| img.set_size(ino, size, now_ns)))
}

/// Sets or clears `ino`'s persistent pin (the format's `FLAG_PINNED`: unlink,
/// rename over it and shrinking fail with EBUSY, in this kernel and the next).
#[no_mangle]
pub(crate) extern "C" fn pkernfs_rs_set_pinned(ino: u32, pinned: bool) -> c_int {
    ret(with_image(|img| img.set_pinned(ino, pinned)))
}

/// Physical address of `ino`'s byte `off` and how many bytes are contiguous there.
#[no_mangle]
pub(crate) extern "C" fn pkernfs_rs_map(ino: u32, off: u64, phys: *mut u64, len: *mut u64) -> c_int {
    let base = STATE.lock().phys;
    ret(with_image(|img| img.map(ino, off)).and_then(|m| match m {
        Some((at, n)) => {
            // SAFETY: valid out-pointers from the C caller (vfs.c `pk_mmap`).
            unsafe {
                phys.write(base + at);
                len.write(n);
            }
            Ok(())
        }
        None => Err(ENXIO.to_errno()),
    }))
}
