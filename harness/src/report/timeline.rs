//! report.md: one timeline table per live update, events in the order they
//! happened, each also relative to the kexec request.

use std::fmt::Write;

use super::UpdateTimeline;
use crate::oracle::timeline::{AgentDownFrom, KernelUpFrom};

/// Renders the `## Live updates` section (nothing without updates); `rx`
/// says whether an RX stream ran, i.e. whether DMA was measured at all.
pub(super) fn render(s: &mut String, updates: &[UpdateTimeline], rx: bool) {
    if updates.is_empty() {
        return;
    }
    let _ = writeln!(s, "## Live updates\n");
    let _ = writeln!(
        s,
        "Times in ms since the run started, Δ from the kexec request. DMA times are when the RX scanner first saw a \
         frame in the RAM file: upper bounds, 50 ms resolution (it scans every 50 ms). \"No agent\" counts frames \
         sent after the new kernel's first line and seen before the new agent answered.\n"
    );
    for u in updates {
        one(s, u, rx);
    }
}

fn one(s: &mut String, u: &UpdateTimeline, rx: bool) {
    let _ = writeln!(s, "### Update {} → {}\n", u.index, u.kernel);
    let down = match u.agent_down_from {
        AgentDownFrom::Reply => "agent's last reply",
        AgentDownFrom::KexecRequest => "agent's last reply (lost: bounded by the kexec request)",
    };
    let up = match u.kernel_up_from {
        KernelUpFrom::Banner => "new kernel's first console line",
        KernelUpFrom::Init => "new kernel's /init (banner garbled on the console)",
    };
    let mut rows: Vec<(&str, Option<u64>)> = vec![
        ("kexec requested", Some(u.kexec_started)),
        (down, u.agent_down),
        (up, u.kernel_up),
        ("new agent answers", u.agent_up),
    ];
    if rx {
        rows.push(("last DMA seen before the kexec", u.last_dma_before));
        rows.push(("first DMA after the kexec", u.first_dma_after));
    }
    // In the order they happened; events that never did come last.
    rows.sort_by_key(|(_, t)| t.map_or((1, 0), |t| (0, t)));
    let _ = writeln!(s, "| event | at (ms) | Δ kexec (ms) |\n|---|---|---|");
    for (what, t) in rows {
        match t {
            Some(t) => {
                let _ = writeln!(s, "| {what} | {t} | {} |", delta(t, u.kexec_started));
            }
            None => {
                let _ = writeln!(s, "| {what} | never | — |");
            }
        }
    }
    let ms = |v: Option<u64>| v.map_or_else(|| "—".to_string(), |v| format!("{v} ms"));
    let no_agent = match (rx, u.dma_while_agent_down) {
        (false, _) => "no RX stream".to_string(),
        (true, None) => "—".to_string(),
        (true, Some(n)) => n.to_string(),
    };
    let blackout = match (u.dma_blackout_us, u.frame_interval_us) {
        (Some(b), Some(i)) => format!(
            " · DMA blackout {b} µs{} (frame interval {i} µs; QEMU's trace)",
            if u.dma_blackout_to_end_of_run { ", to the end of the run: the device never wrote again" } else { "" }
        ),
        _ => String::new(),
    };
    let _ = writeln!(
        s,
        "\nkexec transition {} · agent downtime {} · frames DMAed with no agent running: {no_agent}{blackout}\n",
        ms(u.kexec_transition_ms),
        ms(u.agent_downtime_ms)
    );
    if let Some(d) = &u.downtime {
        let parts: Vec<String> = d.parts().iter().map(|(name, v)| format!("{name} {}", v.map_or("—".into(), |v| v.to_string()))).collect();
        let _ = writeln!(s, "Downtime {} from the kexec request: {} (ms)\n", ms(d.total_ms), parts.join(" · "));
    }
}

/// `+5`, `−50`, `0`.
fn delta(t: u64, zero: u64) -> String {
    match t.cmp(&zero) {
        std::cmp::Ordering::Equal => "0".into(),
        std::cmp::Ordering::Greater => format!("+{}", t - zero),
        std::cmp::Ordering::Less => format!("−{}", zero - t),
    }
}
