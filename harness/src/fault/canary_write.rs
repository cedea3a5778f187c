//! `canary_write`: a stray CPU write into an engine's canary page, made by
//! the harness through the host's RAM file (as a kernel scribbling over
//! memory it does not own would). No device and no agent writes a canary
//! after it is set, so the memory oracle must name the page.

use anyhow::{bail, Context, Result};

use super::{Engine, Expectation, Fault, FaultKind, HostParts, Targets};
use crate::guest_memory::GuestMemory;
use crate::report::Reason;
use crate::scenario::Scenario;

/// Where in the first canary page the bytes go, and what they are.
const OFFSET: u64 = 0x80;
const BYTES: [u8; 16] = *b"lulab-fault-scrb";

pub(super) struct CanaryWrite {
    engine: Engine,
}

impl CanaryWrite {
    pub(super) fn new(engine: Engine) -> Self {
        Self { engine }
    }
}

impl Fault for CanaryWrite {
    fn kind(&self) -> FaultKind {
        FaultKind::CanaryWrite
    }

    fn requires(&self, sc: &Scenario) -> Result<(), String> {
        match self.engine {
            Engine::Rx if sc.rx.is_none() => Err("engine: \"rx\" needs an [rx] table".into()),
            Engine::Nvme if sc.nvme.is_none() => Err("engine: \"nvme\" needs an [nvme] table".into()),
            _ => Ok(()),
        }
    }

    fn inject(&mut self, _: &mut HostParts, t: &Targets) -> Result<String> {
        let Some(page) = t.canary_of(self.engine).first().copied() else {
            bail!("no {:?} engine with a canary has started (a canary_write needs `start_dma` before it)", self.engine)
        };
        let (path, size) = t.ram.clone().context("no RAM file: the host has not booted")?;
        let mut mem = GuestMemory::open(&path, size)?;
        let gpa = page.gpa + OFFSET;
        mem.write(gpa, &BYTES)?;
        mem.flush()?;
        Ok(format!("{} bytes written at GPA {gpa:#x} ({:?} canary)", BYTES.len(), self.engine))
    }

    fn expects(&self) -> Expectation {
        Expectation::Broken(&[Reason::MemoryChanged])
    }
}
