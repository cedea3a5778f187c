//! The device engines a run drives, behind one trait: the RX stream on the
//! e1000e ([`super::rx::RxEngine`]) and the NVMe reads
//! ([`super::nvme::NvmeEngine`]). `start_dma` starts the engines the
//! scenario has tables for; every later phase of the run (before a live
//! update's jump, the new agent taking the engines back, after the update,
//! `settle`, the last look the oracles get) is one call per engine through
//! [`Runner::each_engine`]. An engine keeps its own state (layout, scanner,
//! injector, ledger) and reaches the host, the RAM file and the run
//! directory through the runner it is handed. A third device is one more
//! implementation, one field and one line in `start_dma` and in `each_engine`.

use std::time::Duration;

use anyhow::Result;

use super::Runner;
use crate::oracle::registry::{NvmeObservations, RxObservations};

/// What the engines hand the oracles at the end of a run.
#[derive(Default)]
pub(super) struct EngineObservations {
    /// The RX stream: sent, seen, the agent's counters, QEMU's capture.
    pub rx: Option<RxObservations>,
    /// The NVMe blocks in place.
    pub nvme: Option<NvmeObservations>,
}

/// One device engine, phase by phase.
pub(super) trait DeviceEngine {
    /// `start_dma`: the agent takes the device and starts DMA, the harness
    /// starts watching its memory. `None`: the scenario has no such engine.
    fn start(r: &mut Runner<'_>) -> Result<Option<Self>>
    where
        Self: Sized;
    /// Right before a live update's jump (after the isolation spans of
    /// non-persistent engines ended).
    fn before_jump(&mut self, _r: &mut Runner<'_>) -> Result<()> {
        Ok(())
    }
    /// After a live update that resumes: the new agent takes a persistent
    /// engine back.
    fn resume(&mut self, _r: &mut Runner<'_>) -> Result<()> {
        Ok(())
    }
    /// After every engine resumed: an engine the kexec ended starts again.
    fn after_update(&mut self, _r: &mut Runner<'_>) -> Result<()> {
        Ok(())
    }
    /// `settle`: returns once everything sent is in memory, or nothing more
    /// arrived for `quiet` (the oracles then say what is missing).
    fn settle(&mut self, r: &mut Runner<'_>, quiet: Duration) -> Result<()>;
    /// The last look from outside, into the oracles' observations.
    fn observe(&mut self, r: &mut Runner<'_>, into: &mut EngineObservations) -> Result<()>;
}

impl<'a> Runner<'a> {
    /// Runs `phase` on every running engine, RX first. Each engine is taken
    /// out of the runner while its phase runs and put back after, also
    /// when the phase fails.
    pub(super) fn each_engine(&mut self, mut phase: impl FnMut(&mut dyn DeviceEngine, &mut Runner<'a>) -> Result<()>) -> Result<()> {
        if let Some(mut e) = self.rx.take() {
            let done = phase(&mut e, self);
            self.rx = Some(e);
            done?;
        }
        if let Some(mut e) = self.nvme.take() {
            let done = phase(&mut e, self);
            self.nvme = Some(e);
            done?;
        }
        Ok(())
    }
}
