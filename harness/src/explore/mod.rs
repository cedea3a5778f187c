//! `lulab explore`: schedules nobody wrote a scenario for. Draws schedules
//! ([`schedule::strategy`]) from a seed, runs each against a real host and
//! compares its outcome with the one its faults make it expect. On the
//! first mismatch it shrinks the schedule (proptest's simplify/complicate;
//! every candidate a real run, bounded by `max_shrink`) and writes the
//! smallest one that still mismatches as `shrunk-<seed>.toml`, a scenario
//! file that `lulab run` reproduces. The same seed draws the same schedules.

pub mod schedule;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde::Serialize;

pub use schedule::{Sabotage, Schedule};

use crate::scenario::{Scenario, Verdict};

/// What one run of a schedule gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaseOutcome {
    /// The outcome (`error` when the harness could not produce a report).
    pub outcome: Verdict,
    /// It was the one the schedule expects (with its reasons).
    pub as_expected: bool,
    /// The findings' reasons, or the error.
    pub reasons: Vec<String>,
    /// The run directory.
    pub dir: String,
}

/// Runs scenarios: real hosts in `lulab explore`, a model in tests.
pub trait CaseRunner {
    /// Runs `sc` into `dir`.
    fn run(&mut self, name: &str, sc: &Scenario, dir: &Path) -> CaseOutcome;
}

/// Real hosts ([`crate::scenario::run::run`]).
#[derive(Debug)]
pub struct HostRunner;

impl CaseRunner for HostRunner {
    fn run(&mut self, name: &str, sc: &Scenario, dir: &Path) -> CaseOutcome {
        let d = dir.display().to_string();
        match crate::scenario::run::run(name, sc, dir) {
            Ok(r) => CaseOutcome { outcome: r.outcome, as_expected: r.as_expected, reasons: r.findings.iter().map(|f| format!("{}: {}", f.reason, f.detail)).collect(), dir: d },
            Err(e) => CaseOutcome { outcome: Verdict::Error, as_expected: sc.expect == Verdict::Error, reasons: vec![format!("{e:#}")], dir: d },
        }
    }
}

/// `lulab explore`'s settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Schedules to run (fewer when one mismatches).
    pub cases: usize,
    /// Seed of the schedules.
    pub seed: u64,
    /// Where runs, `explore.json` and `shrunk-<seed>.toml` go.
    pub out: PathBuf,
    /// Shrinking stops starting new runs after this long.
    pub max_shrink: Duration,
    /// Sabotage (the explorer's own check).
    pub sabotage: Option<Sabotage>,
}

/// One shrink candidate and what it gave.
#[derive(Debug, Clone, Serialize)]
pub struct ShrinkStep {
    /// The candidate.
    pub schedule: Schedule,
    /// Its outcome (a candidate that ran before is not run again).
    pub outcome: CaseOutcome,
    /// It still mismatched, so it became the smallest so far.
    pub kept: bool,
}

/// `explore.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Exploration {
    /// The seed.
    pub seed: u64,
    /// Cases asked for.
    pub cases_asked: usize,
    /// Cases run (the mismatching one included).
    pub cases_run: usize,
    /// Each case's schedule and outcome, in order.
    pub cases: Vec<(Schedule, CaseOutcome)>,
    /// The first mismatching case (index into `cases`).
    pub failed_case: Option<usize>,
    /// Shrink candidates run, in order.
    pub shrink: Vec<ShrinkStep>,
    /// The smallest mismatching schedule and its file.
    pub shrunk: Option<(Schedule, String)>,
    /// Shrinking stopped at `max_shrink` rather than at a minimum.
    pub shrink_timed_out: bool,
    /// Sabotage, if any.
    pub sabotaged: bool,
}

/// The runner whose random numbers come from `seed` only.
pub fn seeded(seed: u64) -> TestRunner {
    let mut bytes = [0u8; 32];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&lulab_proto::pattern::splitmix64(seed.wrapping_add(i as u64)).to_le_bytes());
    }
    TestRunner::new_with_rng(Config::default(), TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

/// The next schedule `rng` draws, as a tree that can shrink.
fn draw<S: Strategy<Value = Schedule>>(strategy: &S, rng: &mut TestRunner) -> Result<S::Tree> {
    strategy.new_tree(rng).map_err(|e| anyhow::anyhow!("drawing a schedule: {e}"))
}

/// The first `n` schedules of `seed`.
pub fn schedules(seed: u64, n: usize) -> Result<Vec<Schedule>> {
    let mut rng = seeded(seed);
    let s = schedule::strategy();
    (0..n).map(|_| Ok(draw(&s, &mut rng)?.current())).collect()
}

/// Explores with `runner`: runs cases until one mismatches, shrinks it.
pub fn explore(set: &Settings, runner: &mut dyn CaseRunner) -> Result<Exploration> {
    std::fs::create_dir_all(&set.out).with_context(|| format!("creating {}", set.out.display()))?;
    let mut ex = Exploration { seed: set.seed, cases_asked: set.cases, cases_run: 0, cases: Vec::new(), failed_case: None, shrink: Vec::new(), shrunk: None, shrink_timed_out: false, sabotaged: set.sabotage.is_some() };
    let mut rng = seeded(set.seed);
    let strategy = schedule::strategy();
    for i in 0..set.cases {
        let mut tree = draw(&strategy, &mut rng)?;
        let s = tree.current();
        let sc = s.scenario(set.sabotage, &format!("explore seed {} case {i}", set.seed))?;
        eprintln!("explore: case {}/{}: {}", i + 1, set.cases, sc.description);
        let o = runner.run(&format!("explore-{}-case{i}", set.seed), &sc, &set.out.join(format!("case-{i}")));
        eprintln!("explore: case {}: expected {}, outcome {}{}", i + 1, sc.expect, o.outcome, if o.as_expected { "" } else { " — MISMATCH" });
        let failed = !o.as_expected;
        ex.cases.push((s.clone(), o));
        ex.cases_run += 1;
        write(&ex, &set.out)?;
        if failed {
            ex.failed_case = Some(i);
            shrink(set, runner, &mut tree, s, &mut ex)?;
            break;
        }
    }
    write(&ex, &set.out)?;
    Ok(ex)
}

/// Shrinks `failing` (the current value of `tree`): every candidate a real
/// run, until no simpler one mismatches or `max_shrink` has passed; writes
/// the smallest as `shrunk-<seed>.toml`.
fn shrink(set: &Settings, runner: &mut dyn CaseRunner, tree: &mut impl ValueTree<Value = Schedule>, failing: Schedule, ex: &mut Exploration) -> Result<()> {
    let start = Instant::now();
    let mut smallest = failing;
    let mut seen: HashMap<Schedule, CaseOutcome> = HashMap::new();
    let mut more = tree.simplify();
    while more {
        if start.elapsed() >= set.max_shrink {
            ex.shrink_timed_out = true;
            break;
        }
        let cand = tree.current();
        let outcome = match seen.get(&cand) {
            Some(o) => o.clone(),
            None => {
                let k = ex.shrink.len();
                let sc = cand.scenario(set.sabotage, &format!("explore seed {} shrink {k}", set.seed))?;
                eprintln!("explore: shrink {} ({} s of {} s): {} steps past the start: {}", k + 1, start.elapsed().as_secs(), set.max_shrink.as_secs(), cand.steps_beyond_start(), sc.description);
                let o = runner.run(&format!("explore-{}-shrink{k}", set.seed), &sc, &set.out.join(format!("shrink-{k}")));
                seen.insert(cand.clone(), o.clone());
                o
            }
        };
        let mismatch = !outcome.as_expected;
        ex.shrink.push(ShrinkStep { schedule: cand.clone(), outcome, kept: mismatch });
        if mismatch {
            smallest = cand;
            more = tree.simplify();
        } else {
            more = tree.complicate();
        }
        write(ex, &set.out)?;
    }
    let file = set.out.join(format!("shrunk-{}.toml", set.seed));
    write_shrunk(set, &smallest, ex, &file)?;
    eprintln!("explore: smallest mismatching schedule ({} steps past the start) → {}", smallest.steps_beyond_start(), file.display());
    ex.shrunk = Some((smallest, file.display().to_string()));
    Ok(())
}

/// The shrunk schedule as a scenario file, with where it came from.
fn write_shrunk(set: &Settings, s: &Schedule, ex: &Exploration, file: &Path) -> Result<()> {
    let sc = s.scenario(set.sabotage, &file.display().to_string())?;
    let last = ex.shrink.iter().rev().find(|st| st.kept && st.schedule == *s).map(|st| &st.outcome).or_else(|| ex.cases.last().map(|c| &c.1));
    let got = last.map_or(String::new(), |o| format!("{} ({})", o.outcome, o.reasons.join("; ").replace('\n', " ")));
    let header = format!(
        "# Found by `lulab explore --seed {}` (case {}), shrunk in {} run(s){}.\n# Expected {}; the run gave {}.\n# Reproduce: lulab run {}\n",
        set.seed,
        ex.failed_case.unwrap_or(0),
        ex.shrink.len(),
        if set.sabotage.is_some() { ", sabotaged (every update into the stock kernel)" } else { "" },
        sc.expect,
        got.chars().take(400).collect::<String>(),
        file.display()
    );
    std::fs::write(file, header + &sc.resolved_toml()?).with_context(|| format!("writing {}", file.display()))
}

fn write(ex: &Exploration, out: &Path) -> Result<()> {
    let p = out.join("explore.json");
    std::fs::write(&p, serde_json::to_string_pretty(ex)? + "\n").with_context(|| format!("writing {}", p.display()))
}

#[cfg(test)]
mod tests;
