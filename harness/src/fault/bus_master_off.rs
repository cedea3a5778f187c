//! `bus_master_off`: the host clears the NIC's PCI bus-master bit under the
//! running agent (a config-space write through sysfs), as a shutdown path
//! that calls `pci_clear_master()` on a device it should have left alone
//! would. The e1000e can no longer DMA: it stops taking frames, the
//! injector stalls and what it sent is lost.
//!
//! (The NIC's sysfs `reset` was tried first: the kernel restores config
//! space around it and QEMU's e1000e kept its RX state, so every frame
//! still arrived.)

use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{Expectation, Fault, FaultKind, HostParts, Moment, Targets};
use crate::report::Reason;
use crate::scenario::Scenario;

pub(super) struct BusMasterOff;

/// Reads PCI_COMMAND (offset 4) of the device's sysfs `config`, clears bit
/// 2 (bus master) and writes the word back; prints the old and new value.
fn script(config: &str) -> String {
    format!(
        "set -e; v=$(od -An -tu2 -j4 -N2 {config}); n=$((v & ~4)); \
         printf \"\\\\$(printf %03o $((n & 255)))\\\\$(printf %03o $((n >> 8)))\" | dd of={config} bs=1 seek=4 count=2 conv=notrunc 2>/dev/null; \
         echo \"PCI_COMMAND $v -> $(od -An -tu2 -j4 -N2 {config})\""
    )
}

impl Fault for BusMasterOff {
    fn kind(&self) -> FaultKind {
        FaultKind::BusMasterOff
    }

    fn requires(&self, sc: &Scenario) -> Result<(), String> {
        super::needs_rx(sc, self.kind(), "stops").map(|_| ())
    }

    fn needs_agent(&self) -> bool {
        true
    }

    fn moments(&self) -> &'static [Moment] {
        &[Moment::Kexec, Moment::HandedOver, Moment::AgentUp]
    }

    fn inject(&mut self, host: &mut HostParts, t: &Targets) -> Result<String> {
        let agent = host.agent.as_deref_mut().context("bus_master_off needs a running agent")?;
        let config = format!("/sys/bus/pci/devices/{}/config", t.nic_pci);
        let r = agent.exec(&["sh", "-c", &script(&config)], Duration::from_secs(20))?;
        let said = r.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
        if r.status != Some(0) || !said.starts_with("PCI_COMMAND") {
            bail!("clearing bus master in {config} failed ({:?}): {} {}", r.status, said, r.stderr.trim());
        }
        Ok(format!("{said} ({config})"))
    }

    fn expects(&self) -> Expectation {
        Expectation::Broken(&[Reason::DmaStalled, Reason::DmaLost])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_clears_only_the_bus_master_bit_of_pci_command() {
        // Run it against a fake config space with sh, as the host would.
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        let mut bytes = vec![0u8; 64];
        bytes[4] = 0x07; // I/O, memory, bus master
        bytes[5] = 0x04; // INTx disable
        std::fs::write(&config, &bytes).unwrap();
        let out = std::process::Command::new("sh").arg("-c").arg(script(config.to_str().unwrap())).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let after = std::fs::read(&config).unwrap();
        assert_eq!((after[4], after[5]), (0x03, 0x04));
        assert_eq!(after.len(), 64);
        let said = String::from_utf8_lossy(&out.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(said, "PCI_COMMAND 1031 -> 1027");
    }
}
