//! Faults injected into a run, at a step or at a moment of the next live
//! update: one enum of kinds ([`FaultKind`]), one trait ([`Fault`]) that each
//! kind implements (what it needs, how it is injected, what it makes the run
//! expect), and the driver that fires them ([`Faults`]).
//!
//! A scenario asks for one with a step:
//!
//! ```toml
//! [[steps]]
//! do = "fault"
//! fault = "link_flap"  # FaultKind
//! at = "kernel_up"     # a Moment of the next live_update; absent: here
//! duration_ms = 800    # for faults that last
//! ```
//!
//! Adding a fault: a variant here, an implementation in its own file of this
//! directory (registered in [`build`]), and a scenario file.

mod agent_kill;
mod bus_master_off;
mod canary_write;
mod cross_device_mapping;
mod device_reset;
mod driver;
mod handover_corrupt;
mod hits;
mod ir_not_kept;
mod irq_left_armed;
mod kexec_bad_image;
mod memory_pressure;
mod link_flap;
mod qemu_kill;
mod resume_iova_skew;
mod resume_read_only;
mod root_table_copy;
mod shaping;
mod unmapped_slots;
mod vm_pause;

pub use driver::{Faults, HostParts, Targets};
pub use hits::{from_journal, outside_their_moment, FaultHit};
pub use shaping::{Shape, Shaped, Shaping};

use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::report::Reason;
use crate::scenario::{Scenario, Verdict};

/// Every kind of fault a scenario can inject. The list is closed: an unknown
/// `fault` is a parse error naming its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The e1000e's link goes down for `duration_ms`, then up (QMP
    /// `set_link` on the NIC): QEMU holds the frames back meanwhile.
    LinkFlap,
    /// The whole VM stops for `duration_ms`, then continues (QMP `stop` /
    /// `cont`): devices and CPUs freeze, nothing may be lost.
    VmPause,
    /// QEMU is killed (SIGKILL): the run cannot be carried out.
    QemuKill,
    /// The harness writes into an engine's canary page through the RAM file
    /// (`engine = "rx"` or `"nvme"`): a stray CPU write the memory oracle
    /// must see.
    CanaryWrite,
    /// The host clears the NIC's PCI bus-master bit under the running
    /// agent: the device can no longer DMA.
    BusMasterOff,
    /// The host is asked to kexec-load an image that is not a kernel: it
    /// must refuse, and the old kernel and agent keep running.
    KexecBadImage,
    /// The host fills `size_mib` MiB of its RAM file system and frees it.
    MemoryPressure,
    /// The agent resets the e1000e (`CTRL.RST`) under its running engine:
    /// the device forgets its ring and stops taking frames.
    DeviceReset,
    /// The harness overwrites the start of a persistent engine's hand-over
    /// file in pkernfs (through the RAM file) during the jump: the new
    /// agent must refuse it and quiesce the device.
    HandoverCorrupt,
    /// The RX engine starts with its last `slots` descriptors on an IOVA it
    /// never mapped (a step before `start_dma`): VT-d must fault them.
    UnmappedSlots,
    /// Resuming agents rebuild the persistent RX engine's mappings `skew`
    /// bytes off the frozen ones (a step before the `live_update`): the
    /// kernel must refuse to switch.
    ResumeIovaSkew,
    /// Resuming agents rebuild the persistent RX engine's buffers read-only
    /// for the device where the frozen mappings are read-write (a step
    /// before the `live_update`): the kernel must refuse to switch.
    ResumeReadOnly,
    /// The non-persistent NVMe engine's buffer IOVAs map the e1000e's
    /// guest-RAM file (a step before `start_dma`): the isolation oracle
    /// must name the cross-device translations.
    CrossDeviceMapping,
    /// Following live updates' kernels copy the VT-d tables out of pkernfs
    /// (kdump path) instead of adopting them in place (a step before the
    /// `live_update`): the IOMMU oracle must see the root outside pkernfs.
    RootTableCopy,
    /// RX engines with MSI-X interrupts hand over with the RX interrupt
    /// still enabled in the device (a step before `start_dma`): interrupts
    /// raised while no agent runs reach no agent.
    IrqLeftArmed,
    /// Following live updates' kernels throw away the interrupt-remapping
    /// table kept in pkernfs (`lulab_ir_keep=0`, a step before the
    /// `live_update`): interrupt remapping goes off during the update.
    IrNotKept,
    /// The agent dies (SIGKILL) as a crashing VMM and /init starts a new
    /// one: as a step, the new agent takes the persistent RX engine back
    /// from its fd keeper after `duration_ms`; at `handed_over`, the update
    /// goes on from the dead agent's hand-over.
    AgentKill,
}

impl FaultKind {
    /// Every kind, in documentation order.
    pub const ALL: &'static [FaultKind] = &[
        FaultKind::LinkFlap,
        FaultKind::VmPause,
        FaultKind::QemuKill,
        FaultKind::CanaryWrite,
        FaultKind::BusMasterOff,
        FaultKind::KexecBadImage,
        FaultKind::MemoryPressure,
        FaultKind::DeviceReset,
        FaultKind::HandoverCorrupt,
        FaultKind::UnmappedSlots,
        FaultKind::ResumeIovaSkew,
        FaultKind::ResumeReadOnly,
        FaultKind::CrossDeviceMapping,
        FaultKind::RootTableCopy,
        FaultKind::AgentKill,
        FaultKind::IrqLeftArmed,
        FaultKind::IrNotKept,
    ];

    /// Its name in scenario files (`link_flap`).
    pub fn name(self) -> String {
        crate::wire_name(&self)
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// The moments of a live update a fault can be aimed at, in the order they
/// happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Moment {
    /// The next kernel is staged; the update's first request (`hand_over`)
    /// is about to go to the old agent.
    Kexec,
    /// The old agent wrote its hand-over and stopped polling (the devices
    /// keep running); the kexec is not requested yet and the agent still answers.
    HandedOver,
    /// The old agent answered `kexec_exec`: the jump is under way, no agent runs.
    AgentDown,
    /// The new kernel's banner is on the console.
    KernelUp,
    /// The new kernel runs our /init.
    Init,
    /// The new agent answers, before it takes its engines back.
    AgentUp,
    /// The new agent is taking its engines back: the first resuming
    /// `dma_start` is sent and not yet answered (the agent is busy).
    Resume,
}

impl Moment {
    /// Every moment, in order.
    pub const ALL: &'static [Moment] =
        &[Moment::Kexec, Moment::HandedOver, Moment::AgentDown, Moment::KernelUp, Moment::Init, Moment::AgentUp, Moment::Resume];

    /// An agent answers at this moment (the old one before the jump, the new one after).
    pub fn agent_runs(self) -> bool {
        matches!(self, Moment::Kexec | Moment::HandedOver | Moment::AgentUp)
    }

    /// Its name in scenario files (`kernel_up`).
    pub fn name(self) -> String {
        crate::wire_name(&self)
    }
}

/// The engine a fault aims at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// The e1000e RX engine (`[rx]`).
    Rx,
    /// The NVMe engine (`[nvme]`).
    Nvme,
}

/// `do = "fault"`: the step as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultStep {
    /// Which fault (`fault = "link_flap"`).
    #[serde(rename = "fault")]
    pub kind: FaultKind,
    /// A moment of the next `live_update` (absent: where the step stands).
    pub at: Option<Moment>,
    /// Instead of `at`: fires once the injector has written this many
    /// frames in all (from the start of `inject`), wherever the run is
    /// then: in a step's wait or in a live update.
    pub after_frames: Option<u64>,
    /// How long a lasting fault lasts (`link_flap`, `vm_pause`).
    pub duration_ms: Option<u64>,
    /// The engine a fault aims at (`canary_write`, `handover_corrupt`).
    pub engine: Option<Engine>,
    /// How much (`memory_pressure`).
    pub size_mib: Option<u64>,
    /// How many RX descriptors (`unmapped_slots`).
    pub slots: Option<u32>,
    /// How many bytes off (`resume_iova_skew`).
    pub skew: Option<u64>,
}

/// What a fault makes a run expect (when nothing else in the scenario
/// breaks it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    /// The system under test must ride it out.
    Intact,
    /// Broken, for (some of) these reasons.
    Broken(&'static [Reason]),
    /// The run cannot be carried out.
    Error,
}

impl Expectation {
    /// The verdict.
    pub fn verdict(&self) -> Verdict {
        match self {
            Expectation::Intact => Verdict::Intact,
            Expectation::Broken(_) => Verdict::Broken,
            Expectation::Error => Verdict::Error,
        }
    }

    /// What a run with all of `faults` expects: the gravest verdict, with
    /// every broken fault's reasons.
    pub fn combined(faults: &[Expectation]) -> (Verdict, Vec<Reason>) {
        let verdict = faults.iter().map(Expectation::verdict).max_by_key(|v| match v {
            Verdict::Intact => 0,
            Verdict::Broken => 1,
            Verdict::Error => 2,
        });
        let mut reasons: Vec<Reason> =
            faults.iter().filter_map(|f| if let Expectation::Broken(r) = f { Some(*r) } else { None }).flatten().copied().collect();
        reasons.sort();
        reasons.dedup();
        (verdict.unwrap_or(Verdict::Intact), reasons)
    }
}

/// One kind of fault.
pub trait Fault: Send {
    /// Its kind.
    fn kind(&self) -> FaultKind;
    /// What the scenario must have for it (an `[rx]`, a persistent engine…);
    /// the message starts with the field it names.
    fn requires(&self, sc: &Scenario) -> Result<(), String>;
    /// Whether it needs a running agent (then only at a step, or at a
    /// moment where one answers).
    fn needs_agent(&self) -> bool {
        false
    }
    /// The moments it can be aimed at (a step without `at` always works).
    fn moments(&self) -> &'static [Moment] {
        Moment::ALL
    }
    /// Injects it; returns a line for the journal (what exactly was done).
    fn inject(&mut self, host: &mut HostParts, targets: &Targets) -> Result<String>;
    /// How long it lasts before [`Fault::end`] (None: it does not end).
    fn lasts(&self) -> Option<Duration> {
        None
    }
    /// Ends a lasting fault.
    fn end(&mut self, _host: &mut HostParts) -> Result<()> {
        Ok(())
    }
    /// What it makes the run expect.
    fn expects(&self) -> Expectation;
    /// A fault that changes a request the harness makes later (an engine's
    /// start, an update's kernel or resume) rather than the running host:
    /// what it changes. It is a step of its own (no `at`, no `after_frames`),
    /// before what it shapes.
    fn shapes(&self) -> Option<Shape> {
        None
    }
}

/// For a fault on the e1000e: the scenario must have an `[rx]` table;
/// `does` says what the fault does to it (for the message).
fn needs_rx<'a>(sc: &'a Scenario, kind: FaultKind, does: &str) -> Result<&'a crate::scenario::RxSpec, String> {
    match &sc.rx {
        Some(rx) => Ok(rx),
        None => Err(format!("fault: \"{kind}\" {does} the e1000e: needs an [rx] table")),
    }
}

/// The fault `step` asks for, with its parameters checked: the error names
/// the field (`duration_ms: …`).
pub fn build(step: &FaultStep) -> Result<Box<dyn Fault>, String> {
    let only = |allowed: &[&str]| -> Result<(), String> {
        let given = [
            ("duration_ms", step.duration_ms.is_some()),
            ("engine", step.engine.is_some()),
            ("size_mib", step.size_mib.is_some()),
            ("slots", step.slots.is_some()),
            ("skew", step.skew.is_some()),
        ];
        for (name, given) in given {
            if given && !allowed.contains(&name) {
                return Err(format!("{name}: fault = \"{}\" takes no `{name}`", step.kind));
            }
        }
        Ok(())
    };
    let duration = |max_ms: u64| -> Result<Duration, String> {
        match step.duration_ms {
            None => Err(format!("duration_ms: fault = \"{}\" needs how long it lasts (1..={max_ms})", step.kind)),
            Some(ms) if ms == 0 || ms > max_ms => Err(format!("duration_ms: {ms} must be in 1..={max_ms}")),
            Some(ms) => Ok(Duration::from_millis(ms)),
        }
    };
    Ok(match step.kind {
        FaultKind::LinkFlap => {
            only(&["duration_ms"])?;
            Box::new(link_flap::LinkFlap::new(duration(10_000)?))
        }
        FaultKind::VmPause => {
            only(&["duration_ms"])?;
            Box::new(vm_pause::VmPause::new(duration(5_000)?))
        }
        FaultKind::QemuKill => {
            only(&[])?;
            Box::new(qemu_kill::QemuKill)
        }
        FaultKind::CanaryWrite => {
            only(&["engine"])?;
            let engine = step.engine.ok_or_else(|| "engine: fault = \"canary_write\" needs engine = \"rx\" or \"nvme\"".to_string())?;
            Box::new(canary_write::CanaryWrite::new(engine))
        }
        FaultKind::KexecBadImage => {
            only(&[])?;
            Box::new(kexec_bad_image::KexecBadImage)
        }
        FaultKind::MemoryPressure => {
            only(&["size_mib"])?;
            match step.size_mib {
                Some(mib) if mib > 0 => Box::new(memory_pressure::MemoryPressure::new(mib)),
                _ => return Err("size_mib: fault = \"memory_pressure\" needs how many MiB (> 0)".into()),
            }
        }
        FaultKind::BusMasterOff => {
            only(&[])?;
            Box::new(bus_master_off::BusMasterOff)
        }
        FaultKind::DeviceReset => {
            only(&[])?;
            Box::new(device_reset::DeviceReset)
        }
        FaultKind::HandoverCorrupt => {
            only(&["engine"])?;
            let engine = step.engine.ok_or_else(|| "engine: fault = \"handover_corrupt\" needs engine = \"rx\" or \"nvme\"".to_string())?;
            Box::new(handover_corrupt::HandoverCorrupt::new(engine))
        }
        FaultKind::UnmappedSlots => {
            only(&["slots"])?;
            let slots = step.slots.ok_or_else(|| "slots: fault = \"unmapped_slots\" needs how many descriptors".to_string())?;
            Box::new(unmapped_slots::UnmappedSlots { slots })
        }
        FaultKind::ResumeIovaSkew => {
            only(&["skew"])?;
            let skew = step.skew.ok_or_else(|| "skew: fault = \"resume_iova_skew\" needs how many bytes off (a multiple of 4096)".to_string())?;
            Box::new(resume_iova_skew::ResumeIovaSkew { skew })
        }
        FaultKind::CrossDeviceMapping => {
            only(&[])?;
            Box::new(cross_device_mapping::CrossDeviceMapping)
        }
        FaultKind::ResumeReadOnly => {
            only(&[])?;
            Box::new(resume_read_only::ResumeReadOnly)
        }
        FaultKind::RootTableCopy => {
            only(&[])?;
            Box::new(root_table_copy::RootTableCopy)
        }
        FaultKind::IrqLeftArmed => {
            only(&[])?;
            Box::new(irq_left_armed::IrqLeftArmed)
        }
        FaultKind::IrNotKept => {
            only(&[])?;
            Box::new(ir_not_kept::IrNotKept)
        }
        FaultKind::AgentKill => {
            only(&["duration_ms"])?;
            let down_for = match (step.at, step.duration_ms) {
                (Some(_), Some(_)) => return Err("duration_ms: at a moment of an update the update itself starts the next agent; `duration_ms` is for agent_kill as a step".into()),
                (Some(_), None) => None,
                (None, _) => Some(duration(60_000)?),
            };
            Box::new(agent_kill::AgentKill::new(down_for))
        }
    })
}

/// Checks a scenario's `do = "fault"` steps (`steps` as written, before
/// `repeat`): each builds, has what it needs, aims at a moment of a later
/// `live_update` and an agent when it needs one; and the scenario expects
/// what its faults make it expect. Errors name the step index and field.
pub fn validate(sc: &Scenario) -> Result<(), (usize, String)> {
    let mut expected = Vec::new();
    for (i, step) in sc.steps.iter().enumerate() {
        let crate::scenario::Step::Fault(f) = step else { continue };
        let fault = build(f).map_err(|m| (i, m))?;
        fault.requires(sc).map_err(|m| (i, m))?;
        if let Some(shape) = fault.shapes() {
            if f.after_frames.is_some() {
                return Err((i, format!("after_frames: fault = \"{}\" changes a later request, a step of its own: no `after_frames`", f.kind)));
            }
            let later = |p: fn(&crate::scenario::Step) -> bool| sc.steps[i + 1..].iter().any(p);
            let ok = match shape.shapes() {
                Shaped::EngineStart => later(|s| matches!(s, crate::scenario::Step::StartDma)),
                Shaped::LiveUpdate => later(|s| matches!(s, crate::scenario::Step::LiveUpdate { .. })),
            };
            if !ok {
                let what = if shape.shapes() == Shaped::EngineStart { "`start_dma`" } else { "`live_update`" };
                return Err((i, format!("fault: \"{}\" shapes a later {what}, and none follows", f.kind)));
            }
        }
        if let Some(n) = f.after_frames {
            if f.at.is_some() {
                return Err((i, "after_frames: a fault fires at a moment (`at`) or after a number of frames, not both".into()));
            }
            let Some(rx) = &sc.rx else { return Err((i, "after_frames: counts the [rx] injector's frames: needs an [rx] table".into())) };
            if n == 0 || n > rx.frames {
                return Err((i, format!("after_frames: {n} must be in 1..={} (rx.frames)", rx.frames)));
            }
            if !sc.steps.iter().any(|s| matches!(s, crate::scenario::Step::Inject)) {
                return Err((i, "after_frames: counts the frames of `inject`, and there is no `inject` step".into()));
            }
            if fault.needs_agent() {
                return Err((i, format!("after_frames: fault = \"{}\" needs a running agent, and the count may come while none runs", f.kind)));
            }
        }
        if let Some(at) = f.at {
            let next = sc.steps[i + 1..].iter().find_map(|s| match s {
                crate::scenario::Step::LiveUpdate { resume, .. } => Some(*resume),
                _ => None,
            });
            let Some(resumes) = next else {
                return Err((i, format!("at: \"{}\" is a moment of a live update, and no `live_update` step follows", at.name())));
            };
            if fault.moments().is_empty() {
                return Err((i, format!("at: fault = \"{}\" is a step of its own and takes no `at`", f.kind)));
            }
            if !fault.moments().contains(&at) {
                let names: Vec<String> = fault.moments().iter().map(|m| format!("\"{}\"", m.name())).collect();
                return Err((i, format!("at: fault = \"{}\" cannot be aimed at \"{}\" (it can at: {})", f.kind, at.name(), names.join(", "))));
            }
            if fault.needs_agent() && !at.agent_runs() {
                return Err((i, format!("at: fault = \"{}\" needs a running agent: at \"kexec\", \"handed_over\" or \"agent_up\", or no `at`", f.kind)));
            }
            let persistent = sc.rx.as_ref().is_some_and(|r| r.persist) || sc.nvme.as_ref().is_some_and(|n| n.persist);
            if at == Moment::Resume && !(resumes && persistent) {
                return Err((i, "at: \"resume\" comes when the new agent takes a persistent engine back: needs rx.persist or nvme.persist, and a following `live_update` that resumes".into()));
            }
        }
        expected.push(fault.expects());
    }
    let (verdict, _) = Expectation::combined(&expected);
    if verdict != Verdict::Intact && sc.expect != verdict {
        return Err((usize::MAX, format!("expect: its faults make this run {verdict}, not {}", sc.expect)));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
