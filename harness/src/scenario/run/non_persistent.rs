//! Non-persistent engines across a live update, and the isolation oracle's
//! clock (byte offsets into QEMU's trace log).
//!
//! A non-persistent engine's device loses its translation at the kexec (our
//! kernel's freeze zaps its context entry, the PCI core clears its bus
//! master) and its memory is the old kernel's. So just before the jump the
//! harness ends its span in the isolation oracle and the engine judges what
//! it left and stops watching its memory ([`Runner::retire_memory`]; the
//! NVMe engine's `before_jump`); after the update it may start again (its
//! `after_update`).

use anyhow::{Context, Result};
use lulab_proto::{DmaConfig, DmaLayout, IommuApi, PersistSpec, PhysRange};

use super::{NvmeSpec, Runner};
use crate::oracle::isolation::Owner;
use crate::oracle::memory;
use crate::qemu::params::NVME_ADDR;

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

    /// Right before a live update's jump: ends the isolation span of every
    /// non-persistent engine, then each engine's own `before_jump`. Returns
    /// the trace offset of the kexec request.
    pub(super) fn before_jump(&mut self) -> Result<u64> {
        let at = self.trace_len();
        for o in self.iso.owners.iter_mut().filter(|o| !o.persistent && o.until.is_none()) {
            o.until = Some(at);
        }
        self.each_engine(|e, r| e.before_jump(r))?;
        Ok(at)
    }

    /// Judges the pages of an engine the kexec ends (its DMA pages may have
    /// changed, the canary not) and stops watching them: after the kexec
    /// they are the next kernel's memory.
    pub(super) fn retire_memory(&mut self, dma: &[PhysRange], canary: &[PhysRange]) -> Result<()> {
        let (Some(mem), true) = (self.mem.clone(), self.before.is_some()) else { return Ok(()) };
        let ranges: Vec<PhysRange> = dma.iter().chain(canary).copied().collect();
        let now = memory::hash_pages(&mem, &ranges).context("hashing a non-persistent engine's pages at the kexec")?;
        let old = self.before.as_mut().map(|b| b.take(&ranges)).unwrap_or_default();
        self.retired.merge(memory::diff(&old, &now, dma));
        self.watched.retain(|r| !ranges.contains(r));
        self.allowed.retain(|r| !dma.contains(r));
        Ok(())
    }

    /// After a live update's engines resumed: each engine's `after_update`
    /// (a non-persistent NVMe engine with reads left starts again), then
    /// the update's window closes.
    pub(super) fn after_update(&mut self, kexec_at: u64) -> Result<()> {
        self.each_engine(|e, r| e.after_update(r))?;
        let back = self.trace_len();
        self.iso.updates.push((kexec_at, back));
        Ok(())
    }
}
