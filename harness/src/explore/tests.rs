use super::*;
use crate::fault::FaultKind;

/// A model of the lab: a run matches its expectation unless `bug` says
/// the schedule hits a bug; counts runs.
struct Model {
    bug: fn(&Scenario) -> bool,
    runs: usize,
}

impl CaseRunner for Model {
    fn run(&mut self, _name: &str, sc: &Scenario, dir: &Path) -> CaseOutcome {
        self.runs += 1;
        let hit = (self.bug)(sc);
        let outcome = if hit { Verdict::Broken } else { sc.expect };
        CaseOutcome { outcome, as_expected: !hit, reasons: if hit { vec!["dma.lost: model".into()] } else { vec![] }, dir: dir.display().to_string() }
    }
}

fn settings(dir: &Path, seed: u64, sabotage: Option<Sabotage>) -> Settings {
    Settings { cases: 20, seed, out: dir.into(), max_shrink: Duration::from_secs(3600), sabotage }
}

#[test]
fn the_same_seed_draws_the_same_schedules() {
    let a = schedules(7, 12).unwrap();
    assert_eq!(a, schedules(7, 12).unwrap());
    assert_ne!(a, schedules(8, 12).unwrap());
    assert!(a.iter().any(|s| s.updates.iter().any(|u| !u.faults.is_empty())), "faults are drawn: {a:?}");
    assert!(a.iter().any(|s| s.nvme) && a.iter().any(|s| !s.nvme));
    assert!(a.iter().any(|s| s.nvme_persistent) && a.iter().any(|s| s.nvme && !s.nvme_persistent), "NVMe persistent or not: {a:?}");
}

#[test]
fn a_run_that_matches_every_case_shrinks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Model { bug: |_| false, runs: 0 };
    let ex = explore(&settings(dir.path(), 3, None), &mut m).unwrap();
    assert_eq!((ex.cases_run, m.runs, ex.failed_case), (20, 20, None));
    assert!(ex.shrunk.is_none());
    assert!(dir.path().join("explore.json").exists());
}

#[test]
fn sabotaged_persistence_shrinks_to_one_plain_update() {
    let dir = tempfile::tempdir().unwrap();
    // The stock kernel keeps no device: every update loses frames.
    let mut m = Model { bug: |sc| sc.steps.iter().any(|s| matches!(s, crate::scenario::Step::LiveUpdate { kernel: Some(crate::scenario::KernelChoice::Stock), .. })), runs: 0 };
    let ex = explore(&settings(dir.path(), 11, Some(Sabotage::Persistence)), &mut m).unwrap();
    assert_eq!((ex.cases_run, ex.failed_case), (1, Some(0)), "the first case already mismatches");
    let (s, file) = ex.shrunk.clone().unwrap();
    assert_eq!(s, Schedule { nvme: false, nvme_persistent: false, lead_frames: None, updates: vec![schedule::UpdatePlan { faults: vec![] }] });
    assert!(s.steps_beyond_start() <= 3);
    assert_eq!(m.runs, 1 + ex.shrink.len(), "every candidate run once");
    // The file is a scenario `lulab check` accepts, and it keeps the sabotage.
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("# Found by `lulab explore --seed 11` (case 0)"), "{text}");
    let sc = Scenario::load(Path::new(&file)).unwrap();
    assert_eq!(sc.expect, Verdict::Intact);
    assert!((m.bug)(&sc), "it still hits the bug");
    assert_eq!(file, dir.path().join("shrunk-11.toml").display().to_string());
}

#[test]
fn a_bug_behind_one_fault_keeps_that_fault() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Model { bug: |sc| sc.steps.iter().any(|s| matches!(s, crate::scenario::Step::Fault(f) if f.kind == FaultKind::LinkFlap)), runs: 0 };
    let ex = explore(&settings(dir.path(), 5, None), &mut m).unwrap();
    let (s, _) = ex.shrunk.expect("some case of seed 5 has a link flap");
    assert_eq!(s.updates.len(), 1);
    assert_eq!(s.updates[0].faults.len(), 1);
    assert_eq!(s.updates[0].faults[0].kind, FaultKind::LinkFlap);
    assert_eq!((s.nvme, s.lead_frames), (false, None));
}

#[test]
fn shrinking_stops_at_its_time_limit_and_still_writes_the_smallest_so_far() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Model { bug: |_| true, runs: 0 };
    let set = Settings { max_shrink: Duration::ZERO, ..settings(dir.path(), 2, None) };
    let ex = explore(&set, &mut m).unwrap();
    assert!(ex.shrink_timed_out);
    assert_eq!((m.runs, ex.shrink.len()), (1, 0));
    assert_eq!(ex.shrunk.unwrap().0, ex.cases[0].0);
}


/// The system tier's explore tests chose their seeds for what they draw
/// (`harness/tests/system/explore.rs`): a change of the strategy that
/// draws something else must choose them again.
#[test]
fn the_system_tiers_seeds_draw_what_it_was_chosen_for() {
    let d = |seed, n| schedules(seed, n).unwrap().iter().map(|s| s.describe(None)).collect::<Vec<_>>();
    assert_eq!(d(115, 2), ["explored: RX + NVMe, 200 frames first, update with memory_pressure@agent_up", "explored: RX + NVMe (not persistent), 200 frames first, update with vm_pause@step"]);
    assert_eq!(d(4, 1), ["explored: RX, update with bus_master_off@step, update with canary_write@kexec"]);
}
