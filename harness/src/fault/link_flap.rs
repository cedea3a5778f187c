//! `link_flap`: the e1000e's link goes down, then up again (QMP `set_link`
//! on the NIC: a cable pulled at the port). While the link is down the NIC
//! cannot receive: QEMU queues what its backend reads and stops reading
//! (back-pressure), but the next flush of that queue while the link is still
//! down (the guest writing RDT or PCI_COMMAND, e.g. a new kernel starting
//! up) frees the queued frames without the device seeing them, and frames
//! arriving in the 500 ms of autonegotiation after it is back are dropped by
//! the device (`e1000x_rx_link_down`). The ledger accounts both with QEMU's
//! evidence (its capture, its trace): `dropped_by_qemu`, `dropped_by_device`.
//! Nothing may be lost, and the device must take frames again once the
//! link is back, also when it came back while no agent ran.

use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use super::{Expectation, Fault, FaultKind, HostParts, Targets};
use crate::scenario::Scenario;

use crate::qemu::params::NIC_ID;
const QMP_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) struct LinkFlap {
    down_for: Duration,
}

impl LinkFlap {
    pub(super) fn new(down_for: Duration) -> Self {
        Self { down_for }
    }
}

fn set_link(host: &mut HostParts, up: bool) -> Result<()> {
    host.qmp.execute_raw("set_link", json!({ "name": NIC_ID, "up": up }), QMP_TIMEOUT)?;
    Ok(())
}

impl Fault for LinkFlap {
    fn kind(&self) -> FaultKind {
        FaultKind::LinkFlap
    }

    fn requires(&self, sc: &Scenario) -> Result<(), String> {
        super::needs_rx(sc, self.kind(), "flaps the link of").map(|_| ())
    }

    fn inject(&mut self, host: &mut HostParts, _: &Targets) -> Result<String> {
        set_link(host, false)?;
        Ok(format!("link of {NIC_ID} down for {} ms", self.down_for.as_millis()))
    }

    fn lasts(&self) -> Option<Duration> {
        Some(self.down_for)
    }

    fn end(&mut self, host: &mut HostParts) -> Result<()> {
        set_link(host, true)
    }

    fn expects(&self) -> Expectation {
        Expectation::Intact
    }
}
