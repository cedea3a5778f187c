//! The NVMe engine: the agent reads `[nvme].lba_count` blocks of a
//! patterned backing file into its buffers; the ledger finds each block in
//! place from the RAM file. A persistent engine (`nvme.persist`) keeps its
//! queues and buffers in pkernfs and the new agent takes it back after a
//! live update. A non-persistent one ends at the kexec: just before the
//! jump the harness judges what it left (the blocks in place, the hashes
//! of its pages) and stops watching its memory; after the update, when
//! reads remain, the new agent takes the controller back (from whichever
//! driver the new kernel bound to it) into a fresh non-persistent domain
//! and reads on from the first block that was not in place.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use lulab_proto::{DmaLayout, IommuApi, PhysRange};

use super::engine::{DeviceEngine, EngineObservations};
use super::finding::{check, Reason};
use super::Runner;
use crate::oracle::memory;
use crate::oracle::nvme::NvmeLedger;
use crate::qemu::params::NVME_ADDR;
use crate::report::NvmeRestart;

/// The NVMe side: the running engine's layout and ledger, and what engines
/// ended by a live update left.
#[derive(Debug)]
pub(super) struct NvmeEngine {
    /// The running engine's layout (the last one started).
    pub layout: DmaLayout,
    /// Its ledger; `None` once every block was in place at a kexec.
    pub ledger: Option<NvmeLedger>,
    /// LBAs `[0, done_before)` were in place before a kexec ended an
    /// earlier engine (the running one reads from there).
    done_before: u64,
    /// Engines started again after a live update.
    restarts: Vec<NvmeRestart>,
    /// Set at the jump for a non-persistent engine: blocks found in place,
    /// and the first LBA that was not.
    pending: Option<(u64, u64)>,
}

impl DeviceEngine for NvmeEngine {
    fn start(r: &mut Runner<'_>) -> Result<Option<Self>> {
        let Some(spec) = r.sc.nvme.clone() else { return Ok(None) };
        let persist = r.nvme_persist_spec(&spec, false);
        let layout = r.dma_start(r.nvme_config(&spec, 0, IommuApi::Auto, persist), None)?;
        let ledger = NvmeLedger::new(NVME_ADDR, &layout.buffers, 0, spec.lba_count, r.run_id)?;
        Ok(Some(Self { layout, ledger: Some(ledger), done_before: 0, restarts: Vec::new(), pending: None }))
    }

    /// A non-persistent engine ends here: the blocks in place are noted
    /// and its pages judged and no longer watched.
    fn before_jump(&mut self, r: &mut Runner<'_>) -> Result<()> {
        let persistent = r.sc.nvme.as_ref().is_none_or(|n| n.persist);
        let (Some(mem), false) = (r.mem.clone(), persistent) else { return Ok(()) };
        // No ledger: every block was in place at an earlier kexec, no engine runs.
        let Some(ledger) = &self.ledger else { return Ok(()) };
        let found = ledger.check(&mem).context("NVMe blocks in place at the kexec")?;
        self.pending = Some((found.blocks_read, ledger.lba_start() + found.in_place_prefix));
        r.retire_memory(&self.layout.dma_pages, &self.layout.canary)
    }

    /// The new agent takes a persistent engine back from its hand-over.
    fn resume(&mut self, r: &mut Runner<'_>) -> Result<()> {
        let Some(spec) = r.sc.nvme.clone() else { return Ok(()) };
        let Some(persist) = r.nvme_persist_spec(&spec, true) else { return Ok(()) };
        let cfg = r.nvme_config(&spec, 0, IommuApi::Iommufd, Some(persist));
        let layout = r.resume_engine(cfg, "nvme_resume")?;
        check!(layout.persist.is_some_and(|p| p.resumed_nvme.is_some()), Reason::UpdateResumeFailed, "the NVMe engine did not resume from a hand-over");
        Ok(())
    }

    /// A non-persistent engine with reads left starts again where the
    /// blocks in place end.
    fn after_update(&mut self, r: &mut Runner<'_>) -> Result<()> {
        let n = r.live_updates;
        let Some((found, next)) = self.pending.take() else { return Ok(()) };
        self.restart(r, n, found, next).with_context(|| format!("taking the non-persistent NVMe back after live update {n}"))
    }

    /// Waits until every block is in its buffer (read from the RAM file) or
    /// none arrived for `quiet`; the ledger then says what is missing.
    fn settle(&mut self, r: &mut Runner<'_>, quiet: Duration) -> Result<()> {
        let (Some(ledger), Some(mem)) = (self.ledger.as_ref(), r.mem.clone()) else { return Ok(()) };
        let deadline = Instant::now() + Duration::from_secs(300);
        let (mut last, mut since) = (u64::MAX, Instant::now());
        loop {
            let c = ledger.check(&mem)?;
            if c.blocks_read == c.blocks_expected {
                return Ok(());
            }
            if c.blocks_read != last {
                (last, since) = (c.blocks_read, Instant::now());
            }
            if since.elapsed() >= quiet || Instant::now() > deadline {
                return Ok(());
            }
            if let Some(h) = r.host.as_mut() {
                h.qemu.check_alive()?;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The blocks, read from the RAM file now.
    fn observe(&mut self, r: &mut Runner<'_>, into: &mut EngineObservations) -> Result<()> {
        let (Some(mem), Some(spec)) = (&r.mem, &r.sc.nvme) else { return Ok(()) };
        let blocks = match &self.ledger {
            Some(l) => l.check(mem).context("reading the NVMe blocks from the RAM file")?,
            None => crate::oracle::nvme::NvmeReport::default(),
        };
        into.nvme = Some(crate::oracle::registry::NvmeObservations { blocks, lba_count: spec.lba_count, done_before: self.done_before, restarts: self.restarts.clone() });
        Ok(())
    }
}

impl NvmeEngine {
    fn restart(&mut self, r: &mut Runner<'_>, n: u32, found: u64, next: u64) -> Result<()> {
        let spec = r.sc.nvme.clone().context("an NVMe engine without [nvme]")?;
        let mem = r.mem.clone().context("no guest memory")?;
        self.done_before = next;
        if next >= spec.lba_count {
            self.ledger = None;
            return Ok(());
        }
        let t = Instant::now();
        let cfg = r.nvme_config(&spec, next, IommuApi::Auto, None);
        let layout = r.dma_start(cfg, Some(n))?;
        r.mark(&format!("live_update{n}_nvme_restart"), t);
        let ledger = NvmeLedger::new(NVME_ADDR, &layout.buffers, next, spec.lba_count - next, r.run_id)?;
        let ranges: Vec<PhysRange> = layout.dma_pages.iter().chain(&layout.canary).copied().collect();
        let hashes = memory::hash_pages(&mem, &ranges)?;
        if let Some(b) = r.before.as_mut() {
            b.pages.extend(hashes.pages);
        }
        self.layout = layout;
        self.ledger = Some(ledger);
        self.restarts.push(NvmeRestart { live_update: n, verified_at_kexec: found, resumed_at_lba: next });
        Ok(())
    }
}
