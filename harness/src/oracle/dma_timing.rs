//! When the e1000e wrote each frame into memory, from QEMU itself, at
//! microsecond resolution: the `e1000e_rx_desc_buff_write` trace event names
//! the buffer (its IOVA) and carries QEMU's wall-clock time. Each frame the
//! RX scanner found in a buffer is matched to the last write into that
//! buffer before the scanner saw it (and not before the frame was sent),
//! which gives its send → DMA latency; the scanner's 50 ms period is no
//! longer in the number. Per live update, the DMA blackout is the longest
//! gap between two consecutive writes of the device from the kexec request
//! to the new agent's first refill (its first `e1000e_rx_set_rdt`); a device
//! that never writes again has a blackout that runs to the end of the run.
//!
//! Clocks: QEMU stamps trace lines with `gettimeofday` (CLOCK_REALTIME);
//! frames carry the harness's monotonic clock. The harness reads both
//! clocks back to back at the start of the run and again when it judges;
//! trace times are moved onto the harness clock with the first offset, and
//! the report gives the drift between the two (NTP slewing; µs over a run).
//!
//! This oracle reports; it finds nothing (the ledger judges loss).

use std::collections::BTreeMap;
use std::io::BufRead;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::registry::{Judged, Observations, Oracle};

mod inputs;
pub use inputs::{Inputs, RxInputs, Samples, Span, INPUTS_FILE, SAMPLES_FILE};

/// The write of one RX buffer by the device, as QEMU traced it.
const BUFF_WRITE: &str = "e1000e_rx_desc_buff_write";
/// A tail (RDT) write by a driver: the ring refilled.
const SET_RDT: &str = "e1000e_rx_set_rdt";
/// The NVMe controller took an I/O command from its submission queue.
const NVME_IO_CMD: &str = "pci_nvme_io_cmd";
/// The NVMe controller queued a command's completion.
const NVME_COMPLETION: &str = "pci_nvme_enqueue_req_completion";

/// Latency percentiles, µs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Frames in the set.
    pub frames: u64,
    /// 50th percentile.
    pub p50_us: u64,
    /// 99th.
    pub p99_us: u64,
    /// 99.9th.
    pub p999_us: u64,
    /// The largest.
    pub max_us: u64,
}

impl Percentiles {
    /// Of `v` (µs; sorted here).
    pub fn of(mut v: Vec<u64>) -> Option<Self> {
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let at = |q| nearest_rank(&v, q);
        Some(Self { frames: v.len() as u64, p50_us: at(0.50), p99_us: at(0.99), p999_us: at(0.999), max_us: *v.last().unwrap_or(&0) })
    }
}

/// The `q` quantile (0..=1) of `sorted` by nearest rank; `sorted` must not be empty.
pub fn nearest_rank(sorted: &[u64], q: f64) -> u64 {
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// The DMA blackout of one live update.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blackout {
    /// The update (from 1).
    pub index: u32,
    /// The longest gap between two consecutive DMA writes, µs.
    pub blackout_us: u64,
    /// Its start and end, ms since the run started.
    pub from_ms: u64,
    /// See `from_ms`.
    pub to_ms: u64,
    /// The device never wrote again: the gap runs to the end of the run.
    pub to_end_of_run: bool,
    /// The new agent's first refill, ms since the run started (null: none).
    pub first_refill_ms: Option<u64>,
}

/// report.json `dma_timing`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmaTiming {
    /// Frames matched to the device's write of their buffer.
    pub frames_timed: u64,
    /// Frames found by the scanner with no matching write in QEMU's trace.
    pub frames_unmatched: u64,
    /// Writes of the device into its RX buffers that QEMU traced.
    pub dma_writes: u64,
    /// The frame interval of the injector, µs.
    pub frame_interval_us: u64,
    /// Send → DMA latency of every timed frame.
    pub latency: Option<Percentiles>,
    /// Of frames written before the first update's kexec request.
    pub latency_before: Option<Percentiles>,
    /// Of frames written inside an update (kexec request → new agent up).
    pub latency_during: Option<Percentiles>,
    /// Of the others (after an update).
    pub latency_after: Option<Percentiles>,
    /// One per live update.
    pub blackouts: Vec<Blackout>,
    /// CLOCK_REALTIME − harness clock, ns, at the run's start and at judging.
    pub clock_offset_ns: (i64, i64),
    /// NVMe reads from the controller taking the command off its submission
    /// queue to queueing its completion (`None`: no NVMe engine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvme: Option<NvmeTiming>,
}

impl DmaTiming {
    /// Gives each update of report.json's `updates[]` its blackout and the
    /// frame interval to read it against.
    pub fn annotate(&self, updates: &mut [crate::oracle::timeline::UpdateTimeline]) {
        for (u, b) in updates.iter_mut().zip(&self.blackouts) {
            (u.dma_blackout_us, u.dma_blackout_to_end_of_run, u.frame_interval_us) = (Some(b.blackout_us), b.to_end_of_run, Some(self.frame_interval_us));
        }
    }
}

/// report.json `dma_timing.nvme`: the NVMe controller's command latency.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvmeTiming {
    /// I/O commands with both ends traced.
    pub commands_timed: u64,
    /// I/O commands taken and never completed (in flight at the end, or
    /// dropped by a reset).
    pub commands_open: u64,
    /// Submission seen by the device → completion queued, of all.
    pub latency: Option<Percentiles>,
    /// Of commands completed before the first update's kexec request.
    pub latency_before: Option<Percentiles>,
    /// Inside an update (kexec request → new agent up).
    pub latency_during: Option<Percentiles>,
    /// After.
    pub latency_after: Option<Percentiles>,
}

/// Latency samples (µs), all of them and split by where their time falls:
/// before the first update's kexec request, inside an update (kexec
/// request → new agent up), or after.
#[derive(Debug, Default)]
struct Split {
    /// (when, µs) of each sample, for the plots.
    points: Vec<(u64, u64)>,
    all: Vec<u64>,
    before: Vec<u64>,
    during: Vec<u64>,
    after: Vec<u64>,
}

impl Split {
    fn push(&mut self, at_ns: u64, us: u64, updates: &[Span]) {
        self.points.push((at_ns, us));
        self.all.push(us);
        let first_kexec = updates.first().map_or(u64::MAX, |u| u.kexec_ns);
        let in_update = updates.iter().any(|u| at_ns >= u.kexec_ns && u.agent_up_ns.is_none_or(|up| at_ns <= up));
        match (at_ns < first_kexec, in_update) {
            (true, _) => self.before.push(us),
            (false, true) => self.during.push(us),
            (false, false) => self.after.push(us),
        }
    }

    /// Percentiles of all, before, during and after, and the points.
    fn percentiles(self) -> ([Option<Percentiles>; 4], Vec<(u64, u64)>) {
        ([self.all, self.before, self.during, self.after].map(Percentiles::of), self.points)
    }
}

/// The NVMe commands' latency, split by the updates, and each command's
/// (completion time, µs).
pub fn nvme_timing(commands: &[(u64, u64)], open: u64, updates: &[Span]) -> (NvmeTiming, Vec<(u64, u64)>) {
    let mut split = Split::default();
    for &(start, end) in commands {
        split.push(end, end.saturating_sub(start) / 1000, updates);
    }
    let commands_timed = split.all.len() as u64;
    let ([latency, latency_before, latency_during, latency_after], points) = split.percentiles();
    (NvmeTiming { commands_timed, commands_open: open, latency, latency_before, latency_during, latency_after }, points)
}

/// What this oracle reads of `trace.log`, on the harness clock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceTimes {
    /// The e1000e's RX buffer writes: (ns, buffer IOVA).
    pub writes: Vec<(u64, u64)>,
    /// Its tail (RDT) writes.
    pub rdt: Vec<u64>,
    /// NVMe I/O commands: (taken, completion queued). A completion pairs
    /// with the open command of its id; admin completions (queue 0) are skipped.
    pub nvme: Vec<(u64, u64)>,
    /// NVMe I/O commands taken and never completed.
    pub nvme_open: u64,
}

/// One pass over `trace.log` (`offset_ns`: realtime − harness). Lines
/// without a timestamp are skipped.
pub fn read_trace(text: impl BufRead, offset_ns: i64) -> TraceTimes {
    let num = |args: &str, key: &str| -> Option<u64> {
        let (_, rest) = args.split_once(key)?;
        rest.trim_start().split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    let mut t = TraceTimes::default();
    let mut open = std::collections::HashMap::<u64, u64>::new();
    for line in text.lines().map_while(Result::ok) {
        let Some((ns, rest)) = stamped(&line, offset_ns) else { continue };
        let Some(ev) = super::trace::parse_line(rest) else { continue };
        match ev.name {
            BUFF_WRITE => {
                let hex = ev.args.split_once("addr: 0x").and_then(|(_, a)| a.split(|c: char| !c.is_ascii_hexdigit()).next());
                if let Some(addr) = hex.and_then(|h| u64::from_str_radix(h, 16).ok()) {
                    t.writes.push((ns, addr));
                }
            }
            SET_RDT => t.rdt.push(ns),
            NVME_IO_CMD => {
                if let Some(cid) = num(ev.args, "cid ") {
                    open.insert(cid, ns);
                }
            }
            NVME_COMPLETION => {
                let cid = num(ev.args, "cid ").filter(|_| num(ev.args, "cqid ").is_some_and(|cq| cq != 0));
                if let Some(start) = cid.and_then(|cid| open.remove(&cid)) {
                    t.nvme.push((start, ns));
                }
            }
            _ => {}
        }
    }
    t.nvme_open = open.len() as u64;
    t
}

/// `PID@SECONDS.MICROS:rest` → (harness ns, rest).
fn stamped(line: &str, offset_ns: i64) -> Option<(u64, &str)> {
    let (_, after) = line.split_once('@')?;
    let (stamp, rest) = after.split_once(':')?;
    let (s, us) = stamp.split_once('.')?;
    let real = s.parse::<i64>().ok()?.checked_mul(1_000_000_000)?.checked_add(us.parse::<i64>().ok()?.checked_mul(1000)?)?;
    u64::try_from(real - offset_ns).ok().map(|ns| (ns, rest))
}

/// A frame found in buffer `slot`: when it was sent and first seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Found {
    /// Its buffer.
    pub slot: u32,
    /// Send time (harness clock, ns).
    pub sent_ns: u64,
    /// First sighting (harness clock, ns).
    pub seen_ns: u64,
}

/// Everything this oracle computes for the RX stream, from plain data
/// (unit-tested), and each timed frame's (DMA time, µs).
#[allow(clippy::too_many_arguments)]
pub fn compute(
    writes: &[(u64, u64)],
    rdt: &[u64],
    buffers_iova: u64,
    buf_size: u64,
    found: &[Found],
    updates: &[Span],
    start_ns: u64,
    end_ns: u64,
) -> (DmaTiming, Vec<(u64, u64)>) {
    let ms = |ns: u64| ns.saturating_sub(start_ns) / 1_000_000;
    // Writes per slot, in time order.
    let mut by_slot: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for &(ns, addr) in writes {
        if addr >= buffers_iova && buf_size > 0 {
            by_slot.entry((addr - buffers_iova) / buf_size).or_default().push(ns);
        }
    }
    for v in by_slot.values_mut() {
        v.sort_unstable();
    }
    let (mut split, mut unmatched) = (Split::default(), 0u64);
    for f in found {
        let w = by_slot.get(&u64::from(f.slot)).and_then(|v| {
            let i = v.partition_point(|&t| t <= f.seen_ns);
            (i > 0).then(|| v[i - 1]).filter(|&t| t >= f.sent_ns)
        });
        let Some(dma) = w else {
            unmatched += 1;
            continue;
        };
        split.push(dma, (dma - f.sent_ns) / 1000, updates);
    }
    let mut times: Vec<u64> = writes.iter().map(|w| w.0).collect();
    times.sort_unstable();
    let blackouts = updates
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let refill = u.agent_up_ns.and_then(|up| rdt.iter().copied().filter(|&t| t >= up).min());
            let next_kexec = updates.get(i + 1).map(|n| n.kexec_ns);
            let end = refill.or(next_kexec).unwrap_or(end_ns);
            blackout(&times, u.kexec_ns, end, refill.is_none() && next_kexec.is_none(), end_ns).map_or(
                Blackout { index: i as u32 + 1, first_refill_ms: refill.map(ms), ..Default::default() },
                |(from, to, to_end)| Blackout {
                    index: i as u32 + 1,
                    blackout_us: (to - from) / 1000,
                    from_ms: ms(from),
                    to_ms: ms(to),
                    to_end_of_run: to_end,
                    first_refill_ms: refill.map(ms),
                },
            )
        })
        .collect();
    let frames_timed = split.all.len() as u64;
    let ([latency, latency_before, latency_during, latency_after], points) = split.percentiles();
    let t = DmaTiming {
        frames_timed,
        frames_unmatched: unmatched,
        dma_writes: writes.len() as u64,
        latency,
        latency_before,
        latency_during,
        latency_after,
        blackouts,
        ..Default::default()
    };
    (t, points)
}

/// The longest gap between consecutive writes (`times`, sorted) over
/// `[from, to]`, counting the last write before `from` and the first after
/// `to`; with `open_end` and no write after the last one, the gap to
/// `run_end` counts too (flagged). None: no write at all.
fn blackout(times: &[u64], from: u64, to: u64, open_end: bool, run_end: u64) -> Option<(u64, u64, bool)> {
    let lo = times.partition_point(|&t| t < from);
    let hi = times.partition_point(|&t| t <= to);
    let mut pts: Vec<u64> = times[lo.saturating_sub(1)..hi].to_vec();
    if let Some(&next) = times.get(hi) {
        pts.push(next);
    }
    let last = *pts.last()?;
    let mut best = pts.windows(2).map(|w| (w[0], w[1], false)).max_by_key(|(a, b, _)| b - a);
    if open_end && times.get(hi).is_none() && run_end > last && best.is_none_or(|(a, b, _)| run_end - last > b - a) {
        best = Some((last, run_end, true));
    }
    best
}

/// The DMA timing oracle.
#[derive(Debug)]
pub struct DmaTimingOracle;

impl Oracle for DmaTimingOracle {
    fn name(&self) -> &'static str {
        "dma_timing"
    }

    fn trace_events(&self) -> &'static [&'static str] {
        &[BUFF_WRITE, SET_RDT, NVME_IO_CMD, NVME_COMPLETION]
    }

    fn judge(&self, obs: &Observations) -> Result<Judged> {
        let Some(inputs) = Inputs::of(obs) else {
            return Ok(Judged { section: serde_json::Value::Null, ..Default::default() });
        };
        let (t, samples) = inputs.judge(&obs.host_dir.join("trace.log"))?;
        let files = vec![(INPUTS_FILE, serde_json::to_value(&inputs)?), (SAMPLES_FILE, serde_json::to_value(&samples)?)];
        Ok(Judged { section: serde_json::to_value(&t)?, files, ..Default::default() })
    }

    fn markdown(&self, section: &serde_json::Value) -> Option<String> {
        let t: DmaTiming = serde_json::from_value(section.clone()).ok()?;
        let mut s = format!(
            "## DMA timing (QEMU's trace, µs)\n\n{} frames timed from send to the device's write of their buffer ({} unmatched, {} writes traced); frame interval {} µs.\n\n| frames | n | p50 | p99 | p99.9 | max |\n|---|---|---|---|---|---|\n",
            t.frames_timed, t.frames_unmatched, t.dma_writes, t.frame_interval_us
        );
        for (name, p) in [("all", &t.latency), ("before the first update", &t.latency_before), ("during updates", &t.latency_during), ("after", &t.latency_after)] {
            if let Some(p) = p {
                s.push_str(&format!("| {name} | {} | {} | {} | {} | {} |\n", p.frames, p.p50_us, p.p99_us, p.p999_us, p.max_us));
            }
        }
        if let Some(nv) = &t.nvme {
            s.push_str(&format!(
                "\nNVMe: {} reads timed from the controller taking the command to queueing its completion ({} never completed).\n\n| commands | n | p50 | p99 | p99.9 | max |\n|---|---|---|---|---|---|\n",
                nv.commands_timed, nv.commands_open
            ));
            for (name, p) in [("all", &nv.latency), ("before the first update", &nv.latency_before), ("during updates", &nv.latency_during), ("after", &nv.latency_after)] {
                if let Some(p) = p {
                    s.push_str(&format!("| {name} | {} | {} | {} | {} | {} |\n", p.frames, p.p50_us, p.p99_us, p.p999_us, p.max_us));
                }
            }
        }
        if !t.blackouts.is_empty() {
            s.push_str("\n| update | DMA blackout (µs) | from (ms) | to (ms) | first refill (ms) |\n|---|---|---|---|---|\n");
            for b in &t.blackouts {
                let to = if b.to_end_of_run { format!("{} (end of run: the device never wrote again)", b.to_ms) } else { b.to_ms.to_string() };
                let refill = b.first_refill_ms.map_or("-".to_string(), |m| m.to_string());
                s.push_str(&format!("| {} | {} | {} | {to} | {refill} |\n", b.index, b.blackout_us, b.from_ms));
            }
        }
        Some(s)
    }
}

#[cfg(test)]
mod tests;
