//! `agent_kill`: the agent dies (SIGKILL, right after it answered `crash`),
//! as a VMM that crashes; /init starts a new one. Its fds close with it,
//! except those a persistent engine gave its fd keeper: while the keeper
//! holds them, VFIO neither resets the device nor does iommufd tear its
//! domain down, and the e1000e keeps DMAing into the pkernfs file with no
//! agent refilling.
//!
//! - As a step, with `duration_ms`: that long after the kill the harness
//!   asks the new agent to take the RX engine back (`dma_reattach`: the same
//!   device fd, domain and file, its position read from the ring). A
//!   non-persistent engine has nothing kept: its device was reset and
//!   released when the agent died (bus master cleared), the new agent
//!   refuses (`update.resume_failed`), and what was sent after that stays
//!   queued on the host side, never taken by the device (`dma.stalled`).
//! - At `handed_over` (no `duration_ms`): the agent dies after writing its
//!   hand-over, before the kexec is requested. The update goes on: the new
//!   agent is asked for the kexec, and the next kernel's agent resumes from
//!   the hand-over the dead one wrote, the device having stayed persistent
//!   through the keeper.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use lulab_proto::{Op, Reply};

use super::{Expectation, Fault, FaultKind, HostParts, Moment, Targets};
use crate::agent::AgentError;
use crate::report::{Finding, Reason};
use crate::scenario::Scenario;

/// How long /init may take to start the new agent.
const RESTART: Duration = Duration::from_secs(30);

pub(super) struct AgentKill {
    /// Step form: how long no agent runs before the engine is taken back.
    down_for: Option<Duration>,
    /// The NIC, known once injected.
    nic: String,
    /// Where the taken-back engine's layout goes (`layout-<pci>-reattached.json`).
    out: Option<std::path::PathBuf>,
}

impl AgentKill {
    pub(super) fn new(down_for: Option<Duration>) -> Self {
        Self { down_for, nic: String::new(), out: None }
    }
}

impl Fault for AgentKill {
    fn kind(&self) -> FaultKind {
        FaultKind::AgentKill
    }

    fn requires(&self, sc: &Scenario) -> Result<(), String> {
        let rx = super::needs_rx(sc, self.kind(), "restarts the agent of")?;
        if rx.interrupts == lulab_proto::RxInterrupts::Msix {
            return Err(format!("fault: \"{}\": an engine taken back from its fd keeper polls; not with rx.interrupts = \"msix\" (the dead agent's eventfd is not handed on)", self.kind()));
        }
        if sc.nvme.as_ref().is_some_and(|n| n.persist) {
            return Err(format!("fault: \"{}\": a persistent NVMe engine has no fd keeper (only the e1000e RX engine is kept through an agent's death)", self.kind()));
        }
        Ok(())
    }

    fn needs_agent(&self) -> bool {
        true
    }

    fn moments(&self) -> &'static [Moment] {
        &[Moment::HandedOver]
    }

    fn inject(&mut self, host: &mut HostParts, t: &Targets) -> Result<String> {
        let agent = host.agent.as_deref_mut().context("agent_kill needs a running agent")?;
        match agent.call(Op::Crash, Duration::from_secs(10))? {
            Reply::Done => {}
            other => bail!("unexpected reply to crash: {other:?}"),
        }
        // Nothing more goes to the port until the new agent answers: what
        // reaches it before the dead one's fd is closed is discarded.
        let qemu = &mut *host.qemu;
        agent.wait_ready(Instant::now() + RESTART, || qemu.check_alive()).context("waiting for the agent /init starts again")?;
        self.nic = t.nic_pci.clone();
        self.out = t.out.clone();
        Ok(match self.down_for {
            Some(d) => format!("agent killed (SIGKILL); the new one takes the engine of {} back after {} ms", self.nic, d.as_millis()),
            None => "agent killed (SIGKILL) after its hand-over; the update goes on with the agent /init starts next".into(),
        })
    }

    fn lasts(&self) -> Option<Duration> {
        self.down_for
    }

    /// The new agent (up since the kill) takes the RX engine back.
    fn end(&mut self, host: &mut HostParts) -> Result<()> {
        let agent = host.agent.as_deref_mut().context("agent_kill: no agent connection")?;
        match agent.call(Op::DmaReattach { pci: self.nic.clone() }, Duration::from_secs(60)) {
            Ok(Reply::DmaStarted(layout)) => {
                if let Some(dir) = &self.out {
                    let path = dir.join(format!("layout-{}-reattached.json", layout.pci));
                    std::fs::write(&path, serde_json::to_string_pretty(&layout)?).with_context(|| format!("{}", path.display()))?;
                }
                Ok(())
            }
            Ok(other) => bail!("unexpected reply to dma_reattach: {other:?}"),
            Err(AgentError::Refused { msg, .. }) => {
                Finding::err(Reason::UpdateResumeFailed, format!("the restarted agent could not take the RX engine back: {msg}"))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn expects(&self) -> Expectation {
        Expectation::Intact
    }
}
