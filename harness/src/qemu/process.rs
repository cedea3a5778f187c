//! `QemuProcess`: QEMU in its own process group, torn down on drop (QMP `quit`,
//! then SIGTERM, then SIGKILL of the group), with its logs kept in the run
//! directory. A process-wide registry lets the SIGINT/SIGTERM handler stop every
//! QEMU this harness started, so an interrupted run leaves no orphan behind.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::params::{MachineParams, RunPaths};
use crate::cmd;

/// Process groups of live QEMUs (pgid → run directory), for the signal handler.
static LIVE: Mutex<BTreeMap<i32, String>> = Mutex::new(BTreeMap::new());
static HANDLER: Once = Once::new();

/// A running QEMU.
#[derive(Debug)]
pub struct QemuProcess {
    child: Child,
    /// Where its sockets and logs live.
    pub paths: RunPaths,
    exited: Option<ExitStatus>,
}

impl QemuProcess {
    /// Starts QEMU for `params` with its files in `paths`.
    pub fn spawn(params: &MachineParams, paths: &RunPaths) -> Result<Self> {
        install_signal_handler();
        std::fs::create_dir_all(&paths.dir).with_context(|| format!("creating {}", paths.dir.display()))?;
        if !params.trace_events.is_empty() {
            std::fs::write(paths.trace_events(), params.trace_events.join("\n") + "\n")?;
        }
        if let Some(w) = &params.watcher {
            std::fs::write(paths.watch_ranges(), w.ranges.to_string())?;
        }
        let argv = params.argv(paths);
        std::fs::write(paths.argv(), argv.join("\n") + "\n")?;
        let stderr = std::fs::File::create(paths.stderr())?;
        let mut command = Command::new(crate::setup::qemu_binary());
        command.args(&argv).stdin(Stdio::null()).stdout(stderr.try_clone()?).stderr(stderr).process_group(0);
        // SAFETY: the closure only calls prctl(2), which is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                // Backstop for a harness killed with SIGKILL: the kernel kills QEMU.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().with_context(|| {
            format!("starting qemu-system-x86_64 (is it installed? {})", crate::setup::QEMU_INSTALL_HINT)
        })?;
        LIVE.lock().unwrap_or_else(|e| e.into_inner()).insert(child.id() as i32, paths.dir.display().to_string());
        Ok(Self { child, paths: paths.clone(), exited: None })
    }

    /// QEMU's PID (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills QEMU at once, as a crash would (SIGKILL, no QMP `quit`); the
    /// exit shows in the next [`QemuProcess::check_alive`].
    pub fn crash(&mut self) -> Result<()> {
        self.child.kill().context("sending SIGKILL to QEMU")?;
        let _ = self.wait_exit(Duration::from_secs(5));
        Ok(())
    }

    /// Fails with QEMU's exit status and stderr when it has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.try_wait()? {
            let err = std::fs::read(self.paths.stderr()).unwrap_or_default();
            let tail = cmd::tail(&err, 20);
            let hint = if super::tcg_race_abort(&tail) {
                "\n(QEMU's own multi-threaded TCG race, upstream QEMU issue 3040: `[host] tcg_threads = \"single\"` avoids it)"
            } else {
                ""
            };
            bail!("QEMU (pid {}) exited with {status}; stderr:\n{tail}{hint}\nrun directory: {}", self.pid(), self.paths.dir.display());
        }
        Ok(())
    }

    /// Non-blocking wait.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait()?;
            if self.exited.is_some() {
                LIVE.lock().unwrap_or_else(|e| e.into_inner()).remove(&(self.pid() as i32));
            }
        }
        Ok(self.exited)
    }

    /// Waits up to `timeout` for QEMU to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(Some(s));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM then SIGKILL to QEMU's process group, waiting for it.
    pub fn kill(&mut self) {
        for (sig, grace) in [(Signal::SIGTERM, 3), (Signal::SIGKILL, 5)] {
            if matches!(self.try_wait(), Ok(Some(_))) {
                return;
            }
            let _ = killpg(Pid::from_raw(self.pid() as i32), sig);
            if matches!(self.wait_exit(Duration::from_secs(grace)), Ok(Some(_))) {
                return;
            }
        }
    }
}

impl Drop for QemuProcess {
    fn drop(&mut self) {
        // The owner (Host) asks QMP to quit first; whatever is left goes here.
        self.kill();
        LIVE.lock().unwrap_or_else(|e| e.into_inner()).remove(&(self.pid() as i32));
    }
}

/// On SIGINT/SIGTERM: stop every QEMU we started (by process group), say where
/// their logs are, and exit.
fn install_signal_handler() {
    HANDLER.call_once(|| {
        let Ok(mut signals) = signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM]) else {
            return;
        };
        std::thread::spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let live = std::mem::take(&mut *LIVE.lock().unwrap_or_else(|e| e.into_inner()));
                for (pgid, dir) in &live {
                    eprintln!("lulab: signal {sig}: stopping QEMU (pid {pgid}); logs kept in {dir}");
                    let _ = killpg(Pid::from_raw(*pgid), Signal::SIGTERM);
                }
                let deadline = Instant::now() + Duration::from_secs(3);
                for pgid in live.keys() {
                    while Instant::now() < deadline && killpg(Pid::from_raw(*pgid), None).is_ok() {
                        // Reap if it is our child; stop once the group is gone.
                        let _ = nix::sys::wait::waitpid(Pid::from_raw(*pgid), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    let _ = killpg(Pid::from_raw(*pgid), Signal::SIGKILL);
                }
                std::process::exit(128 + sig);
            }
        });
    });
}
