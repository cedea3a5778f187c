//! `lulab bench soak --updates N`: N live updates in a row under RX load,
//! the device kept running through all of them (the 20-update soak scenario
//! with its update entry repeated N times and a stream long enough to
//! outlast them), with per-update distributions of agent downtime, kexec
//! transition and DMA blackout. Nothing may be lost: the bench says so, and
//! `lulab` exits 1 when a frame was lost or the run was not as expected.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::oracle::timeline::UpdateTimeline;
use crate::scenario::{Scenario, Step};

/// Seconds of stream per update: updates under TCG take 15–20 s without the
/// watcher; the margin keeps the load on through the last one.
const STREAM_S_PER_UPDATE: f64 = 25.0;

/// Distribution of one per-update quantity.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dist {
    /// Updates with a value.
    pub n: usize,
    /// Median.
    pub p50: u64,
    /// 90th percentile (nearest rank).
    pub p90: u64,
    /// Largest.
    pub max: u64,
}

impl Dist {
    /// Of `v`.
    pub fn of(mut v: Vec<u64>) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        v.sort_unstable();
        let at = |q| crate::oracle::dma_timing::nearest_rank(&v, q);
        Self { n: v.len(), p50: at(0.5), p90: at(0.9), max: v[v.len() - 1] }
    }
}

/// `bench.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SoakBench {
    /// Updates asked for.
    pub updates_asked: usize,
    /// Updates carried out.
    pub updates_done: u32,
    /// The run's outcome and whether it was the expected one (intact).
    pub outcome: String,
    /// See `outcome`.
    pub as_expected: bool,
    /// Frames sent, delivered and lost.
    pub sent: u64,
    /// See `sent`.
    pub delivered: u64,
    /// See `sent`.
    pub lost: u64,
    /// Agent downtime per update (ms).
    pub agent_downtime_ms: Dist,
    /// Kexec request → new kernel's banner (ms).
    pub kexec_transition_ms: Dist,
    /// DMA blackout per update (µs, QEMU's trace).
    pub dma_blackout_us: Dist,
    /// Updates whose blackout ran to the end of the run (the device stopped).
    pub blackouts_to_end_of_run: usize,
    /// Per update, as report.json has it.
    pub per_update: Vec<UpdateTimeline>,
    /// The run directory.
    pub run_dir: String,
}

impl SoakBench {
    /// From a finished run's report.
    pub fn from_report(asked: usize, r: &crate::report::Report, dir: &Path) -> Self {
        let u = &r.updates;
        Self {
            updates_asked: asked,
            updates_done: r.live_updates,
            outcome: r.outcome.to_string(),
            as_expected: r.as_expected,
            sent: r.dma.sent,
            delivered: r.dma.delivered,
            lost: r.dma.lost,
            agent_downtime_ms: Dist::of(u.iter().filter_map(|u| u.agent_downtime_ms).collect()),
            kexec_transition_ms: Dist::of(u.iter().filter_map(|u| u.kexec_transition_ms).collect()),
            dma_blackout_us: Dist::of(u.iter().filter_map(|u| u.dma_blackout_us).collect()),
            blackouts_to_end_of_run: u.iter().filter(|u| u.dma_blackout_to_end_of_run).count(),
            per_update: u.clone(),
            run_dir: dir.display().to_string(),
        }
    }

    /// The Markdown summary.
    pub fn markdown(&self) -> String {
        let mut md = format!(
            "# Soak: {} of {} live updates under RX load\n\noutcome **{}** ({}) · frames sent {}, delivered {}, **lost {}**\n\n| per update | n | p50 | p90 | max |\n|---|---|---|---|---|\n",
            self.updates_done,
            self.updates_asked,
            self.outcome,
            if self.as_expected { "as expected" } else { "NOT as expected" },
            self.sent,
            self.delivered,
            self.lost
        );
        for (name, d) in [("agent downtime (ms)", &self.agent_downtime_ms), ("kexec transition (ms)", &self.kexec_transition_ms), ("DMA blackout (µs)", &self.dma_blackout_us)] {
            md.push_str(&format!("| {name} | {} | {} | {} | {} |\n", d.n, d.p50, d.p90, d.max));
        }
        if self.blackouts_to_end_of_run > 0 {
            md.push_str(&format!("\n{} update(s) left the device stopped for good (blackout to the end of the run).\n", self.blackouts_to_end_of_run));
        }
        md
    }

    /// The bench passed: every update done, intact, nothing lost.
    pub fn passed(&self) -> bool {
        self.as_expected && self.lost == 0 && self.updates_done as usize == self.updates_asked
    }
}

/// The soak scenario (`base`: the 20-update soak file) with `updates`
/// updates and a stream that outlasts them; the watcher only with `watch`.
pub fn scenario(base: &Path, updates: usize, watch: bool) -> Result<Scenario> {
    anyhow::ensure!(updates > 0, "--updates: at least 1");
    let mut sc = Scenario::load(base)?;
    let rx = sc.rx.as_mut().with_context(|| format!("{}: the soak runs under RX load: it needs [rx]", base.display()))?;
    rx.frames = (updates as f64 * STREAM_S_PER_UPDATE * rx.rate_fps).ceil() as u64;
    let first = sc.steps.iter().position(|s| matches!(s, Step::LiveUpdate { .. })).with_context(|| format!("{}: no live_update step", base.display()))?;
    let update = sc.steps[first].clone();
    sc.steps.retain(|s| !matches!(s, Step::LiveUpdate { .. }));
    sc.steps.splice(first..first, std::iter::repeat_n(update, updates));
    sc.step_entries.clear();
    sc.watch_persistent_memory = watch;
    sc.description = format!("e1000e RX through {updates} live updates in a row (bench soak)");
    sc.plan().map_err(|(i, m)| anyhow::anyhow!("{}: steps[{i}].{m}", base.display()))?;
    Ok(sc)
}

/// Runs the soak into `out`.
pub fn run(base: &Path, updates: usize, watch: bool, out: &Path) -> Result<SoakBench> {
    let sc = scenario(base, updates, watch)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let dir = out.join("run");
    eprintln!("bench soak: {updates} live updates, {} frames at {} fps", sc.rx.as_ref().map_or(0, |r| r.frames), sc.rx.as_ref().map_or(0.0, |r| r.rate_fps));
    let report = crate::scenario::run::run("bench-soak", &sc, &dir)?;
    let bench = SoakBench::from_report(updates, &report, &dir);
    super::write(out, &bench, &bench.markdown())?;
    Ok(bench)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soak_file_becomes_n_updates_with_a_stream_that_outlasts_them() {
        let base = crate::workspace_root().join("scenarios/live-update-soak.toml");
        let sc = scenario(&base, 100, false).unwrap();
        assert_eq!(sc.live_updates(), 100);
        assert_eq!(sc.rx.as_ref().unwrap().frames, 125_000, "100 updates × 25 s × 50 fps");
        assert!(!sc.watch_persistent_memory);
        let plan = sc.plan().unwrap();
        assert_eq!(plan.steps.iter().rfind(|p| p.step.name() == "live_update").unwrap().before.updates, 99);
        assert!(scenario(&base, 0, false).is_err());
    }

    #[test]
    fn distributions_and_the_verdict() {
        let d = Dist::of((1..=10).collect());
        assert_eq!((d.n, d.p50, d.p90, d.max), (10, 5, 9, 10));
        let b = SoakBench { updates_asked: 3, updates_done: 3, outcome: "intact".into(), as_expected: true, ..Default::default() };
        assert!(b.passed());
        assert!(!SoakBench { lost: 1, ..b.clone() }.passed());
        assert!(!SoakBench { updates_done: 2, ..b.clone() }.passed());
        assert!(b.markdown().contains("**lost 0**"));
    }
}
