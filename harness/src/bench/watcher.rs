//! `lulab bench watcher`: the CPU-write watcher's cost. The same scenario
//! runs without and with the TCG plugin, in pairs whose order alternates
//! (A/B, B/A, …) so that a machine getting slower or faster over the bench
//! weighs on both; the result is the ratio of wall times, per pair and
//! their median.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::scenario::Scenario;

/// One pair of runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    /// Wall time without the plugin (ms).
    pub without_ms: u64,
    /// Wall time with it (ms).
    pub with_ms: u64,
    /// with / without.
    pub ratio: f64,
    /// Which ran first.
    pub watched_first: bool,
    /// Both runs had their expected outcome.
    pub as_expected: bool,
}

/// `bench.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatcherBench {
    /// The scenario file.
    pub scenario: String,
    /// Every pair, in order.
    pub pairs: Vec<Pair>,
    /// Median of the pairs' ratios.
    pub median_ratio: f64,
    /// Stores the plugin saw in the last watched run (what it cost).
    pub stores: u64,
}

impl WatcherBench {
    /// The Markdown summary.
    pub fn markdown(&self) -> String {
        let mut md = format!(
            "# CPU-write watcher overhead: {}\n\nWall time with the TCG plugin ÷ without, same scenario, pairs in alternating order.\n\n| pair | without | with | ratio | first | as expected |\n|---|---|---|---|---|---|\n",
            self.scenario
        );
        for (i, p) in self.pairs.iter().enumerate() {
            md.push_str(&format!(
                "| {} | {:.1} s | {:.1} s | {:.2} | {} | {} |\n",
                i + 1,
                p.without_ms as f64 / 1000.0,
                p.with_ms as f64 / 1000.0,
                p.ratio,
                if p.watched_first { "with" } else { "without" },
                if p.as_expected { "yes" } else { "NO" }
            ));
        }
        md.push_str(&format!("\n**median ratio {:.2}** ({} guest stores into the carve-out watched in the last run)\n", self.median_ratio, self.stores));
        md
    }
}

/// Median of `v` (0 for none).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs `pairs` pairs of `file` into `out` (one run directory each).
pub fn run(file: &Path, pairs: usize, out: &Path) -> Result<WatcherBench> {
    let sc = Scenario::load(file)?;
    anyhow::ensure!(sc.pkernfs.is_some(), "{}: the watcher watches the pkernfs carve-out: pick a scenario with [pkernfs]", file.display());
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let name = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let mut result = WatcherBench { scenario: file.display().to_string(), pairs: Vec::new(), median_ratio: 0.0, stores: 0 };
    for i in 0..pairs {
        let watched_first = i % 2 == 1;
        let mut times = [0u64; 2];
        let mut ok = true;
        for watch in if watched_first { [true, false] } else { [false, true] } {
            let mut s = sc.clone();
            s.watch_persistent_memory = watch;
            let dir = out.join(format!("pair{}-{}", i + 1, if watch { "with" } else { "without" }));
            eprintln!("bench watcher: pair {}/{pairs}, {} the plugin", i + 1, if watch { "with" } else { "without" });
            let start = Instant::now();
            let report = crate::scenario::run::run(&name, &s, &dir)?;
            times[usize::from(watch)] = start.elapsed().as_millis() as u64;
            ok &= report.as_expected;
            if watch {
                result.stores = report.sections.get("cpu_writes").and_then(|c| c["stores"].as_u64()).unwrap_or(0);
            }
        }
        let ratio = times[1] as f64 / times[0].max(1) as f64;
        result.pairs.push(Pair { without_ms: times[0], with_ms: times[1], ratio, watched_first, as_expected: ok });
    }
    result.median_ratio = median(result.pairs.iter().map(|p| p.ratio).collect());
    super::write(out, &result, &result.markdown())?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_and_the_summary() {
        assert_eq!(median(vec![]), 0.0);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        let b = WatcherBench {
            scenario: "scenarios/live-update-rx.toml".into(),
            pairs: vec![Pair { without_ms: 70_000, with_ms: 84_000, ratio: 1.2, watched_first: false, as_expected: true }],
            median_ratio: 1.2,
            stores: 11_795_018,
        };
        let md = b.markdown();
        assert!(md.contains("| 1 | 70.0 s | 84.0 s | 1.20 | without | yes |") && md.contains("**median ratio 1.20**"), "{md}");
    }
}
