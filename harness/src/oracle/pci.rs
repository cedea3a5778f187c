//! PCI command-register history from QEMU's `pci_cfg_write` trace events:
//! when did the guest turn a device's bus mastering off (as a stock kexec
//! does for every PCI device in `pci_device_shutdown`)?

use super::trace::parse_line;

/// Bus Master Enable in the PCI command register.
const BME: u32 = 1 << 2;

/// Bus-master history of one device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BusMaster {
    /// Times BME went from set to clear.
    pub cleared: u64,
    /// Times BME went from clear to set.
    pub set: u64,
    /// Whether BME is set after the last write seen.
    pub enabled_at_end: bool,
}

/// Scans trace text for command-register writes to device `bdf` (e.g. `00:02.0`).
/// Lines look like `pci_cfg_write e1000e 00:02.0 @0x4 <- 0x107`, possibly
/// with a `pid@time:` prefix.
pub fn bus_master(trace: &str, bdf: &str) -> BusMaster {
    let mut h = BusMaster::default();
    for line in trace.lines() {
        let Some(ev) = parse_line(line) else { continue };
        if ev.name != "pci_cfg_write" {
            continue;
        }
        let mut words = ev.args.split_whitespace();
        let (_dev, addr, reg, _arrow, val) = (words.next(), words.next(), words.next(), words.next(), words.next());
        if addr != Some(bdf) || reg != Some("@0x4") {
            continue;
        }
        let Some(v) = val.and_then(|v| u32::from_str_radix(v.trim_start_matches("0x"), 16).ok()) else { continue };
        let on = v & BME != 0;
        match (h.enabled_at_end, on) {
            (true, false) => h.cleared += 1,
            (false, true) => h.set += 1,
            _ => {}
        }
        h.enabled_at_end = on;
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_bme_transitions_of_one_device() {
        let t = "pci_cfg_write e1000e 00:02.0 @0x4 <- 0x103\n\
                 1234@1.5:pci_cfg_write e1000e 00:02.0 @0x4 <- 0x107\n\
                 pci_cfg_write nvme 00:03.0 @0x4 <- 0x100\n\
                 pci_cfg_write e1000e 00:02.0 @0x10 <- 0xfebc0000\n\
                 pci_cfg_write e1000e 00:02.0 @0x4 <- 0x100103\n\
                 pci_cfg_write e1000e 00:02.0 @0x4 <- 0x100\n";
        let h = bus_master(t, "00:02.0");
        assert_eq!(h, BusMaster { cleared: 1, set: 1, enabled_at_end: false });
        assert_eq!(bus_master(t, "00:03.0"), BusMaster::default());
    }
}
