//! Live update of a running host: stage the next kernel and initramfs inside
//! it (over the agent channel), `kexec_file_load`, jump, and follow the
//! transition on the console until the new agent answers.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use lulab_proto::{Op, Reply};
use serde::Serialize;

use crate::fault::{Faults, HostParts, Moment};
use crate::host::{boot_needles, Deadlines, Host};
use crate::report::{Finding, Reason};
use crate::traffic::clock::now_ns;

/// Where the staged kernel and initramfs live inside the host (its rootfs is RAM).
const STAGE_DIR: &str = "/tmp/lulab-next";
/// Raw bytes per `put_file` request (base64 makes it 4/3 on the wire).
const CHUNK: usize = 768 * 1024;

/// The kernel a live update jumps into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KexecTarget {
    /// bzImage on this machine.
    pub kernel: PathBuf,
    /// Initramfs on this machine.
    pub initrd: PathBuf,
    /// The next kernel's command line (carve-out parameters must be repeated here).
    pub cmdline: Vec<String>,
}

/// Milliseconds of one live update, measured from the harness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UpdateTimings {
    /// Copying kernel + initramfs into the host.
    pub stage_ms: u64,
    /// `kexec_file_load`.
    pub load_ms: u64,
    /// Jump requested → new kernel's banner on the console.
    pub to_banner_ms: u64,
    /// Jump requested → our /init in the new kernel.
    pub to_init_ms: u64,
    /// Jump requested → the new agent answers (agent downtime, upper bound).
    pub to_agent_ms: u64,
}

/// When each milestone of a jump was seen, on the harness's monotonic clock
/// ([`now_ns`], the one frames and scanner sightings are stamped with).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JumpStamps {
    /// The update's first request (`hand_over`) about to be sent to the agent.
    pub kexec_started_ns: u64,
    /// The agent's reply to `hand_over`: hand-over written, kexec not yet requested.
    pub handed_over_ns: Option<u64>,
    /// The agent's reply to it: its last words before the jump.
    pub agent_down_ns: Option<u64>,
    /// The new kernel's banner (`Linux version`) on the console, or its
    /// /init ready line when the banner came garbled (`kernel_up_from`).
    pub kernel_up_ns: Option<u64>,
    /// What `kernel_up_ns` was read from.
    pub kernel_up_from: crate::oracle::timeline::KernelUpFrom,
    /// Our /init in the new kernel.
    pub init_ns: Option<u64>,
    /// The new agent's first answer.
    pub agent_up_ns: Option<u64>,
}

impl Host {
    /// Kexecs the host into `target` and waits for the new agent.
    pub fn live_update(&mut self, target: &KexecTarget, d: Deadlines) -> Result<UpdateTimings> {
        let (stage_ms, load_ms) = self.stage_update(target)?;
        Ok(UpdateTimings { stage_ms, load_ms, ..self.jump(d)? })
    }

    /// Copies `target` into the host and `kexec_file_load`s it, so that a
    /// later [`Host::jump`] is quick. Returns (copy ms, load ms).
    pub fn stage_update(&mut self, target: &KexecTarget) -> Result<(u64, u64)> {
        let start = Instant::now();
        let kernel = format!("{STAGE_DIR}/bzImage");
        let initrd = format!("{STAGE_DIR}/initrd");
        self.put_file(&target.kernel, &kernel)?;
        self.put_file(&target.initrd, &initrd)?;
        let stage_ms = start.elapsed().as_millis() as u64;
        let load = Instant::now();
        let op = Op::KexecLoad { kernel, initrd, cmdline: target.cmdline.join(" ") };
        self.agent.call(op, Duration::from_secs(60)).context("kexec_file_load in the host")?;
        Ok((stage_ms, load.elapsed().as_millis() as u64))
    }

    /// Jumps into the kernel loaded by [`Host::stage_update`] and follows the
    /// console until the new agent answers.
    pub fn jump(&mut self, d: Deadlines) -> Result<UpdateTimings> {
        let mut s = JumpStamps::default();
        self.jump_stamped(d, &mut s, None)?;
        let ms = |t: Option<u64>| t.map_or(0, |t| t.saturating_sub(s.kexec_started_ns) / 1_000_000);
        Ok(UpdateTimings { to_banner_ms: ms(s.kernel_up_ns), to_init_ms: ms(s.init_ns), to_agent_ms: ms(s.agent_up_ns), ..Default::default() })
    }

    /// [`Host::jump`], stamping each milestone into `s` as it is seen, so
    /// that a jump that fails half-way still tells how far it got. `faults`
    /// armed for a moment of this update fire when it comes, and lasting
    /// ones end on time while the jump waits on the console.
    pub fn jump_stamped(&mut self, d: Deadlines, s: &mut JumpStamps, mut faults: Option<&mut Faults>) -> Result<()> {
        let jump = Instant::now();
        let Host { qemu, qmp, console, agent, paths, .. } = self;
        fire(&mut faults, Moment::Kexec, HostParts { qmp, qemu, agent: Some(&mut *agent) })?;
        s.kexec_started_ns = now_ns();
        match agent.call_polling(Op::HandOver, Duration::from_secs(30), &mut || poll(&mut faults, qmp, qemu)) {
            Ok(Reply::Done) => s.handed_over_ns = Some(now_ns()),
            Ok(other) => bail!("unexpected reply to hand_over: {other:?}"),
            Err(e) => return Err(e).context("asking the agent to hand its engines over"),
        }
        fire(&mut faults, Moment::HandedOver, HostParts { qmp, qemu, agent: Some(&mut *agent) })?;
        // The reply can be lost: the agent answers and jumps at once, and the
        // kexec resets the virtio-serial device before QEMU forwarded it. The
        // new kernel's banner on the console then answers instead.
        let mut unanswered = None;
        match agent.call_polling(Op::KexecExec, Duration::from_secs(10), &mut || poll(&mut faults, qmp, qemu)) {
            Ok(Reply::Done) => s.agent_down_ns = Some(now_ns()),
            Ok(other) => bail!("unexpected reply to kexec_exec: {other:?}"),
            Err(e) => unanswered = Some(e),
        }
        fire(&mut faults, Moment::AgentDown, HostParts { qmp, qemu, agent: None })?;
        let deadline = jump + d.init;
        let needles = boot_needles();
        let found = match (console.expect(&needles, deadline, || poll(&mut faults, qmp, qemu)), unanswered) {
            (Ok(found), _) => found,
            (Err(e), None) => return Err(e).context(cpu_dump(qmp, paths, "banner")).context("kexec: new kernel banner"),
            (Err(_), Some(e)) => return Err(e).context("asking the agent to kexec (no reply, and no new kernel on the console)"),
        };
        if found.index > 1 {
            return Finding::err(Reason::KernelPanic, format!("the kernel panicked during the kexec\n{}", console.tail(20)));
        }
        s.kernel_up_ns = Some(now_ns());
        if found.index != 0 {
            s.kernel_up_from = crate::oracle::timeline::KernelUpFrom::Init;
        }
        fire(&mut faults, Moment::KernelUp, HostParts { qmp, qemu, agent: None })?;
        if found.index == 0 {
            let found = match console.expect(&needles[1..], deadline, || poll(&mut faults, qmp, qemu)) {
                Ok(found) => found,
                Err(e) => return Err(e).context(cpu_dump(qmp, paths, "init")).context("kexec: /init of the new kernel"),
            };
            if found.index > 0 {
                return Finding::err(Reason::KernelPanic, format!("the new kernel panicked during boot\n{}", console.tail(20)));
            }
        }
        s.init_ns = Some(now_ns());
        fire(&mut faults, Moment::Init, HostParts { qmp, qemu, agent: None })?;
        agent.wait_ready(Instant::now() + d.agent, || poll(&mut faults, qmp, qemu)).context("kexec: the new agent did not answer")?;
        s.agent_up_ns = Some(now_ns());
        fire(&mut faults, Moment::AgentUp, HostParts { qmp, qemu, agent: Some(&mut *agent) })?;
        Ok(())
    }

    /// Copies a local file into the host in chunks.
    pub fn put_file(&mut self, local: &Path, remote: &str) -> Result<()> {
        let mut f = std::fs::File::open(local).with_context(|| format!("reading {}", local.display()))?;
        let mut buf = vec![0u8; CHUNK];
        let mut append = false;
        loop {
            let n = read_full(&mut f, &mut buf).with_context(|| format!("reading {}", local.display()))?;
            if n == 0 && append {
                return Ok(());
            }
            let data_b64 = base64::engine::general_purpose::STANDARD.encode(&buf[..n]);
            let op = Op::PutFile { path: remote.into(), data_b64, append };
            self.agent.call(op, Duration::from_secs(60)).with_context(|| format!("copying {} to the host", local.display()))?;
            append = true;
            if n < CHUNK {
                return Ok(());
            }
        }
    }
}

/// A kexec'd kernel that missed its deadline: every vCPU's registers and
/// local APIC as QEMU sees them (HMP `info registers -a`, `info lapic` per
/// APIC id), into `cpu-state-<what>.txt` in the host's directory, for telling
/// a CPU stuck in the kernel from one that never got an IPI. Returns the
/// line that names the file (or why there is none).
fn cpu_dump(qmp: &mut crate::qmp::Qmp, paths: &crate::qemu::params::RunPaths, what: &str) -> String {
    let hmp = |qmp: &mut crate::qmp::Qmp, cmd: &str| -> String {
        match qmp.execute_raw("human-monitor-command", serde_json::json!({ "command-line": cmd }), Duration::from_secs(10)) {
            Ok(v) => v.as_str().unwrap_or_default().to_string(),
            Err(e) => format!("({cmd}: {e:#})\n"),
        }
    };
    let mut text = format!("# info registers -a\n{}", hmp(qmp, "info registers -a"));
    let cpus = hmp(qmp, "info cpus");
    text.push_str(&format!("# info cpus\n{cpus}"));
    // APIC ids are the CPU indices on these machines (one socket, no SMT).
    for i in 0..cpus.lines().filter(|l| l.contains("CPU #")).count() {
        text.push_str(&format!("# info lapic {i}\n{}", hmp(qmp, &format!("info lapic {i}"))));
    }
    let file = paths.dir.join(format!("cpu-state-{what}.txt"));
    match std::fs::write(&file, text) {
        Ok(()) => format!("vCPU registers and local APICs at the deadline: {}", file.display()),
        Err(e) => format!("writing {}: {e}", file.display()),
    }
}

/// Fires the faults armed for `m`, if any.
fn fire(faults: &mut Option<&mut Faults>, m: Moment, mut host: HostParts) -> Result<()> {
    match faults.as_deref_mut() {
        Some(f) => f.at(m, &mut host),
        None => Ok(()),
    }
}

/// While the jump waits: QEMU must live, and lasting faults end on time.
fn poll(faults: &mut Option<&mut Faults>, qmp: &mut crate::qmp::Qmp, qemu: &mut crate::qemu::QemuProcess) -> Result<()> {
    qemu.check_alive()?;
    match faults.as_deref_mut() {
        Some(f) => f.poll(&mut HostParts { qmp, qemu, agent: None }),
        None => Ok(()),
    }
}

fn read_full(f: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
