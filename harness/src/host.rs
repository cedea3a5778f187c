//! `Host`: one booted QEMU host with its QMP, console and agent connections.
//! Booting is: spawn QEMU paused → connect QMP, console, agent → `cont` →
//! follow the console to our /init → wait for the agent's first answer. Every
//! step has a deadline and a failure names the run directory.

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::agent::AgentClient;
use crate::console::{Console, PANIC_MARKERS};
use crate::qemu::{MachineParams, QemuProcess, RunPaths};
use crate::qmp::{self, Qmp};
use crate::report::{Finding, Reason};
use crate::slots::HostSlot;

/// What /init prints once the agent has been started.
pub const INIT_READY: &str = "lulab-init: ready";

/// What a booting kernel prints, in order: its banner, our /init's ready
/// line, or a panic. /init's line also stands for the banner: the emulated
/// UART under TCG now and then drops a character, and a garbled banner must
/// not cost the boot.
pub(crate) fn boot_needles() -> Vec<&'static str> {
    let mut needles = vec!["Linux version", INIT_READY];
    needles.extend(PANIC_MARKERS);
    needles
}

/// How long each phase may take (TCG on 2 shared cores is slow; these are
/// deadlines, not sleeps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// QEMU start to QMP greeting.
    pub qmp: Duration,
    /// `cont` to our /init running.
    pub init: Duration,
    /// /init to the agent's first answer.
    pub agent: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self { qmp: Duration::from_secs(30), init: Duration::from_secs(180), agent: Duration::from_secs(60) }
    }
}

/// Milliseconds from QEMU start to each boot milestone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BootTimings {
    /// QMP ready.
    pub qmp_ms: u64,
    /// First kernel output ("Linux version").
    pub kernel_ms: u64,
    /// Our /init ran.
    pub init_ms: u64,
    /// The agent answered.
    pub agent_ms: u64,
}

/// A running host.
#[derive(Debug)]
pub struct Host {
    /// The QEMU process (killed on drop).
    pub qemu: QemuProcess,
    /// QMP session.
    pub qmp: Qmp,
    /// Serial console.
    pub console: Console,
    /// Agent channel.
    pub agent: AgentClient,
    /// The e1000e netdev socket the harness owns (QEMU connects to it).
    pub net: Option<UnixListener>,
    /// Files of this host.
    pub paths: RunPaths,
    /// Boot milestones.
    pub timings: BootTimings,
    /// The machine's host slot this QEMU runs in (last: freed after QEMU is gone).
    _slot: HostSlot,
}

impl Host {
    /// Boots `params` with its files in `run_dir`, once a host slot is free
    /// (the wait comes before any deadline starts).
    pub fn boot(params: &MachineParams, run_dir: &Path, deadlines: Deadlines) -> Result<Self> {
        Self::boot_in(HostSlot::acquire()?, params, run_dir, deadlines)
    }

    /// [`Host::boot`] in a slot the caller already holds.
    pub fn boot_in(slot: HostSlot, params: &MachineParams, run_dir: &Path, deadlines: Deadlines) -> Result<Self> {
        crate::setup::require_qemu()?;
        // QEMU's options separate fields with ',': a path holding one is cut.
        if run_dir.to_string_lossy().contains(',') {
            anyhow::bail!("{}: a run directory's path may not contain ',' (QEMU's option separator): choose another --out", run_dir.display());
        }
        let paths = RunPaths::new(run_dir);
        std::fs::create_dir_all(run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
        std::fs::create_dir_all(paths.sock_dir()).with_context(|| format!("creating {}", paths.sock_dir().display()))?;
        let net = match params.nic {
            Some(_) => {
                let _ = std::fs::remove_file(paths.net_sock());
                Some(UnixListener::bind(paths.net_sock()).context("binding the netdev socket")?)
            }
            None => None,
        };
        let start = Instant::now();
        let mut qemu = QemuProcess::spawn(params, &paths)?;
        Self::connect_and_boot(&mut qemu, &paths, deadlines, start)
            .with_context(|| format!("booting QEMU (pid {}); run directory kept: {}", qemu.pid(), run_dir.display()))
            .map(|(qmp, console, agent, timings)| Self { qemu, qmp, console, agent, net, paths, timings, _slot: slot })
    }

    fn connect_and_boot(
        qemu: &mut QemuProcess,
        paths: &RunPaths,
        d: Deadlines,
        start: Instant,
    ) -> Result<(Qmp, Console, AgentClient, BootTimings)> {
        let ms = |t: Instant| t.duration_since(start).as_millis() as u64;
        let mut timings = BootTimings::default();
        let mut qmp = qmp::connect_when_ready(&paths.qmp_sock(), &qmp::log_path(&paths.dir), start + d.qmp, || {
            qemu.check_alive()
        })?;
        timings.qmp_ms = ms(Instant::now());
        let mut console = Console::connect(&paths.console_sock(), &paths.console_log())?;
        let mut agent = AgentClient::connect(&paths.agent_sock())?;
        qmp.execute(&qapi::qmp::cont {}, Duration::from_secs(10))?;
        let init_deadline = Instant::now() + d.init;
        let within = || format!("boot did not reach our /init within the {:?} init deadline", d.init);
        let needles = boot_needles();
        let found = console.expect(&needles, init_deadline, || qemu.check_alive()).with_context(within)?;
        if found.index > 1 {
            return Finding::err(Reason::KernelPanic, format!("the kernel panicked before printing its banner\n{}", console.tail(20)));
        }
        timings.kernel_ms = ms(Instant::now());
        if found.index == 0 {
            let found = console.expect(&needles[1..], init_deadline, || qemu.check_alive()).with_context(within)?;
            if found.index > 0 {
                return Finding::err(Reason::KernelPanic, format!("the kernel panicked during boot\n{}", console.tail(20)));
            }
        }
        timings.init_ms = ms(Instant::now());
        agent.wait_ready(Instant::now() + d.agent, || qemu.check_alive()).with_context(|| {
            format!("agent not ready within the {:?} agent deadline; last 20 console lines:\n{}", d.agent, console.tail(20))
        })?;
        timings.agent_ms = ms(Instant::now());
        Ok((qmp, console, agent, timings))
    }

    /// Asks QEMU to quit and waits for it; the RAM file is removed afterwards
    /// QMP, the QEMU process and the agent, borrowed for a fault.
    pub fn parts(&mut self) -> crate::fault::HostParts<'_> {
        crate::fault::HostParts { qmp: &mut self.qmp, qemu: &mut self.qemu, agent: Some(&mut self.agent) }
    }

    /// (it is as large as the guest's memory), the logs stay.
    pub fn shutdown(mut self) -> Result<ExitStatus> {
        let status = self.quit(Duration::from_secs(10))?;
        let _ = std::fs::remove_file(self.paths.ram());
        status.with_context(|| format!("QEMU (pid {}) did not exit after QMP quit", self.qemu.pid()))
    }

    /// QMP `quit`, then wait up to `timeout` for QEMU to exit.
    fn quit(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        if let Some(status) = self.qemu.try_wait()? {
            return Ok(Some(status));
        }
        let _ = self.qmp.execute(&qapi::qmp::quit {}, Duration::from_secs(5));
        self.qemu.wait_exit(timeout)
    }
}

impl Drop for Host {
    /// QMP `quit` first; `QemuProcess`'s own drop then sends SIGTERM and
    /// SIGKILL to the group if QEMU is still there.
    fn drop(&mut self) {
        let _ = self.quit(Duration::from_secs(3));
        if self.paths.sock_dir() != self.paths.dir {
            let _ = std::fs::remove_dir_all(self.paths.sock_dir());
        }
    }
}
