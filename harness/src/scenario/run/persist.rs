//! Persistent RX engines (`rx.persist`): the harness side of a live update
//! with the device kept running.
//!
//! The agent cannot see physical addresses of pkernfs pages, so the harness
//! finds them itself: it parses the pkernfs image out of the host's RAM file
//! and maps the engine's file offsets to guest-physical ranges (outside
//! evidence, like everything the oracles use). After each `live_update`
//! the new agent adopts the device from its hand-over; the harness checks
//! that the adopted layout is the one its scanner and ledgers already watch.

use anyhow::{bail, ensure, Context, Result};
use lulab_proto::{DmaConfig, DmaLayout, PersistBacking, PersistSpec, PhysRange, Reply};

use super::finding::check;
use super::finding::{Finding, Reason};
use super::{NvmeSpec, RxSpec, Runner};
use crate::pkernfs::format::Image;
use crate::pkernfs::host::{file_ranges, lookup, read_carveout};
use crate::qemu::params::NIC_ADDR;
use crate::fault::{HostParts, Moment};
use crate::report::LuoUpdate;

/// File name of the RX engine's guest RAM under the pkernfs mount.
const RX_FILE: &str = "guest-ram-e1000e";
/// File name of the NVMe engine's guest RAM under the pkernfs mount.
const NVME_FILE: &str = "guest-ram-nvme";
/// With `rx.backing = "luo_memfd"`: the memfd's and the LUO session's name.
const LUO_SESSION: &str = "lulab-guest-ram-e1000e";

impl Runner<'_> {
    /// The agent's `persist` for the RX engine (`None` unless `rx.persist`).
    pub(super) fn rx_persist_spec(&self, spec: &RxSpec, resume: bool) -> Option<PersistSpec> {
        let file = match spec.backing {
            PersistBacking::Pkernfs => self.sc.pkernfs.as_ref()?.path(RX_FILE),
            PersistBacking::LuoMemfd => LUO_SESSION.into(),
        };
        let iova_skew = if resume { self.shaping.resume_iova_skew } else { 0 };
        let read_only = resume && self.shaping.resume_read_only;
        spec.persist.then_some(PersistSpec { file, resume, iova_skew, read_only, backing: spec.backing })
    }

    /// The agent's `persist` for the NVMe engine (`None` unless `nvme.persist`).
    pub(super) fn nvme_persist_spec(&self, spec: &NvmeSpec, resume: bool) -> Option<PersistSpec> {
        let pk = self.sc.pkernfs.as_ref()?;
        spec.persist.then(|| PersistSpec { file: pk.path(NVME_FILE), resume, iova_skew: 0, read_only: false, backing: PersistBacking::Pkernfs })
    }

    /// `pkernfs_expect_busy`: unlink and truncate of every persistent
    /// engine's file must fail with EBUSY and leave the file as it was.
    pub(super) fn pk_expect_busy(&mut self) -> Result<()> {
        let files: Vec<String> = [
            self.rx.as_ref().and_then(|r| self.rx_persist_spec(&r.spec, false)),
            self.sc.nvme.as_ref().filter(|_| self.nvme.is_some()).and_then(|n| self.nvme_persist_spec(n, false)),
        ]
        .into_iter()
        .flatten()
        .map(|p| p.file)
        .collect();
        ensure!(!files.is_empty(), "pkernfs_expect_busy: no persistent DMA engine is running");
        for file in files {
            let size = |r: &mut Self| -> Result<String> { Ok(r.exec(&["stat", "-c", "%s", &file])?.stdout.trim().to_string()) };
            let before = size(self)?;
            for (what, argv) in [("unlink", vec!["rm", "-f", file.as_str()]), ("truncate", vec!["truncate", "-s", "0", file.as_str()])] {
                let r = self.exec(&argv)?;
                check!(
                    r.status != Some(0) && r.stderr.to_lowercase().contains("busy"),
                    Reason::PkernfsNotBusy,
                    "{what} of {file}, which backs live DMA mappings, was not refused with EBUSY: exit {:?}, stderr {:?}",
                    r.status,
                    r.stderr
                );
            }
            let after = size(self)?;
            check!(before == after && !after.is_empty(), Reason::PkernfsNotBusy, "{file}: size {before} before, {after} after the refused unlink/truncate");
        }
        Ok(())
    }

    /// `dma_remap_probe`: the running persistent RX engine maps and unmaps
    /// one more page (the kernel's account of it is on the console).
    pub(super) fn dma_remap_probe(&mut self) -> Result<()> {
        ensure!(self.rx.is_some(), "dma_remap_probe: no RX engine is running (start_dma first)");
        let op = lulab_proto::Op::DmaRemapProbe { pci: NIC_ADDR.to_string() };
        match self.host()?.agent.call(op, std::time::Duration::from_secs(20))? {
            Reply::Done => Ok(()),
            other => bail!("unexpected reply to dma_remap_probe: {other:?}"),
        }
    }

    fn exec(&mut self, argv: &[&str]) -> Result<lulab_proto::ExecResult> {
        let op = lulab_proto::Op::Exec { argv: argv.iter().map(|s| s.to_string()).collect(), timeout_ms: 10_000 };
        match self.host()?.agent.call(op, std::time::Duration::from_secs(20))? {
            Reply::Exec(r) => Ok(r),
            other => bail!("unexpected reply to exec {argv:?}: {other:?}"),
        }
    }

    /// After a `live_update`: the new agent takes over every persistent engine.
    pub(super) fn dma_resume(&mut self) -> Result<()> {
        self.each_engine(|e, r| e.resume(r))
    }

    /// Sends a resuming request; while its reply has not come, the faults
    /// armed for [`Moment::Resume`] fire (once, on the first such request of
    /// the update) and lasting faults end on time.
    fn call_resuming(&mut self, op: lulab_proto::Op) -> Result<Reply, crate::agent::AgentError> {
        if self.resumed_in != self.live_updates {
            self.resumed_in = self.live_updates;
            self.journal.record(crate::journal::Event::Update { update: self.live_updates, milestone: Moment::Resume.name() });
        }
        let faults = &mut self.faults;
        let crate::host::Host { qmp, qemu, agent, .. } = self.host.as_mut().context("no host: the scenario's first step must be `boot`")?;
        agent.call_polling(op, std::time::Duration::from_secs(60), &mut || {
            qemu.check_alive()?;
            let mut parts = HostParts { qmp, qemu, agent: None };
            faults.at(Moment::Resume, &mut parts)?;
            faults.poll(&mut parts)
        })
    }

    /// Asks the new agent to take over `cfg`'s engine (timed as
    /// `live_update<N>_<label>`), checks that it kept the memory of the
    /// layout written at `start_dma` and records its layout for this update.
    pub(super) fn resume_engine(&mut self, cfg: DmaConfig, label: &str) -> Result<DmaLayout> {
        let pci = cfg.pci().to_string();
        let path = self.out.join(format!("layout-{pci}.json"));
        let before = std::fs::read_to_string(&path).with_context(|| format!("{}: the layout written at start_dma", path.display()))?;
        let before: DmaLayout = serde_json::from_str(&before).with_context(|| path.display().to_string())?;
        // Before any agent maps it again, the file must still be pinned in
        // the image (a frozen domain maps it): read from the RAM file.
        if let Some(p) = before.persist.as_ref().filter(|p| p.backing == PersistBacking::Pkernfs) {
            check!(self.image_file_pinned(&p.image_path)?, Reason::UpdateResumeFailed, "pkernfs {} is not pinned after the kexec although a frozen IOMMU domain maps it", p.image_path);
        }
        let t = std::time::Instant::now();
        // The kernel refusing the resumed engine (rebuilt mappings that differ
        // from the frozen ones, a device it did not keep) is the update failing.
        let mut layout = match self.call_resuming(lulab_proto::Op::DmaStart(cfg)) {
            Ok(Reply::DmaStarted(l)) => *l,
            Ok(other) => bail!("unexpected reply to the resuming dma_start for {pci}: {other:?}"),
            Err(e @ crate::agent::AgentError::Refused { .. }) => {
                return Finding::err(Reason::UpdateResumeFailed, format!("resuming {pci} after the update: {e}"))
            }
            Err(e) => return Err(e.into()),
        };
        let n = self.live_updates;
        self.mark(&format!("live_update{n}_{label}"), t);
        self.resolve_persistent(&mut layout)?;
        let same = layout.ring.phys == before.ring.phys && layout.buffers.phys == before.buffers.phys;
        let luo = layout.persist.as_ref().filter(|p| p.backing == PersistBacking::LuoMemfd);
        if let Some(found) = luo.map(|p| p.luo.clone()) {
            // Upstream's outcome is a finding, not an abort: keep going and let the oracles judge.
            let found = found.context("the resuming LUO agent reported no findings")?;
            self.luo.push(LuoUpdate { live_update: n, same_physical_pages: same, found: *found });
        }
        check!(
            same || luo.is_some(),
            Reason::UpdateResumeFailed,
            "the resumed engine of {pci} moved its memory: ring {:?} / buffers {:?}, was {:?} / {:?}",
            layout.ring.phys,
            layout.buffers.phys,
            before.ring.phys,
            before.buffers.phys
        );
        std::fs::write(self.out.join(format!("layout-{pci}-update{n}.json")), serde_json::to_string_pretty(&layout)?)?;
        Ok(layout)
    }

    /// Whether the pkernfs file at `path` carries the persistent pin, read
    /// from the image in the RAM file.
    fn image_file_pinned(&self, path: &str) -> Result<bool> {
        let pk = self.sc.pkernfs.as_ref().context("a persistent engine without [pkernfs]")?;
        let mem = self.mem.as_ref().context("no guest memory")?;
        let mut bytes = read_carveout(mem, PhysRange { gpa: pk.base(), len: pk.size() })?;
        let img = Image::open(&mut bytes).map_err(|e| anyhow::anyhow!("pkernfs image in RAM: {}", e.describe()))?;
        let ino = lookup(&img, path)?;
        Ok(img.stat(ino).map_err(|e| anyhow::anyhow!("pkernfs {path}: {}", e.describe()))?.pinned)
    }

    /// Fills the physical ranges of a persistent engine's layout from the
    /// pkernfs image in the RAM file (no-op for anonymous engines and LUO
    /// memfds, whose pages the agent resolves).
    pub(super) fn resolve_persistent(&self, layout: &mut DmaLayout) -> Result<()> {
        let Some(p) = layout.persist.clone().filter(|p| p.backing == PersistBacking::Pkernfs) else { return Ok(()) };
        let pk = self.sc.pkernfs.as_ref().context("a persistent engine without [pkernfs]")?;
        let mem = self.mem.as_ref().context("no guest memory")?;
        let carve = PhysRange { gpa: pk.base(), len: pk.size() };
        let mut bytes = read_carveout(mem, carve)?;
        let img = Image::open(&mut bytes).map_err(|e| anyhow::anyhow!("pkernfs image in RAM: {}", e.describe()))?;
        let ring = file_ranges(&img, carve.gpa, &p.image_path, p.ring_offset, layout.ring.len)?;
        let bufs = file_ranges(&img, carve.gpa, &p.image_path, p.buffers_offset, layout.buffers.len)?;
        let mut pages = Vec::new();
        for &(off, len) in &p.mapped {
            pages.extend(file_ranges(&img, carve.gpa, &p.image_path, off, len)?);
        }
        layout.canary = file_ranges(&img, carve.gpa, &p.image_path, p.canary_offset, p.canary_len)?;
        layout.ring.phys = ring;
        layout.buffers.phys = bufs;
        layout.dma_pages = pages;
        Ok(())
    }
}
