//! The CPU-write oracle (`watch_persistent_memory`): every guest CPU store
//! into the carve-out, as QEMU's TCG plugin saw it, placed in its phase of
//! the run and judged against what that phase allows. Device DMA is not a
//! CPU store and never shows here; the ledger and the memory oracle judge it.
//!
//! What each phase allows (anything else is `memory.cpu_write`). "Engine
//! pages" are the pages of the running DMA engines (ring, buffers, canary:
//! what the memory oracle hashes), from the first `start_dma` on:
//! - **kernel** (a kernel running, no update under way): kernel stores
//!   anywhere but engine pages (pkernfs metadata, the kernel's VT-d tables,
//!   files written through syscalls);
//! - **agent** (user-mode stores): the pages of regular files (the agent's
//!   own mappings);
//! - **kexec** (kexec requested → the new kernel's first line): the old
//!   kernel still owns pkernfs: kernel stores into its structure (metadata,
//!   directories), the VT-d table files and regular files but engine pages
//!   (the hand-over written, the tables frozen); user stores into regular
//!   files (the old agent's last words). Nothing into blocks no file owns;
//! - **new kernel before the agent**: kernel stores into pkernfs's
//!   structure and the VT-d table files (mounting pkernfs, adopting the
//!   tables).
//!
//! Identity-mapped code (purgatory, the decompressor: virtual address equal
//! to the physical one) is allowed nowhere.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::registry::{Judged, Observations, Oracle};
use crate::report::{Finding, Reason};
use crate::watch::owners::Owner;
use crate::watch::phases::{Phase, Place, Timeline};
use crate::watch::WatchObservations;
use lulab_proto::watch::{Mode, Record};
use lulab_proto::PhysRange;

/// Offender groups listed in the report.
const LISTED: usize = 32;

/// One group of offending stores: one instruction, one phase, one owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offender {
    /// The phase (`kernel`, `kexec`, `new_kernel_before_agent`, `agent`).
    pub phase: Phase,
    /// Which kernel ran (0: the first boot; n: live update n's).
    pub kernel: u32,
    /// `kernel`, `user` or `identity` (purgatory, early boot).
    pub mode: String,
    /// The storing instruction (hex).
    pub pc: String,
    /// `function+0xoff` from the kernel's System.map, when it is kernel text.
    pub symbol: Option<String>,
    /// The first store's guest-physical address (hex) and size.
    pub paddr: String,
    /// See `paddr`.
    pub size: u32,
    /// What the page holds (a pkernfs path, `pkernfs metadata`, `no file`).
    pub page: String,
    /// Stores in the group.
    pub stores: u64,
    /// When the first one ran, ms from the start of the run.
    pub first_ms: u64,
    /// Why it is not allowed.
    pub why: String,
}

/// report.json `cpu_writes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuWritesSection {
    /// The watched ranges.
    pub watched: Vec<PhysRange>,
    /// Why pkernfs could not be read at the end of the run (then no page
    /// is any file's or metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages_unreadable: Option<String>,
    /// Stores into them the plugin saw.
    pub stores: u64,
    /// Record lines it wrote (a run of stores of one instruction into one page is one).
    pub records: u64,
    /// Stores past its record limit (counted as not allowed: nobody saw them).
    pub dropped: u64,
    /// Stores per phase.
    pub by_phase: BTreeMap<String, u64>,
    /// Stores the phase allowed.
    pub allowed: u64,
    /// Stores it did not (report.json `memory.cpu_writes_outside_allowed`).
    pub outside_allowed: u64,
    /// The first offender groups, by time.
    pub offenders: Vec<Offender>,
}

/// The oracle.
#[derive(Debug)]
pub struct CpuWritesOracle;

impl Oracle for CpuWritesOracle {
    fn name(&self) -> &'static str {
        "cpu_writes"
    }

    fn judge(&self, obs: &Observations) -> anyhow::Result<Judged> {
        let Some(w) = obs.watch else {
            return Ok(Judged { section: serde_json::Value::Null, ..Default::default() });
        };
        let (section, findings) = judge(w, &Timeline::new(obs.updates), obs.facts.start_ns);
        Ok(Judged { section: serde_json::to_value(section)?, findings, files: Vec::new() })
    }

    fn markdown(&self, section: &serde_json::Value) -> Option<String> {
        let s: CpuWritesSection = serde_json::from_value(section.clone()).ok()?;
        let mut md = format!(
            "## CPU stores into persistent memory (TCG plugin)\n\n{} stores seen, {} allowed, **{} outside what their phase allows**{}\n",
            s.stores,
            s.allowed,
            s.outside_allowed,
            if s.dropped > 0 { format!(" ({} past the record limit)", s.dropped) } else { String::new() }
        );
        if !s.offenders.is_empty() {
            md.push_str("\n| phase | kernel | code | address | page | stores | at |\n|---|---|---|---|---|---|---|\n");
            for o in &s.offenders {
                md.push_str(&format!(
                    "| {} | {} | {} | {} ({} B) | {} | {} | {} ms |\n",
                    o.phase.name(),
                    o.kernel,
                    o.symbol.clone().unwrap_or_else(|| format!("{} ({})", o.pc, o.mode)),
                    o.paddr,
                    o.size,
                    o.page,
                    o.stores,
                    o.first_ms
                ));
            }
        }
        Some(md)
    }
}

/// Why a store at `place` into a page holding `owner` is not allowed
/// (`None`: allowed). `engine` says the page is a running DMA engine's.
pub fn verdict(place: Place, identity: bool, mode: Mode, owner: &Owner, engine: bool) -> Option<&'static str> {
    if identity {
        return Some("identity-mapped code (purgatory or early boot) stored into persistent memory");
    }
    let kernels_own = owner.is_structure() || owner.is_iommu() || owner.is_regular_file();
    match (place.phase, mode) {
        (Phase::Kernel | Phase::Kexec | Phase::NewKernelBeforeAgent, Mode::Kernel) if engine => {
            Some("a kernel stored into a running DMA engine's pages")
        }
        (Phase::Kernel, _) => None,
        (Phase::Agent, _) if owner.is_regular_file() => None,
        (Phase::Agent, _) => Some("a user-mode store outside the agent's files"),
        (Phase::Kexec, Mode::Kernel) if kernels_own => None,
        (Phase::Kexec, Mode::User) if owner.is_regular_file() => None,
        (Phase::Kexec, _) => Some("a store during the kexec into blocks no file owns"),
        (Phase::NewKernelBeforeAgent, _) if owner.is_iommu() || owner.is_structure() => None,
        (Phase::NewKernelBeforeAgent, _) => Some("the new kernel stored outside pkernfs metadata and its VT-d tables before any agent ran"),
    }
}

fn judge(w: &WatchObservations, timeline: &Timeline, start_ns: u64) -> (CpuWritesSection, Vec<Finding>) {
    let mut s = CpuWritesSection { watched: w.watched.clone(), pages_unreadable: w.owners.unreadable.clone(), ..Default::default() };
    let mut found = Vec::new();
    let log = match &w.log {
        Ok(l) => l,
        Err(e) => {
            found.push(Finding::new(Reason::RunError, format!("the CPU-write watcher left no usable record: {e}")));
            return (s, found);
        }
    };
    match log.trailer {
        Some(t) => {
            s.stores = t.stores;
            s.records = t.records;
            s.dropped = t.dropped;
        }
        None => found.push(Finding::new(
            Reason::RunError,
            "the CPU-write watcher's record was cut short (no closing line: QEMU did not exit cleanly)",
        )),
    }
    let mut groups: BTreeMap<(Phase, u32, u64, String), Offender> = BTreeMap::new();
    for r in &log.records {
        let place = timeline.place(r.ns, r.mode);
        *s.by_phase.entry(place.phase.name().to_string()).or_default() += r.count;
        let owner = w.owners.owner(r.paddr);
        let engine = w.dma_since_ns.is_some_and(|t| r.ns >= t) && w.engine_pages.iter().any(|p| r.paddr >= p.gpa && r.paddr < p.gpa + p.len);
        let identity = r.vaddr == r.paddr;
        match verdict(place, identity, r.mode, &owner, engine) {
            None => s.allowed += r.count,
            Some(why) => {
                s.outside_allowed += r.count;
                let key = (place.phase, place.kernel, r.pc, owner.label());
                groups
                    .entry(key)
                    .and_modify(|o| o.stores += r.count)
                    .or_insert_with(|| offender(w, r, place, identity, &owner, why, start_ns));
            }
        }
    }
    s.outside_allowed += s.dropped;
    let mut offenders: Vec<Offender> = groups.into_values().collect();
    offenders.sort_by_key(|o| o.first_ms);
    if s.outside_allowed > 0 {
        let first = offenders.first().map_or_else(
            || format!("{} stores past the watcher's record limit", s.dropped),
            |o| {
                format!(
                    "first: {} ({}, kernel {}) stored {} bytes at {} ({}) at {} ms: {}",
                    o.symbol.clone().unwrap_or_else(|| format!("pc {}", o.pc)),
                    o.phase.name(),
                    o.kernel,
                    o.size,
                    o.paddr,
                    o.page,
                    o.first_ms,
                    o.why
                )
            },
        );
        found.push(Finding::new(
            Reason::MemoryCpuWrite,
            format!("{} CPU stores into persistent memory outside what their phase allows; {first}", s.outside_allowed),
        ));
    }
    offenders.truncate(LISTED);
    s.offenders = offenders;
    (s, found)
}

fn offender(w: &WatchObservations, r: &Record, place: Place, identity: bool, owner: &Owner, why: &str, start_ns: u64) -> Offender {
    // During a kexec the old kernel or the new one's early code may store.
    let kernels = match place.phase {
        Phase::Kexec => vec![place.kernel.saturating_sub(1), place.kernel],
        _ => vec![place.kernel],
    };
    let symbol = if identity || r.mode == Mode::User {
        None
    } else {
        kernels.iter().find_map(|k| w.maps.get(*k as usize).and_then(|m| m.as_ref()).and_then(|m| m.symbolise(r.pc)))
    };
    let mode = if identity { "identity" } else if r.mode == Mode::User { "user" } else { "kernel" };
    Offender {
        phase: place.phase,
        kernel: place.kernel,
        mode: mode.into(),
        pc: format!("{:#x}", r.pc),
        symbol,
        paddr: format!("{:#x}", r.paddr),
        size: r.size,
        page: owner.label(),
        stores: r.count,
        first_ms: r.ns.saturating_sub(start_ns) / 1_000_000,
        why: why.into(),
    }
}

#[cfg(test)]
mod tests;
