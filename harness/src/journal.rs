//! The run's journal: timestamped events in the order the harness saw them
//! (steps, engines started, faults armed, injected and ended, the
//! milestones of each live update). Appended to `journal.jsonl` in the run
//! directory as they happen, so a run that dies leaves what it got to.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::fault::{FaultKind, Moment};
use crate::traffic::clock::now_ns;

/// File name in the run directory.
pub const FILE: &str = "journal.jsonl";

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A step begins (`index` from 0, `repeat`s counted out).
    Step {
        /// Its index.
        index: usize,
        /// Its `do`.
        name: String,
    },
    /// A DMA engine started (`update`: after which live update; none: the first).
    EngineStarted {
        /// The device.
        pci: String,
        /// Where its buffers are (first page, pages).
        layout: String,
        /// After which live update.
        update: Option<u32>,
    },
    /// A fault waits for a moment of the next live update.
    FaultArmed {
        /// Its step.
        step: usize,
        /// Its kind.
        kind: FaultKind,
        /// The moment.
        at: Moment,
        /// The live update it waits for (from 1).
        update: u32,
    },
    /// A fault waits until the injector has written `after_frames` frames.
    FaultArmedAfterFrames {
        /// Its step.
        step: usize,
        /// Its kind.
        kind: FaultKind,
        /// Frames written to the NIC (from the start of `inject`) that fire it.
        after_frames: u64,
    },
    /// A fault was injected.
    FaultInjected {
        /// Its step.
        step: usize,
        /// Its kind.
        kind: FaultKind,
        /// The moment it was aimed at (none: at its step).
        at: Option<Moment>,
        /// The live update it hit (with `at`).
        update: Option<u32>,
        /// With `after_frames`: the frame count that fired it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after_frames: Option<u64>,
        /// What exactly was done.
        detail: String,
    },
    /// QEMU hung up the agent socket during a request; the harness
    /// reconnected and sent it again.
    AgentReconnected {
        /// The request.
        during: String,
    },
    /// A lasting fault ended.
    FaultEnded {
        /// Its step.
        step: usize,
        /// Its kind.
        kind: FaultKind,
    },
    /// A milestone of a live update (`moment` as faults name them, plus
    /// `done` when its engines are back).
    Update {
        /// Which (from 1).
        update: u32,
        /// `kexec`, `agent_down`, `kernel_up`, `init`, `agent_up`, `done`.
        milestone: String,
    },
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Milliseconds since the run started.
    pub ms: u64,
    /// The harness's monotonic clock ([`now_ns`]), the one frames are stamped with.
    pub ns: u64,
    /// What happened.
    #[serde(flatten)]
    pub event: Event,
}

struct Inner {
    start_ns: u64,
    file: Option<std::fs::File>,
    entries: Vec<Entry>,
}

/// The journal; clones share it.
#[derive(Clone)]
pub struct Journal(Arc<Mutex<Inner>>);

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Journal").field(&self.0.lock().map(|j| j.entries.len()).unwrap_or(0)).finish()
    }
}

impl Journal {
    /// A journal of a run that started at `start_ns`, written to
    /// `dir/journal.jsonl` (none: kept in memory only).
    pub fn create(dir: Option<&Path>, start_ns: u64) -> std::io::Result<Self> {
        let file = dir.map(|d| std::fs::File::create(d.join(FILE))).transpose()?;
        Ok(Self(Arc::new(Mutex::new(Inner { start_ns, file, entries: Vec::new() }))))
    }

    /// Records `event` now.
    pub fn record(&self, event: Event) {
        self.record_at(now_ns(), event);
    }

    /// Records `event` seen at `ns` (a stamp taken earlier).
    pub fn record_at(&self, ns: u64, event: Event) {
        let mut j = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let entry = Entry { ms: ns.saturating_sub(j.start_ns) / 1_000_000, ns, event };
        if let (Some(f), Ok(line)) = (j.file.as_mut(), serde_json::to_string(&entry)) {
            // The journal is evidence, not a verdict: a full disk must not stop the run.
            let _ = writeln!(f, "{line}");
        }
        j.entries.push(entry);
    }

    /// Every entry so far, by time.
    pub fn entries(&self) -> Vec<Entry> {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner()).entries.clone();
        v.sort_by_key(|e| e.ns);
        v
    }
}

/// Reads a `journal.jsonl`; a bad line is an error naming it.
pub fn read(path: &Path) -> anyhow::Result<Vec<Entry>> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{}:{}: not a journal entry", path.display(), i + 1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_written_as_they_come_and_read_back_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let start = now_ns();
        let j = Journal::create(Some(dir.path()), start).unwrap();
        j.record(Event::Step { index: 0, name: "boot".into() });
        j.record_at(start + 5_000_000, Event::Update { update: 1, milestone: "kexec".into() });
        j.record(Event::FaultInjected {
            step: 3,
            kind: FaultKind::LinkFlap,
            at: Some(Moment::KernelUp),
            update: Some(1),
            after_frames: None,
            detail: "link down".into(),
        });
        let back = read(&dir.path().join(FILE)).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back[1].ms, 5);
        let sorted = j.entries();
        assert!(sorted.windows(2).all(|w| w[0].ns <= w[1].ns));
        let line = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(line.contains(r#""event":"fault_injected""#) && line.contains(r#""at":"kernel_up""#), "{line}");
    }

    #[test]
    fn a_bad_line_names_its_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE);
        std::fs::write(&p, "{\"ms\":0,\"ns\":1,\"event\":\"step\",\"index\":0,\"name\":\"boot\"}\nnot json\n").unwrap();
        let e = format!("{:#}", read(&p).unwrap_err());
        assert!(e.contains(":2: not a journal entry"), "{e}");
    }
}
