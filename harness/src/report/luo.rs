//! `luo` in report.json: what upstream's Live Update Orchestrator kept of a
//! persistent RX engine whose guest RAM is a LUO-preserved memfd (schema 4;
//! null for every other scenario). The memory is judged from the resuming
//! agent's checks of its own memfd and from the harness's comparison of the
//! memfd's physical pages before and after; the DMA from the ledger, the
//! QEMU trace and `updates[].dma_while_agent_down`, as for any run.

use std::fmt::Write;

use lulab_proto::LuoFindings;
use serde::{Deserialize, Serialize};

/// `luo`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LuoSection {
    /// After every live update the memfd came back on the same physical
    /// pages with every held frame and the canary unchanged.
    pub memory_survived: bool,
    /// After every live update the new agent found the NIC as it was handed
    /// over (bound to nothing or vfio-pci, bus master and RX on, same ring).
    pub device_survived: bool,
    /// One per live update, in order.
    pub updates: Vec<LuoUpdate>,
}

/// One live update of a LUO-backed engine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LuoUpdate {
    /// 1 for the first live update.
    pub live_update: u32,
    /// The harness's comparison: the resumed layout's ring and buffers are
    /// on the guest-physical pages they were on at `start_dma`.
    pub same_physical_pages: bool,
    /// The resuming agent's account.
    #[serde(flatten)]
    pub found: LuoFindings,
}

impl LuoUpdate {
    /// Memory kept: same pages, held frames and canary unchanged.
    pub fn memory_survived(&self) -> bool {
        let f = &self.found;
        self.same_physical_pages && f.same_physical_pages && f.frames_intact == f.frames_checked && f.canary_intact
    }

    /// Lines for `reasons` (empty when nothing broke).
    pub fn reasons(&self) -> Vec<String> {
        let (n, f) = (self.live_update, &self.found);
        let mut out = Vec::new();
        if !self.memory_survived() {
            out.push(format!(
                "live update {n}: the LUO memfd did not survive: {} of {} held frames intact, canary {}, same physical pages {} (agent) / {} (harness)",
                f.frames_intact,
                f.frames_checked,
                if f.canary_intact { "intact" } else { "changed" },
                f.same_physical_pages,
                self.same_physical_pages
            ));
        }
        if !f.broken.is_empty() {
            out.push(format!("live update {n}: LUO kept the memory but not the device: {}", f.broken.join("; ")));
        }
        out
    }
}

impl LuoSection {
    /// The section for `updates` (none: nothing survived or not).
    pub fn new(updates: Vec<LuoUpdate>) -> Self {
        let any = !updates.is_empty();
        Self {
            memory_survived: any && updates.iter().all(LuoUpdate::memory_survived),
            device_survived: any && updates.iter().all(|u| u.found.broken.is_empty()),
            updates,
        }
    }
}

/// The `## LUO` part of report.md.
pub fn render(s: &mut String, l: &LuoSection) {
    let _ = writeln!(
        s,
        "## LUO (guest RAM in a preserved memfd)\n\nmemory survived: **{}** · device survived: **{}**\n",
        l.memory_survived, l.device_survived
    );
    let _ = writeln!(
        s,
        "| update | memfd pages | same pages | held frames intact | canary | driver after kexec | bus master | RX enabled | ring base / len |\n|---|---|---|---|---|---|---|---|---|"
    );
    for u in &l.updates {
        let f = &u.found;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} / {} | {} | {} | {} | {} | {:#x} / {} |",
            u.live_update,
            f.memfd_pages,
            u.same_physical_pages && f.same_physical_pages,
            f.frames_intact,
            f.frames_checked,
            if f.canary_intact { "intact" } else { "changed" },
            f.driver_before.as_deref().unwrap_or("none"),
            f.bus_master,
            f.rx_enabled,
            f.ring_base,
            f.ring_len
        );
    }
    s.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream() -> LuoUpdate {
        LuoUpdate {
            live_update: 1,
            same_physical_pages: true,
            found: LuoFindings {
                session: "lulab-guest-ram-e1000e".into(),
                memfd_pages: 1037,
                frames_checked: 1024,
                frames_intact: 1024,
                canary_intact: true,
                same_physical_pages: true,
                driver_before: Some("e1000e".into()),
                broken: vec!["the next kernel bound the NIC to e1000e (the host driver took it back)".into()],
                ..LuoFindings::default()
            },
        }
    }

    #[test]
    fn memory_survives_while_the_device_does_not() {
        let s = LuoSection::new(vec![upstream()]);
        assert!(s.memory_survived && !s.device_survived);
        let r = s.updates[0].reasons();
        assert_eq!(r.len(), 1);
        assert!(r[0].starts_with("live update 1: LUO kept the memory but not the device: the next kernel bound"), "{r:?}");
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["updates"][0]["frames_intact"], 1024, "findings are flattened: {v}");
        let mut md = String::new();
        render(&mut md, &s);
        assert!(md.contains("| 1 | 1037 | true | 1024 / 1024 | intact | e1000e | false | false | 0x0 / 0 |"), "{md}");
    }

    #[test]
    fn changed_frames_or_moved_pages_mean_the_memory_did_not_survive() {
        let mut u = upstream();
        u.found.frames_intact = 1000;
        assert!(!u.memory_survived());
        assert!(u.reasons()[0].contains("1000 of 1024 held frames intact"), "{:?}", u.reasons());
        let mut moved = upstream();
        moved.same_physical_pages = false;
        assert!(!LuoSection::new(vec![moved]).memory_survived);
        assert!(!LuoSection::new(Vec::new()).memory_survived);
    }
}
