//! The schedules `lulab explore` draws: which engines run, how many frames
//! flow before the first update, and the live updates with the faults of
//! the catalogue aimed at their moments, drawn only where the fault can be
//! aimed (its moments, an agent answering when it needs one). A schedule
//! becomes a checked scenario whose expected verdict follows from its
//! faults ([`crate::fault::Fault::expects`]).

use proptest::prelude::*;
use serde::Serialize;

use crate::fault::{Engine, Expectation, FaultKind, FaultStep, Moment};
use crate::scenario::{KernelChoice, Scenario, Step};

/// The scenario every schedule starts from.
const BASE: &str = include_str!("base.toml");
/// Most live updates in one schedule.
pub const MAX_UPDATES: usize = 2;

/// A fault of the catalogue with the parameters its catalogue scenarios use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct FaultPick {
    /// Which fault.
    pub kind: FaultKind,
    /// The moment of its update it is aimed at (None: a step right before
    /// the update).
    pub at: Option<Moment>,
}

impl FaultPick {
    /// The scenario step.
    pub fn step(&self) -> FaultStep {
        let mut s = FaultStep { kind: self.kind, at: self.at, after_frames: None, duration_ms: None, engine: None, size_mib: None, slots: None, skew: None };
        match self.kind {
            FaultKind::LinkFlap => s.duration_ms = Some(1000),
            FaultKind::VmPause => s.duration_ms = Some(1500),
            FaultKind::MemoryPressure => s.size_mib = Some(256),
            FaultKind::CanaryWrite | FaultKind::HandoverCorrupt => s.engine = Some(Engine::Rx),
            _ => {}
        }
        s
    }

    /// What it makes the run expect.
    pub fn expects(&self) -> Expectation {
        // Every pick comes from `picks()`, which only keeps faults that build.
        crate::fault::build(&self.step()).map(|f| f.expects()).unwrap_or(Expectation::Error)
    }
}

/// The faults explored: the catalogue's faults that act on the running
/// host and leave a run that can be judged (not the shaping faults, which
/// change how engines start, nor those that make the run an `error`), but
/// not `agent_kill`: what it does to an engine depends on whether that
/// engine has an fd keeper (the NVMe engines have none), which its
/// expectation cannot say.
pub fn kinds() -> Vec<FaultKind> {
    let explorable = |kind: FaultKind| {
        if kind == FaultKind::AgentKill {
            return false;
        }
        let f = crate::fault::build(&FaultPick { kind, at: None }.step());
        f.is_ok_and(|f| f.shapes().is_none() && f.expects() != Expectation::Error)
    };
    FaultKind::ALL.iter().copied().filter(|k| explorable(*k)).collect()
}

/// Every (fault, moment) a schedule may draw: each fault as a step right
/// before its update, and at the moments it can be aimed at, where an
/// agent answers if it needs one.
pub fn picks() -> Vec<FaultPick> {
    let mut out = Vec::new();
    for kind in kinds() {
        for at in std::iter::once(None).chain(Moment::ALL.iter().copied().map(Some)) {
            let pick = FaultPick { kind, at };
            let Ok(f) = crate::fault::build(&pick.step()) else { continue };
            let aimable = at.is_none_or(|m| f.moments().contains(&m) && (!f.needs_agent() || m.agent_runs()));
            if aimable {
                out.push(pick);
            }
        }
    }
    out
}

/// One live update of a schedule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct UpdatePlan {
    /// Faults aimed at its moments (at most one, so that every expected
    /// verdict is one the catalogue shows).
    pub faults: Vec<FaultPick>,
}

/// What `lulab explore` runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Schedule {
    /// A persistent NVMe read runs beside the e1000e RX.
    pub nvme: bool,
    /// That NVMe controller is kept persistent through the updates (else the
    /// next kernel's driver takes it and the new agent starts it again).
    pub nvme_persistent: bool,
    /// Frames written before the first update (None: the update follows
    /// the start of the stream at once).
    pub lead_frames: Option<u64>,
    /// The live updates, in order.
    pub updates: Vec<UpdatePlan>,
}

/// Sabotage for the explorer's own check: what the scenario does differently
/// from what its expected verdict assumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sabotage {
    /// Every live update goes into Debian's stock kernel, which knows
    /// nothing of persistence: the device is not kept.
    Persistence,
}

/// The strategy of schedules: shrinks towards no NVMe, no lead frames, one
/// update and no faults.
pub fn strategy() -> impl Strategy<Value = Schedule> {
    let picks = picks();
    let update = proptest::collection::vec(proptest::sample::select(picks), 0..=1).prop_map(|faults| UpdatePlan { faults });
    // Lead frames from a short list: it shrinks towards None in a run or
    // two, where a range would cost a real run per halving.
    let lead = proptest::sample::select(vec![None, Some(200u64), Some(500)]);
    // The NVMe's persistence is drawn last, so that adding it left the
    // other draws of a seed as they were.
    ((any::<bool>(), lead, proptest::collection::vec(update, 1..=MAX_UPDATES)), any::<bool>())
        .prop_map(|((nvme, lead_frames, updates), nvme_persistent)| Schedule { nvme, nvme_persistent: nvme && nvme_persistent, lead_frames, updates })
}

impl Schedule {
    /// What a run of it must give: the gravest of its faults' verdicts, with
    /// every broken fault's reasons.
    pub fn expects(&self) -> (crate::scenario::Verdict, Vec<crate::report::Reason>) {
        let e: Vec<Expectation> = self.updates.iter().flat_map(|u| &u.faults).map(FaultPick::expects).collect();
        Expectation::combined(&e)
    }

    /// Its steps: boot, start, the stream, each update with its faults, settle.
    pub fn steps(&self, sabotage: Option<Sabotage>) -> Vec<Step> {
        let mut steps = vec![Step::Boot, Step::StartDma, Step::Inject];
        if let Some(n) = self.lead_frames {
            steps.push(Step::AwaitSent { frames: Some(n) });
        }
        let kernel = sabotage.map(|Sabotage::Persistence| KernelChoice::Stock);
        for u in &self.updates {
            steps.extend(u.faults.iter().map(|f| Step::Fault(f.step())));
            steps.push(Step::LiveUpdate { kernel, cmdline: Vec::new(), resume: true });
        }
        steps.push(Step::Settle { quiet_ms: 5000 });
        steps
    }

    /// The checked scenario (`origin` names it in errors).
    pub fn scenario(&self, sabotage: Option<Sabotage>, origin: &str) -> anyhow::Result<Scenario> {
        let mut sc = Scenario::parse(BASE, "explore/base.toml")?;
        match sc.nvme.as_mut() {
            Some(_) if !self.nvme => sc.nvme = None,
            Some(n) => n.persist = self.nvme_persistent,
            None => {}
        }
        (sc.expect, sc.expect_reasons) = self.expects();
        sc.steps = self.steps(sabotage);
        sc.step_entries = (0..sc.steps.len()).collect();
        sc.description = self.describe(sabotage);
        sc.rechecked(origin)
    }

    /// One line: engines, lead, updates and faults.
    pub fn describe(&self, sabotage: Option<Sabotage>) -> String {
        let updates: Vec<String> = self
            .updates
            .iter()
            .map(|u| match u.faults.as_slice() {
                [] => "update".to_string(),
                f => format!("update with {}", f.iter().map(|f| format!("{}@{}", f.kind, f.at.map_or("step".to_string(), |m| m.name()))).collect::<Vec<_>>().join(", ")),
            })
            .collect();
        format!(
            "explored: RX{}{}, {}{}",
            match (self.nvme, self.nvme_persistent) {
                (false, _) => "",
                (true, true) => " + NVMe",
                (true, false) => " + NVMe (not persistent)",
            },
            self.lead_frames.map_or(String::new(), |n| format!(", {n} frames first")),
            updates.join(", "),
            if sabotage.is_some() { " (sabotaged: every update into the stock kernel)" } else { "" }
        )
    }

    /// Steps beyond `boot` and `start_dma`.
    pub fn steps_beyond_start(&self) -> usize {
        self.steps(None).len() - 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    #[test]
    fn picks_cover_the_catalogues_moments_and_only_where_an_agent_answers() {
        let p = picks();
        assert!(p.contains(&FaultPick { kind: FaultKind::LinkFlap, at: Some(Moment::KernelUp) }));
        assert!(p.contains(&FaultPick { kind: FaultKind::HandoverCorrupt, at: Some(Moment::KernelUp) }));
        assert!(p.contains(&FaultPick { kind: FaultKind::KexecBadImage, at: None }), "a step of its own");
        assert!(!p.contains(&FaultPick { kind: FaultKind::KexecBadImage, at: Some(Moment::Kexec) }), "no moment");
        assert!(!p.contains(&FaultPick { kind: FaultKind::MemoryPressure, at: Some(Moment::AgentDown) }), "needs an agent");
        assert!(!p.contains(&FaultPick { kind: FaultKind::HandoverCorrupt, at: Some(Moment::Resume) }), "not one of its moments");
        use FaultKind::*;
        assert_eq!(kinds(), [LinkFlap, VmPause, CanaryWrite, BusMasterOff, KexecBadImage, MemoryPressure, DeviceReset, HandoverCorrupt]);
        for k in kinds() {
            assert!(p.iter().any(|p| p.kind == k), "{k} has no moment");
        }
    }

    #[test]
    fn every_pick_alone_is_a_checked_scenario() {
        for pick in picks() {
            for (nvme, nvme_persistent) in [(false, false), (true, false), (true, true)] {
                let s = Schedule { nvme, nvme_persistent, lead_frames: Some(200), updates: vec![UpdatePlan { faults: vec![pick] }] };
                if let Err(e) = s.scenario(None, "t") {
                    panic!("{pick:?} (nvme {nvme}, persistent {nvme_persistent}): {e:#}");
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        /// Every schedule is a scenario `lulab check` accepts, expecting
        /// what its faults say, with the steps its shape asks for.
        #[test]
        fn every_schedule_is_a_checked_scenario(s in strategy()) {
            let sc = s.scenario(None, "t").unwrap();
            prop_assert_eq!(sc.live_updates(), s.updates.len());
            prop_assert_eq!((sc.expect, sc.expect_reasons.clone()), s.expects());
            prop_assert_eq!(sc.nvme.is_some(), s.nvme);
            prop_assert_eq!(sc.nvme.as_ref().is_some_and(|n| n.persist), s.nvme_persistent);
            let sab = s.scenario(Some(Sabotage::Persistence), "t").unwrap();
            let into_stock = sab.steps.iter().all(|st| !matches!(st, Step::LiveUpdate { kernel, .. } if *kernel != Some(KernelChoice::Stock)));
            prop_assert!(into_stock, "a sabotaged update not into the stock kernel");
        }
    }

    #[test]
    fn the_simplest_schedule_is_one_plain_update_three_steps_past_the_start() {
        let mut runner = TestRunner::deterministic();
        let mut tree = strategy().new_tree(&mut runner).unwrap();
        while tree.simplify() {}
        let s = tree.current();
        assert_eq!(s, Schedule { nvme: false, nvme_persistent: false, lead_frames: None, updates: vec![UpdatePlan { faults: vec![] }] });
        assert_eq!(s.steps_beyond_start(), 3, "inject, live_update, settle");
        assert_eq!(s.expects(), (crate::scenario::Verdict::Intact, vec![]));
    }
}
