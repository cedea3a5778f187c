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
