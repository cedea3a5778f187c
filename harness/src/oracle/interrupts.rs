//! Interrupts of an RX engine that takes the e1000e's MSI-X through a VFIO
//! eventfd (`[rx] interrupts = "msix"`), judged from QEMU's trace alone:
//!
//! - every message the device sends (`e1000e_irq_msix_notify_vec`, and
//!   `…_postponed_vec` from its throttling timer);
//! - where each went: through an interrupt-remapping entry whose source id
//!   is the NIC's (`vtd_ir_irte_get`) to a CPU (`apic_deliver_irq`), right
//!   away, or later (a message the vector's mask held in the device's
//!   pending bits, delivered on unmask with no send line of its own);
//! - when an agent could receive them: each engine writes a marker into
//!   the NIC's `FCTTV` register (`e1000e_core_write`) before it routes the
//!   vector to its eventfd and another after its last read of it (see the
//!   agent's `rx_irq`). A delivery between an engine's two markers reached
//!   an eventfd that engine reads.
//!
//! An interrupt is lost when it was delivered while no engine was live
//! (e.g. to the old kernel's vector between a hand-over and the kexec), or
//! sent and never delivered. Two messages to one vector before the CPU
//! takes the first are one interrupt at the local APIC, so the agents'
//! own count (`irq_received`) may be lower than the deliveries; it may
//! never be higher, and a run where it is cannot be judged (error).

use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::registry::{Judged, Observations, Oracle};
use super::trace::parse_line;
use crate::report::{Finding, Reason};

/// Trace events the oracle reads (added to runs with MSI-X RX engines).
pub const IRQ_TRACE_EVENTS: &[&str] = &[
    "e1000e_core_write",
    "e1000e_irq_msix_notify_vec",
    "e1000e_irq_msix_notify_postponed_vec",
    "vtd_ir_irte_get",
    "apic_deliver_irq",
    "vtd_ir_enable",
    "vtd_frr_new",
];

/// The NIC's PCI source id (00:02.0).
pub const NIC_SID: u64 = 0x0010;
/// The register the agent's markers go to (`FCTTV`), and their high nibbles.
const MARK_REG: u64 = 0x170;
const MARK_LIVE: u64 = 0xa;
const MARK_DONE: u64 = 0xd;
/// `IMS`: the agent enabling the RX cause.
const IMS: u64 = 0xd0;
/// Example lines kept per kind.
const EXAMPLES: usize = 4;

/// One engine's span of taking interrupts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AgentSpan {
    /// Hand-overs before it (0: the first engine).
    pub generation: u64,
    /// Deliveries to a CPU while it was live.
    pub delivered: u64,
    /// Its first delivery was raised by its first enabling of the cause:
    /// frames had arrived while the cause was masked (during an update:
    /// while no agent ran), and their interrupt was pending, not lost.
    pub first_raised_by_pending_cause: bool,
    /// It wrote its closing marker (a hand-over or a stop).
    pub closed: bool,
    /// The NIC's interrupt-remapping entries its deliveries went through.
    pub irte_indices: Vec<u64>,
}

/// What the trace says of the NIC's interrupts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IrqSection {
    /// MSI-X messages the device sent (immediate and throttled).
    pub sent: u64,
    /// Of them, delivered to a CPU right away through the NIC's IRTE.
    pub delivered: u64,
    /// Deliveries without a send of their own (pending bits released on unmask).
    pub released_from_pending: u64,
    /// Deliveries while no engine was live: no agent received them.
    pub delivered_outside_agents: u64,
    /// Sent, never delivered (dropped by the IOMMU, or still pending).
    pub never_delivered: u64,
    /// What the agents say they received (the last agent's count, which
    /// carries the earlier agents' from their hand-overs).
    pub received_by_agents: Option<u64>,
    /// Interrupt-remapping fault records QEMU raised (`vtd_frr_new`).
    pub remapping_faults: u64,
    /// Interrupt remapping switched on/off (`vtd_ir_enable`), in order.
    pub ir_enable: Vec<bool>,
    /// Times interrupt remapping was switched off after the first engine
    /// routed the NIC's vector.
    pub remapping_off_after_routing: u64,
    /// Each engine's span.
    pub agents: Vec<AgentSpan>,
    /// Lines of deliveries outside every engine's span.
    pub examples_outside: Vec<String>,
}

/// Reads the trace from `log` (QEMU's `-D` log, lines in order).
pub fn scan<R: BufRead>(log: R) -> std::io::Result<IrqSection> {
    let mut s = IrqSection::default();
    // A send not yet followed by its delivery; the source id of the last IRTE read;
    // whether the last NIC register write was the cause being enabled.
    let (mut awaiting, mut sid, mut after_ims) = (false, None::<(u64, u64)>, false);
    let mut live: Option<usize> = None;
    let mut first_pending: Option<bool> = None;
    for line in log.lines() {
        let line = line?;
        let Some(ev) = parse_line(&line) else { continue };
        match ev.name {
            "e1000e_core_write" => {
                let (Some(reg), Some(val)) = (ev.field("register"), ev.field("value:")) else { continue };
                after_ims = reg == IMS;
                if reg == MARK_REG && val >> 12 == MARK_LIVE {
                    s.agents.push(AgentSpan { generation: val & 0xfff, ..Default::default() });
                    live = Some(s.agents.len() - 1);
                    first_pending = None;
                } else if reg == MARK_REG && val >> 12 == MARK_DONE {
                    if let Some(i) = live.take() {
                        s.agents[i].closed = true;
                    }
                }
            }
            "e1000e_irq_msix_notify_vec" | "e1000e_irq_msix_notify_postponed_vec" => {
                if awaiting {
                    s.never_delivered += 1;
                }
                awaiting = true;
                s.sent += 1;
                if first_pending.is_none() {
                    first_pending = Some(after_ims && ev.name == "e1000e_irq_msix_notify_vec");
                }
                after_ims = false;
            }
            "vtd_ir_irte_get" => sid = ev.field("low").map(|lo| (lo & 0xffff, ev.field("index").unwrap_or(0))),
            "apic_deliver_irq" => {
                let Some((NIC_SID, index)) = sid.take() else { continue };
                match std::mem::take(&mut awaiting) {
                    true => s.delivered += 1,
                    false => s.released_from_pending += 1,
                }
                match live {
                    Some(i) => {
                        let a = &mut s.agents[i];
                        if a.delivered == 0 {
                            a.first_raised_by_pending_cause = first_pending.unwrap_or(false);
                        }
                        a.delivered += 1;
                        if !a.irte_indices.contains(&index) && a.irte_indices.len() < EXAMPLES {
                            a.irte_indices.push(index);
                        }
                    }
                    None => {
                        s.delivered_outside_agents += 1;
                        if s.examples_outside.len() < EXAMPLES {
                            s.examples_outside.push(line.clone());
                        }
                    }
                }
            }
            "vtd_ir_enable" => {
                let on = ev.field("enable") == Some(1);
                s.ir_enable.push(on);
                s.remapping_off_after_routing += u64::from(!on && !s.agents.is_empty());
            }
            "vtd_frr_new" => s.remapping_faults += 1,
            _ => {}
        }
    }
    if awaiting {
        s.never_delivered += 1;
    }
    // A held message's later release made up for its missing delivery.
    s.never_delivered = s.never_delivered.saturating_sub(s.released_from_pending);
    Ok(s)
}

fn scan_file(path: &Path) -> Result<IrqSection> {
    let f = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    scan(BufReader::new(f)).with_context(|| format!("reading {}", path.display()))
}

/// Judges a scanned trace with the agents' own count; `persistent`: the
/// engine was kept across updates (its interrupts stay routed through them).
pub fn judge_section(s: &IrqSection, persistent: bool) -> Result<Vec<Finding>> {
    let mut findings = Vec::new();
    if persistent && s.remapping_off_after_routing > 0 {
        findings.push(Finding::new(Reason::IrqRemappingOff, format!(
            "interrupts: interrupt remapping switched off {} time(s) after an engine routed the NIC's vector (vtd_ir_enable {:?}): the persistent device's interrupt handles pointed at no entry meanwhile",
            s.remapping_off_after_routing, s.ir_enable
        )));
    }
    let live_deliveries: u64 = s.agents.iter().map(|a| a.delivered).sum();
    if let Some(r) = s.received_by_agents {
        if r > live_deliveries {
            bail!(
                "interrupts: the agents received {r} interrupts, more than the {live_deliveries} the NIC's messages delivered while an engine was live: the trace does not account for them (were its events traced?)"
            );
        }
        if r == 0 && live_deliveries > 0 {
            findings.push(Finding::new(Reason::IrqLost, format!("interrupts: {live_deliveries} delivered while an engine was live, none received by an agent")));
        }
    }
    if s.delivered_outside_agents > 0 {
        findings.push(Finding::new(Reason::IrqLost, format!(
            "interrupts: {} of the NIC's MSI-X messages were delivered while no agent's eventfd was routed from the vector (no agent received them; interrupt remapping switched {:?}, {} remapping faults); e.g. {:?}",
            s.delivered_outside_agents, s.ir_enable, s.remapping_faults, s.examples_outside
        )));
    }
    if s.never_delivered > 0 {
        findings.push(Finding::new(Reason::IrqLost, format!(
            "interrupts: {} of the NIC's {} MSI-X messages never reached a CPU through its interrupt-remapping entry ({} remapping faults)",
            s.never_delivered, s.sent, s.remapping_faults
        )));
    }
    Ok(findings)
}

/// The interrupt oracle.
#[derive(Debug)]
pub struct InterruptOracle;

impl Oracle for InterruptOracle {
    fn name(&self) -> &'static str {
        "interrupts"
    }

    fn judge(&self, obs: &Observations) -> Result<Judged> {
        let none = || Judged { section: serde_json::Value::Null, findings: Vec::new(), files: Vec::new() };
        if !obs.trace.counts.contains_key("e1000e_core_write") {
            return Ok(none());
        }
        let mut s = scan_file(&obs.host_dir.join("trace.log"))?;
        if s.agents.is_empty() {
            return Ok(none());
        }
        s.received_by_agents = obs
            .rx
            .and_then(|rx| rx.status.as_ref())
            .and_then(|st| st.device_counters.iter().find(|(k, _)| k == "irq_received").map(|(_, v)| *v));
        let findings = judge_section(&s, obs.facts.persistent)?;
        Ok(Judged { section: serde_json::to_value(&s)?, findings, files: Vec::new() })
    }

    fn markdown(&self, section: &serde_json::Value) -> Option<String> {
        let n = |k: &str| section.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        let agents = section.get("agents")?.as_array()?;
        let pending = agents.iter().filter(|a| a["first_raised_by_pending_cause"] == true).count();
        Some(format!(
            "- interrupts: {} MSI-X messages sent, {} delivered ({} from pending bits), {} outside any agent, {} never delivered; agents received {}; {} of {} engines took a cause left pending\n",
            n("sent"),
            n("delivered"),
            n("released_from_pending"),
            n("delivered_outside_agents"),
            n("never_delivered"),
            section.get("received_by_agents").and_then(|v| v.as_u64()).map_or("?".into(), |v| v.to_string()),
            pending,
            agents.len()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trace lines as QEMU's log backend writes them.
    fn write(reg: u64, val: u64) -> String {
        format!("1@1.0:e1000e_core_write Write to register 0x{reg:x}, 4 byte(s), value: 0x{val:x}\n")
    }
    fn send() -> String {
        "1@1.0:e1000e_irq_msix_notify_vec MSI-X notify vector 0x0\n".into()
    }
    fn timer_send() -> String {
        "1@1.0:e1000e_irq_msix_notify_postponed_vec Sending MSI-X postponed by EITR[0]\n".into()
    }
    fn deliver(sid: u64) -> String {
        format!(
            "1@1.0:vtd_ir_irte_get index 3 low 0x{:x} high 0x2200000001\n1@1.0:apic_deliver_irq dest 0 dest_mode 0 delivery_mode 0 vector 34 trigger_mode 0\n",
            0x4_0000 | sid
        )
    }
    fn scan_str(s: &str) -> IrqSection {
        scan(std::io::Cursor::new(s.as_bytes())).unwrap()
    }

    /// One update: the old engine's interrupts, its hand-over (cause masked,
    /// closing marker), frames pending meanwhile, the new engine raising
    /// them when it enables the cause.
    fn kept() -> String {
        let mut t = write(MARK_REG, 0xa000) + &write(IMS, 1 << 20);
        t += &(send() + &deliver(NIC_SID) + &timer_send() + &deliver(NIC_SID));
        t += &write(0x2818, 5);
        t += &(write(IMS, 1 << 20) + &send() + &deliver(NIC_SID));
        t += &(write(0xd8, 1 << 20) + &write(MARK_REG, 0xd000));
        t += &(write(MARK_REG, 0xa001) + &write(0xe4, 8) + &write(IMS, 1 << 20) + &send() + &deliver(NIC_SID));
        t += &deliver(0x18); // another device's interrupt: not the NIC's
        t
    }

    #[test]
    fn interrupts_inside_the_engines_spans_are_kept_and_the_window_pending() {
        let mut s = scan_str(&kept());
        assert_eq!((s.sent, s.delivered, s.delivered_outside_agents, s.never_delivered), (4, 4, 0, 0), "{s:?}");
        assert_eq!(s.agents.len(), 2);
        assert_eq!((s.agents[0].generation, s.agents[0].delivered, s.agents[0].closed), (0, 3, true));
        assert!(s.agents[0].first_raised_by_pending_cause, "the first send followed the first IMS write");
        assert_eq!((s.agents[1].generation, s.agents[1].delivered, s.agents[1].closed), (1, 1, false));
        assert!(s.agents[1].first_raised_by_pending_cause);
        assert_eq!((s.ir_enable.len(), s.remapping_off_after_routing), (0, 0));
        assert_eq!((s.agents[0].irte_indices.clone(), s.agents[1].irte_indices.clone()), (vec![3], vec![3]));
        s.received_by_agents = Some(3); // two of them coalesced at the local APIC
        assert!(judge_section(&s, true).unwrap().is_empty());
    }

    #[test]
    fn a_delivery_while_no_engine_is_live_is_lost() {
        let mut t = write(MARK_REG, 0xa000) + &write(IMS, 1 << 20) + &send() + &deliver(NIC_SID) + &write(MARK_REG, 0xd000);
        t += &(send() + &deliver(NIC_SID)); // the cause left armed: the old kernel's vector
        t += &(write(MARK_REG, 0xa001) + &write(IMS, 1 << 20) + &send() + &deliver(NIC_SID));
        let mut s = scan_str(&t);
        assert_eq!(s.delivered_outside_agents, 1);
        assert!(s.agents[1].first_raised_by_pending_cause);
        s.received_by_agents = Some(2);
        let f = judge_section(&s, true).unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].reason, Reason::IrqLost);
        assert!(f[0].detail.contains("1 of the NIC's MSI-X messages were delivered while no agent"), "{}", f[0].detail);
    }

    #[test]
    fn a_send_never_delivered_is_lost_unless_released_from_pending() {
        let t = write(MARK_REG, 0xa000) + &send() + &send() + &deliver(NIC_SID);
        let s = scan_str(&t);
        assert_eq!((s.sent, s.delivered, s.never_delivered), (2, 1, 1));
        assert_eq!(judge_section(&s, true).unwrap()[0].reason, Reason::IrqLost);
        // The held one delivered later, on unmask, with no send line of its own.
        let s = scan_str(&(t + &deliver(NIC_SID)));
        assert_eq!((s.released_from_pending, s.never_delivered), (1, 0));
        assert!(judge_section(&s, true).unwrap().is_empty());
    }

    #[test]
    fn agents_counting_more_than_was_delivered_cannot_be_judged() {
        let mut s = scan_str(&kept());
        s.received_by_agents = Some(5);
        let e = judge_section(&s, true).unwrap_err().to_string();
        assert!(e.contains("received 5 interrupts, more than the 4"), "{e}");
        s.received_by_agents = Some(0);
        assert_eq!(judge_section(&s, true).unwrap()[0].reason, Reason::IrqLost);
    }

    #[test]
    fn remapping_switched_off_under_a_persistent_engine_is_a_finding() {
        let boot = "1@0.5:vtd_ir_enable enable 1\n";
        let mut t = kept();
        t.insert_str(0, boot);
        let at = t.find(&write(MARK_REG, 0xa001)).unwrap();
        t.insert_str(at, "1@2.0:vtd_ir_enable enable 0\n1@2.1:vtd_ir_enable enable 1\n");
        let s = scan_str(&t);
        assert_eq!((s.ir_enable.clone(), s.remapping_off_after_routing), (vec![true, false, true], 1));
        let f = judge_section(&s, true).unwrap();
        assert_eq!(f.iter().map(|f| f.reason).collect::<Vec<_>>(), vec![Reason::IrqRemappingOff]);
        assert!(judge_section(&s, false).unwrap().is_empty(), "a non-persistent engine's interrupts end with its kernel");
    }

    #[test]
    fn a_trace_without_markers_has_no_engine() {
        let s = scan_str(&(send() + &deliver(NIC_SID)));
        assert!(s.agents.is_empty());
        assert_eq!(s.delivered_outside_agents, 1);
    }
}
