//! A hook between the steps (`lulab replay`): before each step of the
//! checked plan the runner asks the hook whether to go on, and lends it a
//! view of the run so far (the host's QMP, agent and console, the ledger,
//! the journal). `lulab run` passes no hook.

use std::path::Path;

use anyhow::{Context, Result};

use super::Runner;
use crate::host::Host;
use crate::journal::Entry;
use crate::oracle::timeline::UpdateEvents;
use crate::scenario::plan::Planned;

/// Where the run stands when the hook is asked.
#[derive(Debug, Clone, Copy)]
pub enum Point<'p> {
    /// Before `step`; `next` is the one after it (none: it is the last).
    Step {
        /// The step about to run.
        step: &'p Planned,
        /// The step after it.
        next: Option<&'p Planned>,
    },
    /// Every step ran: the oracles judge next.
    End,
    /// `step` failed with `error`: the oracles judge next, as in `lulab run`.
    Failed {
        /// The step that failed.
        step: &'p Planned,
        /// Why (the chain, as `{:#}` prints it).
        error: &'p str,
    },
}

/// What the hook wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Run the step (at [`Point::End`] and [`Point::Failed`]: judge).
    Run,
    /// Stop here. Before a step: shut the host down cleanly, keep the run
    /// directory, no verdict. At the end or after a failure every step that
    /// could run has run, so the oracles judge as after [`Control::Run`].
    Quit,
}

/// Called by the runner between steps.
pub trait StepHook {
    /// Asked at `point`; `run` is the run so far.
    fn before(&mut self, run: &mut RunView<'_, '_>, point: Point<'_>) -> Control;
}

/// How a run with a hook ended.
#[derive(Debug)]
pub enum Ended {
    /// The steps ran (or one failed) and the oracles judged.
    Judged(Box<crate::report::Report>),
    /// The hook quit before step `before` (from 0); the host was shut
    /// down, the run directory kept, nothing judged.
    Quit {
        /// The step that did not run.
        before: usize,
    },
}

/// The ledger so far, read while the injector and the scanner run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerSoFar {
    /// Frames written to the NIC's socket.
    pub sent: u64,
    /// Frames seen intact in the RX ring.
    pub delivered: u64,
    /// Damaged frames seen in the ring.
    pub corrupted: u64,
    /// Sent and not (yet) seen: in flight, or lost. The ledger oracle
    /// tells them apart at the end.
    pub not_seen: u64,
    /// The injector has written every frame it was asked to.
    pub injector_done: bool,
    /// The most recently delivered frames: (seq, ring slot, send → seen µs).
    pub last: Vec<(u64, u32, u64)>,
    /// NVMe blocks read into the buffers so far, of those expected.
    pub nvme: Option<(u64, u64)>,
}

/// The run so far, lent to a [`StepHook`].
pub struct RunView<'r, 'a> {
    pub(super) runner: &'r mut Runner<'a>,
}

impl std::fmt::Debug for RunView<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunView").field("out", &self.runner.out).finish_non_exhaustive()
    }
}

impl RunView<'_, '_> {
    /// The run directory.
    pub fn run_dir(&self) -> &Path {
        &self.runner.out
    }

    /// The host, once `boot` ran.
    pub fn host(&mut self) -> Option<&mut Host> {
        self.runner.host.as_mut()
    }

    /// The journal so far, by time.
    pub fn journal(&self) -> Vec<Entry> {
        self.runner.journal.entries()
    }

    /// What the harness saw of each live update so far.
    pub fn updates(&self) -> &[UpdateEvents] {
        &self.runner.updates
    }

    /// The RX ledger so far (none before `start_dma`, or without `[rx]`)
    /// with the last `n` frames delivered.
    pub fn ledger(&self, n: usize) -> Result<Option<LedgerSoFar>> {
        let r = &self.runner;
        let nvme = match (r.nvme.as_ref().and_then(|n| n.ledger.as_ref()), &r.mem) {
            (Some(l), Some(mem)) => {
                let c = l.check(mem).context("reading the NVMe buffers")?;
                Some((c.blocks_read, c.blocks_expected))
            }
            _ => None,
        };
        let Some(rx) = &r.rx else {
            return Ok(nvme.map(|nvme| LedgerSoFar { nvme: Some(nvme), ..LedgerSoFar::default() }));
        };
        let sent = rx.injector.as_ref().map(|i| i.written()).unwrap_or(0);
        let injector_done = rx.injector.as_ref().is_some_and(|i| i.is_finished());
        let s = rx.scanner.lock().map_err(|_| anyhow::anyhow!("the RX scanner's lock is poisoned"))?;
        let seen = s.sightings();
        let last = seen.delivered.iter().rev().take(n).map(|(seq, d)| (*seq, d.slot, d.seen_ns.saturating_sub(d.sent_ns) / 1000)).collect();
        let delivered = seen.delivered.len() as u64;
        Ok(Some(LedgerSoFar {
            sent,
            delivered,
            corrupted: seen.corrupted.len() as u64,
            not_seen: sent.saturating_sub(delivered),
            injector_done,
            last,
            nvme,
        }))
    }
}

impl Runner<'_> {
    /// Asks `hook` at `point`.
    pub(super) fn ask(&mut self, hook: &mut dyn StepHook, point: Point<'_>) -> Control {
        hook.before(&mut RunView { runner: self }, point)
    }

    /// The run's teardown without judging: stops the injector and the
    /// scanner, ends lasting faults, and shuts the host down (QMP `quit`,
    /// then the process group); the run directory stays.
    pub(super) fn teardown(&mut self) -> Result<()> {
        if let Some(rx) = self.rx.as_mut() {
            rx.stop_injector()?;
            rx.stop_scanner();
        }
        if let Some(host) = self.host.as_mut() {
            let _ = self.faults.finish(&mut host.parts());
        }
        if let Some(host) = self.host.take() {
            let pid = host.qemu.pid();
            host.shutdown().with_context(|| format!("shutting the host down (QEMU pid {pid})"))?;
        }
        Ok(())
    }
}
