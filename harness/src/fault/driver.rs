//! Firing faults: at a step, or armed for a moment of the next live update
//! and fired when the update reaches it; lasting faults end when their time
//! is up (polled while the update waits on the console), and every
//! injection and end goes into the run's journal.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use lulab_proto::PhysRange;

use super::{Engine, Fault, FaultKind, Moment};
use crate::agent::AgentClient;
use crate::journal::{Event, Journal};
use crate::qemu::QemuProcess;
use crate::qmp::Qmp;

/// The parts of a host a fault may touch, borrowed for one call.
pub struct HostParts<'a> {
    /// QMP.
    pub qmp: &'a mut Qmp,
    /// The QEMU process.
    pub qemu: &'a mut QemuProcess,
    /// The agent, when one answers at this moment.
    pub agent: Option<&'a mut AgentClient>,
}

impl std::fmt::Debug for HostParts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostParts").field("qemu_pid", &self.qemu.pid()).field("agent", &self.agent.is_some()).finish()
    }
}

/// What faults aim at, from the engines the run started.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    /// The host's RAM file and its size.
    pub ram: Option<(PathBuf, u64)>,
    /// Each engine's canary pages.
    pub canary: Vec<(Engine, Vec<PhysRange>)>,
    /// The NIC's PCI address in the host.
    pub nic_pci: String,
    /// The pkernfs carve-out (`[pkernfs]`).
    pub pkernfs: Option<PhysRange>,
    /// Each persistent engine's hand-over file, as a path in the pkernfs image.
    pub handover: Vec<(Engine, String)>,
    /// The run directory (faults that take an engine back write its layout there).
    pub out: Option<PathBuf>,
}

impl Targets {
    /// `engine`'s hand-over file in the pkernfs image.
    pub fn handover_of(&self, engine: Engine) -> Option<String> {
        self.handover.iter().find(|(e, _)| *e == engine).map(|(_, p)| p.clone())
    }

    /// `engine`'s canary pages (empty when it has none).
    pub fn canary_of(&self, engine: Engine) -> Vec<PhysRange> {
        self.canary.iter().filter(|(e, _)| *e == engine).flat_map(|(_, r)| r.iter().copied()).collect()
    }
}

struct Armed {
    step: usize,
    at: Moment,
    fault: Box<dyn Fault>,
}

/// A fault waiting for the injector's frame count.
struct ArmedFrames {
    step: usize,
    after: u64,
    fault: Box<dyn Fault>,
}

struct Active {
    step: usize,
    until: Instant,
    fault: Box<dyn Fault>,
}

/// The faults of one run.
pub struct Faults {
    armed: Vec<Armed>,
    armed_frames: Vec<ArmedFrames>,
    /// The injector's count of frames written (set at `inject`).
    frames: Option<Arc<AtomicU64>>,
    active: Vec<Active>,
    journal: Journal,
    /// What faults aim at (kept current by the runner).
    pub targets: Targets,
    /// Live updates so far (the update an armed fault hits is the next).
    pub update: u32,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("armed", &self.unfired())
            .field("active", &self.active.iter().map(|a| (a.step, a.fault.kind())).collect::<Vec<_>>())
            .field("targets", &self.targets)
            .field("update", &self.update)
            .finish()
    }
}

impl Faults {
    /// No faults yet; injections go into `journal`.
    pub fn new(journal: Journal) -> Self {
        Self { armed: Vec::new(), armed_frames: Vec::new(), frames: None, active: Vec::new(), journal, targets: Targets::default(), update: 0 }
    }

    /// Arms `fault` (step `step`) for the moment the injector has written `after` frames.
    pub fn arm_after_frames(&mut self, step: usize, after: u64, fault: Box<dyn Fault>) {
        self.journal.record(Event::FaultArmedAfterFrames { step, kind: fault.kind(), after_frames: after });
        self.armed_frames.push(ArmedFrames { step, after, fault });
    }

    /// The injector's frame counter, which `after_frames` faults watch.
    pub fn count_frames(&mut self, written: Arc<AtomicU64>) {
        self.frames = Some(written);
    }

    /// Arms `fault` (step `step`) for `at` of the next live update.
    pub fn arm(&mut self, step: usize, at: Moment, fault: Box<dyn Fault>) {
        self.journal.record(Event::FaultArmed { step, kind: fault.kind(), at, update: self.update + 1 });
        self.armed.push(Armed { step, at, fault });
    }

    /// Injects `fault` (step `step`) now; a lasting one ends before this returns.
    pub fn now(&mut self, step: usize, fault: Box<dyn Fault>, host: &mut HostParts) -> Result<()> {
        self.inject(step, None, fault, host)?;
        self.finish(host)
    }

    /// Fires every fault armed for `m`.
    pub fn at(&mut self, m: Moment, host: &mut HostParts) -> Result<()> {
        let (due, rest): (Vec<Armed>, Vec<Armed>) = std::mem::take(&mut self.armed).into_iter().partition(|a| a.at == m);
        self.armed = rest;
        for a in due {
            self.inject(a.step, Some(m), a.fault, host)?;
        }
        Ok(())
    }

    /// Ends the lasting faults whose time is up.
    /// Also fires the `after_frames` faults whose count has come.
    pub fn poll(&mut self, host: &mut HostParts) -> Result<()> {
        let written = self.frames.as_ref().map(|w| w.load(Ordering::Relaxed));
        if let Some(n) = written.filter(|_| !self.armed_frames.is_empty()) {
            let (due, rest): (Vec<ArmedFrames>, Vec<ArmedFrames>) = std::mem::take(&mut self.armed_frames).into_iter().partition(|a| a.after <= n);
            self.armed_frames = rest;
            for a in due {
                self.inject_with(a.step, None, Some((a.after, n)), a.fault, host)?;
            }
        }
        let now = Instant::now();
        let (due, rest): (Vec<Active>, Vec<Active>) = std::mem::take(&mut self.active).into_iter().partition(|a| a.until <= now);
        self.active = rest;
        for a in due {
            self.end(a, host)?;
        }
        Ok(())
    }

    /// Waits for every lasting fault to end and ends it (QEMU must still run).
    pub fn finish(&mut self, host: &mut HostParts) -> Result<()> {
        while let Some(next) = self.active.iter().map(|a| a.until).min() {
            host.qemu.check_alive()?;
            std::thread::sleep(next.saturating_duration_since(Instant::now()).min(Duration::from_millis(50)));
            self.poll(host)?;
        }
        Ok(())
    }

    /// Faults armed for moments that never came (the update failed first).
    pub fn unfired(&self) -> Vec<(usize, FaultKind, Moment)> {
        self.armed.iter().map(|a| (a.step, a.fault.kind(), a.at)).collect()
    }

    /// Every armed fault that has not fired, one line each (for a moment, or
    /// a frame count, that never came).
    pub fn never_fired(&self) -> Vec<String> {
        let at = self.armed.iter().map(|a| format!("step {} ({} at `{}`)", a.step + 1, a.fault.kind(), a.at.name()));
        let frames = self.armed_frames.iter().map(|a| format!("step {} ({} after {} frames)", a.step + 1, a.fault.kind(), a.after));
        at.chain(frames).collect()
    }

    fn inject(&mut self, step: usize, at: Option<Moment>, fault: Box<dyn Fault>, host: &mut HostParts) -> Result<()> {
        self.inject_with(step, at, None, fault, host)
    }

    /// Injects `fault`; `frames`: its `after_frames` and the injector's count that fired it.
    fn inject_with(&mut self, step: usize, at: Option<Moment>, frames: Option<(u64, u64)>, mut fault: Box<dyn Fault>, host: &mut HostParts) -> Result<()> {
        let kind = fault.kind();
        let detail = fault.inject(host, &self.targets).with_context(|| format!("injecting fault {kind} (step {})", step + 1))?;
        let detail = match frames {
            Some((_, n)) => format!("{detail} ({n} frames written)"),
            None => detail,
        };
        let update = at.map(|_| self.update + 1);
        let after_frames = frames.map(|(after, _)| after);
        self.journal.record(Event::FaultInjected { step, kind, at, update, after_frames, detail });
        if let Some(d) = fault.lasts() {
            self.active.push(Active { step, until: Instant::now() + d, fault });
        }
        Ok(())
    }

    fn end(&mut self, mut a: Active, host: &mut HostParts) -> Result<()> {
        let kind = a.fault.kind();
        a.fault.end(host).with_context(|| format!("ending fault {kind} (step {})", a.step + 1))?;
        self.journal.record(Event::FaultEnded { step: a.step, kind });
        Ok(())
    }
}
