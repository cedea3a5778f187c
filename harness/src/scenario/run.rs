//! Running a scenario: boot, drive the steps, then let the oracles judge from
//! outside (RAM file, QEMU trace, console log) and write the report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use lulab_proto::{DmaConfig, DmaLayout, Op, PhysRange, Reply};

use super::{KernelChoice, NvmeSpec, RxSpec, Scenario, Step};
use crate::guest_memory::GuestMemory;
use crate::fault::Faults;
use crate::host::{Deadlines, Host};
use crate::journal::{Event, Journal};
use crate::lab::BootSet;
use crate::oracle::memory::{self, PageHashes};
use crate::oracle::nvme::nvme_pattern;
use crate::oracle::timeline::UpdateEvents;
use crate::qemu::params::NIC_ADDR;
use crate::qemu::MachineParams;
use crate::report::Report;
use crate::slots::HostSlot;
use crate::traffic::clock::now_ns;
use crate::traffic::inject::{InjectConfig, Injector};
use crate::update::{JumpStamps, KexecTarget};

pub use finding::Finding;
pub use hook::{Control, Ended, LedgerSoFar, Point, RunView, StepHook};

mod engine;
mod finding;
mod guest_ram;
mod hook;
mod judge;
mod non_persistent;
mod nvme;
mod persist;
mod pkernfs;
mod pkernfs_corrupt;
mod pkernfs_fill;
mod rx;

/// The scenario as run, in the run directory (see [`Scenario::resolved_toml`]).
pub const RESOLVED: &str = "scenario.resolved.toml";

/// Runs `scenario` (named `name`) with its files in `out`; writes
/// `out/report.json` and `out/report.md` and returns the report.
pub fn run(name: &str, scenario: &Scenario, out: &Path) -> Result<Report> {
    match run_inner(name, scenario, out, None)? {
        Ended::Judged(report) => Ok(*report),
        Ended::Quit { before } => bail!("the run stopped before step {} without a hook to stop it", before + 1),
    }
}

/// [`run`] with `hook` asked before each step (`lulab replay`): it may
/// quit, and then the host is shut down and nothing is judged.
pub fn run_with(name: &str, scenario: &Scenario, out: &Path, hook: &mut dyn StepHook) -> Result<Ended> {
    run_inner(name, scenario, out, Some(hook))
}

fn run_inner(name: &str, scenario: &Scenario, out: &Path, hook: Option<&mut dyn StepHook>) -> Result<Ended> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    // Every kernel the steps need, built (or fetched) before the host boots.
    let mut sets = BTreeMap::new();
    for k in scenario.kernels() {
        sets.insert(k, BootSet::for_choice(k)?);
    }
    // The wait for a host slot comes before the run's clock starts; a
    // replay waits in its `boot` step instead, after its first prompt.
    let slot = match hook {
        None => Some(HostSlot::acquire()?),
        Some(_) => None,
    };
    let mut r = Runner::new(scenario, out, sets, slot)?;
    let aborted = match r.drive(hook) {
        Ok(Some(before)) => {
            r.teardown().with_context(|| format!("quitting before step {}; run directory kept: {}", before + 1, out.display()))?;
            return Ok(Ended::Quit { before });
        }
        Ok(None) => None,
        Err(e) => Some(e),
    };
    let report = r.judge(name, aborted);
    let report = report.with_context(|| format!("judging the run; host files kept in {}", r.host_dir().display()))?;
    report.write(out)?;
    Ok(Ended::Judged(Box::new(report)))
}

/// State while steps run.
struct Runner<'a> {
    sc: &'a Scenario,
    out: PathBuf,
    run_id: u64,
    /// The kernel `boot` starts (`[host].kernel`).
    set: BootSet,
    /// Every kernel a `live_update` may kexec into (the booted one included).
    sets: BTreeMap<KernelChoice, BootSet>,
    /// The kernel running now.
    current: KernelChoice,
    params: MachineParams,
    host: Option<Host>,
    mem: Option<Arc<GuestMemory>>,
    /// The device engines `start_dma` started (see [`engine`]).
    rx: Option<rx::RxEngine>,
    nvme: Option<nvme::NvmeEngine>,
    before: Option<PageHashes>,
    /// Memory findings of engines a kexec ended (judged at the jump).
    retired: memory::MemoryDiff,
    /// The isolation oracle's view of the run: engines and update windows.
    iso: crate::oracle::isolation::Watch,
    watched: Vec<PhysRange>,
    allowed: Vec<PhysRange>,
    timings: Vec<(String, u64)>,
    live_updates: u32,
    /// What the harness saw of each live update, for the timeline.
    updates: Vec<UpdateEvents>,
    /// The kernel (and its extra parameters) loaded by the last
    /// `stage_update`, not yet jumped into.
    staged: Option<(KernelChoice, Vec<String>)>,
    start: Instant,
    /// `start` on the clock of frames, sightings and [`UpdateEvents`].
    start_ns: u64,
    pk: pkernfs::PkRun,
    /// What each resuming agent found of a LUO-preserved engine.
    luo: Vec<crate::report::LuoUpdate>,
    /// Size of QEMU's trace log when `start_dma` finished: bus-master
    /// changes after it are the ones that can interrupt the agent's DMA
    /// (before it, the host driver's unbind clears bus master by design).
    dma_trace_offset: u64,
    /// The host slot taken before the run started, until `boot` uses it.
    slot: Option<HostSlot>,
    /// What happened when (`journal.jsonl`).
    journal: Journal,
    /// Faults armed for moments of the next live update, and lasting ones.
    faults: Faults,
    /// CLOCK_REALTIME − the harness clock at the start (QEMU's trace clock).
    clock_offset_ns: i64,
    /// The live update whose first resuming request was sent (its `resume` milestone).
    resumed_in: u32,
    /// What the shaping faults so far change in the harness's requests.
    shaping: crate::fault::Shaping,
    /// The VM's guest RAM (`[guest_ram]`).
    guest_ram: guest_ram::GuestRamRun,
}

impl<'a> Runner<'a> {
    fn new(sc: &'a Scenario, out: &Path, sets: BTreeMap<KernelChoice, BootSet>, slot: Option<HostSlot>) -> Result<Self> {
        let set = sets.get(&sc.host.kernel).cloned().context("no BootSet for [host].kernel")?;
        let run_id = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
        let host_dir = out.join("host");
        let mut params = set.machine(&host_dir)?;
        params.memory_mib = sc.host.memory_mib;
        params.iommu.enabled = sc.host.iommu;
        params.iommu.scalable_mode = sc.host.iommu_mode == crate::scenario::IommuMode::Scalable;
        params.iommu.caching_mode = sc.host.caching_mode;
        params.cpus = sc.host.cpus;
        params.tcg_threads = sc.host.tcg_threads;
        if let (Some(n), Some(nv)) = (&sc.nvme, params.nvme.as_mut()) {
            nv.throttle_iops = n.throttle_iops;
        }
        if let Some(pk) = &sc.pkernfs {
            // Also what every kexec gets: the carve-out must be repeated.
            params.cmdline.extend(pk.cmdline());
        }
        if let Some(luo) = &sc.luo {
            params.cmdline.extend(luo.cmdline());
        }
        if let Some(g) = sc.guest_ram.as_ref().filter(|g| g.needs_save_disk()) {
            std::fs::create_dir_all(&host_dir).with_context(|| format!("creating {}", host_dir.display()))?;
            let disk = host_dir.join("save-disk.img");
            let f = std::fs::File::create(&disk).with_context(|| format!("creating the save disk {}", disk.display()))?;
            f.set_len(g.size()).with_context(|| format!("sizing the save disk {}", disk.display()))?;
            params.save_disk = Some(disk);
        }
        params.cmdline.extend(sc.host.cmdline.iter().cloned());
        if sc.watch_persistent_memory {
            let pk = sc.pkernfs.as_ref().context("watch_persistent_memory needs [pkernfs]")?;
            params.watcher = Some(crate::qemu::params::PluginParams {
                file: crate::watch::build_plugin()?,
                max_records: crate::watch::MAX_RECORDS,
                ranges: lulab_proto::watch::Ranges::new(vec![(pk.base(), pk.base() + pk.size())]),
                clock_base_ns: crate::watch::clock_base_ns(),
            });
            // The offenders' PCs are symbolised against System.map: no KASLR.
            params.cmdline.push("nokaslr".into());
        }
        let mut extra: Vec<&str> = Vec::new();
        if sc.check_isolation {
            extra.extend(crate::oracle::isolation::ISOLATION_TRACE_EVENTS);
        }
        if sc.rx.as_ref().is_some_and(|rx| rx.interrupts == lulab_proto::RxInterrupts::Msix) {
            extra.extend(crate::oracle::interrupts::IRQ_TRACE_EVENTS);
        }
        // LULAB_QEMU_TRACE=ev1,ev2 adds QEMU trace events to a run (debugging a device model).
        let asked: Vec<String> = std::env::var("LULAB_QEMU_TRACE")
            .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
            .unwrap_or_default();
        for e in crate::oracle::trace_events().into_iter().chain(extra.iter().map(|s| s.to_string())).chain(asked) {
            if !params.trace_events.contains(&e) {
                params.trace_events.push(e);
            }
        }
        if let (Some(n), Some(nv)) = (&sc.nvme, &params.nvme) {
            let mut f = std::fs::OpenOptions::new().write(true).open(&nv.backing)?;
            nvme_pattern::fill(&mut f, 0..n.lba_count, run_id).context("writing the NVMe backing file")?;
        }
        let start_ns = now_ns();
        let journal = Journal::create(Some(out), start_ns).context("creating the run's journal")?;
        let mut faults = Faults::new(journal.clone());
        faults.targets.nic_pci = NIC_ADDR.into();
        faults.targets.out = Some(out.to_path_buf());
        faults.targets.pkernfs = sc.pkernfs.as_ref().map(|pk| PhysRange { gpa: pk.base(), len: pk.size() });
        Ok(Self {
            sc,
            out: out.into(),
            run_id,
            set,
            sets,
            current: sc.host.kernel,
            params,
            host: None,
            mem: None,
            rx: None,
            nvme: None,
            before: None,
            retired: memory::MemoryDiff::default(),
            iso: crate::oracle::isolation::Watch::default(),
            watched: Vec::new(),
            allowed: Vec::new(),
            timings: Vec::new(),
            live_updates: 0,
            updates: Vec::new(),
            staged: None,
            start: Instant::now(),
            start_ns,
            pk: pkernfs::PkRun::default(),
            luo: Vec::new(),
            dma_trace_offset: 0,
            slot,
            journal,
            faults,
            clock_offset_ns: crate::traffic::clock::realtime_offset_ns(),
            resumed_in: 0,
            shaping: crate::fault::Shaping::default(),
            guest_ram: guest_ram::GuestRamRun::default(),
        })
    }

    fn host_dir(&self) -> PathBuf {
        self.out.join("host")
    }

    fn host(&mut self) -> Result<&mut Host> {
        self.host.as_mut().context("no host: the scenario's first step must be `boot`")
    }

    fn mark(&mut self, name: &str, since: Instant) {
        self.timings.push((name.to_string(), since.elapsed().as_millis() as u64));
    }

    /// Runs the checked plan's steps in order (written to `plan.json`
    /// first), asking `hook` before each; `Some(i)`: it quit before step `i`.
    fn drive(&mut self, mut hook: Option<&mut dyn StepHook>) -> Result<Option<usize>> {
        let plan = self.sc.plan().map_err(|(entry, m)| anyhow::anyhow!("steps[{entry}].{m}"))?;
        std::fs::write(self.out.join("plan.json"), serde_json::to_string_pretty(&plan)?).context("writing plan.json")?;
        std::fs::write(self.out.join(RESOLVED), self.sc.resolved_toml()?).with_context(|| format!("writing {RESOLVED}"))?;
        for (k, planned) in plan.steps.iter().enumerate() {
            let (i, step) = (planned.index, &planned.step);
            if let Some(h) = hook.as_deref_mut() {
                if self.ask(h, Point::Step { step: planned, next: plan.steps.get(k + 1) }) == Control::Quit {
                    return Ok(Some(i));
                }
            }
            let t = Instant::now();
            self.journal.record(Event::Step { index: i, name: step.name().into() });
            let done = self.step(i, step).with_context(|| format!("step {} ({step:?})", i + 1));
            if let (Err(e), Some(h)) = (&done, hook.as_deref_mut()) {
                // The host is still up: the hook may look before the oracles judge.
                self.ask(h, Point::Failed { step: planned, error: &format!("{e:#}") });
            }
            done?;
            let name = format!("step{}_{}", i + 1, step.name());
            self.mark(&name, t);
        }
        if let Some(h) = hook {
            self.ask(h, Point::End);
        }
        Ok(None)
    }

    fn step(&mut self, index: usize, step: &Step) -> Result<()> {
        match step {
            Step::Boot => {
                let slot = match self.slot.take() {
                    Some(slot) => slot,
                    None => HostSlot::acquire()?,
                };
                let host = Host::boot_in(slot, &self.params, &self.host_dir(), Deadlines::default())?;
                let mem = GuestMemory::open(&host.paths.ram(), self.params.memory_mib << 20)?;
                self.faults.targets.ram = Some((host.paths.ram(), self.params.memory_mib << 20));
                self.mem = Some(Arc::new(mem));
                self.host = Some(host);
                Ok(())
            }
            Step::StartDma => self.start_dma(),
            Step::Inject => self.inject(),
            Step::AwaitSent { frames } => self.await_sent(*frames),
            Step::StageUpdate => {
                let params = self.shaping.kernel_params.clone();
                self.stage_update(self.sc.host.kernel, &params)
            }
            Step::LiveUpdate { kernel, cmdline, resume } => {
                let kernel = kernel.unwrap_or(self.sc.host.kernel);
                let cmdline: Vec<String> = self.shaping.kernel_params.iter().chain(cmdline).cloned().collect();
                if self.staged.as_ref() != Some(&(kernel, cmdline.clone())) {
                    self.stage_update(kernel, &cmdline)?;
                }
                if self.sc.pkernfs.is_some() {
                    self.pk_hash_at_jump()?;
                }
                let kexec_at = self.before_jump()?;
                // The update's clock starts here when the VMM first saves the guest RAM.
                let saving_from = now_ns();
                self.guest_ram_before_jump()?;
                let saved = self.guest_ram.saved_before_jump();
                let mut t = JumpStamps::default();
                self.faults.update = self.live_updates;
                let host = self.host.as_mut().context("no host: the scenario's first step must be `boot`")?;
                let mut jumped = host.jump_stamped(Deadlines::default(), &mut t, Some(&mut self.faults));
                // Lasting faults end before the engines resume (a paused VM
                // cannot take them back); after a failed jump, as far as QEMU lets.
                let ended = self.faults.finish(&mut host.parts());
                if jumped.is_ok() {
                    jumped = ended;
                }
                if saved {
                    t.kexec_started_ns = saving_from;
                }
                let n = self.live_updates + 1;
                self.journal_jump(n, &t);
                self.updates.push(UpdateEvents {
                    kernel: kernel.name().into(),
                    kexec_started_ns: t.kexec_started_ns,
                    agent_down_ns: t.agent_down_ns,
                    kernel_up_ns: t.kernel_up_ns,
                    kernel_up_from: t.kernel_up_from,
                    agent_up_ns: t.agent_up_ns,
                });
                jumped?;
                self.staged = None;
                self.current = kernel;
                self.live_updates += 1;
                let n = self.live_updates;
                let ms = |at: Option<u64>| at.unwrap_or(0).saturating_sub(t.kexec_started_ns) / 1_000_000;
                for (k, v) in [("to_banner", t.kernel_up_ns), ("to_init", t.init_ns), ("to_agent", t.agent_up_ns)] {
                    self.timings.push((format!("live_update{n}_{k}"), ms(v)));
                }
                if *resume {
                    self.guest_ram_after_jump(n)?;
                    self.dma_resume()?;
                    self.after_update(kexec_at)?;
                }
                self.journal.record(Event::Update { update: n, milestone: "done".into() });
                if *resume {
                    self.guest_ram_check(n)?;
                }
                Ok(())
            }
            Step::Settle { quiet_ms } => self.settle(Duration::from_millis(*quiet_ms)),
            Step::PkernfsPrepare => self.pk_prepare(),
            Step::PkernfsMmap => self.pk_mmap(),
            Step::PkernfsVerify => self.pk_verify(),
            Step::PkernfsCorrupt { what, file } => self.pk_corrupt(*what, file.as_deref()),
            Step::PkernfsExpectRefused { structure } => self.pk_expect_refused(structure),
            Step::PkernfsRestore => self.pk_restore(),
            Step::PkernfsUntouched => self.pk_untouched(),
            Step::PkernfsExpectBusy => self.pk_expect_busy(),
            Step::DmaRemapProbe => self.dma_remap_probe(),
            Step::PkernfsFill { files, file_size, seed } => self.pk_fill(*files, *file_size, *seed),
            Step::Fault(f) => self.fault(index, f),
            Step::FillGuestRam => self.fill_guest_ram(),
        }
    }

    /// A `do = "fault"` step: armed for its moment, or injected now.
    fn fault(&mut self, index: usize, step: &crate::fault::FaultStep) -> Result<()> {
        let fault = crate::fault::build(step).map_err(|m| anyhow::anyhow!("steps[{index}].{m}"))?;
        if let Some(shape) = fault.shapes() {
            let host = self.host.as_mut().context("no host: the scenario's first step must be `boot`")?;
            self.faults.now(index, fault, &mut host.parts())?;
            self.shaping.apply(&shape);
            return Ok(());
        }
        if let Some(at) = step.at {
            self.faults.arm(index, at, fault);
            return Ok(());
        }
        if let Some(n) = step.after_frames {
            self.faults.arm_after_frames(index, n, fault);
            return self.poll_faults();
        }
        let host = self.host.as_mut().context("no host: the scenario's first step must be `boot`")?;
        self.faults.now(index, fault, &mut host.parts())
    }

    /// The milestones of live update `n` as the jump stamped them, named as
    /// the fault moments they are.
    fn journal_jump(&self, n: u32, t: &JumpStamps) {
        use crate::fault::Moment;
        let stamps = [
            (Moment::Kexec, Some(t.kexec_started_ns)),
            (Moment::HandedOver, t.handed_over_ns),
            (Moment::AgentDown, t.agent_down_ns),
            (Moment::KernelUp, t.kernel_up_ns),
            (Moment::Init, t.init_ns),
            (Moment::AgentUp, t.agent_up_ns),
        ];
        for (moment, ns) in stamps {
            if let Some(ns) = ns.filter(|ns| *ns > 0) {
                self.journal.record_at(ns, Event::Update { update: n, milestone: moment.name() });
            }
        }
    }

    /// Stages `kernel` with its own initramfs and the booted command line
    /// (which carries the carve-out words when there is a `[pkernfs]`).
    fn stage_update(&mut self, kernel: KernelChoice, extra: &[String]) -> Result<()> {
        let set = self.sets.get(&kernel).with_context(|| format!("no BootSet for kernel {kernel:?}"))?;
        let words: Vec<String> = self.params.cmdline.iter().chain(extra).cloned().collect();
        let target = KexecTarget { kernel: set.kernel.bzimage.clone(), initrd: set.initramfs.path.clone(), cmdline: set.cmdline(&words) };
        let (stage_ms, load_ms) = self.host()?.stage_update(&target)?;
        let n = self.live_updates + 1;
        self.timings.push((format!("live_update{n}_stage"), stage_ms));
        self.timings.push((format!("live_update{n}_load"), load_ms));
        self.staged = Some((kernel, extra.to_vec()));
        Ok(())
    }

    /// `start_dma`: every engine the scenario has a table for, RX first.
    fn start_dma(&mut self) -> Result<()> {
        use engine::DeviceEngine;
        let mem = self.mem.clone().context("no guest memory")?;
        self.rx = rx::RxEngine::start(self)?;
        self.nvme = nvme::NvmeEngine::start(self)?;
        self.before = Some(memory::hash_pages(&mem, &self.watched)?);
        self.dma_trace_offset = std::fs::metadata(self.host_dir().join("trace.log")).map(|m| m.len()).unwrap_or(0);
        Ok(())
    }

    /// Starts an engine (`update`: the live update after which it starts
    /// again, which names its `layout-<pci>-update<N>.json`).
    fn dma_start(&mut self, cfg: DmaConfig, update: Option<u32>) -> Result<DmaLayout> {
        let mut layout = match self.host()?.agent.call(Op::DmaStart(cfg.clone()), Duration::from_secs(60))? {
            Reply::DmaStarted(l) => *l,
            other => bail!("unexpected reply to dma_start: {other:?}"),
        };
        let owned_from = self.trace_len();
        self.resolve_persistent(&mut layout)?;
        self.watch_engine(&layout, owned_from);
        let name = match update {
            None => format!("layout-{}.json", layout.pci),
            Some(n) => format!("layout-{}-update{n}.json", layout.pci),
        };
        std::fs::write(self.out.join(&name), serde_json::to_string_pretty(&layout)?)?;
        let first = layout.dma_pages.first().map_or(0, |r| r.gpa);
        let pages: u64 = layout.dma_pages.iter().map(|r| r.len.div_ceil(4096)).sum();
        self.journal.record(Event::EngineStarted { pci: layout.pci.clone(), layout: format!("{name}: {pages} DMA pages from GPA {first:#x}"), update });
        let engine = if layout.pci == NIC_ADDR { crate::fault::Engine::Rx } else { crate::fault::Engine::Nvme };
        self.faults.targets.canary.retain(|(e, _)| *e != engine);
        self.faults.targets.canary.push((engine, layout.canary.clone()));
        if let Some(p) = layout.persist.as_ref().filter(|p| p.backing == lulab_proto::PersistBacking::Pkernfs) {
            self.faults.targets.handover.retain(|(e, _)| *e != engine);
            self.faults.targets.handover.push((engine, lulab_proto::handover_path(&p.image_path)));
        }
        self.watched.extend(layout.dma_pages.iter().chain(&layout.canary).copied());
        self.allowed.extend(layout.dma_pages.iter().copied());
        Ok(layout)
    }

    fn inject(&mut self) -> Result<()> {
        let run_id = self.run_id;
        let listener = self.host()?.net.take().context("the host has no e1000e netdev socket")?;
        let (stream, _) = listener.accept().context("accepting QEMU's netdev connection")?;
        let rx = self.rx.as_mut().context("`inject` before `start_dma`")?;
        let mut cfg = InjectConfig::new(run_id, rx.spec.rate_fps, rx.spec.frame_size);
        cfg.max_frames = Some(rx.spec.frames);
        let injector = Injector::start(stream, cfg)?;
        self.faults.count_frames(injector.written_counter());
        rx.injector = Some(injector);
        Ok(())
    }

    /// Between steps' polls: `after_frames` faults whose count has come
    /// fire, lasting faults end on time.
    fn poll_faults(&mut self) -> Result<()> {
        match self.host.as_mut() {
            Some(host) => self.faults.poll(&mut host.parts()),
            None => Ok(()),
        }
    }

    fn await_sent(&mut self, frames: Option<u64>) -> Result<()> {
        let rx = self.rx.as_ref().context("`await_sent` before `start_dma`")?;
        let want = frames.unwrap_or(rx.spec.frames);
        let deadline = Instant::now() + Duration::from_secs_f64(want as f64 / rx.spec.rate_fps * 3.0 + 60.0);
        loop {
            let written = self.rx.as_ref().and_then(|r| r.injector.as_ref()).map(|i| i.written()).context("`await_sent` before `inject`")?;
            if written >= want {
                return Ok(());
            }
            self.host()?.qemu.check_alive()?;
            self.poll_faults()?;
            if Instant::now() > deadline {
                // QEMU alive and not reading: the device stopped taking frames.
                return Finding::err(
                    finding::Reason::DmaStalled,
                    format!("RX stalled: only {written} of {want} frames written to the NIC before the deadline (QEMU not reading: back-pressure)"),
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn settle(&mut self, quiet: Duration) -> Result<()> {
        self.each_engine(|e, r| e.settle(r, quiet))
    }
}
