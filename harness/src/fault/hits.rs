//! report.json's `faults[]`: each fault step, the moment it actually hit
//! and when it ended, from the journal.

use serde::{Deserialize, Serialize};

use super::{FaultKind, Moment};
use crate::journal::{Entry, Event};

/// One fault of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultHit {
    /// Its step (from 0).
    pub step: usize,
    /// Its kind.
    pub kind: FaultKind,
    /// The moment it was aimed at (null: at its step).
    pub at: Option<Moment>,
    /// The live update it hit (with `at`).
    pub update: Option<u32>,
    /// Aimed at the moment the injector has written this many frames
    /// (instead of `at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_frames: Option<u64>,
    /// When it was injected, ms since the run started (null: never, the
    /// run ended before its moment came).
    pub injected_ms: Option<u64>,
    /// When a lasting fault ended.
    pub ended_ms: Option<u64>,
    /// What exactly was done.
    pub detail: String,
}

/// The faults in `journal`, by step.
pub fn from_journal(journal: &[Entry]) -> Vec<FaultHit> {
    let mut hits: Vec<FaultHit> = Vec::new();
    for e in journal {
        match &e.event {
            Event::FaultArmed { step, kind, at, update } => hits.push(FaultHit {
                step: *step,
                kind: *kind,
                at: Some(*at),
                update: Some(*update),
                after_frames: None,
                injected_ms: None,
                ended_ms: None,
                detail: String::new(),
            }),
            Event::FaultArmedAfterFrames { step, kind, after_frames } => hits.push(FaultHit {
                step: *step,
                kind: *kind,
                at: None,
                update: None,
                after_frames: Some(*after_frames),
                injected_ms: None,
                ended_ms: None,
                detail: String::new(),
            }),
            Event::FaultInjected { step, kind, at, update, after_frames, detail } => {
                let hit = FaultHit {
                    step: *step,
                    kind: *kind,
                    at: *at,
                    update: *update,
                    after_frames: *after_frames,
                    injected_ms: Some(e.ms),
                    ended_ms: None,
                    detail: detail.clone(),
                };
                match hits.iter_mut().find(|h| h.step == *step && h.injected_ms.is_none()) {
                    Some(h) => *h = hit,
                    None => hits.push(hit),
                }
            }
            Event::FaultEnded { step, .. } => {
                if let Some(h) = hits.iter_mut().rev().find(|h| h.step == *step && h.ended_ms.is_none()) {
                    h.ended_ms = Some(e.ms);
                }
            }
            _ => {}
        }
    }
    hits
}

/// Every fault aimed at a moment of an update that was injected outside
/// that moment's window of the update's timeline (ms since the run
/// started), one line each: `kexec` and `handed_over` belong before the old
/// agent's last reply, `agent_down` to `init` between it and the new agent's
/// first answer, `agent_up` and `resume` after that. Windows are at ms
/// resolution (1 ms of slack either side).
pub fn outside_their_moment(hits: &[FaultHit], updates: &[crate::oracle::timeline::UpdateTimeline]) -> Vec<String> {
    let mut bad = Vec::new();
    for h in hits {
        let (Some(at), Some(n), Some(ms)) = (h.at, h.update, h.injected_ms) else { continue };
        let Some(u) = updates.iter().find(|u| u.index == n) else {
            bad.push(format!("step {} ({} at {}) names update {n}, which is not in the timeline", h.step + 1, h.kind, at.name()));
            continue;
        };
        let (from, to) = match at {
            Moment::Kexec | Moment::HandedOver => (Some(u.kexec_started), u.agent_down),
            Moment::AgentDown | Moment::KernelUp | Moment::Init => (u.agent_down, u.agent_up),
            Moment::AgentUp | Moment::Resume => (u.agent_up, None),
        };
        if from.is_some_and(|a| ms + 1 < a) || to.is_some_and(|b| ms > b + 1) {
            bad.push(format!("step {} ({} at {}) injected at {ms} ms, outside [{from:?}, {to:?}] of update {n}", h.step + 1, h.kind, at.name()));
        }
    }
    bad
}
