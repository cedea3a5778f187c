//! The phase of the run a store happened in, from the harness's own view of
//! each live update (on the clock the watcher's records are stamped with).

use serde::{Deserialize, Serialize};

use crate::oracle::timeline::UpdateEvents;
use lulab_proto::watch::Mode;

/// Where in the run a store happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// A kernel running normally (no update under way); kernel-mode store.
    Kernel,
    /// From the kexec request to the new kernel's first console line: the
    /// old kernel shutting down, purgatory, the new kernel's early boot.
    Kexec,
    /// The new kernel is up and its agent does not answer yet.
    NewKernelBeforeAgent,
    /// A user-mode store: an agent (the only process mapping pkernfs).
    Agent,
}

impl Phase {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Kernel => "kernel",
            Phase::Kexec => "kexec",
            Phase::NewKernelBeforeAgent => "new kernel before the agent",
            Phase::Agent => "agent",
        }
    }
}

/// A store's place: its phase and which kernel ran (0 = the first boot,
/// n = the kernel of live update n; during a kexec, the update's number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Place {
    /// The phase.
    pub phase: Phase,
    /// The kernel (or update) number.
    pub kernel: u32,
}

/// The update windows of a run.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// Per update (from 1): kexec requested, new kernel up, agent up.
    windows: Vec<(u64, Option<u64>, Option<u64>)>,
}

impl Timeline {
    /// From what the harness saw of each update, in order.
    pub fn new(updates: &[UpdateEvents]) -> Self {
        Self { windows: updates.iter().map(|u| (u.kexec_started_ns, u.kernel_up_ns, u.agent_up_ns)).collect() }
    }

    /// The place of a store at `ns` (harness clock) in `mode`. A store in a
    /// kexec window is in [`Phase::Kexec`] whatever its mode: identity-mapped
    /// code (purgatory, the decompressor) has lower-half addresses.
    pub fn place(&self, ns: u64, mode: Mode) -> Place {
        let mut kernel = 0;
        for (i, &(kexec, up, agent)) in self.windows.iter().enumerate() {
            let n = i as u32 + 1;
            if ns < kexec {
                break;
            }
            kernel = n;
            let up = up.unwrap_or(u64::MAX).min(agent.unwrap_or(u64::MAX));
            if ns < up {
                return Place { phase: Phase::Kexec, kernel: n };
            }
            if ns < agent.unwrap_or(u64::MAX) && mode == Mode::Kernel {
                return Place { phase: Phase::NewKernelBeforeAgent, kernel: n };
            }
        }
        let phase = match mode {
            Mode::User => Phase::Agent,
            Mode::Kernel => Phase::Kernel,
        };
        Place { phase, kernel }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(kexec: u64, up: Option<u64>, agent: Option<u64>) -> UpdateEvents {
        UpdateEvents { kexec_started_ns: kexec, kernel_up_ns: up, agent_up_ns: agent, ..Default::default() }
    }

    #[test]
    fn stores_fall_in_the_windows_of_each_update() {
        let t = Timeline::new(&[update(100, Some(200), Some(300)), update(1000, None, Some(1300))]);
        let p = |ns, mode| {
            let pl = t.place(ns, mode);
            (pl.phase, pl.kernel)
        };
        assert_eq!(p(50, Mode::Kernel), (Phase::Kernel, 0));
        assert_eq!(p(50, Mode::User), (Phase::Agent, 0));
        assert_eq!(p(100, Mode::Kernel), (Phase::Kexec, 1));
        assert_eq!(p(150, Mode::User), (Phase::Kexec, 1), "purgatory runs identity-mapped");
        assert_eq!(p(200, Mode::Kernel), (Phase::NewKernelBeforeAgent, 1));
        assert_eq!(p(250, Mode::User), (Phase::Agent, 1), "init and the agent starting");
        assert_eq!(p(300, Mode::Kernel), (Phase::Kernel, 1));
        // No console line seen: the whole window up to the agent is the kexec.
        assert_eq!(p(1200, Mode::Kernel), (Phase::Kexec, 2));
        assert_eq!(p(1300, Mode::Kernel), (Phase::Kernel, 2));
    }

    #[test]
    fn an_update_that_never_came_back_stays_in_its_kexec() {
        let t = Timeline::new(&[update(100, None, None)]);
        assert_eq!(t.place(5_000, Mode::Kernel).phase, Phase::Kexec);
    }
}
