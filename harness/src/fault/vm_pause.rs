//! `vm_pause`: the whole VM stops (QMP `stop`) and continues (`cont`). CPUs
//! and devices freeze together. At the stop QEMU purges the frames queued
//! for the NIC (a full ring: no agent refilling); the ledger accounts them
//! as `dropped_by_qemu` with QEMU's capture as evidence. Nothing may be
//! lost: the system under test must ride it out.

use std::time::Duration;

use anyhow::Result;
use serde_json::Value;

use super::{Expectation, Fault, FaultKind, HostParts, Targets};
use crate::scenario::Scenario;

const QMP_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) struct VmPause {
    paused_for: Duration,
}

impl VmPause {
    pub(super) fn new(paused_for: Duration) -> Self {
        Self { paused_for }
    }
}

impl Fault for VmPause {
    fn kind(&self) -> FaultKind {
        FaultKind::VmPause
    }

    fn requires(&self, _: &Scenario) -> Result<(), String> {
        Ok(())
    }

    fn inject(&mut self, host: &mut HostParts, _: &Targets) -> Result<String> {
        host.qmp.execute_raw("stop", Value::Null, QMP_TIMEOUT)?;
        Ok(format!("VM stopped for {} ms", self.paused_for.as_millis()))
    }

    fn lasts(&self) -> Option<Duration> {
        Some(self.paused_for)
    }

    fn end(&mut self, host: &mut HostParts) -> Result<()> {
        host.qmp.execute_raw("cont", Value::Null, QMP_TIMEOUT)?;
        Ok(())
    }

    fn expects(&self) -> Expectation {
        Expectation::Intact
    }
}
