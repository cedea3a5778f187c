//! Upstream's Live Update Orchestrator from userspace (kernel 7.3,
//! `include/uapi/linux/liveupdate.h`; the flow of
//! `tools/testing/selftests/liveupdate`): open `/dev/liveupdate` (one opener
//! at a time), create a named session, `PRESERVE_FD` each memfd under a
//! token and keep the session fd open through the kexec (closing it
//! unpreserves); in the next kernel `RETRIEVE_SESSION` by name,
//! `RETRIEVE_FD` by token, then `FINISH`. Needs `kho=on liveupdate=on`.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd};

/// `LIVEUPDATE_IOCTL_TYPE`.
const TYPE: u64 = 0xba;
/// `LIVEUPDATE_SESSION_NAME_LENGTH` (with the NUL).
pub const NAME_LEN: usize = 64;
/// The LUO device.
const DEVICE: &str = "/dev/liveupdate";

/// `_IO(0xBA, nr)`: like VFIO, LUO encodes no size in the number.
const fn io(nr: u64) -> u64 {
    (TYPE << 8) | nr
}

/// `LIVEUPDATE_IOCTL_CREATE_SESSION`.
const CREATE_SESSION: u64 = io(0x00);
/// `LIVEUPDATE_IOCTL_RETRIEVE_SESSION`.
const RETRIEVE_SESSION: u64 = io(0x01);
/// `LIVEUPDATE_SESSION_PRESERVE_FD`.
const PRESERVE_FD: u64 = io(0x40);
/// `LIVEUPDATE_SESSION_RETRIEVE_FD`.
const RETRIEVE_FD: u64 = io(0x41);
/// `LIVEUPDATE_SESSION_FINISH`.
const FINISH: u64 = io(0x42);

/// `struct liveupdate_ioctl_create_session` / `…_retrieve_session`.
#[repr(C)]
struct SessionArg {
    size: u32,
    fd: i32,
    name: [u8; NAME_LEN],
}

/// `struct liveupdate_session_preserve_fd` / `…_retrieve_fd`.
#[repr(C)]
struct FdArg {
    size: u32,
    fd: i32,
    token: u64,
}

/// `struct liveupdate_session_finish`.
#[repr(C)]
struct FinishArg {
    size: u32,
    reserved: u32,
}

/// `ioctl(fd, req, &mut arg)`, errno as a message naming `what`.
fn ioctl<T>(fd: &File, req: u64, arg: &mut T, what: &str) -> Result<(), String> {
    // SAFETY: `arg` is a live, exclusively borrowed `#[repr(C)]` struct laid
    // out as the uAPI struct `req` takes (paired in this module); the kernel
    // reads and writes at most its `size` bytes during the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg as *mut T) };
    if r < 0 {
        return Err(format!("{what}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Takes ownership of an fd the kernel just returned.
fn owned(fd: i32) -> File {
    // SAFETY: a new fd from a successful ioctl that nothing else owns.
    unsafe { File::from_raw_fd(fd) }
}

fn name_bytes(name: &str) -> Result<[u8; NAME_LEN], String> {
    let mut out = [0u8; NAME_LEN];
    if name.len() >= NAME_LEN || name.as_bytes().contains(&0) {
        return Err(format!("LUO session name {name:?}: at most {} bytes, no NUL", NAME_LEN - 1));
    }
    out[..name.len()].copy_from_slice(name.as_bytes());
    Ok(out)
}

/// `/dev/liveupdate`, open (exclusively: close it when done).
#[derive(Debug)]
pub struct Luo {
    dev: File,
}

/// A LUO session.
#[derive(Debug)]
pub struct Session {
    fd: File,
    /// Its name.
    pub name: String,
}

impl Luo {
    /// Opens the LUO device.
    pub fn open() -> Result<Self, String> {
        let dev = OpenOptions::new()
            .read(true)
            .write(true)
            .open(DEVICE)
            .map_err(|e| format!("{DEVICE}: {e} (kernel without LUO, or booted without `kho=on liveupdate=on`?)"))?;
        Ok(Self { dev })
    }

    fn session(&self, req: u64, verb: &str, name: &str) -> Result<Session, String> {
        let mut a = SessionArg { size: std::mem::size_of::<SessionArg>() as u32, fd: -1, name: name_bytes(name)? };
        ioctl(&self.dev, req, &mut a, &format!("{DEVICE}: {verb} session {name:?}"))?;
        Ok(Session { fd: owned(a.fd), name: name.into() })
    }

    /// A new, empty session (before kexec).
    pub fn create_session(&self, name: &str) -> Result<Session, String> {
        self.session(CREATE_SESSION, "LIVEUPDATE_IOCTL_CREATE_SESSION", name)
    }

    /// The session the previous kernel preserved under `name` (ENOENT: none).
    pub fn retrieve_session(&self, name: &str) -> Result<Session, String> {
        self.session(RETRIEVE_SESSION, "LIVEUPDATE_IOCTL_RETRIEVE_SESSION", name)
    }
}

impl Session {
    /// Preserves `file` (a memfd) under `token` across the next kexec.
    pub fn preserve(&self, file: &File, token: u64) -> Result<(), String> {
        let mut a = FdArg { size: std::mem::size_of::<FdArg>() as u32, fd: file.as_raw_fd(), token };
        ioctl(&self.fd, PRESERVE_FD, &mut a, &format!("LUO session {:?}: PRESERVE_FD token {token}", self.name))
    }

    /// The file preserved under `token` by the previous kernel.
    pub fn retrieve(&self, token: u64) -> Result<File, String> {
        let mut a = FdArg { size: std::mem::size_of::<FdArg>() as u32, fd: -1, token };
        ioctl(&self.fd, RETRIEVE_FD, &mut a, &format!("LUO session {:?}: RETRIEVE_FD token {token}", self.name))?;
        Ok(owned(a.fd))
    }

    /// Every file retrieved: the kernel lets go of the preserved state.
    pub fn finish(&self) -> Result<(), String> {
        let mut a = FinishArg { size: std::mem::size_of::<FinishArg>() as u32, reserved: 0 };
        ioctl(&self.fd, FINISH, &mut a, &format!("LUO session {:?}: FINISH", self.name))
    }
}

/// A new memfd of `len` bytes (shmem, no hugetlb: LUO refuses those).
pub fn memfd(name: &str, len: u64) -> Result<File, String> {
    let c = CString::new(name).map_err(|_| format!("memfd name {name:?} contains NUL"))?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    let fd = unsafe { libc::memfd_create(c.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!("memfd_create({name}): {}", std::io::Error::last_os_error()));
    }
    let f = owned(fd);
    f.set_len(len).map_err(|e| format!("memfd {name}: ftruncate {len:#x}: {e}"))?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_and_structs_match_the_uapi() {
        assert_eq!(CREATE_SESSION, 0xba00);
        assert_eq!(RETRIEVE_SESSION, 0xba01);
        assert_eq!((PRESERVE_FD, RETRIEVE_FD, FINISH), (0xba40, 0xba41, 0xba42));
        assert_eq!(std::mem::size_of::<SessionArg>(), 72);
        assert_eq!(std::mem::size_of::<FdArg>(), 16);
        assert_eq!(std::mem::size_of::<FinishArg>(), 8);
    }

    #[test]
    fn session_names_fit_the_kernel_buffer() {
        let n = name_bytes("lulab-rx").unwrap();
        assert_eq!(&n[..9], b"lulab-rx\0");
        assert!(name_bytes(&"x".repeat(63)).is_ok());
        assert!(name_bytes(&"x".repeat(64)).is_err());
        assert!(name_bytes("a\0b").is_err());
    }
}
