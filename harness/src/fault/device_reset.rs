//! `device_reset`: the agent resets the e1000e under its own running engine
//! (`CTRL.RST` through the BAR it maps), as a VMM that resets a device it
//! should keep running would. The reset clears the receive control and ring
//! registers: the NIC stops taking frames, and the agent, which keeps
//! refilling a ring the device no longer knows, cannot bring it back.
//!
//! (The kernel's sysfs `reset` is no such fault under QEMU: the kernel
//! restores config space around it and QEMU's e1000e keeps its RX state.)

use std::time::Duration;

use anyhow::{bail, Context, Result};
use lulab_proto::{Op, Reply};

use super::{Expectation, Fault, FaultKind, HostParts, Moment, Targets};
use crate::report::Reason;
use crate::scenario::Scenario;

pub(super) struct DeviceReset;

impl Fault for DeviceReset {
    fn kind(&self) -> FaultKind {
        FaultKind::DeviceReset
    }

    fn requires(&self, sc: &Scenario) -> Result<(), String> {
        super::needs_rx(sc, self.kind(), "resets").map(|_| ())
    }

    fn needs_agent(&self) -> bool {
        true
    }

    fn moments(&self) -> &'static [Moment] {
        &[Moment::Kexec, Moment::AgentUp]
    }

    fn inject(&mut self, host: &mut HostParts, t: &Targets) -> Result<String> {
        let agent = host
            .agent
            .as_deref_mut()
            .context("device_reset needs a running agent")?;
        match agent.call(
            Op::DmaDeviceReset {
                pci: t.nic_pci.clone(),
            },
            Duration::from_secs(10),
        )? {
            Reply::Done => Ok(format!(
                "CTRL.RST written to {} by the agent under its running engine",
                t.nic_pci
            )),
            other => bail!("unexpected reply to dma_device_reset: {other:?}"),
        }
    }

    fn expects(&self) -> Expectation {
        Expectation::Broken(&[Reason::DmaStalled, Reason::DmaLost])
    }
}
