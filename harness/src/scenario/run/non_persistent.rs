//! Non-persistent engines across a live update, and the isolation oracle's
//! clock (byte offsets into QEMU's trace log).
//!
//! A non-persistent engine's device loses its translation at the kexec (our
//! kernel's freeze zaps its context entry, the PCI core clears its bus
//! master) and its memory is the old kernel's. So just before the jump the
//! harness judges what that engine left — the NVMe blocks in place, the
//! hashes of its pages — stops watching its memory and ends its span in the
//! isolation oracle. After the update, when reads remain, the new agent
//! takes the controller back (from whichever driver the new kernel bound to
//! it) into a fresh non-persistent domain and reads on from the first block
//! that was not in place.

use std::time::Instant;

use anyhow::{Context, Result};
use lulab_proto::{DmaConfig, DmaLayout, IommuApi, PersistSpec, PhysRange};

use super::{NvmeSpec, Runner};
use crate::oracle::isolation::Owner;
use crate::oracle::memory;
use crate::oracle::nvme::NvmeLedger;
use crate::qemu::params::NVME_ADDR;
use crate::report::NvmeRestart;

/// The NVMe side: the running engine's layout and ledger, and what engines
/// ended by a live update left.
#[derive(Debug)]
pub(super) struct NvmeRun {
    /// The running engine's layout (the last one started).
    pub layout: DmaLayout,
    /// Its ledger; `None` once every block was in place at a kexec.
    pub ledger: Option<NvmeLedger>,
    /// LBAs `[0, done_before)` were in place before a kexec ended an
    /// earlier engine (the running one reads from there).
    pub done_before: u64,
    /// Engines started again after a live update.
    pub restarts: Vec<NvmeRestart>,
    /// Set at the jump for a non-persistent engine: blocks found in place,
    /// and the first LBA that was not.
    pending: Option<(u64, u64)>,
}

impl NvmeRun {
    pub fn new(layout: DmaLayout, ledger: NvmeLedger) -> Self {
        Self { layout, ledger: Some(ledger), done_before: 0, restarts: Vec::new(), pending: None }
    }
}

impl Runner<'_> {
    /// QEMU's trace log size now: the isolation oracle's clock.
    pub(super) fn trace_len(&self) -> u64 {
        std::fs::metadata(self.host_dir().join("trace.log")).map(|m| m.len()).unwrap_or(0)
    }

    /// The agent's NVMe read of `[lba_start, spec.lba_count)`.
    pub(super) fn nvme_config(&self, spec: &NvmeSpec, lba_start: u64, iommu: IommuApi, persist: Option<PersistSpec>) -> DmaConfig {
        let buffers_alias = self.shaping.cross_device_mapping.then(|| self.sc.rx.as_ref().and_then(|rx| self.rx_persist_spec(rx, false))).flatten().map(|p| p.file);
        DmaConfig::NvmeRead {
            pci: NVME_ADDR.into(),
            blocks_per_cmd: spec.blocks_per_cmd,
            lba_start,
            lba_count: spec.lba_count - lba_start,
            queue_depth: spec.queue_depth,
            iommu,
            persist,
            buffers_alias,
        }
    }

    /// The engine of `layout` owns its device from trace offset `from` on
    /// (isolation oracle); `layout`'s pages must be resolved.
    pub(super) fn watch_engine(&mut self, layout: &DmaLayout, from: u64) {
        let persistent = layout.persist.as_ref().is_some_and(|p| p.persistent);
        let owner = Owner { from, canary: layout.canary.clone(), ..Owner::new(&layout.pci, layout.dma_pages.clone(), persistent) };
        self.iso.owners.push(owner);
    }

    /// Right before a live update's jump: ends every non-persistent engine
    /// (isolation span, memory watch, NVMe ledger snapshot). Returns the
    /// trace offset of the kexec request.
    pub(super) fn before_jump(&mut self) -> Result<u64> {
        let at = self.trace_len();
        for o in self.iso.owners.iter_mut().filter(|o| !o.persistent && o.until.is_none()) {
            o.until = Some(at);
        }
        let persistent = self.sc.nvme.as_ref().is_none_or(|n| n.persist);
        let (Some(nv), Some(mem), false) = (self.nvme.as_mut(), self.mem.clone(), persistent) else { return Ok(at) };
        // No ledger: every block was in place at an earlier kexec, no engine runs.
        let Some(ledger) = &nv.ledger else { return Ok(at) };
        let r = ledger.check(&mem).context("NVMe blocks in place at the kexec")?;
        nv.pending = Some((r.blocks_read, ledger.lba_start() + r.in_place_prefix));
        let (dma, canary) = (nv.layout.dma_pages.clone(), nv.layout.canary.clone());
        self.retire_memory(&dma, &canary)?;
        Ok(at)
    }

    /// Judges the pages of an engine the kexec ends (its DMA pages may have
    /// changed, the canary not) and stops watching them: after the kexec
    /// they are the next kernel's memory.
    fn retire_memory(&mut self, dma: &[PhysRange], canary: &[PhysRange]) -> Result<()> {
        let (Some(mem), true) = (self.mem.clone(), self.before.is_some()) else { return Ok(()) };
        let ranges: Vec<PhysRange> = dma.iter().chain(canary).copied().collect();
        let now = memory::hash_pages(&mem, &ranges).context("hashing a non-persistent engine's pages at the kexec")?;
        let old = self.before.as_mut().map(|b| b.take(&ranges)).unwrap_or_default();
        self.retired.merge(memory::diff(&old, &now, dma));
        self.watched.retain(|r| !ranges.contains(r));
        self.allowed.retain(|r| !dma.contains(r));
        Ok(())
    }

    /// After a live update's engines resumed: a non-persistent NVMe engine
    /// with reads left is started again, then the update's window closes.
    pub(super) fn after_update(&mut self, kexec_at: u64) -> Result<()> {
        let n = self.live_updates;
        if let Some((found, next)) = self.nvme.as_mut().and_then(|nv| nv.pending.take()) {
            self.nvme_restart(n, found, next).with_context(|| format!("taking the non-persistent NVMe back after live update {n}"))?;
        }
        let back = self.trace_len();
        self.iso.updates.push((kexec_at, back));
        Ok(())
    }

    fn nvme_restart(&mut self, n: u32, found: u64, next: u64) -> Result<()> {
        let spec = self.sc.nvme.clone().context("an NVMe engine without [nvme]")?;
        let mem = self.mem.clone().context("no guest memory")?;
        if let Some(nv) = self.nvme.as_mut() {
            nv.done_before = next;
        }
        if next >= spec.lba_count {
            if let Some(nv) = self.nvme.as_mut() {
                nv.ledger = None;
            }
            return Ok(());
        }
        let t = Instant::now();
        let cfg = self.nvme_config(&spec, next, IommuApi::Auto, None);
        let layout = self.dma_start(cfg, Some(n))?;
        self.mark(&format!("live_update{n}_nvme_restart"), t);
        let ledger = NvmeLedger::new(NVME_ADDR, &layout.buffers, next, spec.lba_count - next, self.run_id)?;
        let ranges: Vec<PhysRange> = layout.dma_pages.iter().chain(&layout.canary).copied().collect();
        let hashes = memory::hash_pages(&mem, &ranges)?;
        if let Some(b) = self.before.as_mut() {
            b.pages.extend(hashes.pages);
        }
        let nv = self.nvme.as_mut().context("no NVMe engine to restart")?;
        nv.layout = layout;
        nv.ledger = Some(ledger);
        nv.restarts.push(NvmeRestart { live_update: n, verified_at_kexec: found, resumed_at_lba: next });
        Ok(())
    }
}
