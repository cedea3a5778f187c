//! The timeline of each live update, from evidence the harness gathers
//! anyway: when it asked for the kexec, the agent's last reply before and
//! first answer after, the new kernel's first console line, and every RX
//! frame the scanner found in the RAM file with its first-sighting time.
//!
//! One clock for all of it: the harness's monotonic [`now_ns`] (the injector
//! stamps frames with it, the scanner its sightings). Reported times are
//! milliseconds since the run started.
//!
//! A frame's DMA happened after the injector encoded it (the send time it
//! carries, a strict lower bound) and before the scanner first saw it (an
//! upper bound, up to one 50 ms scan interval late). Counts below use only
//! what these bounds prove; doubtful frames are left out, never put in.
//!
//! [`now_ns`]: crate::traffic::clock::now_ns

use serde::{Deserialize, Serialize};

use super::rx_scan::Sightings;

/// What the harness observed around one live update (all [`now_ns`] clock).
///
/// [`now_ns`]: crate::traffic::clock::now_ns
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateEvents {
    /// The kernel it went to (`stock`, `lulab`).
    pub kernel: String,
    /// The harness sent the update's first request (`hand_over`; `kexec_exec` follows its reply).
    pub kexec_started_ns: u64,
    /// The agent's reply to `kexec_exec` arrived: its last words. `None`
    /// when the reply was lost (the kexec can reset the virtio-serial device
    /// before QEMU forwards it); the timeline then bounds the milestone with
    /// `kexec_started_ns`.
    pub agent_down_ns: Option<u64>,
    /// The new kernel's first sign of life on the console.
    pub kernel_up_ns: Option<u64>,
    /// What `kernel_up_ns` was read from.
    pub kernel_up_from: KernelUpFrom,
    /// The new agent answered its first ping.
    pub agent_up_ns: Option<u64>,
}

/// What an update's `agent_down` time comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentDownFrom {
    /// The agent's reply to `kexec_exec` arrived.
    #[default]
    Reply,
    /// The reply was lost: the harness's own time of sending the request
    /// stands in. The agent stopped no earlier, so downtimes computed from it
    /// are upper bounds.
    KexecRequest,
}

/// What an update's `kernel_up` time comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelUpFrom {
    /// The new kernel's banner (`Linux version`) on the console.
    #[default]
    Banner,
    /// The banner came garbled off the UART: the new kernel's /init ready
    /// line stands in (later than the banner: an upper bound).
    Init,
}

/// One frame found intact in guest memory: its DMA completed somewhere in
/// `[not_before_ns, seen_ns]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// When the injector encoded it (no DMA of it can be earlier).
    pub not_before_ns: u64,
    /// When the scanner first saw it in the RAM file.
    pub seen_ns: u64,
}

impl Completion {
    /// Every frame the RX scanner found intact, in sighting order.
    pub fn from_sightings(s: &Sightings) -> Vec<Self> {
        let mut v: Vec<Self> =
            s.delivered.values().map(|d| Self { not_before_ns: d.sent_ns, seen_ns: d.seen_ns }).collect();
        v.sort_by_key(|c| c.seen_ns);
        v
    }
}

/// `updates[i]` in report.json: one live update. Times are milliseconds
/// since the run started (the harness's monotonic clock, the one
/// `timings_ms.total` is measured on); null when the event never happened
/// or cannot be measured (no RX stream: every DMA field is null).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateTimeline {
    /// 1 for the first live update of the run.
    pub index: u32,
    /// The kernel it went to (`stock`, `lulab`).
    pub kernel: String,
    /// The harness sent `kexec_exec` to the agent.
    pub kexec_started: u64,
    /// The new kernel's first console line (`Linux version`), as the harness
    /// read it from the console.
    pub kernel_up: Option<u64>,
    /// The old agent's last reply (to `kexec_exec`); when that reply was
    /// lost, the time the harness sent the request (see `agent_down_from`).
    /// Set whenever the kexec was requested.
    pub agent_down: Option<u64>,
    /// What `agent_down` comes from: `reply`, or `kexec_request` when the
    /// reply was lost (added in `updates[]` without a schema bump; absent in older reports: `reply`).
    #[serde(default)]
    pub agent_down_from: AgentDownFrom,
    /// What `kernel_up` comes from: `banner`, or `init` when the banner
    /// came garbled and /init's ready line stood in (absent in older reports: `banner`).
    #[serde(default)]
    pub kernel_up_from: KernelUpFrom,
    /// The new agent's first answer (pings every ≤ 500 ms: an upper bound).
    pub agent_up: Option<u64>,
    /// `agent_up - agent_down`.
    pub agent_downtime_ms: Option<u64>,
    /// The last RX frame the scanner saw in guest memory before
    /// `kexec_started` (upper bound: scans run every 50 ms).
    pub last_dma_before: Option<u64>,
    /// The first frame proven DMAed after `kexec_started` (encoded after it)
    /// and before the next update's `kexec_started`, when the scanner saw it
    /// (upper bound, 50 ms resolution). Null when none landed: the device
    /// stopped.
    pub first_dma_after: Option<u64>,
    /// Frames proven DMAed into guest memory while no agent ran: encoded
    /// after `kernel_up` (by then the old kernel and its agent are gone) and
    /// seen in the RAM file no later than `agent_up`. A lower bound: frames
    /// landing while the old kernel shut down (after `agent_down`, before the
    /// jump — a stock kexec lets those through too) are not counted. Greater
    /// than 0 only when the device kept doing DMA through the update; null
    /// without an RX stream or when the new agent never answered.
    pub dma_while_agent_down: Option<u64>,
    /// `kernel_up - kexec_started`: the kexec transition as seen on the
    /// console.
    pub kexec_transition_ms: Option<u64>,
    /// The DMA blackout, µs: the longest gap between two consecutive RX
    /// buffer writes of the device (QEMU's trace) from the kexec request to
    /// the new agent's first refill (the `dma_timing` section has its
    /// bounds). Null without an RX stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dma_blackout_us: Option<u64>,
    /// The blackout runs to the end of the run: the device never wrote again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dma_blackout_to_end_of_run: bool,
    /// The injector's frame interval, µs, to read the blackout against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_interval_us: Option<u64>,
    /// Where the downtime went: shutdown, kexec jump, kernel boot to /init,
    /// agent start, re-adopt, first refill (ms; see [`crate::oracle::downtime`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime: Option<crate::oracle::downtime::Downtime>,
}

/// The timeline of every update; `run_start_ns` is time zero and `dma` the
/// RX frames found (`None` when the run had no RX stream).
pub fn timeline(run_start_ns: u64, updates: &[UpdateEvents], dma: Option<&[Completion]>) -> Vec<UpdateTimeline> {
    let ms = |ns: u64| ns.saturating_sub(run_start_ns) / 1_000_000;
    let span = |a: Option<u64>, b: Option<u64>| Some(b?.checked_sub(a?)? / 1_000_000);
    updates
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let next_kexec = updates.get(i + 1).map_or(u64::MAX, |n| n.kexec_started_ns);
            let kexec = u.kexec_started_ns;
            // A lost reply never hides the milestone: the request bounds it.
            let (agent_down, agent_down_from) = match u.agent_down_ns {
                Some(t) => (t, AgentDownFrom::Reply),
                None => (kexec, AgentDownFrom::KexecRequest),
            };
            let last_before = dma.map(|d| d.iter().filter(|c| c.seen_ns < kexec).map(|c| c.seen_ns).max());
            let first_after = dma.map(|d| {
                d.iter().filter(|c| c.not_before_ns >= kexec && c.seen_ns < next_kexec).map(|c| c.seen_ns).min()
            });
            let while_down = match (dma, u.kernel_up_ns, u.agent_up_ns) {
                (Some(d), Some(up), Some(back)) => {
                    Some(d.iter().filter(|c| c.not_before_ns >= up && c.seen_ns <= back).count() as u64)
                }
                _ => None,
            };
            UpdateTimeline {
                index: i as u32 + 1,
                kernel: u.kernel.clone(),
                kexec_started: ms(kexec),
                kernel_up: u.kernel_up_ns.map(ms),
                agent_down: Some(ms(agent_down)),
                agent_down_from,
                kernel_up_from: u.kernel_up_from,
                agent_up: u.agent_up_ns.map(ms),
                agent_downtime_ms: span(Some(agent_down), u.agent_up_ns),
                last_dma_before: last_before.flatten().map(ms),
                first_dma_after: first_after.flatten().map(ms),
                dma_while_agent_down: while_down,
                kexec_transition_ms: span(Some(kexec), u.kernel_up_ns),
                ..Default::default()
            }
        })
        .collect()
}


/// The timeline behind the [`Oracle`](super::registry::Oracle) trait:
/// report.json `updates`, one entry per live update, with the DMA around
/// it from the RX frames found (null DMA fields without an RX stream). It
/// reports; the scenario's own checks judge from it.
#[derive(Debug)]
pub struct TimelineOracle;

impl super::registry::Oracle for TimelineOracle {
    fn name(&self) -> &'static str {
        "updates"
    }

    fn report_field(&self) -> bool {
        true
    }

    fn judge(&self, obs: &super::registry::Observations) -> anyhow::Result<super::registry::Judged> {
        let dma = obs.rx.map(|rx| Completion::from_sightings(&rx.seen));
        let t = timeline(obs.facts.start_ns, obs.updates, dma.as_deref());
        Ok(super::registry::Judged { section: serde_json::to_value(t)?, ..Default::default() })
    }
}

#[cfg(test)]
mod tests;
