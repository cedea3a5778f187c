//! `qemu_kill`: QEMU dies (SIGKILL to its process). The run cannot be
//! carried out, and must say so as `error`, never as `broken`.

use anyhow::Result;

use super::{Expectation, Fault, FaultKind, HostParts, Targets};
use crate::scenario::Scenario;

pub(super) struct QemuKill;

impl Fault for QemuKill {
    fn kind(&self) -> FaultKind {
        FaultKind::QemuKill
    }

    fn requires(&self, _: &Scenario) -> Result<(), String> {
        Ok(())
    }

    fn inject(&mut self, host: &mut HostParts, _: &Targets) -> Result<String> {
        let pid = host.qemu.pid();
        host.qemu.crash()?;
        Ok(format!("SIGKILL to QEMU (pid {pid})"))
    }

    fn expects(&self) -> Expectation {
        Expectation::Error
    }
}
