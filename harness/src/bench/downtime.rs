//! `lulab bench downtime --ram 64M,256M,1G`: VM downtime of a live update
//! against guest RAM size, for the pkernfs live update (the guest RAM stays
//! in a pkernfs file, the NVMe controller keeps running:
//! `scenarios/live-update-guest-ram.toml`) and for the copy-based baseline
//! (the agent saves its guest RAM to a disk of the host, kexecs our kernel,
//! restores it and takes the controller back into a fresh domain:
//! `scenarios/copy-update-guest-ram.toml`), measured in the same bench with
//! the sizes interleaved (both methods at one size, then the next size), on
//! one machine shape for every cell. Each cell is a real run, judged as any
//! scenario (guest RAM checked after the update, every NVMe block from the
//! RAM file); its downtime is `updates[0].downtime` of its report (request →
//! engines back), broken into its parts. Per method the bench reports
//! downtime(largest) ÷ downtime(smallest).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::oracle::downtime::Downtime;
use crate::scenario::{GuestRamKeep, Scenario};

/// The two methods compared.
pub const METHODS: [GuestRamKeep; 2] = [GuestRamKeep::Pkernfs, GuestRamKeep::Copy];

/// The scenario each method's cells are built from.
pub fn base_scenario(method: GuestRamKeep) -> Result<PathBuf> {
    let file = match method {
        GuestRamKeep::Pkernfs => "live-update-guest-ram.toml",
        GuestRamKeep::Copy => "copy-update-guest-ram.toml",
        GuestRamKeep::None => bail!("the bench compares \"pkernfs\" and \"copy\"; \"none\" keeps nothing"),
    };
    Ok(crate::workspace_root().join("scenarios").join(file))
}

/// `--ram`: sizes such as `64M`, `1G` (MiB or GiB), in MiB.
pub fn parse_sizes(s: &str) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let (num, unit) = word.split_at(word.find(|c: char| !c.is_ascii_digit()).unwrap_or(word.len()));
        let n: u64 = num.parse().with_context(|| format!("--ram: {word:?}: a size is a number followed by M or G (e.g. 64M, 1G)"))?;
        let mib = match unit {
            "M" | "MiB" => n,
            "G" | "GiB" => n << 10,
            _ => bail!("--ram: {word:?}: a size is a number followed by M or G (e.g. 64M, 1G)"),
        };
        if mib == 0 {
            bail!("--ram: {word:?}: a size must be at least 1M");
        }
        if mib > MAX_RAM_MIB {
            bail!("--ram: {word:?}: at most {MAX_RAM_MIB}M (the carve-out above 4 GiB of a 4 GiB host)");
        }
        if !out.contains(&mib) {
            out.push(mib);
        }
    }
    if out.is_empty() {
        bail!("--ram: no size given (e.g. --ram 64M,256M,1G)");
    }
    out.sort_unstable();
    Ok(out)
}

/// Largest guest RAM a cell can have: the carve-out above 4 GiB of a 4 GiB
/// host spans [4352 MiB, 6144 MiB), and the engines need room in it.
const MAX_RAM_MIB: u64 = 1536;

/// The machine every cell of a bench runs on: (memory MiB, carve-out base MiB,
/// carve-out MiB). The carve-out holds the largest guest RAM and the NVMe
/// engine's file; up to 448 MiB a 2 GiB host with the carve-out at 1 GiB,
/// beyond it a 4 GiB host with the carve-out above 4 GiB (so that the
/// baseline's tmpfs copy and the kernel still fit beside it).
pub fn machine(largest_mib: u64) -> (u64, u64, u64) {
    let carve = (largest_mib + 64).next_multiple_of(64);
    if largest_mib <= 448 {
        (2048, 1024, carve)
    } else {
        (4096, 4352, carve)
    }
}

/// The scenario of one cell.
pub fn scenario(method: GuestRamKeep, ram_mib: u64, largest_mib: u64) -> Result<Scenario> {
    let base = base_scenario(method)?;
    let mut sc = Scenario::load(&base)?;
    let (memory, base_mib, carve) = machine(largest_mib);
    sc.host.memory_mib = memory;
    let pk = sc.pkernfs.as_mut().with_context(|| format!("{}: the bench needs its [pkernfs]", base.display()))?;
    (pk.base_mib, pk.size_mib) = (base_mib, carve);
    let g = sc.guest_ram.as_mut().with_context(|| format!("{}: the bench needs its [guest_ram]", base.display()))?;
    g.size_mib = ram_mib;
    sc.description = format!("{} MiB of guest RAM kept by {} through one live update (bench downtime)", ram_mib, crate::wire_name(&method));
    sc.rechecked(&format!("{} with {ram_mib} MiB of guest RAM", base.display()))
}

/// One run: a method at a size.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// `pkernfs` or `copy`.
    pub method: String,
    /// Guest RAM, MiB.
    pub ram_mib: u64,
    /// The run's outcome, and whether it was the expected one (intact).
    pub outcome: String,
    /// See `outcome`.
    pub as_expected: bool,
    /// The update's downtime and its parts (report.json's `updates[0].downtime`).
    pub downtime: Option<Downtime>,
    /// `copy`: saving and restoring the guest RAM (ms; inside shutdown and re-adopt).
    pub save_ms: Option<u64>,
    /// See `save_ms`.
    pub restore_ms: Option<u64>,
    /// The run directory.
    pub run_dir: String,
}

impl Cell {
    /// Downtime in ms, when the update got the engines back.
    pub fn total_ms(&self) -> Option<u64> {
        self.downtime.as_ref().and_then(|d| d.total_ms)
    }
}

/// `bench.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DowntimeBench {
    /// Guest RAM sizes, MiB, smallest first.
    pub sizes_mib: Vec<u64>,
    /// The machine of every cell: memory, carve-out base and size (MiB).
    pub machine_mib: (u64, u64, u64),
    /// Every run, in the order run.
    pub cells: Vec<Cell>,
}

impl DowntimeBench {
    /// The cell of `method` at `ram_mib`.
    pub fn cell(&self, method: &str, ram_mib: u64) -> Option<&Cell> {
        self.cells.iter().find(|c| c.method == method && c.ram_mib == ram_mib)
    }

    /// downtime(largest) ÷ downtime(smallest) for `method`.
    pub fn ratio(&self, method: &str) -> Option<f64> {
        let (lo, hi) = (self.sizes_mib.first()?, self.sizes_mib.last()?);
        let (a, b) = (self.cell(method, *lo)?.total_ms()?, self.cell(method, *hi)?.total_ms()?);
        (a > 0 && lo != hi).then(|| b as f64 / a as f64)
    }

    /// Every cell ran as expected and got its engines back.
    pub fn passed(&self) -> bool {
        !self.cells.is_empty() && self.cells.iter().all(|c| c.as_expected && c.total_ms().is_some())
    }

    /// The Markdown summary: one row per size, both methods side by side.
    pub fn markdown(&self) -> String {
        let ms = |v: Option<u64>| v.map_or("–".to_string(), |v| v.to_string());
        let (mem, base, carve) = self.machine_mib;
        let mut md = format!(
            "# Downtime against guest RAM: pkernfs live update vs copy-based baseline\n\nOne live update per cell, NVMe reads running; host {mem} MiB, carve-out {carve} MiB at {base} MiB. Downtime: from the update's first request to the engines being back (ms).\n\n\
             | guest RAM | pkernfs | copy | copy: save | copy: restore | pkernfs: kernel boot | copy: kernel boot |\n|---|---|---|---|---|---|---|\n"
        );
        for &size in &self.sizes_mib {
            let p = self.cell("pkernfs", size);
            let c = self.cell("copy", size);
            let boot = |c: Option<&Cell>| ms(c.and_then(|c| c.downtime.as_ref()).and_then(|d| d.kernel_boot_ms));
            md.push_str(&format!(
                "| {size} MiB | {} | {} | {} | {} | {} | {} |\n",
                ms(p.and_then(Cell::total_ms)),
                ms(c.and_then(Cell::total_ms)),
                ms(c.and_then(|c| c.save_ms)),
                ms(c.and_then(|c| c.restore_ms)),
                boot(p),
                boot(c)
            ));
        }
        md.push('\n');
        for m in ["pkernfs", "copy"] {
            match self.ratio(m) {
                Some(r) => md.push_str(&format!("- {m}: downtime({} MiB) ÷ downtime({} MiB) = **{r:.2}**\n", self.sizes_mib.last().unwrap_or(&0), self.sizes_mib.first().unwrap_or(&0))),
                None => md.push_str(&format!("- {m}: no ratio (one size, or a cell without a downtime)\n")),
            }
        }
        md.push_str("\n## Where each update's downtime went (ms)\n\n| method | guest RAM | outcome | shutdown | kexec jump | kernel boot to /init | agent start | re-adopt | total |\n|---|---|---|---|---|---|---|---|---|\n");
        for c in &self.cells {
            let d = c.downtime.clone().unwrap_or_default();
            let parts: Vec<String> = d.parts()[..5].iter().map(|p| ms(p.1)).collect();
            let outcome = if c.as_expected { c.outcome.clone() } else { format!("**{}** (not as expected)", c.outcome) };
            md.push_str(&format!("| {} | {} MiB | {outcome} | {} | {} |\n", c.method, c.ram_mib, parts.join(" | "), ms(d.total_ms)));
        }
        md.push_str("\nThe copy's save is part of its shutdown and its restore part of its re-adopt. Run directories:\n\n");
        for c in &self.cells {
            md.push_str(&format!("- {} {} MiB: `{}`\n", c.method, c.ram_mib, c.run_dir));
        }
        md
    }

    /// Points of the downtime-against-RAM plot, per method.
    pub fn series(&self) -> Vec<(String, Vec<(u64, u64)>)> {
        METHODS
            .iter()
            .map(|m| {
                let name = crate::wire_name(m);
                let pts = self.cells.iter().filter(|c| c.method == name).filter_map(|c| Some((c.ram_mib, c.total_ms()?))).collect();
                (name, pts)
            })
            .collect()
    }
}

/// Runs the bench into `out`: for each size, both methods.
pub fn run(sizes_mib: &[u64], out: &Path) -> Result<DowntimeBench> {
    let largest = *sizes_mib.iter().max().context("no sizes")?;
    // Every cell's scenario is checked before the first host boots.
    let mut plan = Vec::new();
    for &size in sizes_mib {
        for m in METHODS {
            plan.push((m, size, scenario(m, size, largest)?));
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut bench = DowntimeBench { sizes_mib: sizes_mib.to_vec(), machine_mib: machine(largest), cells: Vec::new() };
    for (m, size, sc) in plan {
        let name = crate::wire_name(&m);
        let dir = out.join(format!("{name}-{size}M"));
        eprintln!("bench downtime: {name}, {size} MiB of guest RAM → {}", dir.display());
        let report = crate::scenario::run::run(&format!("bench-downtime-{name}-{size}M"), &sc, &dir)?;
        let g = report.guest_ram.as_ref().and_then(|g| g.updates.first());
        bench.cells.push(Cell {
            method: name,
            ram_mib: size,
            outcome: report.outcome.to_string(),
            as_expected: report.as_expected,
            downtime: report.updates.first().and_then(|u| u.downtime.clone()),
            save_ms: g.and_then(|g| g.save_ms),
            restore_ms: g.and_then(|g| g.restore_ms),
            run_dir: dir.display().to_string(),
        });
        // Written after every cell: an interrupted bench keeps what it measured.
        write(&bench, out)?;
    }
    Ok(bench)
}

/// bench.json, bench.md and report.html (the table and the plot).
pub fn write(bench: &DowntimeBench, out: &Path) -> Result<()> {
    let md = bench.markdown();
    super::write(out, bench, &md)?;
    let plot = crate::report::plots::downtime_vs_ram(&bench.series())?;
    let figure = plot.map(|svg| format!("<figure>\n{svg}\n<figcaption>Downtime of one live update against guest RAM, both methods, measured in one bench.</figcaption>\n</figure>\n"));
    let html = crate::report::html::page("bench downtime", &md, figure.as_deref().unwrap_or(""));
    std::fs::write(out.join("report.html"), html).with_context(|| format!("writing {}/report.html", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(method: &str, ram_mib: u64, total: u64) -> Cell {
        let downtime = Downtime { total_ms: Some(total), shutdown_ms: Some(total / 10), kernel_boot_ms: Some(total / 2), ..Default::default() };
        Cell { method: method.into(), ram_mib, outcome: "intact".into(), as_expected: true, downtime: Some(downtime), save_ms: (method == "copy").then_some(ram_mib * 20), ..Default::default() }
    }

    #[test]
    fn sizes_parse_in_mib_and_bad_ones_are_named() {
        assert_eq!(parse_sizes("1G,64M, 256M,64M").unwrap(), [64, 256, 1024]);
        for bad in ["", "64", "64K", "x", "0M", "2G"] {
            let e = parse_sizes(bad).unwrap_err().to_string();
            assert!(e.starts_with("--ram"), "{bad}: {e}");
        }
    }

    #[test]
    fn every_cell_is_a_checked_scenario_on_one_machine() {
        for (largest, mem) in [(256, 2048), (1024, 4096)] {
            for m in METHODS {
                let sc = scenario(m, 64, largest).unwrap();
                assert_eq!(sc.host.memory_mib, mem);
                assert_eq!(sc.guest_ram.as_ref().unwrap().size_mib, 64);
                assert_eq!(sc.guest_ram.as_ref().unwrap().keep, m);
                assert!(sc.pkernfs.as_ref().unwrap().size_mib >= largest + 32);
            }
        }
        assert_eq!(machine(1024), (4096, 4352, 1088));
        assert!(scenario(GuestRamKeep::Copy, 1536, 1536).is_ok(), "the largest size fits both methods");
        assert!(base_scenario(GuestRamKeep::None).is_err());
    }

    #[test]
    fn ratios_table_and_plot_series() {
        let b = DowntimeBench {
            sizes_mib: vec![64, 1024],
            machine_mib: machine(1024),
            cells: vec![cell("pkernfs", 64, 27000), cell("copy", 64, 30000), cell("pkernfs", 1024, 27500), cell("copy", 1024, 90000)],
        };
        assert!((b.ratio("pkernfs").unwrap() - 27500.0 / 27000.0).abs() < 1e-9);
        assert_eq!(b.ratio("copy"), Some(3.0));
        assert!(b.passed());
        let md = b.markdown();
        assert!(md.contains("| 1024 MiB | 27500 | 90000 | 20480 | – | 13750 | 45000 |"), "{md}");
        assert!(md.contains("copy: downtime(1024 MiB) ÷ downtime(64 MiB) = **3.00**"), "{md}");
        assert_eq!(b.series(), [("pkernfs".to_string(), vec![(64, 27000), (1024, 27500)]), ("copy".to_string(), vec![(64, 30000), (1024, 90000)])]);
        let mut failed = b.clone();
        failed.cells[3].as_expected = false;
        assert!(!failed.passed());
        assert!(failed.markdown().contains("(not as expected)"));
    }
}
