//! The end of a run: stop traffic, take the last look from outside, and turn
//! the oracles' findings into a verdict with reasons.

use anyhow::{Context, Result};

use super::Runner;
use crate::oracle::memory;
use crate::oracle::registry::Observations;
use crate::oracle::timeline::UpdateTimeline;
use crate::oracle::trace::TraceSummary;
use crate::oracle::isolation::IsolationSection;
use crate::report::{Finding, Reason, DmaSection, IommuSection, LuoSection, MemorySection, NvmeSection, Report, Versions, SCHEMA};
use crate::scenario::Verdict;

impl Runner<'_> {
    /// Runs every oracle and builds the report; `aborted` is the error that
    /// stopped the steps early, if any: a [`super::Finding`] makes the
    /// outcome broken, anything else an error (the oracles still report).
    pub(super) fn judge(&mut self, name: &str, aborted: Option<anyhow::Error>) -> Result<Report> {
        let mut found: Vec<Finding> = Vec::new();
        // A lasting fault fired late (`after_frames`) ends before anything is observed.
        if let (Some(host), None) = (self.host.as_mut(), &aborted) {
            if let Err(e) = self.faults.finish(&mut host.parts()) {
                found.push(Finding::new(Reason::RunError, format!("ending a lasting fault before judging: {e:#}")));
            }
        }
        // Reconnects to the agent are no finding, but a kernel engineer
        // reading a passing run should still see them (journal, report).
        let hangups = self.host.as_ref().map(|h| h.agent.hangups.clone()).unwrap_or_default();
        for (during, ns) in &hangups {
            self.journal.record_at(*ns, crate::journal::Event::AgentReconnected { during: during.clone() });
        }
        // Every step ran, yet a fault never fired: the run is not the one the
        // scenario describes, and must not pass for it.
        if aborted.is_none() {
            for f in self.faults.never_fired() {
                found.push(Finding::new(Reason::RunError, format!("fault {f} never fired: its moment never came although every step ran")));
            }
        }
        if let Some(e) = &aborted {
            found.push(match Finding::in_chain(e) {
                Some(f) => Finding::new(f.reason, format!("run stopped by a finding: {e:#}")),
                None => Finding::new(Reason::RunError, format!("run aborted (could not be carried out): {e:#}")),
            });
        }
        let trace = TraceSummary::from_file(&self.host_dir().join("trace.log"), 0)?;
        // From the end of `start_dma` on (the host driver's unbind before it
        // clears bus master by design).
        let since_dma = TraceSummary::from_file(&self.host_dir().join("trace.log"), self.dma_trace_offset)?;
        let log = crate::console::KernelLog::of_run(&self.host_dir());
        if self.mem.is_some() {
            found.extend(missing_inputs(&self.host_dir(), &trace, &log));
        }
        let mut engines = super::engine::EngineObservations::default();
        self.each_engine(|e, r| e.observe(r, &mut engines))?;
        let (rx_obs, nvme_obs) = (engines.rx, engines.nvme);
        let pages = self.observe_pages()?;
        let journal = self.journal.entries();
        let facts = self.facts();
        let qemu = self.host.as_ref().map(|h| format!("{}.{}.{}", h.qmp.version.0, h.qmp.version.1, h.qmp.version.2));
        // Everything seen through the host is collected: it goes before the
        // oracles judge (the watcher plugin writes its last records at exit;
        // the RAM file stays mapped).
        if let Some(host) = self.host.take() {
            host.shutdown().context("shutting the host down")?;
        }
        let watch = self.observe_watch(&journal);
        let obs = Observations { facts: &facts, pages: pages.as_ref(), nvme: nvme_obs.as_ref(), rx: rx_obs.as_ref(), updates: &self.updates, isolation: self.sc.check_isolation.then_some(&self.iso), host_dir: &self.host_dir(), trace: &trace, since_dma: &since_dma, log: &log, journal: &journal, watch: watch.as_ref() };
        let mut sections = std::collections::BTreeMap::new();
        for o in crate::oracle::registry::registered() {
            let judged = o.judge(&obs).with_context(|| format!("the {} oracle", o.name()))?;
            sections.insert(o.name().to_string(), judged.section);
            found.extend(judged.findings);
            for (file, value) in judged.files {
                crate::report::write_json(&self.out.join(file), &value)?;
            }
        }
        // The older oracles' sections are typed fields of the report.
        let dma: DmaSection = take(&mut sections, "dma")?;
        let nvme: NvmeSection = take(&mut sections, "nvme")?;
        let iommu: IommuSection = take(&mut sections, "iommu")?;
        let mut memory: MemorySection = take(&mut sections, "memory")?;
        if let Some(cw) = sections.get("cpu_writes").filter(|v| !v.is_null()) {
            memory.cpu_writes_outside_allowed = cw.get("outside_allowed").and_then(|v| v.as_u64());
        }
        let kunit: Option<crate::ktap::Counts> = take(&mut sections, "kunit")?;
        let mut updates: Vec<UpdateTimeline> = take(&mut sections, "updates")?;
        let timing = sections.get("dma_timing").and_then(|v| serde_json::from_value::<crate::oracle::dma_timing::DmaTiming>(v.clone()).ok());
        if let Some(t) = &timing {
            t.annotate(&mut updates);
        }
        crate::oracle::downtime::annotate(&mut updates, &journal, timing.as_ref());
        let isolation: Option<IsolationSection> = take(&mut sections, "isolation")?;
        found.extend(self.pk.findings.iter().cloned());
        found.extend(self.guest_ram.findings.iter().cloned());
        found.extend(self.luo.iter().flat_map(|u| u.reasons()).map(|r| Finding::new(Reason::LuoNotKept, r)));
        self.pk.write(&self.out)?;
        let agent_reconnects = hangups.iter().map(|(r, ns)| format!("{r} at {} ms", ns.saturating_sub(self.start_ns) / 1_000_000)).collect();
        // An abort that was no finding, or an oracle without its input.
        let could_not_run = found.iter().any(|f| f.reason == Reason::RunError);
        let outcome = match (could_not_run, found.is_empty()) {
            (true, _) => Verdict::Error,
            (false, true) => Verdict::Intact,
            (false, false) => Verdict::Broken,
        };
        let as_expected = crate::scenario::as_expected(self.sc.expect, &self.sc.expect_reasons, outcome, &found);
        let mut timings_ms: std::collections::BTreeMap<String, u64> = self.timings.iter().cloned().collect();
        timings_ms.insert("total".into(), self.start.elapsed().as_millis() as u64);
        Ok(Report {
            schema: SCHEMA,
            scenario: name.to_string(),
            description: self.sc.description.clone(),
            expect: self.sc.expect,
            outcome,
            as_expected,
            reasons: found.iter().map(|f| f.detail.clone()).collect(),
            findings: found,
            expect_reasons: self.sc.expect_reasons.clone(),
            versions: Versions {
                qemu: qemu.unwrap_or_default(),
                kernel: format!("{} ({})", self.set.kernel.release, self.set.kernel.source_version),
                lulab: env!("CARGO_PKG_VERSION").into(),
            },
            dma,
            nvme,
            iommu,
            memory,
            live_updates: self.live_updates,
            updates,
            isolation,
            kunit,
            pkernfs: self.sc.pkernfs.as_ref().map(|_| self.pk.section()),
            luo: self.sc.luo.as_ref().map(|_| LuoSection::new(self.luo.clone())),
            guest_ram: self.guest_ram_section(),
            sections,
            faults: self.record_fault_hits(crate::fault::from_journal(&journal)),
            timings_ms,
            run_dir: self.host_dir().display().to_string(),
            agent_reconnects,
        })
    }

    /// The agent's pages for the memory oracle: hashed now, against the
    /// hashes taken when their engines started (None: no engine started).
    fn observe_pages(&self) -> Result<Option<crate::oracle::registry::PageObservations>> {
        let (Some(before), Some(mem)) = (&self.before, &self.mem) else { return Ok(None) };
        let after = memory::hash_pages(mem, &self.watched).context("hashing the agent's pages after the steps")?;
        Ok(Some(crate::oracle::registry::PageObservations {
            before: before.clone(),
            after,
            allowed: self.allowed.clone(),
            retired: self.retired.clone(),
        }))
    }

    /// With `watch_persistent_memory`: the watcher's records (read once QEMU
    /// has exited), the carve-out's page owners from the RAM file, the DMA
    /// engines' pages and each kernel's System.map.
    fn observe_watch(&self, journal: &[crate::journal::Entry]) -> Option<crate::watch::WatchObservations> {
        let w = self.params.watcher.as_ref()?;
        let paths = crate::qemu::params::RunPaths::new(self.host_dir());
        let log = crate::watch::WatchLog::read(&paths.watch_log()).map_err(|e| format!("{e:#}"));
        let carve = self.sc.pkernfs.as_ref().map(|pk| lulab_proto::PhysRange { gpa: pk.base(), len: pk.size() });
        let owners = match (&self.mem, carve) {
            (Some(mem), Some(range)) => crate::watch::owners::PageOwners::read(mem, range),
            _ => crate::watch::owners::PageOwners::unknown("no RAM file or carve-out"),
        };
        let dma_since_ns = journal.iter().find(|e| matches!(e.event, crate::journal::Event::EngineStarted { .. })).map(|e| e.ns);
        let kernels = std::iter::once(self.sc.host.kernel.name().to_string()).chain(self.updates.iter().map(|u| u.kernel.clone()));
        let maps = kernels
            .map(|name| {
                let set = self.sets.iter().find(|(k, _)| k.name() == name).map(|(_, s)| s)?;
                crate::watch::symbols::SymbolMap::read(&set.kernel.system_map()?).ok()
            })
            .collect();
        Some(crate::watch::WatchObservations {
            watched: w.ranges.as_slice().iter().map(|&(s, e)| lulab_proto::PhysRange { gpa: s, len: e - s }).collect(),
            log,
            owners,
            engine_pages: self.watched.clone(),
            dma_since_ns,
            maps,
        })
    }

    /// Appends to `scenario.resolved.toml`, as comments, when each fault
    /// actually hit (the file still parses to the same scenario).
    fn record_fault_hits(&self, hits: Vec<crate::fault::FaultHit>) -> Vec<crate::fault::FaultHit> {
        use std::io::Write as _;
        let path = self.out.join(super::RESOLVED);
        if hits.is_empty() || !path.exists() {
            return hits;
        }
        let mut text = String::from("\n# Where each fault hit in the run that wrote this file (ms since its start):\n");
        for h in &hits {
            let when = match (h.at, h.after_frames) {
                (Some(m), _) => format!("at {} of update {}", m.name(), h.update.unwrap_or(0)),
                (None, Some(n)) => format!("after {n} frames"),
                (None, None) => "at its step".into(),
            };
            let hit = h.injected_ms.map_or("never (the run ended first)".to_string(), |ms| format!("injected at {ms} ms"));
            text.push_str(&format!("#   step {} {} {when}: {hit}; {}\n", h.step + 1, h.kind, h.detail.replace('\n', " ")));
        }
        if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&path) {
            let _ = f.write_all(text.as_bytes());
        }
        hits
    }

    /// What the oracles behind the trait need to know of the run.
    fn facts(&self) -> crate::oracle::registry::RunFacts {
        let persistent = self.sc.rx.as_ref().is_some_and(crate::scenario::RxSpec::in_pkernfs)
            || self.sc.nvme.as_ref().is_some_and(|n| n.persist);
        crate::oracle::registry::RunFacts {
            dma_started: self.rx.is_some() || self.nvme.is_some(),
            carve_out: self.sc.pkernfs.as_ref().map(|pk| (pk.base(), pk.size())),
            persistent,
            // Only a persistent device's updates latch root tables that must
            // be files of the image: no copy of the carve-out otherwise.
            iommu_files: if persistent && self.live_updates > 0 { self.iommu_files() } else { None },
            live_updates: self.live_updates,
            dma_trace_offset: self.dma_trace_offset,
            start_ns: self.start_ns,
            end_ns: crate::traffic::clock::now_ns(),
            clock_offset_ns: (self.clock_offset_ns, crate::traffic::clock::realtime_offset_ns()),
            quiesced: self.guest_ram.quiesced.clone(),
        }
    }

    /// The IOMMU driver's files in the pkernfs image in the RAM file (None:
    /// no carve-out, no RAM file, or an image that does not open: the
    /// oracle then judges by the carve-out's bounds alone).
    fn iommu_files(&self) -> Option<Vec<crate::pkernfs::host::IommuFile>> {
        use crate::pkernfs::host::{iommu_files, read_carveout};
        let pk = self.sc.pkernfs.as_ref()?;
        let carve = lulab_proto::PhysRange { gpa: pk.base(), len: pk.size() };
        let mut bytes = read_carveout(self.mem.as_ref()?, carve).ok()?;
        let img = crate::pkernfs::format::Image::open(&mut bytes).ok()?;
        iommu_files(&img, carve.gpa).ok()
    }
}

/// The typed report field `name` from an oracle's section (its default
/// when no oracle gave one).
fn take<T: serde::de::DeserializeOwned + Default>(sections: &mut std::collections::BTreeMap<String, serde_json::Value>, name: &str) -> Result<T> {
    match sections.remove(name) {
        Some(v) => serde_json::from_value(v).with_context(|| format!("the {name} oracle's section")),
        None => Ok(T::default()),
    }
}

/// An oracle without its input says nothing, which must not read as
/// "nothing found": a booted host (files in `host_dir`) always leaves QEMU
/// trace events (PCI config writes at least) and console lines.
fn missing_inputs(host_dir: &std::path::Path, trace: &TraceSummary, log: &crate::console::KernelLog) -> Vec<Finding> {
    let mut v = Vec::new();
    if trace.counts.is_empty() {
        let path = host_dir.join("trace.log");
        v.push(Finding::new(Reason::RunError, format!("QEMU's trace log {} is missing or holds no event: the IOMMU and ledger oracles have no input", path.display())));
    }
    if log.is_empty() {
        v.push(Finding::new(Reason::RunError, format!("both console logs in {} are empty: the KUnit and fault oracles have no input", host_dir.display())));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_booted_run_without_trace_events_or_console_lines_could_not_be_judged() {
        let dir = tempfile::tempdir().unwrap();
        let paths = crate::qemu::params::RunPaths::new(dir.path());
        let empty = (TraceSummary::default(), crate::console::KernelLog::of_run(dir.path()));
        let found = missing_inputs(dir.path(), &empty.0, &empty.1);
        assert_eq!(found.iter().map(|f| f.reason).collect::<Vec<_>>(), [Reason::RunError, Reason::RunError], "{found:?}");
        // With its inputs the same run has nothing to say here.
        std::fs::write(paths.console_log(), "[    0.000000] Linux version 7.3.4-lulab\n").unwrap();
        let mut trace = TraceSummary::default();
        trace.add_line("1234@1796484211.696438:pci_cfg_write 00:02.0 @0x4 <- 0x6");
        let log = crate::console::KernelLog::of_run(dir.path());
        assert!(missing_inputs(dir.path(), &trace, &log).is_empty(), "{:?}", trace.counts);
    }
}
