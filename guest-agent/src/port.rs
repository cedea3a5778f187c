//! Finding the agent's virtio-serial port and small kernel-facing helpers.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lulab_proto::AGENT_PORT_NAME;

/// Waits until a virtio port named [`AGENT_PORT_NAME`] exists and returns its
/// device node.
pub fn find(deadline: Duration) -> Result<PathBuf, String> {
    let start = Instant::now();
    loop {
        if let Ok(entries) = std::fs::read_dir("/sys/class/virtio-ports") {
            for entry in entries.flatten() {
                let name = std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
                if name.trim() == AGENT_PORT_NAME {
                    let dev = PathBuf::from("/dev").join(entry.file_name());
                    if dev.exists() {
                        return Ok(dev);
                    }
                }
            }
        }
        if start.elapsed() > deadline {
            return Err(format!(
                "no virtio port named {AGENT_PORT_NAME} after {deadline:?} (is virtio_console loaded?)"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Blocks until `fd` is readable or `timeout` passes.
pub fn wait_readable(fd: &impl AsRawFd, timeout: Duration) {
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: `pfd` is a valid pollfd for the duration of the call and nfds is 1.
    let r = unsafe { libc::poll(&mut pfd, 1, ms) };
    if r > 0 && pfd.revents & libc::POLLHUP != 0 {
        // Host end not connected: poll returns at once, so pace the retry.
        std::thread::sleep(timeout);
    }
}

/// Writes one line to the kernel log (visible on the serial console).
pub fn kmsg(msg: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ = writeln!(f, "{msg}");
    } else {
        eprintln!("{msg}");
    }
}
