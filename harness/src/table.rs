//! Plain-text tables for the terminal.

use lulab::host::BootTimings;
use lulab_proto::{KernelInfo, PciDevice};

/// Kernel, IOMMU state and PCI devices of a booted host.
pub fn host_table(info: &KernelInfo, devices: &[PciDevice], t: &BootTimings) -> String {
    let mut s = String::new();
    s += &format!("\nkernel      {}\n", info.release);
    s += &format!("cmdline     {}\n", info.cmdline);
    s += &format!(
        "IOMMU       {} ({})\n",
        if info.dmar_enabled() { "enabled" } else { "NOT enabled" },
        if info.iommus.is_empty() { "no /sys/class/iommu entries".to_string() } else { info.iommus.join(", ") }
    );
    s += &format!(
        "boot        QMP {} ms, kernel {} ms, /init {} ms, agent {} ms\n\n",
        t.qmp_ms, t.kernel_ms, t.init_ms, t.agent_ms
    );
    s += &format!("{:<14} {:<10} {:<8} {:<12} {}\n", "PCI address", "vendor:dev", "class", "IOMMU group", "driver");
    for d in devices {
        s += &format!(
            "{:<14} {:04x}:{:04x}  {:06x}   {:<12} {}\n",
            d.address,
            d.vendor,
            d.device,
            d.class,
            d.iommu_group.map(|g| g.to_string()).unwrap_or_else(|| "-".into()),
            d.driver.as_deref().unwrap_or("-")
        );
    }
    s
}
