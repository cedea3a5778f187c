//! The CPU-write watcher: a TCG plugin (`watcher/`, `lulab-watcher`) that
//! records every guest CPU store into the pkernfs carve-out, and what the
//! harness makes of its records: each store placed in a phase of the run
//! (old kernel, kexec, new kernel before the agent, agent) by the journal,
//! allowed or not, and the offenders' PCs symbolised against the kernel's
//! `System.map`. The judging lives in [`crate::oracle::cpu_writes`].

pub mod owners;
pub mod phases;
pub mod symbols;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use lulab_proto::watch::{Record, Trailer};

use crate::cmd;

/// Records the plugin writes at most (then it only counts): about 60 bytes
/// each, so a runaway writer costs at most ~30 MB of disk.
pub const MAX_RECORDS: u64 = 500_000;

/// Builds the plugin (release: it runs on every guest store) and returns
/// its shared object. Cargo makes this a no-op when nothing changed.
pub fn build_plugin() -> Result<PathBuf> {
    let root = crate::workspace_root();
    let target_dir = root.join("target").join("watcher");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    cmd::run(
        Command::new(cargo)
            .args(["build", "--release", "--quiet", "-p", "lulab-watcher", "--target-dir"])
            .arg(&target_dir)
            .current_dir(&root),
    )
    .context("building the CPU-write watcher plugin (lulab-watcher)")?;
    let so = target_dir.join("release").join("liblulab_watcher.so");
    anyhow::ensure!(so.is_file(), "{} is missing after building lulab-watcher", so.display());
    Ok(so)
}

/// What the watcher recorded, read after QEMU exited (the plugin writes its
/// last records and its trailer at exit).
#[derive(Debug, Clone, Default)]
pub struct WatchLog {
    /// Every record, by time.
    pub records: Vec<Record>,
    /// The closing line; `None` when the log was cut short (QEMU killed).
    pub trailer: Option<Trailer>,
}

impl WatchLog {
    /// Reads `watch.log`; a bad line is an error naming the file and line.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses the record file's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut log = Self::default();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            if let Some(t) = Trailer::parse(line) {
                log.trailer = Some(t);
                continue;
            }
            log.records.push(Record::parse(line).map_err(|e| format!("line {}: {e}", i + 1))?);
        }
        log.records.sort_by_key(|r| r.ns);
        Ok(log)
    }
}

/// What the CPU-write oracle judges from.
#[derive(Debug)]
pub struct WatchObservations {
    /// The watched ranges.
    pub watched: Vec<lulab_proto::PhysRange>,
    /// The plugin's records (an error: missing or unreadable).
    pub log: Result<WatchLog, String>,
    /// Who owns each page of the carve-out at the end of the run.
    pub owners: owners::PageOwners,
    /// The DMA engines' pages (ring, buffers, canary: what the memory
    /// oracle hashes), and since when an engine ran.
    pub engine_pages: Vec<lulab_proto::PhysRange>,
    /// See `engine_pages`: the first `engine_started` (harness clock).
    pub dma_since_ns: Option<u64>,
    /// System.map of each kernel of the run (0: the first boot; n: live
    /// update n's), when it could be read.
    pub maps: Vec<Option<symbols::SymbolMap>>,
}

/// The harness clock's zero on the host's CLOCK_MONOTONIC: the plugin's
/// `base=` argument, so that its records carry harness-clock stamps.
pub fn clock_base_ns() -> u64 {
    lulab_proto::watch::monotonic_ns().saturating_sub(crate::traffic::clock::now_ns())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_reads_back_in_time_order_with_its_trailer() {
        let log = WatchLog::parse("20 0 0x1 0x2 0x1000 8 1 k\n10 0 0x1 0x2 0x2000 8 512 k\n# end records=2 stores=513 dropped=0\n").unwrap();
        assert_eq!(log.records.iter().map(|r| r.ns).collect::<Vec<_>>(), [10, 20]);
        assert_eq!(log.trailer.unwrap().stores, 513);
        assert!(WatchLog::parse("1 0 0x1 0x2 0x1000 8 1 k\n").unwrap().trailer.is_none(), "cut short");
        let e = WatchLog::parse("1 0 0x1 0x2 0x1000 8 1 k\ngarbage\n").unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
    }

    #[test]
    fn the_clock_base_puts_monotonic_time_on_the_harness_clock() {
        let base = clock_base_ns();
        let mono = lulab_proto::watch::monotonic_ns();
        let harness = crate::traffic::clock::now_ns();
        assert!((mono - base).abs_diff(harness) < 50_000_000, "within 50 ms");
    }
}
