//! Plain-text tables for the terminal.

use lulab::host::BootTimings;
use lulab::report::Report;
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

/// Scenario reports in columns, one row per oracle figure.
pub fn side_by_side(reports: &[Report]) -> String {
    type Row = (&'static str, fn(&Report) -> String);
    let rows: [Row; 19] = [
        ("expected", |r| r.expect.to_string()),
        ("outcome", |r| r.outcome.to_string()),
        ("as expected", |r| if r.as_expected { "yes".into() } else { "NO".into() }),
        ("live updates", |r| r.live_updates.to_string()),
        ("frames sent", |r| r.dma.sent.to_string()),
        ("  delivered intact", |r| r.dma.delivered.to_string()),
        ("  corrupted", |r| r.dma.corrupted.to_string()),
        ("  dropped by device", |r| r.dma.dropped_by_device.to_string()),
        ("  lost", |r| r.dma.lost.to_string()),
        ("  stuck on host side", |r| r.dma.queued_on_host.to_string()),
        ("NIC bus master cleared", |r| r.dma.bus_master_cleared.to_string()),
        ("frames DMAed, no agent", |r| {
            let n: Vec<String> = r.updates.iter().map(|u| u.dma_while_agent_down.map_or("-".into(), |n| n.to_string())).collect();
            if n.is_empty() { "-".into() } else { n.join(",") }
        }),
        ("agent downtime (ms)", |r| {
            let n: Vec<String> = r.updates.iter().map(|u| u.agent_downtime_ms.map_or("-".into(), |n| n.to_string())).collect();
            if n.is_empty() { "-".into() } else { n.join(",") }
        }),
        ("NVMe blocks read", |r| r.nvme.blocks_read.to_string()),
        ("  corrupted / lost", |r| format!("{} / {}", r.nvme.corrupted, r.nvme.lost)),
        ("VT-d faults", |r| r.iommu.faults.to_string()),
        ("VT-d translation off", |r| r.iommu.translation_disabled.to_string()),
        ("agent pages checked", |r| r.memory.pages_checked.to_string()),
        ("  changed unexpectedly", |r| r.memory.unexpected_changes.to_string()),
    ];
    let mut s = format!("\n{:<26}", "");
    for r in reports {
        s += &format!("{:<18}", r.scenario);
    }
    s.push('\n');
    for (name, f) in &rows {
        s += &format!("{name:<26}");
        for r in reports {
            s += &format!("{:<18}", f(r));
        }
        s.push('\n');
    }
    s
}
