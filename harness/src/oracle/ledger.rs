//! The DMA ledger: accounts every injected frame as delivered intact,
//! corrupted, dropped by the device (only with evidence), dropped by QEMU's
//! net layer while the NIC's link was down or the VM stopped (only with
//! evidence), still queued on the host side (back-pressure), or lost.
//!
//! `sent = delivered + corrupted + dropped_by_device + dropped_by_qemu +
//! queued_on_host + lost` always holds, and every term is computed so that
//! doubtful frames end up in `lost`, never the other way round.
//!
//! QEMU 10's net layer frees frames without the device seeing them in two
//! cases (net/net.c, net/queue.c): a frame queued for the NIC while its link
//! is down (QMP `set_link … off`) is freed by the next flush (an RDT or
//! PCI_COMMAND write, link up) as if delivered (`qemu_deliver_packet_iov`
//! returns its size when `link_down`); and a VM `stop` purges what is queued
//! for the NIC. No trace event or device counter records either. The
//! evidence is QEMU's own capture of every frame its netdev took from the
//! socket (`filter-dump`, [`crate::traffic::capture`]): a frame taken by
//! QEMU, neither written to the guest nor dropped by the device, was freed
//! inside QEMU, unless it came after the last frame the device wrote and
//! is among the frames that never reached the device model (QEMU's trace
//! counts those that did): then it may still wait in QEMU's queue,
//! `queued_on_host`. It is
//! `dropped_by_qemu` when it was written to the socket before such a window
//! ended (the journal's `link_flap` and `vm_pause` faults: a frame may wait
//! in QEMU's queue through a whole update while no agent refills the ring);
//! otherwise it is lost. A frame QEMU never took is `queued_on_host`.
//!
//! Evidence (QEMU 10, hw/net/e1000e_core.c): when the ring has no free
//! descriptor QEMU's e1000e does not drop — `e1000e_rx_not_written_to_guest`
//! and `e1000e_rx_can_recv_rings_full` mean the frame stays in QEMU's net
//! queue and QEMU stops reading the socket (back-pressure). Frames are really
//! dropped only when RX is disabled or the link is down
//! (`e1000x_rx_disabled`, `e1000x_rx_link_down`: the receive path returns
//! -1), by the address filter (`e1000e_rx_flt_dropped`) or as oversized
//! (`e1000x_rx_oversized`). QEMU never increments MPC/RNBC, but a real
//! device would, so `MPC` from the agent's counters is accepted too.
//! `e1000e_rx_written_to_guest` counts the frames the device DMA'd, which
//! separates "never left the host" from "written by the device, then gone".

use serde::Serialize;

use super::rx_scan::Sightings;
use super::trace::TraceSummary;
use crate::traffic::inject::SentLog;

/// Trace events that prove a frame was dropped by the device model.
pub const DROP_EVENTS: &[&str] =
    &["e1000x_rx_disabled", "e1000x_rx_link_down", "e1000e_rx_flt_dropped", "e1000x_rx_oversized"];
/// Trace events the harness must enable for the ledger.
pub const LEDGER_TRACE_EVENTS: &[&str] = &[
    "e1000e_rx_written_to_guest",
    "e1000e_rx_not_written_to_guest",
    "e1000e_rx_can_recv_rings_full",
    "e1000x_rx_can_recv_disabled",
    "e1000x_rx_disabled",
    "e1000x_rx_link_down",
    "e1000e_rx_flt_dropped",
    "e1000x_rx_oversized",
    "pci_cfg_write",
];
/// Lost sequence numbers listed in a report.
pub const FIRST_LOST: usize = 8;

/// What the device and QEMU say happened to frames, for the injection
/// window only (summarise the trace log from its size at injection start).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeviceEvidence {
    /// Frames the e1000e wrote to guest memory, when that event was traced.
    pub written_to_guest: Option<u64>,
    /// Frames dropped with a traced reason ([`DROP_EVENTS`]).
    pub trace_drops: u64,
    /// The device's missed-packets counter (MPC) over the window, as the
    /// agent read it inside the guest: reported, never evidence on its own.
    pub missed_packets: u64,
    /// Receive-no-buffers (RNBC): informational, not a drop on its own.
    pub no_buffers: u64,
    /// Times the device refused to receive (back-pressure on the host).
    pub backpressure_events: u64,
    /// Human-readable evidence lines for the report.
    pub notes: Vec<String>,
    /// Frames of the run QEMU's netdev took from the socket (its capture);
    /// `None`: not captured (then `queued_on_host` is estimated).
    #[serde(skip)]
    pub taken_by_qemu: Option<std::collections::BTreeSet<u64>>,
    /// Windows (harness clock) in which QEMU's net layer may free frames:
    /// the NIC's link down, the VM stopped.
    pub qemu_drop_windows: Vec<(u64, u64)>,
}

impl DeviceEvidence {
    /// Evidence from the trace log of the injection window.
    pub fn from_trace(t: &TraceSummary) -> Self {
        let mut e = Self::default();
        if t.counts.contains_key("e1000e_rx_written_to_guest")
            || t.counts.contains_key("e1000e_rx_not_written_to_guest")
        {
            e.written_to_guest = Some(t.count("e1000e_rx_written_to_guest"));
        }
        for ev in DROP_EVENTS {
            let n = t.count(ev);
            if n > 0 {
                e.trace_drops += n;
                e.notes.push(format!("{n} x {ev}"));
            }
        }
        e.backpressure_events =
            ["e1000e_rx_not_written_to_guest", "e1000e_rx_can_recv_rings_full", "e1000x_rx_can_recv_disabled"]
                .iter()
                .map(|ev| t.count(ev))
                .sum();
        for (dev, on) in &t.bus_master {
            e.notes.push(format!("bus master {} on {dev}", if *on { "enabled" } else { "disabled" }));
        }
        e
    }

    /// Declares that `e1000e_rx_written_to_guest` was enabled for the whole
    /// window, so its absence means the device wrote nothing (without this,
    /// a log with no such line is treated as "not traced").
    pub fn rx_traced(mut self) -> Self {
        self.written_to_guest.get_or_insert(0);
        self
    }

    /// Adds the device counters the agent read (deltas over the window).
    pub fn with_counters(mut self, counters: &[(String, u64)]) -> Self {
        for (name, v) in counters {
            match name.to_ascii_uppercase().as_str() {
                "MPC" => self.missed_packets += v,
                "RNBC" => self.no_buffers += v,
                _ => {}
            }
        }
        self
    }

    /// Adds QEMU's capture of what its netdev took from the socket, and the
    /// windows in which its net layer may free frames.
    pub fn with_capture(mut self, taken: Option<std::collections::BTreeSet<u64>>, windows: Vec<(u64, u64)>) -> Self {
        if let Some(t) = &taken {
            self.notes.push(format!("{} frames of the run taken from the socket by QEMU (capture)", t.len()));
        }
        self.taken_by_qemu = taken;
        self.qemu_drop_windows = windows;
        self
    }

    /// Frames the device may be said to have dropped: only what QEMU's own
    /// trace shows (an in-guest counter is a hint, not a verdict).
    pub fn drops(&self) -> u64 {
        self.trace_drops
    }
}

/// Latency from send to first sighting, in microseconds (an upper bound:
/// the scan interval adds to it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LatencyStats {
    /// Frames measured.
    pub count: u64,
    /// Minimum.
    pub min_us: u64,
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Maximum.
    pub max_us: u64,
}

/// The ledger's verdict on one injection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LedgerReport {
    /// Frames the injector generated.
    pub sent: u64,
    /// Seen intact in the agent's buffers.
    pub delivered: u64,
    /// Seen damaged.
    pub corrupted: u64,
    /// Dropped by the device, with evidence.
    pub dropped_by_device: u64,
    /// Taken by QEMU from the socket and freed by its net layer while the
    /// NIC's link was down or the VM stopped (capture evidence).
    pub dropped_by_qemu: u64,
    /// Never taken by the device: in the injector, the socket or QEMU's queue.
    pub queued_on_host: u64,
    /// Unaccounted for.
    pub lost: u64,
    /// A few lost sequence numbers (undelivered, excluding the queued tail).
    pub first_lost_seqs: Vec<u64>,
    /// Intact frames found twice.
    pub duplicates: u64,
    /// Intact frames with a sequence number that was never sent.
    pub unexpected: u64,
    /// Buffers holding no lulab frame / frames of another run.
    pub foreign: u64,
    /// See `foreign`.
    pub stale: u64,
    /// Send → first sighting.
    pub latency: LatencyStats,
    /// Evidence used.
    pub evidence: DeviceEvidence,
}

impl LedgerReport {
    /// Every frame delivered intact or honestly accounted for.
    pub fn intact(&self) -> bool {
        self.lost == 0 && self.corrupted == 0 && self.duplicates == 0 && self.unexpected == 0
    }
}

/// Accounts a run; see the module docs.
#[derive(Debug, Clone, Copy)]
pub struct Ledger;

impl Ledger {
    /// Accounts `sent` against what the scans saw and the device evidence.
    pub fn account(sent: &SentLog, seen: &Sightings, evidence: &DeviceEvidence) -> LedgerReport {
        let total = sent.sent();
        let delivered = seen.delivered.range(..total).count() as u64;
        let unexpected = seen.delivered.len() as u64 - delivered;
        let (attributed, unattributed) = attribute_corruption(total, seen);
        let undelivered: Vec<u64> =
            (0..total).filter(|s| !seen.delivered.contains_key(s) && !attributed.contains(s)).collect();
        let corrupted = attributed.len() as u64 + unattributed.min(undelivered.len() as u64);
        let mut remaining = total - delivered - corrupted;
        let dropped_by_device = evidence.drops().min(remaining);
        remaining -= dropped_by_device;
        let (queued_on_host, dropped_by_qemu, lost_pool) = match &evidence.taken_by_qemu {
            Some(taken) => {
                // What QEMU never took is in the socket or the injector. What
                // it took after the last frame the device wrote may still wait
                // in its queue for the NIC (FIFO: back-pressure keeps the
                // tail), at most as many as never reached the device model.
                let last_written = seen.delivered.range(..total).next_back().map(|(s, _)| *s).max(attributed.last().copied());
                let reached_device = evidence.written_to_guest.map_or(u64::MAX, |w| w + evidence.drops());
                let in_queue_max = (taken.len() as u64).saturating_sub(reached_device) as usize;
                let tail: Vec<u64> =
                    undelivered.iter().copied().filter(|s| taken.contains(s) && last_written.is_none_or(|w| *s > w)).collect();
                let in_queue: std::collections::BTreeSet<u64> = tail[tail.len().saturating_sub(in_queue_max)..].iter().copied().collect();
                let waiting = |s: &u64| !taken.contains(s) || in_queue.contains(s);
                let queued = (undelivered.iter().filter(|s| waiting(s)).count() as u64).min(remaining);
                remaining -= queued;
                let in_window = |s: &u64| {
                    let w = sent.frames.get(*s as usize).and_then(|f| f.written_ns);
                    w.is_some_and(|w| evidence.qemu_drop_windows.iter().any(|&(_, end)| w <= end))
                };
                let freed: Vec<u64> = undelivered.iter().copied().filter(|s| !waiting(s)).collect();
                let eligible = freed.iter().filter(|s| in_window(s)).count() as u64;
                let dq = eligible.min(remaining);
                remaining -= dq;
                (queued, dq, freed.into_iter().filter(|s| !in_window(s)).collect::<Vec<_>>())
            }
            None => {
                let queued = queued_estimate(sent, evidence).min(remaining);
                remaining -= queued;
                // The queued frames are the newest (FIFO); lost ones are among the rest.
                let tail_start = undelivered.len().saturating_sub(queued as usize);
                (queued, 0, undelivered[..tail_start].to_vec())
            }
        };
        let lost = remaining;
        let shown = FIRST_LOST.min(lost as usize);
        let first_lost_seqs = lost_pool.iter().take(shown).copied().collect();
        LedgerReport {
            sent: total,
            delivered,
            corrupted,
            dropped_by_device,
            dropped_by_qemu,
            queued_on_host,
            lost,
            first_lost_seqs,
            duplicates: seen.duplicates,
            unexpected,
            foreign: seen.foreign,
            stale: seen.stale,
            latency: latency(seen, total),
            evidence: evidence.clone(),
        }
    }
}

/// Damaged frames whose claimed seq is plausible (sent, not delivered, not
/// claimed twice) count against that seq; the rest are unattributed (the
/// damage may be in the seq field) and each absorbs one undelivered frame.
fn attribute_corruption(total: u64, seen: &Sightings) -> (std::collections::BTreeSet<u64>, u64) {
    let mut attributed = std::collections::BTreeSet::new();
    let mut unattributed = 0u64;
    let mut items: Vec<_> = seen.corrupted.iter().collect();
    items.sort_by_key(|(k, _)| **k);
    for (_, c) in items {
        match c.claimed_seq {
            Some(s) if s < total && !seen.delivered.contains_key(&s) && attributed.insert(s) => {}
            _ => unattributed += 1,
        }
    }
    (attributed, unattributed)
}

/// Frames that never reached the device: unwritten by the injector, plus
/// (when the device's writes were traced) frames written into the socket
/// that the device neither wrote to memory nor dropped.
fn queued_estimate(sent: &SentLog, e: &DeviceEvidence) -> u64 {
    let in_socket = e.written_to_guest.map_or(0, |w| sent.written().saturating_sub(w + e.drops()));
    sent.unwritten() + in_socket
}

/// The journal's link-down and VM-stop windows (`link_flap`, `vm_pause`
/// faults: injected → ended; one that never ended lasts to the end).
pub fn qemu_drop_windows(journal: &[crate::journal::Entry]) -> Vec<(u64, u64)> {
    use crate::fault::FaultKind;
    use crate::journal::Event;
    let drops = |k: &FaultKind| matches!(k, FaultKind::LinkFlap | FaultKind::VmPause);
    journal
        .iter()
        .filter_map(|e| match &e.event {
            Event::FaultInjected { step, kind, .. } if drops(kind) => {
                let end = journal
                    .iter()
                    .find(|x| x.ns >= e.ns && matches!(&x.event, Event::FaultEnded { step: s, kind: k } if s == step && k == kind))
                    .map_or(u64::MAX, |x| x.ns);
                Some((e.ns, end))
            }
            _ => None,
        })
        .collect()
}

fn latency(seen: &Sightings, total: u64) -> LatencyStats {
    let mut v: Vec<u64> =
        seen.delivered.range(..total).map(|(_, d)| d.seen_ns.saturating_sub(d.sent_ns) / 1000).collect();
    if v.is_empty() {
        return LatencyStats::default();
    }
    v.sort_unstable();
    let pct = |p: usize| v[(v.len() - 1) * p / 100];
    LatencyStats { count: v.len() as u64, min_us: v[0], p50_us: pct(50), p99_us: pct(99), max_us: v[v.len() - 1] }
}


/// The RX ledger behind the [`Oracle`](super::registry::Oracle) trait:
/// report.json `dma` and `ledger.json`. Every injected frame is delivered,
/// corrupted, dropped by the device (with QEMU's evidence), still on the
/// host side, or lost.
#[derive(Debug)]
pub struct LedgerOracle;

impl super::registry::Oracle for LedgerOracle {
    fn name(&self) -> &'static str {
        "dma"
    }

    fn report_field(&self) -> bool {
        true
    }

    fn judge(&self, obs: &super::registry::Observations) -> anyhow::Result<super::registry::Judged> {
        use crate::qemu::params::NIC_ADDR;
        use crate::report::{DmaSection, Finding, LatencySection, Reason};
        let Some(rx) = obs.rx else {
            return Ok(super::registry::Judged { section: serde_json::to_value(DmaSection::default())?, ..Default::default() });
        };
        // The ledger's trace events are always enabled, so frames QEMU
        // never wrote are host-side, not lost.
        let mut evidence = DeviceEvidence::from_trace(obs.trace).rx_traced();
        if let Some(st) = &rx.status {
            evidence = evidence.with_counters(&st.device_counters);
        }
        evidence = evidence.with_capture(rx.taken_by_qemu.clone(), qemu_drop_windows(obs.journal));
        let l = Ledger::account(&rx.sent, &rx.seen, &evidence);
        let mut found = Vec::new();
        let stray = rx.stray.clone().filter(|_| l.lost > 0);
        if l.lost > 0 {
            let whereabouts = stray.as_ref().map(|s| format!("; {}", s.summary())).unwrap_or_default();
            found.push(Finding::new(Reason::DmaLost, format!(
                "{} of {} frames sent to {NIC_ADDR} lost: never DMAed into the agent's buffers (first seqs {:?}){whereabouts}",
                l.lost, l.sent, l.first_lost_seqs
            )));
        }
        if l.corrupted > 0 {
            found.push(Finding::new(Reason::DmaCorrupted, format!("{} frames corrupted in the agent's buffers", l.corrupted)));
        }
        // Only bus-master clears while the agent's DMA ran count.
        let bm_cleared = obs.since_dma.bus_master_cleared_from(NIC_ADDR.trim_start_matches("0000:"), true);
        if l.queued_on_host > 0 {
            found.push(Finding::new(Reason::DmaStalled, format!(
                "RX stalled: {} frames were never taken by the device (QEMU stopped reading its backend){}",
                l.queued_on_host,
                if bm_cleared > 0 { format!("; the guest cleared the NIC's bus-master bit {bm_cleared} time(s)") } else { String::new() }
            )));
        }
        if l.duplicates > 0 || l.unexpected > 0 {
            found.push(Finding::new(Reason::DmaUnexpected, format!("{} duplicate and {} never-sent frames found", l.duplicates, l.unexpected)));
        }
        let section = DmaSection {
            sent: l.sent,
            delivered: l.delivered,
            corrupted: l.corrupted,
            dropped_by_device: l.dropped_by_device,
            dropped_by_qemu: l.dropped_by_qemu,
            lost: l.lost,
            queued_on_host: l.queued_on_host,
            backpressure_events: rx.sent.eagain,
            first_lost_seqs: l.first_lost_seqs.clone(),
            bus_master_cleared: bm_cleared,
            latency_us: LatencySection {
                count: l.latency.count,
                min: l.latency.min_us,
                p50: l.latency.p50_us,
                p99: l.latency.p99_us,
                max: l.latency.max_us,
            },
            last_sent_ms: rx.sent.frames.iter().filter_map(|f| f.written_ns).max().map(|ns| ns.saturating_sub(obs.facts.start_ns) / 1_000_000),
            stray,
        };
        Ok(super::registry::Judged { section: serde_json::to_value(section)?, findings: found, files: vec![("ledger.json", serde_json::to_value(&l)?)] })
    }
}

#[cfg(test)]
mod tests;
