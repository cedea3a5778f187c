//! Reports side by side (Markdown): one column per run, one row per piece
//! of evidence, e.g. our live update against upstream's LUO.

use std::fmt::Write;

use super::Report;

/// How one row reads a report.
type Cell = Box<dyn Fn(&Report) -> String>;

/// A Markdown table comparing `reports`, first column the evidence.
pub fn side_by_side(reports: &[&Report]) -> String {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "—".into());
    let rows: Vec<(&str, Cell)> = vec![
        ("guest RAM kept by", Box::new(|r| kept_by(r).into())),
        ("expected", Box::new(|r| r.expect.to_string())),
        ("outcome", Box::new(|r| format!("**{}**", r.outcome))),
        ("live updates", Box::new(|r| r.live_updates.to_string())),
        ("frames sent", Box::new(|r| r.dma.sent.to_string())),
        ("  delivered intact", Box::new(|r| r.dma.delivered.to_string())),
        ("  dropped by device", Box::new(|r| r.dma.dropped_by_device.to_string())),
        ("  dropped by QEMU (link down, VM stopped)", Box::new(|r| r.dma.dropped_by_qemu.to_string())),
        ("  lost", Box::new(|r| r.dma.lost.to_string())),
        ("  stuck on host side", Box::new(|r| r.dma.queued_on_host.to_string())),
        ("frames DMAed with no agent", Box::new(move |r| opt(r.updates.first().and_then(|u| u.dma_while_agent_down).map(|n| n.to_string())))),
        ("NIC bus master cleared", Box::new(|r| r.dma.bus_master_cleared.to_string())),
        ("VT-d translation off", Box::new(|r| r.iommu.translation_disabled.to_string())),
        ("VT-d root tables outside pkernfs", Box::new(|r| r.iommu.root_tables_outside_pkernfs.to_string())),
        ("VT-d faults", Box::new(|r| r.iommu.faults.to_string())),
        ("agent pages changed unexpectedly", Box::new(|r| format!("{} of {}", r.memory.unexpected_changes, r.memory.pages_checked))),
        ("LUO: memory survived", Box::new(move |r| opt(r.luo.as_ref().map(|l| l.memory_survived.to_string())))),
        ("LUO: held frames intact", Box::new(move |r| opt(luo_first(r).map(|f| format!("{} / {}", f.found.frames_intact, f.found.frames_checked))))),
        ("LUO: device survived", Box::new(move |r| opt(r.luo.as_ref().map(|l| l.device_survived.to_string())))),
        ("LUO: NIC driver after kexec", Box::new(move |r| opt(luo_first(r).map(|f| f.found.driver_before.clone().unwrap_or_else(|| "none".into()))))),
    ];
    let mut s = String::from("| |");
    for r in reports {
        let _ = write!(s, " {} |", r.scenario);
    }
    s.push_str("\n|---|");
    s.push_str(&"---|".repeat(reports.len()));
    s.push('\n');
    for (name, cell) in &rows {
        let _ = write!(s, "| {name} |");
        for r in reports {
            let _ = write!(s, " {} |", cell(r));
        }
        s.push('\n');
    }
    s
}

fn kept_by(r: &Report) -> &'static str {
    match (&r.luo, &r.pkernfs) {
        (Some(_), _) => "memfd preserved by LUO",
        (None, Some(_)) => "pkernfs file",
        (None, None) => "anonymous memory",
    }
}

fn luo_first(r: &Report) -> Option<&super::LuoUpdate> {
    r.luo.as_ref().and_then(|l| l.updates.first())
}
