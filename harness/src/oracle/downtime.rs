//! Where each live update's downtime went, from the harness's journal (its
//! own milestones, the console's first line of the new kernel and of its
//! /init) and QEMU's trace (the new agent's first refill of the RX ring):
//! `updates[].downtime` in report.json.

use serde::{Deserialize, Serialize};

use crate::journal::{Entry, Event};
use crate::oracle::dma_timing::DmaTiming;
use crate::oracle::timeline::UpdateTimeline;

/// `updates[].downtime`, ms; a part is null when a milestone bounding it
/// never came (the update failed there).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Downtime {
    /// From the update's first request to the new agent's first refill (or,
    /// without an RX ring, to its engines being back).
    pub total_ms: Option<u64>,
    /// The old agent hands over and asks for the kexec (first request →
    /// its reply to `kexec_exec`).
    pub shutdown_ms: Option<u64>,
    /// The kexec itself, purgatory included (→ the new kernel's first console line).
    pub kexec_jump_ms: Option<u64>,
    /// The new kernel boots to its /init being ready (→ init's ready line,
    /// after it loaded the modules and started the agent).
    pub kernel_boot_ms: Option<u64>,
    /// The agent comes up (→ it answers its first ping).
    pub agent_start_ms: Option<u64>,
    /// The agent takes its engines back (→ its reply to the resuming requests).
    pub readopt_ms: Option<u64>,
    /// The device gets buffers again (→ the first RX tail write; null without RX).
    pub first_refill_ms: Option<u64>,
}

impl Downtime {
    /// The parts in order, with their names, for the report.
    pub fn parts(&self) -> [(&'static str, Option<u64>); 6] {
        [
            ("shutdown", self.shutdown_ms),
            ("kexec jump", self.kexec_jump_ms),
            ("kernel boot to /init", self.kernel_boot_ms),
            ("agent start", self.agent_start_ms),
            ("re-adopt", self.readopt_ms),
            ("first refill", self.first_refill_ms),
        ]
    }
}

/// The breakdown of update `index` from its milestones in `journal`;
/// `refill_ms` is the first RX refill after its agent came up (ms since
/// the run started, from QEMU's trace). None: the update never started.
pub fn breakdown(journal: &[Entry], index: u32, refill_ms: Option<u64>) -> Option<Downtime> {
    let at = |name: &str| {
        journal.iter().find_map(|e| match &e.event {
            Event::Update { update, milestone } if *update == index && milestone == name => Some(e.ms),
            _ => None,
        })
    };
    let kexec = at("kexec")?;
    let (down, kernel, init, agent, done) = (at("agent_down"), at("kernel_up"), at("init"), at("agent_up"), at("done"));
    let span = |a: Option<u64>, b: Option<u64>| b?.checked_sub(a?);
    let refill = refill_ms.filter(|&r| done.is_some_and(|d| r >= d));
    Some(Downtime {
        total_ms: span(Some(kexec), refill.or(done)),
        shutdown_ms: span(Some(kexec), down),
        kexec_jump_ms: span(down, kernel),
        kernel_boot_ms: span(kernel, init),
        agent_start_ms: span(init, agent),
        readopt_ms: span(agent, done),
        first_refill_ms: span(done, refill),
    })
}

/// Gives every update of `updates` its breakdown; `timing` (the run's DMA
/// timing, when it had an RX ring) has each update's first refill.
pub fn annotate(updates: &mut [UpdateTimeline], journal: &[Entry], timing: Option<&DmaTiming>) {
    for u in updates {
        let refill = timing.and_then(|t| t.blackouts.iter().find(|b| b.index == u.index)).and_then(|b| b.first_refill_ms);
        u.downtime = breakdown(journal, u.index, refill);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn milestone(ms: u64, update: u32, name: &str) -> Entry {
        Entry { ms, ns: ms * 1_000_000, event: Event::Update { update, milestone: name.into() } }
    }

    #[test]
    fn an_update_splits_into_its_parts_from_the_journal() {
        let j: Vec<Entry> = [(30983, "kexec"), (31012, "handed_over"), (31015, "agent_down"), (35828, "kernel_up"), (56861, "init"), (57165, "agent_up"), (57226, "resume"), (57830, "done")]
            .iter()
            .map(|&(ms, n)| milestone(ms, 1, n))
            .chain([milestone(90000, 2, "kexec")])
            .collect();
        let d = breakdown(&j, 1, Some(58045)).unwrap();
        assert_eq!(d.parts().map(|p| p.1), [Some(32), Some(4813), Some(21033), Some(304), Some(665), Some(215)]);
        assert_eq!(d.total_ms, Some(58045 - 30983));
        assert_eq!(d.total_ms, Some(d.parts().iter().map(|p| p.1.unwrap()).sum()), "the parts add up");
        // Without RX the update ends when the engines are back.
        assert_eq!(breakdown(&j, 1, None).unwrap().total_ms, Some(57830 - 30983));
        // A refill from before the engines were back is not this update's.
        assert_eq!(breakdown(&j, 1, Some(57000)).unwrap().first_refill_ms, None);
        // Update 2 never got further than its request.
        let d2 = breakdown(&j, 2, None).unwrap();
        assert_eq!((d2.total_ms, d2.shutdown_ms), (None, None));
        assert!(breakdown(&j, 3, None).is_none());
    }
}
