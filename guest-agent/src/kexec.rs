//! kexec without kexec-tools: `kexec_file_load(2)` and `reboot(2)`.

use std::ffi::CString;
use std::os::fd::AsRawFd;

/// Loads `kernel` + `initrd` with `cmdline` for a later [`exec`].
pub fn load(kernel: &str, initrd: &str, cmdline: &str) -> Result<(), String> {
    let k = std::fs::File::open(kernel).map_err(|e| format!("{kernel}: {e}"))?;
    let i = std::fs::File::open(initrd).map_err(|e| format!("{initrd}: {e}"))?;
    let c = CString::new(cmdline).map_err(|_| "cmdline contains NUL".to_string())?;
    let len = c.as_bytes_with_nul().len();
    // SAFETY: both fds are open for the call, `c` is a NUL-terminated string of
    // `len` bytes (the length includes the NUL, as the syscall requires), flags 0.
    let r = unsafe { libc::syscall(libc::SYS_kexec_file_load, k.as_raw_fd(), i.as_raw_fd(), len, c.as_ptr(), 0u64) };
    if r != 0 {
        return Err(format!("kexec_file_load({kernel}, {initrd}): {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Jumps into the loaded kernel. Returns only on failure.
pub fn exec() -> String {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    // SAFETY: reboot(2) with LINUX_REBOOT_CMD_KEXEC; it does not return on success.
    let r = unsafe { libc::reboot(libc::LINUX_REBOOT_CMD_KEXEC) };
    format!("reboot(KEXEC) returned {r}: {}", std::io::Error::last_os_error())
}
