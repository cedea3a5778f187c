//! The checked plan: a scenario's steps in the order they run (`repeat`
//! expanded), each with what holds before it — the kernel running, the
//! live updates so far, the engines running, whether frames are being
//! injected, the faults armed for the next update. Building it checks every
//! step's preconditions, so a step that cannot run where it stands (an
//! `inject` before `start_dma`, a `dma_remap_probe` after the engines were
//! left to the next update) is refused by `lulab check`, naming the file,
//! the line and the step, instead of failing half-way through a run.
//!
//! The runner drives the plan, and writes it into the run directory as
//! `plan.json`.

use serde::Serialize;

use super::{KernelChoice, Scenario, Step};
use crate::fault::{Engine, FaultKind, Moment};

/// The steps with their preconditions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// In the order they run.
    pub steps: Vec<Planned>,
}

/// One step of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Planned {
    /// Its place in the run (from 0; the journal's and timings' step number − 1).
    pub index: usize,
    /// The `[[steps]]` entry it comes from (from 0, as written: a
    /// `repeat = N` entry gives N steps).
    pub entry: usize,
    /// The step.
    pub step: Step,
    /// What holds before it runs.
    pub before: State,
}

/// What holds at a point of the run, as far as the steps before it decide.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct State {
    /// The kernel running (none: no host yet).
    pub kernel: Option<KernelChoice>,
    /// Live updates done.
    pub updates: u32,
    /// The DMA engines started, in `start_dma` order.
    pub engines: Vec<EngineState>,
    /// Frames are being injected (`inject` ran).
    pub injecting: bool,
    /// The kernel a `stage_update` loaded for the next live update.
    pub staged: Option<KernelChoice>,
    /// Faults armed for moments of the next live update.
    pub armed: Vec<(FaultKind, Moment)>,
    /// Faults in effect that change the harness's later requests
    /// (`unmapped_slots`, `root_table_copy`…).
    pub shaping: Vec<FaultKind>,
}

/// A DMA engine at a point of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EngineState {
    /// Which.
    pub engine: Engine,
    /// It keeps running through a live update (`persist = true`).
    pub persistent: bool,
    /// Its agent drives it: false after a `live_update` with `resume =
    /// false` left it to the next update.
    pub driven: bool,
}

impl State {
    fn engine(&self, e: Engine) -> Option<&EngineState> {
        self.engines.iter().find(|s| s.engine == e)
    }

    fn persistent_driven(&self) -> bool {
        self.engines.iter().any(|e| e.persistent && e.driven)
    }

    /// One line: `lulab kernel, 1 update, engines rx(persistent), injecting`.
    pub fn describe(&self) -> String {
        let Some(k) = self.kernel else { return "no host".into() };
        let mut parts = vec![format!("{} kernel", k.name()), format!("{} update{}", self.updates, if self.updates == 1 { "" } else { "s" })];
        if !self.engines.is_empty() {
            let e: Vec<String> = self
                .engines
                .iter()
                .map(|e| {
                    let mut flags = Vec::new();
                    if e.persistent {
                        flags.push("persistent");
                    }
                    if !e.driven {
                        flags.push("left to the next update");
                    }
                    let name = crate::wire_name(&e.engine);
                    if flags.is_empty() {
                        name
                    } else {
                        format!("{name}({})", flags.join(", "))
                    }
                })
                .collect();
            parts.push(format!("engines {}", e.join(" ")));
        }
        if self.injecting {
            parts.push("injecting".into());
        }
        if let Some(k) = self.staged {
            parts.push(format!("{} staged", k.name()));
        }
        for (kind, at) in &self.armed {
            parts.push(format!("{kind} armed at {}", at.name()));
        }
        for kind in &self.shaping {
            parts.push(format!("{kind} in effect"));
        }
        parts.join(", ")
    }
}

/// Why a step cannot stand where it is: the `[[steps]]` entry (from 0) and
/// a message starting with the field it names (`do: …`).
pub type PlanError = (usize, String);

impl Scenario {
    /// The checked plan of the steps (see the module doc).
    pub fn plan(&self) -> Result<Plan, PlanError> {
        let mut st = State::default();
        let mut steps = Vec::with_capacity(self.steps.len());
        for (index, step) in self.steps.iter().enumerate() {
            let entry = self.step_entries.get(index).copied().unwrap_or(index);
            self.admit(&st, step).map_err(|m| (entry, m))?;
            steps.push(Planned { index, entry, step: step.clone(), before: st.clone() });
            self.apply(&mut st, step);
        }
        if let Some((kind, at)) = st.armed.first() {
            let entry = steps.iter().rev().find(|p| matches!(&p.step, Step::Fault(f) if f.kind == *kind && f.at == Some(*at))).map_or(0, |p| p.entry);
            return Err((entry, format!("at: \"{}\" is a moment of a live update, and no `live_update` step follows", at.name())));
        }
        Ok(Plan { steps })
    }

    /// Whether `step` can run in state `st`.
    fn admit(&self, st: &State, step: &Step) -> Result<(), String> {
        let name = step.name();
        let host = || match st.kernel {
            Some(_) => Ok(()),
            None => Err(format!("do: `{name}` needs the host: a `boot` step before it")),
        };
        let rx_started = || match st.engine(Engine::Rx) {
            Some(e) if e.driven => Ok(()),
            Some(_) => Err(format!("do: `{name}` needs the RX engine driven by an agent, and the last `live_update` (resume = false) left it to the next one")),
            None => Err(format!("do: `{name}` needs the RX engine: a `start_dma` step before it")),
        };
        match step {
            Step::Boot if st.kernel.is_some() => Err("do: `boot` again while the host runs (one boot per scenario)".into()),
            Step::Boot => Ok(()),
            Step::StartDma => {
                host()?;
                if self.rx.is_none() && self.nvme.is_none() {
                    return Err("do: `start_dma` starts the engines of [rx] and [nvme], and there are none".into());
                }
                if !st.engines.is_empty() {
                    return Err("do: `start_dma` again: the engines already run".into());
                }
                Ok(())
            }
            Step::Inject if st.injecting => Err("do: `inject` again: frames are already being injected".into()),
            Step::Inject => {
                host()?;
                match st.engine(Engine::Rx) {
                    Some(_) => Ok(()),
                    None => Err("do: `inject` needs the RX engine: a `start_dma` step before it".into()),
                }
            }
            Step::AwaitSent { .. } if !st.injecting => Err("do: `await_sent` waits for the injector: an `inject` step before it".into()),
            Step::DmaRemapProbe => {
                rx_started()?;
                match st.engine(Engine::Rx) {
                    Some(e) if e.persistent => Ok(()),
                    _ => Err("do: `dma_remap_probe` needs a persistent RX engine (rx.persist = true)".into()),
                }
            }
            Step::PkernfsExpectBusy if !st.persistent_driven() => {
                Err("do: `pkernfs_expect_busy` checks the files behind live DMA mappings: a persistent engine must run (`start_dma` with persist = true)".into())
            }
            Step::Fault(f) => {
                host()?;
                if shaped(f) == Some(crate::fault::Shaped::EngineStart) && !st.engines.is_empty() {
                    return Err(format!("fault: \"{}\" changes how the engines start, and they already run: put it before `start_dma`", f.kind));
                }
                if f.at.is_none() && f.after_frames.is_none() {
                    if let Some(e) = f.engine {
                        if st.engine(e).is_none() {
                            return Err(format!("engine: fault = \"{}\" aims at the {} engine, which is not started yet (`start_dma` first)", f.kind, crate::wire_name(&e)));
                        }
                    }
                }
                Ok(())
            }
            _ => host(),
        }
    }

    /// `st` after `step` ran.
    fn apply(&self, st: &mut State, step: &Step) {
        match step {
            Step::Boot => st.kernel = Some(self.host.kernel),
            Step::StartDma => {
                let rx = self.rx.as_ref().map(|r| EngineState { engine: Engine::Rx, persistent: r.persist, driven: true });
                let nvme = self.nvme.as_ref().map(|n| EngineState { engine: Engine::Nvme, persistent: n.persist, driven: true });
                st.engines = rx.into_iter().chain(nvme).collect();
            }
            Step::Inject => st.injecting = true,
            Step::StageUpdate => st.staged = Some(self.host.kernel),
            Step::LiveUpdate { kernel, resume, .. } => {
                st.kernel = Some(kernel.unwrap_or(self.host.kernel));
                st.updates += 1;
                st.staged = None;
                st.armed.clear();
                for e in &mut st.engines {
                    // A persistent engine is taken back; a non-persistent one
                    // is started again by the harness or left stopped.
                    e.driven = *resume;
                }
            }
            Step::Fault(f) => {
                if let Some(at) = f.at {
                    st.armed.push((f.kind, at));
                } else if shaped(f).is_some() {
                    st.shaping.push(f.kind);
                }
            }
            _ => {}
        }
    }
}

/// What a fault step changes in the harness's later requests, if it is a shaping fault.
fn shaped(f: &crate::fault::FaultStep) -> Option<crate::fault::Shaped> {
    crate::fault::build(f).ok()?.shapes().map(|s| s.shapes())
}
