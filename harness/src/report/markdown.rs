//! report.md: the verdict first, then the evidence.

use std::fmt::Write;

use super::Report;

/// Renders a report as Markdown.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let mark = if r.as_expected { "PASS" } else { "FAIL" };
    let _ = writeln!(s, "# {} — {mark}\n", r.scenario);
    let _ = writeln!(s, "{}\n", r.description);
    let expected = if r.expect_reasons.is_empty() {
        r.expect.to_string()
    } else {
        format!("{} ({})", r.expect, r.expect_reasons.iter().map(|x| format!("`{x}`")).collect::<Vec<_>>().join(", "))
    };
    let _ = writeln!(s, "| expected | outcome | live updates |\n|---|---|---|\n| {expected} | **{}** | {} |\n", r.outcome, r.live_updates);
    if !r.findings.is_empty() {
        let title = if r.outcome == crate::scenario::Verdict::Error { "Why it could not be carried out" } else { "Why it is broken" };
        let _ = writeln!(s, "## {title}\n");
        for f in &r.findings {
            let other = !r.expect_reasons.is_empty() && !r.expect_reasons.contains(&f.reason);
            let _ = writeln!(s, "- `{}`{} {}", f.reason, if other { " (**not expected**)" } else { "" }, f.detail);
        }
        s.push('\n');
    } else if !r.reasons.is_empty() {
        // A report from before findings had reasons (schema < 5).
        let _ = writeln!(s, "## Why it is broken\n");
        for reason in &r.reasons {
            let _ = writeln!(s, "- {reason}");
        }
        s.push('\n');
    }
    faults(&mut s, r);
    if !r.agent_reconnects.is_empty() {
        let _ = writeln!(s, "QEMU hung up the agent socket mid-request; the harness reconnected and sent it again (no finding): {}\n", r.agent_reconnects.join(", "));
    }
    let d = &r.dma;
    let _ = writeln!(s, "## DMA ledger (e1000e RX, read from the RAM file)\n");
    let _ = writeln!(s, "| sent | delivered | corrupted | dropped by device | dropped by QEMU | lost | queued on host |\n|---|---|---|---|---|---|---|");
    let _ = writeln!(
        s,
        "| {} | {} | {} | {} | {} | {} | {} |\n",
        d.sent, d.delivered, d.corrupted, d.dropped_by_device, d.dropped_by_qemu, d.lost, d.queued_on_host
    );
    let l = &d.latency_us;
    if l.count > 0 {
        let _ = writeln!(s, "Latency injection → seen (µs): min {} · p50 {} · p99 {} · max {} ({} frames)\n", l.min, l.p50, l.p99, l.max, l.count);
    }
    let n = &r.nvme;
    let _ = writeln!(s, "## NVMe\n\n| blocks read | corrupted | lost |\n|---|---|---|\n| {} | {} | {} |\n", n.blocks_read, n.corrupted, n.lost);
    for x in &n.restarts {
        let _ = writeln!(
            s,
            "Non-persistent engine ended by live update {}: {} blocks in place at the kexec; the next agent took the controller back and read on from LBA {}.\n",
            x.live_update, x.verified_at_kexec, x.resumed_at_lba
        );
    }
    let i = &r.iommu;
    let _ = writeln!(
        s,
        "## IOMMU\n\n| faults | QEMU-traced | guest-logged | translation switched off |\n|---|---|---|---|\n| {} | {} | {} | {} |\n",
        i.faults, i.qemu_faults, i.guest_faults, i.translation_disabled
    );
    if !i.root_tables.is_empty() {
        let _ = writeln!(
            s,
            "Root table latched after DMA started (SRTP): {} ({} outside pkernfs)\n",
            i.root_tables.join(" → "),
            i.root_tables_outside_pkernfs
        );
    }
    let m = &r.memory;
    let _ = writeln!(
        s,
        "## Memory\n\n| pages checked | unexpected changes | DMA pages changed |\n|---|---|---|\n| {} | {} | {} |\n",
        m.pages_checked, m.unexpected_changes, m.dma_pages_changed
    );
    if let Some(iso) = &r.isolation {
        isolation(&mut s, iso);
    }
    for o in crate::oracle::registry::registered() {
        if let Some(md) = r.sections.get(o.name()).and_then(|v| o.markdown(v)) {
            let _ = writeln!(s, "{md}");
        }
    }
    if let Some(k) = &r.kunit {
        let _ = writeln!(s, "## KUnit (KTAP from the console)\n\n| passed | failed | skipped |\n|---|---|---|\n| {} | {} | {} |\n", k.passed, k.failed, k.skipped);
    }
    if let Some(p) = &r.pkernfs {
        pkernfs(&mut s, p);
    }
    if let Some(l) = &r.luo {
        super::luo::render(&mut s, l);
    }
    if let Some(g) = &r.guest_ram {
        super::guest_ram::render(&mut s, g);
    }
    super::timeline::render(&mut s, &r.updates, r.dma.sent > 0);
    let _ = writeln!(s, "## Timings (ms)\n\n| milestone | ms |\n|---|---|");
    for (k, v) in &r.timings_ms {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    let v = &r.versions;
    let _ = writeln!(s, "\nQEMU {} · kernel {} · lulab {} · run directory `{}`", v.qemu, v.kernel, v.lulab, r.run_dir);
    s
}

fn pkernfs(s: &mut String, p: &super::PkernfsSection) {
    let _ = writeln!(s, "## pkernfs\n\n{} files; {} checks, {} carve-out hashes (pkernfs.json)\n", p.files, p.checks.len(), p.carveout_hashes.len());
    if !p.refusals.is_empty() {
        let _ = writeln!(s, "| corrupted | kernel named | errno | untouched | restored, remounted |\n|---|---|---|---|---|");
        for f in &p.refusals {
            let named = f.named_structure.as_deref().unwrap_or("—");
            let errno = f.errno.as_deref().unwrap_or("— (mounted)");
            let _ = writeln!(s, "| {} | {named} | {errno} | {} | {} / {:?} |", f.corrupted, f.untouched, f.restored, f.remounted);
        }
        s.push('\n');
    }
    if !p.mounts.is_empty() {
        let _ = writeln!(s, "Mount after each live update (`mount(2)` timed in the guest, CLOCK_MONOTONIC):\n");
        s.push_str(&mount_table(&p.mounts));
        s.push('\n');
    }
    if !p.untouched.is_empty() {
        let _ = writeln!(s, "| after updates | kernel | carve-out identical | System RAM |\n|---|---|---|---|");
        for u in &p.untouched {
            let _ = writeln!(s, "| {} | {} | {} | {} |", u.live_updates, u.kernel, u.identical, u.system_ram);
        }
        s.push('\n');
    }
}

/// The mount-time table: one row per timed mount (rows of several reports
/// may be given together, e.g. a carve-out size grid).
pub fn mount_table(rows: &[super::PkernfsMount]) -> String {
    let mut s = String::from("| carve-out | files | file data | after updates | mount (µs) | files found |\n|---|---|---|---|---|---|\n");
    for m in rows {
        let found = m.files_found.map_or("—".to_string(), |f| f.to_string());
        let _ = writeln!(s, "| {} MiB | {} | {} | {} | {} | {found} |", m.carveout_mib, m.files, data_size(m.data_bytes), m.live_updates, m.mount_us);
    }
    s
}

/// Bytes as the largest of B, KiB, MiB that keeps one decimal meaningful.
fn data_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / f64::from(1 << 20)),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / f64::from(1 << 10)),
        b => format!("{b} B"),
    }
}

fn isolation(s: &mut String, iso: &crate::oracle::isolation::IsolationSection) {
    let _ = writeln!(s, "## Isolation (QEMU's IOTLB trace)\n");
    let _ = writeln!(
        s,
        "{} breaches ({} into another device's guest RAM) over {} live update(s). \"unowned\": no engine owned the device (a non-persistent one from the kexec until an agent took it back: its old engine draining, the next kernel's own driver).\n",
        iso.foreign, iso.cross_device, iso.updates
    );
    let _ = writeln!(
        s,
        "| device | persistent | translations (before / during / after update) | own pages | unowned | outside own pages | into another device's guest RAM | breaches (before / during / after) |\n|---|---|---|---|---|---|---|---|"
    );
    let phases = |p: &crate::oracle::isolation::Phases| format!("{} / {} / {}", p.before_update, p.during_update, p.after_update);
    for (pci, d) in &iso.devices {
        let n = iso.translations.get(pci).copied().unwrap_or(0);
        let _ = writeln!(
            s,
            "| {pci} | {} | {n} ({}) | {} | {} | {} | {} | {} |",
            d.persistent,
            phases(&d.translations),
            d.own_pages,
            d.unowned,
            d.outside_own_pages,
            d.into_other_devices,
            phases(&d.breaches)
        );
    }
    for e in &iso.examples {
        let _ = writeln!(s, "- {e}");
    }
    s.push('\n');
}

fn faults(s: &mut String, r: &Report) {
    if r.faults.is_empty() {
        return;
    }
    let _ = writeln!(s, "## Faults injected\n\n| step | kind | aimed at | hit (ms) | ended (ms) | what |\n|---|---|---|---|---|---|");
    for f in &r.faults {
        let at = match (f.at, f.update, f.after_frames) {
            (Some(m), Some(u), _) => format!("`{}` of update {u}", m.name()),
            (_, _, Some(n)) => format!("after {n} frames"),
            _ => "its step".into(),
        };
        let ms = |v: Option<u64>| v.map_or("—".to_string(), |v| v.to_string());
        let hit = if f.injected_ms.is_none() { "never (the run ended first)".to_string() } else { ms(f.injected_ms) };
        let _ = writeln!(s, "| {} | `{}` | {at} | {hit} | {} | {} |", f.step + 1, f.kind, ms(f.ended_ms), f.detail);
    }
    s.push('\n');
}
