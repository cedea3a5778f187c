//! `lulab bench dma-latency`: send → DMA latency (µs, from QEMU's trace:
//! the `dma_timing` oracle) before, during and after a live update, and the
//! DMA blackout per update, over several runs of a scenario. With a second
//! scenario (`--b`), the two run interleaved (A B, B A, …) so that a machine
//! getting slower or faster over the bench weighs on both, and each metric's
//! difference is judged with a permutation test over the runs (firecracker's
//! A/B approach): how often a relabelling of the runs gives a difference of
//! means at least as large as the one measured. No fixed threshold decides;
//! with n runs of each, the smallest p-value possible is 2 / C(2n, n)
//! (0.1 for 3, 0.029 for 4, 0.008 for 5).

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::oracle::dma_timing::DmaTiming;
use crate::scenario::Scenario;

/// One run's numbers (µs; `None`: the phase had no frame).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunMetrics {
    /// Its run directory.
    pub dir: String,
    /// The run had its expected outcome.
    pub as_expected: bool,
    /// p50 / p99 before the first update.
    pub before: Option<(u64, u64)>,
    /// p50 / p99 inside updates.
    pub during: Option<(u64, u64)>,
    /// p50 / p99 after.
    pub after: Option<(u64, u64)>,
    /// The longest DMA blackout of its updates.
    pub blackout_us: Option<u64>,
}

impl RunMetrics {
    fn from_report(dir: &Path, as_expected: bool, t: &DmaTiming) -> Self {
        let pp = |p: &Option<crate::oracle::dma_timing::Percentiles>| p.as_ref().map(|p| (p.p50_us, p.p99_us));
        Self {
            dir: dir.display().to_string(),
            as_expected,
            before: pp(&t.latency_before),
            during: pp(&t.latency_during),
            after: pp(&t.latency_after),
            blackout_us: t.blackouts.iter().map(|b| b.blackout_us).max(),
        }
    }

    /// The metrics compared, by name.
    fn values(&self) -> Vec<(&'static str, Option<u64>)> {
        vec![
            ("p50 before", self.before.map(|p| p.0)),
            ("p99 before", self.before.map(|p| p.1)),
            ("p50 during", self.during.map(|p| p.0)),
            ("p99 during", self.during.map(|p| p.1)),
            ("p50 after", self.after.map(|p| p.0)),
            ("p99 after", self.after.map(|p| p.1)),
            ("blackout", self.blackout_us),
        ]
    }
}

/// One metric across the arms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Compared {
    /// Its name (`p99 during`).
    pub metric: String,
    /// Mean over A's runs (µs).
    pub a_mean: f64,
    /// Mean over B's runs (µs), with `--b`.
    pub b_mean: Option<f64>,
    /// Two-sided permutation p-value of the difference of means, with `--b`.
    pub p_value: Option<f64>,
}

/// `bench.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DmaLatencyBench {
    /// Scenario A.
    pub a: String,
    /// Scenario B, if any.
    pub b: Option<String>,
    /// A's runs.
    pub a_runs: Vec<RunMetrics>,
    /// B's runs.
    pub b_runs: Vec<RunMetrics>,
    /// Per metric.
    pub compared: Vec<Compared>,
    /// A p-value below this calls a difference.
    pub alpha: f64,
}

/// Two-sided permutation test of the difference of means between `a` and
/// `b`: the share of relabellings (all of them when there are at most
/// 100 000, else 20 000 drawn with a fixed seed) whose |difference| is at
/// least the observed one. 1.0 when either side is empty.
pub fn permutation_p(a: &[f64], b: &[f64]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 1.0;
    }
    let all: Vec<f64> = a.iter().chain(b).copied().collect();
    let (n, k) = (all.len(), a.len());
    let observed = (mean(a) - mean(b)).abs();
    let diff = |mask: &[bool]| {
        let (x, y): (Vec<f64>, Vec<f64>) = {
            let mut x = Vec::with_capacity(k);
            let mut y = Vec::with_capacity(n - k);
            for (v, m) in all.iter().zip(mask) {
                if *m {
                    x.push(*v)
                } else {
                    y.push(*v)
                }
            }
            (x, y)
        };
        (mean(&x) - mean(&y)).abs()
    };
    let eps = observed * 1e-9;
    let (mut hits, mut total) = (0u64, 0u64);
    if binomial(n, k) <= 100_000 {
        // Every subset of size k of n, as bit masks.
        let mut idx: Vec<usize> = (0..k).collect();
        loop {
            let mut mask = vec![false; n];
            for &i in &idx {
                mask[i] = true;
            }
            total += 1;
            hits += u64::from(diff(&mask) + eps >= observed);
            // Next combination.
            let Some(i) = (0..k).rev().find(|&i| idx[i] != i + n - k) else { break };
            idx[i] += 1;
            for j in i + 1..k {
                idx[j] = idx[j - 1] + 1;
            }
        }
    } else {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let mut order: Vec<usize> = (0..n).collect();
            for i in (1..n).rev() {
                order.swap(i, (next() % (i as u64 + 1)) as usize);
            }
            let mut mask = vec![false; n];
            for &i in &order[..k] {
                mask[i] = true;
            }
            total += 1;
            hits += u64::from(diff(&mask) + eps >= observed);
        }
    }
    hits as f64 / total as f64
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn binomial(n: usize, k: usize) -> u64 {
    (0..k.min(n - k)).fold(1u64, |acc, i| acc.saturating_mul((n - i) as u64) / (i as u64 + 1))
}

impl DmaLatencyBench {
    /// Medians and, with B, p-values per metric.
    fn compare(&mut self) {
        let names: Vec<&'static str> = RunMetrics::default().values().into_iter().map(|(n, _)| n).collect();
        let col = |runs: &[RunMetrics], name: &str| -> Vec<f64> {
            runs.iter().filter_map(|r| r.values().into_iter().find(|(n, _)| *n == name).and_then(|(_, v)| v)).map(|v| v as f64).collect()
        };
        self.compared = names
            .into_iter()
            .filter_map(|name| {
                let a = col(&self.a_runs, name);
                if a.is_empty() {
                    return None;
                }
                let b = self.b.as_ref().map(|_| col(&self.b_runs, name));
                Some(Compared {
                    metric: name.into(),
                    a_mean: mean(&a),
                    b_mean: b.as_ref().filter(|b| !b.is_empty()).map(|b| mean(b)),
                    p_value: b.map(|b| permutation_p(&a, &b)),
                })
            })
            .collect();
    }

    /// The Markdown summary.
    pub fn markdown(&self) -> String {
        let mut md = format!("# DMA latency (µs, QEMU's trace): {}", self.a);
        if let Some(b) = &self.b {
            md.push_str(&format!(" (A) against {b} (B), runs interleaved"));
        }
        md.push_str(&format!("\n\n{} run(s) of A", self.a_runs.len()));
        if self.b.is_some() {
            md.push_str(&format!(", {} of B", self.b_runs.len()));
        }
        let bad = self.a_runs.iter().chain(&self.b_runs).filter(|r| !r.as_expected).count();
        if bad > 0 {
            md.push_str(&format!("; **{bad} run(s) not as expected** (their numbers are still counted)"));
        }
        md.push_str(".\n\n");
        if self.b.is_some() {
            md.push_str(&format!("| metric | A mean | B mean | p (permutation) | differs at α = {} |\n|---|---|---|---|---|\n", self.alpha));
            for c in &self.compared {
                let (bm, p) = (c.b_mean.map_or("-".into(), |v| format!("{v:.0}")), c.p_value.unwrap_or(1.0));
                md.push_str(&format!("| {} | {:.0} | {bm} | {p:.3} | {} |\n", c.metric, c.a_mean, if p < self.alpha { "yes" } else { "no" }));
            }
        } else {
            md.push_str("| metric | mean over runs |\n|---|---|\n");
            for c in &self.compared {
                md.push_str(&format!("| {} | {:.0} |\n", c.metric, c.a_mean));
            }
        }
        md
    }
}

/// Runs `a` (and `b`, interleaved) `runs` times each into `out`.
pub fn run(a: &Path, b: Option<&Path>, runs: usize, alpha: f64, out: &Path) -> Result<DmaLatencyBench> {
    let load = |p: &Path| -> Result<(String, Scenario)> {
        let sc = Scenario::load(p)?;
        anyhow::ensure!(sc.rx.is_some(), "{}: DMA latency is measured on the RX stream: pick a scenario with [rx]", p.display());
        Ok((p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(), sc))
    };
    let arm_a = load(a)?;
    let arm_b = b.map(load).transpose()?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut bench = DmaLatencyBench {
        a: a.display().to_string(),
        b: b.map(|p| p.display().to_string()),
        a_runs: Vec::new(),
        b_runs: Vec::new(),
        compared: Vec::new(),
        alpha,
    };
    for i in 0..runs {
        // A B, then B A, …
        let mut order = vec![("a", &arm_a)];
        if let Some(bb) = &arm_b {
            order.push(("b", bb));
            if i % 2 == 1 {
                order.reverse();
            }
        }
        for (label, (name, sc)) in order {
            let dir = out.join(format!("{label}{}", i + 1));
            eprintln!("bench dma-latency: run {}/{runs} of {label} ({name})", i + 1);
            let report = crate::scenario::run::run(name, sc, &dir)?;
            let timing: DmaTiming = report
                .sections
                .get("dma_timing")
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .with_context(|| format!("{}: no dma_timing section in its report", dir.display()))?;
            let m = RunMetrics::from_report(&dir, report.as_expected, &timing);
            if label == "a" {
                bench.a_runs.push(m);
            } else {
                bench.b_runs.push(m);
            }
        }
    }
    bench.compare();
    super::write(out, &bench, &bench.markdown())?;
    Ok(bench)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_permutation_test_separates_what_differs_and_not_what_does_not() {
        let a = [100.0, 110.0, 105.0, 98.0, 102.0];
        let b = [300.0, 310.0, 290.0, 305.0, 299.0];
        let p = permutation_p(&a, &b);
        // Exact: 252 splits of 10; only the two that separate the groups are as extreme.
        assert!((p - 2.0 / 252.0).abs() < 1e-12, "{p}");
        let same = permutation_p(&a, &[101.0, 104.0, 99.0, 108.0, 103.0]);
        assert!(same > 0.3, "{same}");
        assert_eq!(permutation_p(&a, &[]), 1.0);
        // Many runs: sampled relabellings, still decisive, and the same every time.
        let big_a: Vec<f64> = (0..20).map(|i| 100.0 + f64::from(i % 5)).collect();
        let big_b: Vec<f64> = (0..20).map(|i| 200.0 + f64::from(i % 5)).collect();
        let p = permutation_p(&big_a, &big_b);
        assert!(p < 0.001 && p == permutation_p(&big_a, &big_b), "{p}");
    }

    #[test]
    fn the_summary_says_which_metric_differs() {
        let run = |p: u64, bl: u64| RunMetrics { during: Some((p, p * 2)), blackout_us: Some(bl), as_expected: true, ..Default::default() };
        let mut b = DmaLatencyBench {
            a: "a.toml".into(),
            b: Some("b.toml".into()),
            a_runs: (0..5).map(|i| run(100 + i, 998 + i)).collect(),
            b_runs: (0..5).map(|i| run(300 + i, 1003 - i)).collect(),
            compared: vec![],
            alpha: 0.05,
        };
        b.compare();
        let md = b.markdown();
        assert!(md.contains("| p50 during | 102 | 302 | 0.008 | yes |"), "{md}");
        assert!(md.contains("| blackout | 1000 | 1001 | ") && md.contains("| no |"), "{md}");
        assert!(!md.contains("p50 before"), "a phase with no frames is left out: {md}");
    }
}
