//! Device interrupts as a VMM takes them: one MSI-X vector routed by
//! vfio-pci to an eventfd, which the engine's thread waits on instead of
//! polling. The count each read returns is the number of host interrupts
//! since the last read (vfio's handler signals the eventfd once per
//! interrupt), so the engine's running total is what it received.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use super::vfio::Device;

/// An MSI-X vector's eventfd.
#[derive(Debug)]
pub struct MsixEventfd {
    fd: OwnedFd,
}

impl MsixEventfd {
    /// A new non-blocking eventfd routed from `vector` of `dev`.
    pub fn route(dev: &Device, vector: u32) -> Result<Self, String> {
        // SAFETY: eventfd(2) with constant flags; a non-negative result is a
        // new fd that nothing else owns.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(format!("{}: eventfd for MSI-X vector {vector}: {}", dev.pci, std::io::Error::last_os_error()));
        }
        // SAFETY: `raw` is the fd just created above, owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        dev.set_msix_trigger(vector, Some(fd.as_raw_fd()))?;
        Ok(Self { fd })
    }

    /// Waits up to `timeout` for an interrupt; returns how many arrived
    /// since the last call (0: timed out).
    pub fn wait(&self, timeout: Duration) -> u64 {
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n <= 0 {
            return 0;
        }
        self.take()
    }

    /// Reads the count without waiting (0: none pending).
    pub fn take(&self) -> u64 {
        let mut v = 0u64;
        // SAFETY: reads 8 bytes into `v`, a live u64; the fd is an eventfd.
        let r = unsafe { libc::read(self.fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
        if r == 8 {
            v
        } else {
            0
        }
    }

    /// Whether an interrupt arrived that no [`MsixEventfd::wait`] or
    /// [`MsixEventfd::take`] has read yet (the count is left in place).
    pub fn pending(&self) -> bool {
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd for the duration of the call; no wait.
        unsafe { libc::poll(&mut pfd, 1, 0) > 0 && pfd.revents & libc::POLLIN != 0 }
    }
}
