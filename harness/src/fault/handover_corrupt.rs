//! `handover_corrupt`: the harness breaks a persistent engine's hand-over
//! file in pkernfs (through the RAM file, between the old agent writing it
//! and the new agent reading it), as a kernel that scribbles over the
//! carve-out during the jump would. The new agent must refuse to resume
//! from it, and quiesce the device on purpose instead of letting it DMA on
//! with a cursor nobody knows: the update fails for that reason
//! (`update.resume_failed`), frames then wait in QEMU, and no DMA may land
//! outside the device's pages (run it with `check_isolation = true`).

use anyhow::{bail, Context, Result};
use lulab_proto::PhysRange;

use super::{Engine, Expectation, Fault, FaultKind, HostParts, Moment, Targets};
use crate::guest_memory::GuestMemory;
use crate::pkernfs::format::Image;
use crate::pkernfs::host::{file_ranges, lookup, read_carveout};
use crate::report::Reason;
use crate::scenario::Scenario;

/// What replaces the first bytes of the hand-over (not JSON).
const BYTES: [u8; 16] = *b"lulab-fault-hand";

pub(super) struct HandoverCorrupt {
    engine: Engine,
}

impl HandoverCorrupt {
    pub(super) fn new(engine: Engine) -> Self {
        Self { engine }
    }
}

/// Where the first bytes of `path` lie in guest RAM.
fn first_bytes(mem: &GuestMemory, carve: PhysRange, path: &str) -> Result<Vec<PhysRange>> {
    let mut bytes = read_carveout(mem, carve)?;
    let img = Image::open(&mut bytes).map_err(|e| anyhow::anyhow!("pkernfs image in RAM: {}", e.describe()))?;
    let ino = lookup(&img, path)?;
    let size = img.stat(ino).map_err(|e| anyhow::anyhow!("pkernfs {path}: {}", e.describe()))?.size;
    if size < BYTES.len() as u64 {
        bail!("pkernfs {path}: {size} bytes, no hand-over written yet");
    }
    file_ranges(&img, carve.gpa, path, 0, BYTES.len() as u64)
}

impl Fault for HandoverCorrupt {
    fn kind(&self) -> FaultKind {
        FaultKind::HandoverCorrupt
    }

    fn requires(&self, sc: &Scenario) -> Result<(), String> {
        let persistent_in_pkernfs = match self.engine {
            Engine::Rx => sc.rx.as_ref().is_some_and(crate::scenario::RxSpec::in_pkernfs),
            Engine::Nvme => sc.nvme.as_ref().is_some_and(|n| n.persist),
        };
        match persistent_in_pkernfs {
            true => Ok(()),
            false => Err(format!("engine: {:?} must be a persistent engine in pkernfs (it is what writes a hand-over)", self.engine)),
        }
    }

    fn moments(&self) -> &'static [Moment] {
        // Written when the old agent answers hand_over; read once the new one resumes.
        &[Moment::HandedOver, Moment::AgentDown, Moment::KernelUp, Moment::Init]
    }

    fn inject(&mut self, _: &mut HostParts, t: &Targets) -> Result<String> {
        let carve = t.pkernfs.context("no [pkernfs] carve-out")?;
        let path = t.handover_of(self.engine).with_context(|| format!("no persistent {:?} engine has started", self.engine))?;
        let (ram, size) = t.ram.clone().context("no RAM file: the host has not booted")?;
        let mut mem = GuestMemory::open(&ram, size)?;
        let pieces = first_bytes(&mem, carve, &path)?;
        let mut done = 0usize;
        for r in &pieces {
            let n = r.len as usize;
            mem.write(r.gpa, &BYTES[done..done + n])?;
            done += n;
        }
        mem.flush()?;
        let at = pieces.first().map_or(0, |r| r.gpa);
        Ok(format!("first {} bytes of pkernfs {path} overwritten at GPA {at:#x}", BYTES.len()))
    }

    fn expects(&self) -> Expectation {
        Expectation::Broken(&[Reason::UpdateResumeFailed, Reason::DmaStalled, Reason::DmaLost])
    }
}
