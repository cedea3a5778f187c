//! The fd keeper of a persistent engine: a small process of its own that
//! holds the engine's VFIO device fd and iommufd, so that they outlive the
//! agent (a VMM that crashes and is started again, as with systemd's fd
//! store or QEMU's CPR). While a keeper holds them VFIO neither resets the
//! device nor does iommufd tear its domain down: the device goes on DMAing
//! into the engine's pkernfs file. The next agent takes the fds back with
//! `pidfd_getfd(2)` ([`take`]) and goes on with the device as it runs.
//!
//! The keeper is forked from the agent and closes every other fd (the
//! agent's port among them: a virtio-serial port opens once). Its record,
//! `/run/lulab-kept/<pci>.json`, names its pid, the fd numbers it holds and
//! what the engine was started with.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

use lulab_proto::DmaConfig;
use serde::{Deserialize, Serialize};

/// Where the records live (tmpfs: a kexec forgets them with the keepers).
const DIR: &str = "/run/lulab-kept";

/// What a keeper holds, and for which engine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The keeper's pid.
    pub keeper: i32,
    /// The VFIO device fd, as numbered in the keeper.
    pub device_fd: RawFd,
    /// The iommufd, as numbered in the keeper.
    pub iommufd: RawFd,
    /// The IOAS, device and HWPT ids in that iommufd.
    pub ioas: u32,
    /// The device's id.
    pub devid: u32,
    /// The HWPT the device is attached to.
    pub hwpt: u32,
    /// The engine's start request (`persist.resume` as it was).
    pub config: DmaConfig,
    /// Hand-overs the engine's file has seen.
    pub generation: u32,
}

fn record_path(pci: &str) -> String {
    format!("{DIR}/{pci}.json")
}

/// Forks a keeper holding `device` and `iommufd` for the engine of `rec`
/// (whose `keeper`, `device_fd` and `iommufd` are filled in here) and
/// writes its record. A keeper already kept for the same device is
/// released first.
pub fn keep(device: &File, iommufd: &File, mut rec: Record) -> Result<i32, String> {
    let pci = rec.config.pci().to_string();
    release(&pci);
    let (a, b) = (device.as_raw_fd(), iommufd.as_raw_fd());
    let (lo, hi) = (a.min(b), a.max(b));
    // SAFETY: fork in a multi-threaded process: the child only makes raw
    // system calls (close_range, prctl, pause) on values computed before
    // the fork; it allocates nothing and takes no lock.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("{pci}: forking the fd keeper: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        keeper_main(lo, hi);
    }
    rec.keeper = pid;
    rec.device_fd = a;
    rec.iommufd = b;
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(DIR)?;
        std::fs::write(record_path(&pci), serde_json::to_vec(&rec).map_err(std::io::Error::other)?)
    };
    if let Err(e) = write() {
        kill(pid);
        return Err(format!("{}: {e}", record_path(&pci)));
    }
    crate::port::kmsg(&format!("lulab-agent: {pci}: fd keeper pid {pid} holds device fd {a} and iommufd {b}"));
    Ok(pid)
}

/// The keeper's life: every fd but `lo` and `hi` closed, then asleep until killed.
fn keeper_main(lo: RawFd, hi: RawFd) -> ! {
    let close = |from: RawFd, to: u32| {
        if from >= 0 && (from as u32) <= to {
            // SAFETY: close_range(2) on fds this process owns; only async-signal-safe work after fork.
            unsafe { libc::syscall(libc::SYS_close_range, from as u32, to, 0u32) };
        }
    };
    if lo > 0 {
        close(0, (lo - 1) as u32);
    }
    if hi > lo + 1 {
        close(lo + 1, (hi - 1) as u32);
    }
    close(hi + 1, u32::MAX);
    // SAFETY: PR_SET_NAME with a NUL-terminated static name.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"lulab-keeper".as_ptr() as libc::c_ulong, 0, 0, 0) };
    loop {
        // SAFETY: pause(2) only waits for a signal.
        unsafe { libc::pause() };
    }
}

/// The engine kept for `pci`: its record and the fds taken from its keeper
/// (device, iommufd), which stays as it is, holding them too.
pub fn take(pci: &str) -> Result<(Record, File, File), String> {
    let path = record_path(pci);
    let text = std::fs::read(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{pci}: no engine kept ({path} missing: the agent that ran it kept none, so its device was released when it died)"),
        _ => format!("{path}: {e}"),
    })?;
    let rec: Record = serde_json::from_slice(&text).map_err(|e| format!("{path}: {e}"))?;
    // SAFETY: pidfd_open(2) with a pid and no flags; returns a new fd or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, rec.keeper, 0u32) };
    if pidfd < 0 {
        return Err(format!("{pci}: fd keeper pid {} is gone ({}): the device was released", rec.keeper, std::io::Error::last_os_error()));
    }
    // SAFETY: pidfd_open returned a new fd that nothing else owns.
    let pidfd = unsafe { File::from_raw_fd(pidfd as RawFd) };
    let get = |fd: RawFd, what: &str| -> Result<File, String> {
        // SAFETY: pidfd_getfd(2) duplicates fd `fd` of the keeper into this process; returns a new fd or -1.
        let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0u32) };
        if got < 0 {
            return Err(format!("{pci}: taking the {what} (fd {fd}) from keeper pid {}: {}", rec.keeper, std::io::Error::last_os_error()));
        }
        // SAFETY: pidfd_getfd returned a new fd that nothing else owns.
        Ok(unsafe { File::from_raw_fd(got as RawFd) })
    };
    let device = get(rec.device_fd, "VFIO device fd")?;
    let iommufd = get(rec.iommufd, "iommufd")?;
    Ok((rec, device, iommufd))
}

/// Ends the keeper kept for `pci`, if any (its fds close with it).
pub fn release(pci: &str) {
    let path = record_path(pci);
    let Ok(text) = std::fs::read(&path) else { return };
    if let Ok(rec) = serde_json::from_slice::<Record>(&text) {
        kill(rec.keeper);
    }
    let _ = std::fs::remove_file(&path);
}

fn kill(pid: i32) {
    // SAFETY: SIGKILL to a keeper this agent (or its predecessor) forked,
    // then reaping it if it is our child (ECHILD otherwise, ignored).
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}
