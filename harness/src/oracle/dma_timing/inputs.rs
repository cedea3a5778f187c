//! What the DMA timing oracle judges from, kept in the run directory
//! (`dma-timing-inputs.json`, with QEMU's `host/trace.log`) so that
//! `lulab report DIR` times the run again without its host; and the
//! per-sample times it found (`dma-samples.json`), which the HTML report
//! plots.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::{compute, nvme_timing, read_trace, DmaTiming, Found};
use crate::oracle::registry::Observations;

/// The inputs' file in a run directory.
pub const INPUTS_FILE: &str = "dma-timing-inputs.json";
/// The samples' file in a run directory.
pub const SAMPLES_FILE: &str = "dma-samples.json";

/// One live update as this oracle splits time: from the update's first
/// request to the new agent's first answer (harness clock, ns).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// The harness sent the update's first request.
    pub kexec_ns: u64,
    /// The new agent answered (None: it never did).
    pub agent_up_ns: Option<u64>,
}

/// The RX stream: the ring's buffers and every frame the scanner found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RxInputs {
    /// IOVA of the first RX buffer.
    pub buffers_iova: u64,
    /// Bytes per buffer.
    pub buf_size: u64,
    /// The injector's frame interval, µs.
    pub frame_interval_us: u64,
    /// Each frame found: its buffer, when it was sent and first seen.
    pub found: Vec<Found>,
}

/// Everything the oracle needs besides QEMU's trace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inputs {
    /// Time zero of the run (harness clock, ns).
    pub start_ns: u64,
    /// When observing began.
    pub end_ns: u64,
    /// CLOCK_REALTIME − harness clock, ns, at the start and at judging.
    pub clock_offset_ns: (i64, i64),
    /// The live updates.
    pub updates: Vec<Span>,
    /// The RX stream (None: no frames, or no ring layout).
    pub rx: Option<RxInputs>,
    /// An NVMe engine ran.
    pub nvme: bool,
}

/// What `dma-samples.json` holds: every timed sample on the run's clock
/// (µs since the run started), for plots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Samples {
    /// Per timed frame: [DMA write, send → DMA latency], µs.
    pub frames: Vec<[u64; 2]>,
    /// Per timed NVMe read: [completion queued, command → completion], µs.
    pub nvme: Vec<[u64; 2]>,
    /// Per live update: [kexec request, new agent up (None: never)], µs.
    pub updates: Vec<(u64, Option<u64>)>,
    /// The injector's frame interval, µs (0: no RX stream).
    pub frame_interval_us: u64,
}

impl Samples {
    /// Reads `dma-samples.json` of run directory `dir` (None: the run has none).
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let file = dir.join(SAMPLES_FILE);
        if !file.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        serde_json::from_str(&text).map(Some).with_context(|| format!("{}: not lulab DMA samples", file.display()))
    }
}

impl Inputs {
    /// From a run's observations (None: no RX ring and no NVMe engine).
    pub fn of(obs: &Observations) -> Option<Self> {
        let rx = obs.rx.and_then(|rx| {
            let ring = rx.ring.as_ref()?;
            let found = rx.seen.delivered.values().map(|d| Found { slot: d.slot, sent_ns: d.sent_ns, seen_ns: d.seen_ns }).collect();
            Some(RxInputs { buffers_iova: ring.buffers.iova, buf_size: u64::from(ring.buf_size), frame_interval_us: rx.frame_interval_us, found })
        });
        if rx.is_none() && obs.nvme.is_none() {
            return None;
        }
        Some(Self {
            start_ns: obs.facts.start_ns,
            end_ns: obs.facts.end_ns,
            clock_offset_ns: obs.facts.clock_offset_ns,
            updates: obs.updates.iter().map(|u| Span { kexec_ns: u.kexec_started_ns, agent_up_ns: u.agent_up_ns }).collect(),
            rx,
            nvme: obs.nvme.is_some(),
        })
    }

    /// Reads `dma-timing-inputs.json` of run directory `dir`.
    pub fn read(dir: &Path) -> Result<Self> {
        let file = dir.join(INPUTS_FILE);
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{}: not lulab DMA timing inputs", file.display()))
    }

    /// Times the run from QEMU's trace log `trace`: the report section and the samples.
    pub fn judge(&self, trace: &Path) -> Result<(DmaTiming, Samples)> {
        let file = std::fs::File::open(trace).with_context(|| format!("opening {}", trace.display()))?;
        let (offset0, offset1) = self.clock_offset_ns;
        let tr = read_trace(std::io::BufReader::new(file), offset0);
        let us = |ns: u64| ns.saturating_sub(self.start_ns) / 1000;
        let points = |v: Vec<(u64, u64)>| v.into_iter().map(|(at, lat)| [us(at), lat]).collect::<Vec<_>>();
        let (mut t, frames) = match &self.rx {
            Some(rx) => {
                let (mut t, p) = compute(&tr.writes, &tr.rdt, rx.buffers_iova, rx.buf_size, &rx.found, &self.updates, self.start_ns, self.end_ns);
                t.frame_interval_us = rx.frame_interval_us;
                (t, points(p))
            }
            None => (DmaTiming::default(), Vec::new()),
        };
        let mut nvme = Vec::new();
        if self.nvme {
            let (nv, p) = nvme_timing(&tr.nvme, tr.nvme_open, &self.updates);
            t.nvme = Some(nv);
            nvme = points(p);
        }
        t.clock_offset_ns = (offset0, offset1);
        let samples = Samples {
            frames,
            nvme,
            updates: self.updates.iter().map(|u| (us(u.kexec_ns), u.agent_up_ns.map(us))).collect(),
            frame_interval_us: t.frame_interval_us,
        };
        Ok((t, samples))
    }
}
