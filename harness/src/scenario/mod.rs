//! Scenarios: TOML files in `scenarios/` describing a host, the DMA load and
//! a closed list of steps, with the verdict they expect. Parsing is strict
//! (`deny_unknown_fields`); errors name the file, line and field.

pub mod catalogue;
pub mod guest_ram;
mod locate;
mod steps;
mod luo;
pub mod matrix;
mod pkernfs;
pub mod plan;
pub mod run;

pub use guest_ram::{GuestRamKeep, GuestRamSpec};
pub use luo::LuoSpec;
pub use pkernfs::{CorruptWhat, PkernfsFile, PkernfsMmap, PkernfsSpec, FILL_DIR};

use std::path::Path;

use lulab_proto::PersistBacking;
use serde::{Deserialize, Serialize};

/// What a scenario expects the oracles to conclude.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No DMA lost or corrupted, no IOMMU fault, memory intact.
    Intact,
    /// At least one oracle found damage, or a step found the system under
    /// test refusing or failing a check (the reasons say which).
    Broken,
    /// The scenario could not be carried out: QEMU died, a step's deadline
    /// passed, the harness lost its host, or the scenario asks for something
    /// this machine or kernel cannot do. Never counted as `broken`.
    Error,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Intact => "intact",
            Verdict::Broken => "broken",
            Verdict::Error => "error",
        })
    }
}

/// The test tier a scenario belongs to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Real QEMU hosts, minutes each: run on every CI push.
    #[default]
    System,
    /// Soaks and sweeps (many updates or large carve-outs): filterable.
    Long,
    /// Hours (the soak across the machine matrix): not in the CI profile;
    /// `lulab test --tier nightly` runs it.
    Nightly,
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Tier::System => "system",
            Tier::Long => "long",
            Tier::Nightly => "nightly",
        })
    }
}

/// Which kernel the host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelChoice {
    /// Debian's stock kernel.
    Stock,
    /// Our kernel: linux-source-7.3 + `kernel/` (pkernfs, KUnit).
    Lulab,
}

impl KernelChoice {
    /// Its name in scenario files and reports (`stock`, `lulab`).
    pub fn name(self) -> &'static str {
        match self {
            KernelChoice::Stock => "stock",
            KernelChoice::Lulab => "lulab",
        }
    }
}

/// A scenario file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// One line for reports.
    pub description: String,
    /// The verdict that makes the run a pass.
    pub expect: Verdict,
    /// With `expect = "broken"` (required there): the reasons its findings
    /// may have; a finding of any other reason and the run is not as expected.
    #[serde(default)]
    pub expect_reasons: Vec<crate::report::Reason>,
    /// Which test tier runs it (`system`, the default, or `long`): the
    /// suite's test is named `<tier>::<file stem>`, so a CI job can filter.
    #[serde(default)]
    pub tier: Tier,
    /// The host.
    #[serde(default)]
    pub host: HostSpec,
    /// e1000e RX load (absent: no NIC traffic).
    pub rx: Option<RxSpec>,
    /// NVMe reads (absent: none).
    pub nvme: Option<NvmeSpec>,
    /// pkernfs carve-out and files (absent: no carve-out).
    pub pkernfs: Option<PkernfsSpec>,
    /// Trace every VT-d translation and check that each DMA engine's device
    /// reached only its own pages (the isolation oracle).
    #[serde(default)]
    pub check_isolation: bool,
    /// Load the CPU-write watcher (a TCG plugin) on the carve-out and judge
    /// every guest CPU store into it: who wrote, where, in which phase of
    /// the run (the `cpu_writes` oracle). Needs `[pkernfs]`.
    #[serde(default)]
    pub watch_persistent_memory: bool,
    /// Upstream's LUO switched on (absent: off).
    pub luo: Option<LuoSpec>,
    /// The VM's guest RAM and how it survives a live update (absent: none;
    /// the engines' own memory is theirs).
    pub guest_ram: Option<GuestRamSpec>,
    /// What happens, in order (an entry written with `repeat = N` is here
    /// N times).
    pub steps: Vec<Step>,
    /// For each of `steps`, the `[[steps]]` entry it comes from (from 0).
    #[serde(skip)]
    pub step_entries: Vec<usize>,
}

/// `[host]`; a field not written takes its default ([`HostSpec::default`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostSpec {
    /// Kernel to boot.
    pub kernel: KernelChoice,
    /// Guest RAM.
    pub memory_mib: u64,
    /// Emulate VT-d at all.
    pub iommu: bool,
    /// Extra kernel parameters, on the first boot and every kexec (e.g.
    /// `lulab_vtd_adopt=copy`, a negative control). One word each.
    pub cmdline: Vec<String>,
    /// vCPUs (1..=[`MAX_CPUS`]).
    pub cpus: u32,
    /// The emulated VT-d's translation mode.
    pub iommu_mode: IommuMode,
    /// VT-d caching mode (`caching-mode=on`: the IOMMU may cache
    /// not-present entries, so the kernel flushes the IOTLB on every map).
    pub caching_mode: bool,
    /// How TCG runs the vCPUs: a thread each (`multi`, QEMU's default) or
    /// all in turn on one (`single`).
    pub tcg_threads: TcgThreads,
}

/// Most vCPUs a host may have (TCG runs one thread per vCPU on few cores).
pub const MAX_CPUS: u32 = 8;

/// `[host].iommu_mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IommuMode {
    /// Legacy (second-stage only) root and context tables.
    #[default]
    Legacy,
    /// Scalable mode (`x-scalable-mode=on`): PASID tables.
    Scalable,
}

pub use crate::qemu::TcgThreads;

impl Default for HostSpec {
    fn default() -> Self {
        Self {
            kernel: KernelChoice::Stock,
            memory_mib: 1024,
            iommu: true,
            cmdline: Vec::new(),
            cpus: 1,
            iommu_mode: IommuMode::Legacy,
            caching_mode: false,
            tcg_threads: TcgThreads::Multi,
        }
    }
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// One non-empty kernel-command-line word.
fn is_word(w: &str) -> bool {
    !w.is_empty() && !w.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl HostSpec {
    fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_CPUS).contains(&self.cpus) {
            return Err(format!("host.cpus: {} must be in 1..={MAX_CPUS}", self.cpus));
        }
        if !self.iommu && (self.iommu_mode != IommuMode::Legacy || self.caching_mode) {
            return Err("host.iommu_mode / host.caching_mode: set for a host without VT-d (iommu = false)".into());
        }
        for (i, w) in self.cmdline.iter().enumerate() {
            if !is_word(w) {
                return Err(format!("host.cmdline[{i}]: {w:?} must be one non-empty word (no spaces)"));
            }
        }
        Ok(())
    }
}

/// `[rx]`: frames injected into the e1000e and DMAed into the agent's ring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RxSpec {
    /// Descriptors (= buffers) in the RX ring.
    pub ring_size: u32,
    /// Frames per second.
    pub rate_fps: f64,
    /// Bytes per frame.
    pub frame_size: usize,
    /// Frames to send in total.
    pub frames: u64,
    /// Let the agent recycle descriptors (keeping the newest half for the scanner).
    #[serde(default)]
    pub refill: bool,
    /// Live update: ring, buffers and canary in a pkernfs file, the device
    /// marked persistent, and after each `live_update` the new agent adopts
    /// it from the hand-over. Needs `[pkernfs]` and the lulab kernel.
    #[serde(default)]
    pub persist: bool,
    /// With `persist`: what keeps the memory (`"pkernfs"`, the default, or
    /// `"luo_memfd"`: a memfd preserved by upstream's LUO, needs `[luo]`;
    /// the device is not kept running).
    #[serde(default)]
    pub backing: PersistBacking,
    /// How the agent learns of frames: `"poll"` (the default: it polls the
    /// ring) or `"msix"` (the device's MSI-X interrupt through a VFIO
    /// eventfd, as a VMM takes it; judged by the interrupt oracle).
    #[serde(default)]
    pub interrupts: lulab_proto::RxInterrupts,
}

impl RxSpec {
    /// Kept persistent with its memory in a pkernfs file (not a LUO memfd).
    pub fn in_pkernfs(&self) -> bool {
        self.persist && self.backing == PersistBacking::Pkernfs
    }
}

/// `[nvme]`: blocks the agent reads from the harness-written backing file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NvmeSpec {
    /// LBAs (512 bytes) read once each.
    pub lba_count: u64,
    /// Live update: queues and buffers in a pkernfs file, the controller
    /// kept enabled across kexec and taken over by the next agent. Needs
    /// `[pkernfs]` and the lulab kernel.
    #[serde(default)]
    pub persist: bool,
    /// QEMU throttles the drive to this many I/Os per second, so commands
    /// stay in flight (e.g. across a live update). None: unthrottled.
    #[serde(default)]
    pub throttle_iops: Option<u32>,
    /// LBAs per read command.
    pub blocks_per_cmd: u32,
    /// Commands in flight.
    pub queue_depth: u32,
}

/// One step. The list is closed: an unknown `do` is a parse error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Boot the host and wait for the agent.
    Boot,
    /// Start the DMA engines configured in `[rx]` / `[nvme]`.
    StartDma,
    /// Start injecting `[rx]` frames (continues in the background).
    Inject,
    /// Wait until `frames` frames (default: all) have been written to the NIC.
    AwaitSent {
        /// How many; absent means all of `[rx].frames`.
        frames: Option<u64>,
    },
    /// Copy the next kernel + initramfs (`[host].kernel`'s) into the host and
    /// `kexec_file_load` them, so that the following `live_update` is only the jump.
    StageUpdate,
    /// Kexec the host into `kernel` (default: `[host].kernel`, the kernel
    /// `boot` started) with that kernel's initramfs and the same command line,
    /// carve-out words included. Staged first unless a `stage_update` staged
    /// the same kernel.
    LiveUpdate {
        /// `"stock"` or `"lulab"`; absent: `[host].kernel`.
        kernel: Option<KernelChoice>,
        /// Extra kernel parameters for this update's kernel only, after the
        /// booted command line (e.g. `intel_iommu=off`: a new kernel that
        /// switches VT-d translation off). One word each.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        cmdline: Vec<String>,
        /// `false`: the new agent does not take its engines back; the next
        /// step must be another `live_update` (back-to-back updates: the
        /// second kexec is requested before any agent resumed).
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        resume: bool,
    },
    /// Wait until every written frame is delivered, or nothing new arrives
    /// for `quiet_ms` (deadline-based).
    Settle {
        /// How long without a new delivery ends the wait.
        #[serde(default = "default_quiet_ms")]
        quiet_ms: u64,
    },
    /// Mount pkernfs and write every `[[pkernfs.files]]` with its pattern.
    PkernfsPrepare,
    /// Keep rewriting `[pkernfs.mmap]` through a shared mapping for its
    /// `until_ms` (run it right before `live_update`).
    PkernfsMmap,
    /// (Re-)mount pkernfs and check every file from inside (agent: size and
    /// hash) and from outside (the harness parses the carve-out in the RAM file).
    PkernfsVerify,
    /// Unmount, then break one structure of the carve-out in the RAM file
    /// (bytes saved for `pkernfs_restore`); the format code on the host must
    /// refuse the result. Hashes the whole carve-out afterwards.
    PkernfsCorrupt {
        /// The structure to break.
        what: CorruptWhat,
        /// `what = "inode"`: the file whose inode breaks (a `[[pkernfs.files]]`
        /// name); absent: the root directory's inode.
        file: Option<String>,
    },
    /// Mount must fail with EUCLEAN, the kernel's refusal line must name
    /// `structure` (its words before the first `:`, e.g. `superblock`,
    /// `inode table`, `allocator`) and the carve-out must hash as it did right
    /// after `pkernfs_corrupt`. An expected refusal is not a finding.
    PkernfsExpectRefused {
        /// The structure the kernel must name.
        structure: String,
    },
    /// Put back the bytes `pkernfs_corrupt` changed; the carve-out must then
    /// hash as it did before the corruption (a following `pkernfs_verify`
    /// shows the image was refused, not destroyed).
    PkernfsRestore,
    /// From outside: the carve-out hashes as it did at the last live update's
    /// jump; from inside: no `/proc/iomem` line over the carve-out is System RAM.
    PkernfsUntouched,
    /// Every pkernfs file backing a live DMA mapping (the persistent
    /// engines' guest RAM) refuses unlink and truncate with EBUSY and keeps
    /// its size (the use-after-free guard).
    PkernfsExpectBusy,
    /// The persistent RX engine changes its DMA mappings while the device
    /// runs (maps one more page of its file at a spare IOVA, unmaps it):
    /// the kernel moves the sealed domain back to its live tables and seals
    /// it again at the next kexec. Needs `rx.persist`.
    DmaRemapProbe,
    /// Mount, then replace the fill tree (`<mount>/fill/`) with `files` files
    /// of `file_size` bytes of the pattern (file `i`: seed `seed + i`), written
    /// by one agent call. `pkernfs_verify` then counts them inside and checks
    /// every byte outside; mounts after a kexec are timed with them in place.
    PkernfsFill {
        /// Number of files.
        files: u64,
        /// Bytes per file.
        file_size: u64,
        /// Pattern seed of the first file.
        seed: u64,
    },
    /// Inject a fault (`kind`, a closed list), here or `at` a moment of the
    /// next `live_update` (see `crate::fault`).
    Fault(crate::fault::FaultStep),
    /// The agent writes `[guest_ram]` (its pattern); after every live update
    /// the harness checks it is all there (inside, and for `keep =
    /// "pkernfs"` also outside, from the RAM file).
    FillGuestRam,
}

fn default_quiet_ms() -> u64 {
    5000
}

/// Whether a run with `outcome` and `found` is what a scenario expecting
/// `expect` (with `reasons` for `broken`) asked for: the same outcome, and
/// for `broken` every finding's reason among the named ones (the named
/// reasons are the ones this failure may show; timing decides whether, say,
/// frames were still queued when the NIC stopped). An `error` never
/// satisfies `broken`.
pub fn as_expected(expect: Verdict, reasons: &[crate::report::Reason], outcome: Verdict, found: &[crate::report::Finding]) -> bool {
    if outcome != expect {
        return false;
    }
    if expect != Verdict::Broken || reasons.is_empty() {
        return true;
    }
    !found.is_empty() && found.iter().all(|f| reasons.contains(&f.reason))
}

/// A scenario file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Unreadable file.
    #[error("Cannot read scenario {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Malformed TOML or a wrong field (the message carries line and field).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// toml's message: line, column, the offending field and what was expected.
        message: String,
    },
    /// Well-formed but inconsistent.
    #[error("{path}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        /// The file.
        path: String,
        /// Line of the field the message names (when it is written in the file).
        line: Option<usize>,
        /// What is wrong, naming the field.
        message: String,
    },
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ScenarioError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses scenario text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ScenarioError> {
        let (text, repeats) = steps::take_repeats(text)
            .map_err(|(line, message)| ScenarioError::Invalid { path: origin.to_string(), line: Some(line), message: format!("steps: {message}") })?;
        let mut s: Scenario = toml::from_str(&text).map_err(|e| {
            Self::step_error(&text, origin)
                .unwrap_or_else(|| ScenarioError::Parse { path: origin.to_string(), message: e.to_string().trim_end().to_string() })
        })?;
        s.no_stray_step_fields(&text, origin)?;
        crate::fault::validate(&s).map_err(|(i, message)| {
            let line = match locate::field_of(&message) {
                Some(f) if i == usize::MAX => locate::line_of(&text, f),
                Some(f) => locate::line_in_step(&text, i, f),
                None => None,
            };
            let message = if i == usize::MAX { message } else { format!("steps[{i}].{message}") };
            ScenarioError::Invalid { path: origin.to_string(), line, message }
        })?;
        let (steps, entries) = std::mem::take(&mut s.steps)
            .into_iter()
            .enumerate()
            .flat_map(|(i, step)| std::iter::repeat_n((step, i), repeats.get(i).copied().unwrap_or(1)))
            .unzip();
        (s.steps, s.step_entries) = (steps, entries);
        s.validate().map_err(|message| {
            let line = locate::field_of(&message).and_then(|f| locate::line_of(&text, f));
            ScenarioError::Invalid { path: origin.to_string(), line, message }
        })?;
        s.plan().map_err(|(i, message)| {
            let line = locate::field_of(&message).and_then(|f| locate::line_in_step(&text, i, f));
            ScenarioError::Invalid { path: origin.to_string(), line, message: format!("steps[{i}].{message}") }
        })?;
        Ok(s)
    }

    fn validate(&self) -> Result<(), String> {
        self.host.validate()?;
        match (self.expect, self.expect_reasons.is_empty()) {
            (Verdict::Broken, true) => {
                return Err(format!(
                    "expect: \"broken\" must name its reasons in expect_reasons, from: {}",
                    crate::report::Reason::ALL.iter().map(|r| r.name()).collect::<Vec<_>>().join(", ")
                ))
            }
            (Verdict::Intact | Verdict::Error, false) => {
                return Err(format!("expect_reasons: only for expect = \"broken\" (this one expects {})", self.expect))
            }
            _ => {}
        }
        for (i, s) in self.steps.iter().enumerate() {
            if let Step::LiveUpdate { cmdline, resume, .. } = s {
                if let Some((j, w)) = cmdline.iter().enumerate().find(|(_, w)| !is_word(w)) {
                    return Err(format!("steps[{i}].cmdline[{j}]: {w:?} must be one non-empty word (no spaces)"));
                }
                let next = self.steps[i + 1..].iter().find(|s| !matches!(s, Step::Fault(_)));
                if !resume && !matches!(next, Some(Step::LiveUpdate { .. })) {
                    return Err(format!(
                        "steps[{i}].resume: false leaves the engines to the next update: the next step (faults aside) must be a `live_update`"
                    ));
                }
            }
        }
        if self.steps.first() != Some(&Step::Boot) {
            return Err("steps: the first step must be `do = \"boot\"`".into());
        }
        let needs_rx = self.steps.iter().any(|s| matches!(s, Step::Inject | Step::AwaitSent { .. }));
        if needs_rx && self.rx.is_none() {
            return Err("steps: `inject`/`await_sent` need an [rx] table".into());
        }
        if let Some(rx) = &self.rx {
            if rx.ring_size == 0 || rx.ring_size % 8 != 0 {
                return Err(format!("rx.ring_size: {} is not a positive multiple of 8", rx.ring_size));
            }
            if rx.rate_fps.is_nan() || rx.rate_fps <= 0.0 {
                return Err(format!("rx.rate_fps: {} must be > 0", rx.rate_fps));
            }
            if rx.persist && rx.backing == PersistBacking::LuoMemfd && (self.luo.is_none() || self.host.kernel != KernelChoice::Lulab) {
                return Err("rx.backing: \"luo_memfd\" keeps the memory with upstream's LUO: add a [luo] table and boot kernel = \"lulab\"".into());
            }
            if rx.persist && rx.backing == PersistBacking::Pkernfs && self.pkernfs.is_none() {
                return Err("rx.persist: a persistent RX engine keeps its memory in pkernfs: add a [pkernfs] table".into());
            }
        }
        if let Some(nv) = &self.nvme {
            if nv.persist && self.pkernfs.is_none() {
                return Err("nvme.persist: a persistent NVMe engine keeps its queues in pkernfs: add a [pkernfs] table".into());
            }
        }
        if let Some(rx) = &self.rx {
            if !rx.refill && rx.frames > u64::from(rx.ring_size) {
                return Err(format!(
                    "rx.frames: {} frames do not fit a ring of {} without refill (set rx.refill = true)",
                    rx.frames, rx.ring_size
                ));
            }
        }
        if self.steps.contains(&Step::DmaRemapProbe) && !self.rx.as_ref().is_some_and(|r| r.persist) {
            return Err("steps: `dma_remap_probe` needs a persistent RX engine (rx.persist = true)".into());
        }
        if self.watch_persistent_memory && self.pkernfs.is_none() {
            return Err("watch_persistent_memory: the watcher watches the pkernfs carve-out: add a [pkernfs] table".into());
        }
        let needs_pk = self.steps.iter().any(Step::is_pkernfs);
        if needs_pk && self.pkernfs.is_none() {
            return Err("steps: `pkernfs_*` steps need a [pkernfs] table".into());
        }
        if let Some(pk) = &self.pkernfs {
            pk.validate(&self.host)?;
            pk.validate_steps(&self.steps)?;
            if self.steps.contains(&Step::PkernfsMmap) && pk.mmap.is_none() {
                return Err("steps: `pkernfs_mmap` needs a [pkernfs.mmap] table".into());
            }
        }
        match &self.guest_ram {
            Some(g) => {
                g.validate(&self.host, self.pkernfs.as_ref())?;
                if g.keep == GuestRamKeep::Copy && (self.rx.is_some() || self.nvme.as_ref().is_some_and(|n| n.persist)) {
                    return Err("guest_ram.keep: \"copy\" is the baseline without persistence: its device is a non-persistent [nvme] (nvme.persist = false), stopped before the kexec and started again after it; no [rx]".into());
                }
            }
            None if self.steps.contains(&Step::FillGuestRam) => return Err("steps: `fill_guest_ram` writes the guest RAM of a [guest_ram] table, and there is none".into()),
            None => {}
        }
        for s in &self.steps {
            if let (Step::AwaitSent { frames: Some(n) }, Some(rx)) = (s, &self.rx) {
                if *n > rx.frames {
                    return Err(format!("steps: await_sent frames = {n} exceeds rx.frames = {}", rx.frames));
                }
            }
        }
        Ok(())
    }

    /// toml names the line of the whole steps array when one entry is wrong
    /// (steps are an internally tagged enum): parse them one by one to
    /// name the entry, and the line of the field or value it refuses.
    fn step_error(text: &str, origin: &str) -> Option<ScenarioError> {
        let raw: toml::Table = toml::from_str(text).ok()?;
        let toml::Value::Array(steps) = raw.get("steps")? else { return None };
        steps.iter().enumerate().find_map(|(i, v)| {
            let e = Step::deserialize(v.clone()).err()?;
            let message = e.to_string().trim_end().to_string();
            let line = locate::line_of_named_in_step(text, i, &message);
            Some(ScenarioError::Invalid { path: origin.to_string(), line, message: format!("steps[{i}]: {message}") })
        })
    }

    /// serde's `deny_unknown_fields` does not reach the unit variants of an
    /// internally tagged enum (`do = "boot"` with `speed = 1` parses): those
    /// steps take no field but `do`, checked here on the raw table.
    fn no_stray_step_fields(&self, text: &str, origin: &str) -> Result<(), ScenarioError> {
        let raw: toml::Table = toml::from_str(text)
            .map_err(|e| ScenarioError::Parse { path: origin.to_string(), message: e.to_string().trim_end().to_string() })?;
        let Some(toml::Value::Array(raw_steps)) = raw.get("steps") else { return Ok(()) };
        for (i, (step, raw)) in self.steps.iter().zip(raw_steps).enumerate() {
            let Some(stray) = raw.as_table().and_then(|t| t.keys().find(|k| *k != "do")).filter(|_| step.takes_no_fields()) else {
                continue;
            };
            let name = raw.get("do").and_then(|v| v.as_str()).unwrap_or("?");
            return Err(ScenarioError::Invalid {
                path: origin.to_string(),
                line: locate::line_in_step(text, i, stray),
                message: format!("steps[{i}].{stray}: unknown field: `do = \"{name}\"` takes no fields"),
            });
        }
        Ok(())
    }

    /// The scenario as it runs, as TOML: every default filled in and every
    /// `repeat` written out, so that running it gives the same steps. The
    /// runner writes it into the run directory as `scenario.resolved.toml`.
    pub fn resolved_toml(&self) -> Result<String, toml::ser::Error> {
        let body = toml::to_string(self)?;
        Ok(format!("# Resolved by lulab {}: defaults filled in, repeats written out.\n{body}", env!("CARGO_PKG_VERSION")))
    }

    /// This scenario checked again as a file would be (every table, fault
    /// and step), for scenarios built in code from a checked one;
    /// `origin` names it in errors.
    pub fn rechecked(&self, origin: &str) -> anyhow::Result<Scenario> {
        let text = self.resolved_toml().map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        Ok(Scenario::parse(&text, origin)?)
    }

    /// Number of live updates the steps perform.
    pub fn live_updates(&self) -> usize {
        self.steps.iter().filter(|s| matches!(s, Step::LiveUpdate { .. })).count()
    }

    /// What this machine must have to run it (QEMU and every kernel it boots).
    pub fn needs(&self) -> Vec<crate::preflight::Need> {
        let mut v = vec![crate::preflight::Need::Qemu];
        v.extend(self.kernels().into_iter().map(crate::preflight::Need::for_kernel));
        v
    }

    /// Every kernel the run boots or kexecs into, `[host].kernel` first.
    pub fn kernels(&self) -> Vec<KernelChoice> {
        let mut ks = vec![self.host.kernel];
        for s in &self.steps {
            if let Step::LiveUpdate { kernel: Some(k), .. } = s {
                if !ks.contains(k) {
                    ks.push(*k);
                }
            }
        }
        ks
    }
}

impl Step {
    /// Its `do` name (`live_update`).
    pub fn name(&self) -> &'static str {
        match self {
            Step::Boot => "boot",
            Step::StartDma => "start_dma",
            Step::Inject => "inject",
            Step::AwaitSent { .. } => "await_sent",
            Step::StageUpdate => "stage_update",
            Step::LiveUpdate { .. } => "live_update",
            Step::Settle { .. } => "settle",
            Step::PkernfsPrepare => "pkernfs_prepare",
            Step::PkernfsMmap => "pkernfs_mmap",
            Step::PkernfsVerify => "pkernfs_verify",
            Step::PkernfsCorrupt { .. } => "pkernfs_corrupt",
            Step::PkernfsExpectRefused { .. } => "pkernfs_expect_refused",
            Step::PkernfsRestore => "pkernfs_restore",
            Step::PkernfsUntouched => "pkernfs_untouched",
            Step::PkernfsExpectBusy => "pkernfs_expect_busy",
            Step::DmaRemapProbe => "dma_remap_probe",
            Step::PkernfsFill { .. } => "pkernfs_fill",
            Step::Fault(_) => "fault",
            Step::FillGuestRam => "fill_guest_ram",
        }
    }

    /// A step with no field but `do` (a unit variant).
    pub fn takes_no_fields(&self) -> bool {
        match self {
            Step::Boot
            | Step::StartDma
            | Step::Inject
            | Step::StageUpdate
            | Step::PkernfsPrepare
            | Step::PkernfsMmap
            | Step::PkernfsVerify
            | Step::PkernfsRestore
            | Step::PkernfsUntouched
            | Step::PkernfsExpectBusy
            | Step::DmaRemapProbe
            | Step::FillGuestRam => true,
            Step::AwaitSent { .. }
            | Step::LiveUpdate { .. }
            | Step::Settle { .. }
            | Step::PkernfsCorrupt { .. }
            | Step::PkernfsExpectRefused { .. }
            | Step::PkernfsFill { .. }
            | Step::Fault(_) => false,
        }
    }

    /// A `pkernfs_*` step (needs a `[pkernfs]` table).
    pub fn is_pkernfs(&self) -> bool {
        matches!(
            self,
            Step::PkernfsPrepare
                | Step::PkernfsMmap
                | Step::PkernfsVerify
                | Step::PkernfsCorrupt { .. }
                | Step::PkernfsExpectRefused { .. }
                | Step::PkernfsRestore
                | Step::PkernfsUntouched
                | Step::PkernfsExpectBusy
                | Step::PkernfsFill { .. }
        )
    }
}

#[cfg(test)]
mod tests;
