//! `memory_pressure`: the host fills its RAM-backed root file system with
//! `size_mib` MiB and frees it again, so the kernel hands out (and then
//! reclaims) most of its free memory. Aimed at `agent_up`, it hits the new
//! kernel before the agent takes its engines back: the carve-out and the
//! persistent engines' memory must stay untouched, nothing lost.

use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{Expectation, Fault, FaultKind, HostParts, Moment, Targets};
use crate::scenario::Scenario;

pub(super) struct MemoryPressure {
    mib: u64,
}

impl MemoryPressure {
    pub(super) fn new(mib: u64) -> Self {
        Self { mib }
    }
}

impl Fault for MemoryPressure {
    fn kind(&self) -> FaultKind {
        FaultKind::MemoryPressure
    }

    fn requires(&self, sc: &Scenario) -> Result<(), String> {
        // The host's root file system is a tmpfs of half its RAM, which
        // already holds the initramfs and any staged kernel.
        let most = sc.host.memory_mib * 3 / 8;
        if self.mib > most {
            return Err(format!(
                "size_mib: {} is more than 3/8 of host.memory_mib ({most}): the host's root tmpfs (half its RAM) would fill up first",
                self.mib
            ));
        }
        Ok(())
    }

    fn needs_agent(&self) -> bool {
        true
    }

    fn moments(&self) -> &'static [Moment] {
        &[Moment::Kexec, Moment::HandedOver, Moment::AgentUp]
    }

    fn inject(&mut self, host: &mut HostParts, _: &Targets) -> Result<String> {
        let agent = host.agent.as_deref_mut().context("memory_pressure needs a running agent")?;
        let script = format!(
            "dd if=/dev/zero of=/lulab-pressure bs=1M count={} 2>/dev/null; s=$?; grep -E '^(MemFree|Shmem):' /proc/meminfo | tr -s ' ' | tr '\\n' ' '; rm -f /lulab-pressure; exit $s",
            self.mib
        );
        let r = agent.exec(&["sh", "-c", &script], Duration::from_secs(300))?;
        if r.status != Some(0) {
            bail!("filling {} MiB in the host failed ({:?}): {}", self.mib, r.status, r.stderr.trim());
        }
        Ok(format!("{} MiB written to the root file system and freed; while full: {}", self.mib, r.stdout.trim()))
    }

    fn expects(&self) -> Expectation {
        Expectation::Intact
    }
}
