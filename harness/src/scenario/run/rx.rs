//! The RX engine: the agent's e1000e receive ring, fed by the harness's
//! injector through QEMU's netdev socket and read back from the RAM file by
//! a background scanner. With `rx.persist` the ring lives in pkernfs and the
//! new agent takes it back after each live update.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use lulab_proto::{DmaConfig, DmaStatus, IommuApi, Op, Reply};

use super::engine::{DeviceEngine, EngineObservations};
use super::finding::{check, Reason};
use super::{RxSpec, Runner};
use crate::guest_memory::GuestMemory;
use crate::oracle::rx_scan::{RxRing, RxScanner};
use crate::qemu::params::NIC_ADDR;
use crate::traffic::inject::{Injector, SentLog};

/// How often the harness scans the RX ring from the RAM file.
const SCAN_EVERY: Duration = Duration::from_millis(50);
/// Bytes per RX buffer.
pub(super) const RX_BUF: u32 = 2048;

/// The RX side: layout, the background scanner and the injector.
pub(super) struct RxEngine {
    pub spec: RxSpec,
    pub scanner: Arc<Mutex<RxScanner>>,
    stop_scan: Arc<AtomicBool>,
    scan_thread: Option<JoinHandle<()>>,
    pub injector: Option<Injector>,
    sent: Option<SentLog>,
    status: Option<DmaStatus>,
}

impl RxEngine {
    /// Stops the injector (if it runs) and keeps what it sent.
    pub fn stop_injector(&mut self) -> Result<()> {
        if let Some(inj) = self.injector.take() {
            self.sent = Some(inj.stop().context("stopping the injector")?);
        }
        Ok(())
    }

    /// Stops the background scanner and waits for its thread.
    pub fn stop_scanner(&mut self) {
        self.stop_scan.store(true, Ordering::Relaxed);
        if let Some(t) = self.scan_thread.take() {
            let _ = t.join();
        }
    }

    /// Frames seen delivered in the ring so far.
    fn delivered(&self) -> u64 {
        self.scanner.lock().map(|s| s.sightings().delivered.len() as u64).unwrap_or(0)
    }
}

impl DeviceEngine for RxEngine {
    fn start(r: &mut Runner<'_>) -> Result<Option<Self>> {
        let Some(spec) = r.sc.rx.clone() else { return Ok(None) };
        let mem = r.mem.clone().context("no guest memory")?;
        let cfg = DmaConfig::E1000eRx {
            pci: NIC_ADDR.into(),
            ring_size: spec.ring_size,
            buf_size: RX_BUF,
            refill: spec.refill,
            iommu: IommuApi::Auto,
            unmapped_slots: r.shaping.unmapped_slots,
            persist: r.rx_persist_spec(&spec, false),
            interrupts: spec.interrupts,
            irq_left_armed: r.shaping.irq_left_armed,
        };
        let layout = r.dma_start(cfg, None)?;
        let scanner = Arc::new(Mutex::new(RxScanner::new(RxRing::from_layout(&layout)?, r.run_id)));
        let stop_scan = Arc::new(AtomicBool::new(false));
        let thread = spawn_scanner(scanner.clone(), mem, stop_scan.clone());
        Ok(Some(Self { spec, scanner, stop_scan, scan_thread: Some(thread), injector: None, sent: None, status: None }))
    }

    /// The new agent adopts the persistent RX engine from its hand-over.
    fn resume(&mut self, r: &mut Runner<'_>) -> Result<()> {
        let Some(persist) = r.rx_persist_spec(&self.spec, true) else { return Ok(()) };
        let cfg = DmaConfig::E1000eRx {
            pci: NIC_ADDR.into(),
            ring_size: self.spec.ring_size,
            buf_size: RX_BUF,
            refill: self.spec.refill,
            iommu: IommuApi::Iommufd,
            unmapped_slots: 0,
            persist: Some(persist),
            interrupts: self.spec.interrupts,
            irq_left_armed: r.shaping.irq_left_armed,
        };
        let layout = r.resume_engine(cfg, "agent_resume")?;
        check!(layout.persist.is_some_and(|p| p.resumed_from.is_some()), Reason::UpdateResumeFailed, "the agent did not resume from a hand-over");
        Ok(())
    }

    fn settle(&mut self, r: &mut Runner<'_>, quiet: Duration) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        let (mut last, mut since) = (0, Instant::now());
        loop {
            r.poll_faults()?;
            let written = self.injector.as_ref().map(|i| i.written()).unwrap_or(0);
            let finished = self.injector.as_ref().is_none_or(|i| i.is_finished());
            let delivered = self.delivered();
            if finished && delivered >= written {
                return Ok(());
            }
            if delivered != last {
                (last, since) = (delivered, Instant::now());
            }
            if since.elapsed() >= quiet || Instant::now() > deadline {
                return Ok(()); // nothing more is arriving: the oracles will say what is missing
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the injector and the scanner and takes the RX stream's last
    /// look from outside: the final ring scan, the agent's counters
    /// (`rx-status.json`), and the frames not found in the buffers searched
    /// for in the whole RAM file. Nothing when no frames were injected.
    fn observe(&mut self, r: &mut Runner<'_>, into: &mut EngineObservations) -> Result<()> {
        self.stop_injector()?;
        // Frames written right before the stop may still be on their way
        // into the ring (a run that ended without a settle: an abort). Give
        // the device a moment while QEMU lives; a settled run returns at once.
        if let (Some(sent), Some(host)) = (&self.sent, r.host.as_mut()) {
            let written = sent.written();
            let deadline = Instant::now() + Duration::from_secs(3);
            let (mut last, mut since) = (self.delivered(), Instant::now());
            while last < written && since.elapsed() < Duration::from_millis(500) && Instant::now() < deadline && host.qemu.check_alive().is_ok() {
                std::thread::sleep(Duration::from_millis(20));
                let now = self.delivered();
                if now != last {
                    (last, since) = (now, Instant::now());
                }
            }
        }
        self.stop_scanner();
        if let Some(mem) = &r.mem {
            let mut s = self.scanner.lock().map_err(|_| anyhow::anyhow!("scanner poisoned"))?;
            s.scan(mem).context("final RX ring scan")?;
        }
        // The agent's counters are a hint used only as drop evidence; after a
        // kexec there may be no engine (or no agent) to ask.
        self.status = r.host.as_mut().and_then(|h| match h.agent.call(Op::DmaStatus { pci: NIC_ADDR.into() }, Duration::from_secs(5)) {
            Ok(Reply::DmaStatus(s)) => Some(s),
            _ => None,
        });
        if let Some(st) = &self.status {
            // For people: the agent's counters and where the ring is (RDH,
            // RDT, the agent's cursor) when the run ends.
            std::fs::write(r.out.join("rx-status.json"), serde_json::to_string_pretty(st)?)?;
        }
        let Some(sent) = self.sent.clone() else { return Ok(()) };
        let seen = self.scanner.lock().map_err(|_| anyhow::anyhow!("scanner poisoned"))?.sightings().clone();
        let undelivered: std::collections::BTreeSet<u64> = (0..sent.sent()).filter(|s| !seen.delivered.contains_key(s)).collect();
        let stray = match (&r.mem, undelivered.is_empty()) {
            (Some(mem), false) => Some(crate::oracle::stray::search(mem, r.run_id, &r.allowed, &undelivered).context("searching guest RAM for the frames not delivered")?),
            _ => None,
        };
        // QEMU's own record of what its netdev took from the socket.
        let capture = crate::qemu::params::RunPaths::new(r.host_dir()).net_capture();
        let taken_by_qemu = match r.params.nic.as_ref().is_some_and(|n| n.capture) {
            true => Some(crate::traffic::capture::Capture::read(&capture, r.run_id).context("QEMU's capture of the NIC's frames")?.seqs),
            false => None,
        };
        let ring = self.scanner.lock().map_err(|_| anyhow::anyhow!("scanner poisoned"))?.ring().clone();
        let frame_interval_us = (1e6 / self.spec.rate_fps).round() as u64;
        into.rx = Some(crate::oracle::registry::RxObservations { sent, seen, status: self.status.clone(), stray, taken_by_qemu, ring: Some(ring), frame_interval_us });
        Ok(())
    }
}

fn spawn_scanner(scanner: Arc<Mutex<RxScanner>>, mem: Arc<GuestMemory>, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if let Ok(mut s) = scanner.lock() {
                let _ = s.scan(&mem);
            }
            std::thread::sleep(SCAN_EVERY);
        }
    })
}
