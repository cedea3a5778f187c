//! Isolation oracle: which physical pages each device's DMA was translated
//! to, from QEMU's own VT-d IOTLB trace (`vtd_iotlb_page_update` on a miss,
//! `vtd_iotlb_page_hit` on a hit: source id, IOVA and the second-level PTE
//! that translated it), before, during and after each live update.
//!
//! The rules, per translation of a watched device at a point of the trace:
//! - while an agent's engine owns the device (an [`Owner`] span covers the
//!   point), the translation must land in that engine's own pages. A
//!   persistent device is owned from its first `start_dma` to the end of the
//!   run, through every kexec (its domain is frozen and adopted), so it must
//!   never leave its pages;
//! - a non-persistent device is owned only while an engine runs it: from
//!   the kexec on its translation is gone, the next kernel's own driver may
//!   take it and DMA into kernel memory until an agent takes it back. Those
//!   translations are counted (`unowned`) and allowed anywhere except ...
//! - ... another watched device's guest RAM (its DMA pages or its canary,
//!   while an engine of that device owns them): a breach whoever owns the
//!   device.
//!
//! `foreign` counts every breach, `cross_device` those of the second kind.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

use lulab_proto::PhysRange;
use serde::{Deserialize, Serialize};

use super::trace::{parse_line, TraceLine};

/// The trace events this oracle reads (enabled only when a scenario asks:
/// every DMA produces one).
pub const ISOLATION_TRACE_EVENTS: &[&str] = &["vtd_iotlb_page_update", "vtd_iotlb_page_hit"];

/// How many breaches are kept as examples.
const EXAMPLES: usize = 5;

/// A device, the pages its DMA may reach while an agent's engine owns it,
/// and when that is (byte offsets into QEMU's trace log: the oracle's clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// PCI address, e.g. `0000:00:02.0`.
    pub pci: String,
    /// Its pages (the agent's `dma_pages`).
    pub pages: Vec<PhysRange>,
    /// The rest of the engine's guest RAM (the canary, never mapped for any
    /// device): another device landing here breaches isolation too.
    pub canary: Vec<PhysRange>,
    /// Kept across live updates (a persistent domain): `until` is `None`.
    pub persistent: bool,
    /// Trace offset from which the engine owns the device with these pages.
    pub from: u64,
    /// Trace offset at which it stops (a non-persistent engine at the
    /// next kexec); `None`: to the end of the run.
    pub until: Option<u64>,
}

impl Owner {
    /// An engine owning `pci` with `pages` from trace offset 0 to the end.
    pub fn new(pci: &str, pages: Vec<PhysRange>, persistent: bool) -> Self {
        Self { pci: pci.into(), pages, canary: Vec::new(), persistent, from: 0, until: None }
    }

    /// VT-d source id (bus << 8 | devfn) of a `DDDD:BB:DD.F` address.
    pub fn sid(&self) -> Option<u16> {
        let mut it = self.pci.rsplit([':', '.']);
        let (func, dev, bus) = (it.next()?, it.next()?, it.next()?);
        let (f, d, b) = (u16::from_str_radix(func, 16).ok()?, u16::from_str_radix(dev, 16).ok()?, u16::from_str_radix(bus, 16).ok()?);
        (f < 8 && d < 32 && b < 256).then_some((b << 8) | (d << 3) | f)
    }

    fn owns(&self, phys: u64) -> bool {
        self.pages.iter().any(|r| phys >= r.gpa && phys < r.gpa + r.len)
    }

    /// In the engine's guest RAM: its DMA pages or its canary.
    fn holds(&self, phys: u64) -> bool {
        self.owns(phys) || self.canary.iter().any(|r| phys >= r.gpa && phys < r.gpa + r.len)
    }

    fn active(&self, at: u64) -> bool {
        at >= self.from && self.until.is_none_or(|u| at < u)
    }
}

/// What the oracle found (report.json `isolation`; fields are only added).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsolationSection {
    /// Translations checked, per device (PCI address).
    pub translations: BTreeMap<String, u64>,
    /// Breaches: translations outside the device's own pages while an
    /// engine owned it, or into another watched device's pages at any time.
    pub foreign: u64,
    /// Of those, landing in another watched device's guest RAM (its DMA
    /// pages or its canary).
    pub cross_device: u64,
    /// The first breaches, as `sid iova -> phys (owner)`.
    pub examples: Vec<String>,
    /// Per device: where its translations landed, and when.
    #[serde(default)]
    pub devices: BTreeMap<String, DeviceIsolation>,
    /// Live updates judged: trace offsets from the kexec request to the
    /// new agent owning its engines again (the "during" phase).
    #[serde(default)]
    pub updates: u64,
}

/// One device's translations (they add up to its `translations`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceIsolation {
    /// Kept across live updates: owned (strict) from start to end.
    pub persistent: bool,
    /// Into its own pages while an engine owned it.
    pub own_pages: u64,
    /// While no engine owned it (a non-persistent device from the kexec
    /// until an agent took it back: its old engine draining, the next
    /// kernel's own driver); allowed outside other devices' pages.
    pub unowned: u64,
    /// Breach: outside its own pages while an engine owned it.
    pub outside_own_pages: u64,
    /// Breach: into another watched device's guest RAM (its DMA pages or its canary).
    pub into_other_devices: u64,
    /// Its translations by phase of the run.
    pub translations: Phases,
    /// Its breaches by phase of the run.
    pub breaches: Phases,
}

/// Counts by phase of a run with live updates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phases {
    /// Before the first live update's kexec request.
    pub before_update: u64,
    /// From a kexec request until the new agent owned its engines again.
    pub during_update: u64,
    /// After a live update (up to the next one's kexec request).
    pub after_update: u64,
}

impl Phases {
    fn count(&mut self, p: &Phase) {
        *match p {
            Phase::Before => &mut self.before_update,
            Phase::During => &mut self.during_update,
            Phase::After => &mut self.after_update,
        } += 1;
    }
}

/// One IOTLB trace line: (sid, iova, physical address translated to).
pub fn parse_translation(ev: &TraceLine) -> Option<(u16, u64, u64)> {
    let (sid, iova, slpte) = (ev.field("sid")?, ev.field("iova")?, ev.field("slpte")?);
    const ADDR: u64 = 0x000f_ffff_ffff_f000;
    const PS: u64 = 1 << 7;
    // A large-page PTE (2 MiB: our mappings never reach 1 GiB) maps the page
    // at the IOVA's offset in it.
    let phys = (slpte & ADDR) + if slpte & PS != 0 { iova & 0x1f_f000 } else { 0 };
    Some((u16::try_from(sid).ok()?, iova, phys))
}

/// What the oracle is told about the run: the engines (with their spans)
/// and each live update's window, all as trace offsets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Watch {
    /// Every engine the agents ran, a device once per engine.
    pub owners: Vec<Owner>,
    /// Per live update: (kexec requested, the new agent owns its engines again).
    pub updates: Vec<(u64, u64)>,
}

impl Watch {
    fn phase(&self, at: u64) -> Phase {
        match self.updates.first() {
            None => Phase::Before,
            Some(&(first, _)) if at < first => Phase::Before,
            _ if self.updates.iter().any(|&(a, b)| at >= a && at < b) => Phase::During,
            _ => Phase::After,
        }
    }

    /// Judges one translation of `pci` at trace offset `at`.
    fn judge(&self, pci: &str, phys: u64, at: u64) -> Landing {
        let active = |o: &&Owner| o.active(at);
        if let Some(other) = self.owners.iter().filter(active).find(|o| o.pci != pci && o.holds(phys)) {
            return Landing::OtherDevice(other.pci.clone());
        }
        let own: Vec<&Owner> = self.owners.iter().filter(active).filter(|o| o.pci == pci).collect();
        if own.is_empty() {
            Landing::Unowned
        } else if own.iter().any(|o| o.owns(phys)) {
            Landing::Own
        } else {
            Landing::OutsideOwn
        }
    }
}

enum Phase {
    Before,
    During,
    After,
}

enum Landing {
    Own,
    Unowned,
    OutsideOwn,
    OtherDevice(String),
}

/// Checks every translation in `log` (which starts at trace offset `base`)
/// of a device in `watch`.
pub fn check<R: BufRead>(log: R, base: u64, watch: &Watch) -> std::io::Result<IsolationSection> {
    let mut pci_of: BTreeMap<u16, &str> = BTreeMap::new();
    for o in &watch.owners {
        if let Some(sid) = o.sid() {
            pci_of.insert(sid, &o.pci);
        }
    }
    let mut s = IsolationSection { updates: watch.updates.len() as u64, ..Default::default() };
    for o in &watch.owners {
        s.devices.entry(o.pci.clone()).or_default().persistent |= o.persistent;
    }
    let mut at = base;
    for line in log.split(b'\n') {
        let line = line?;
        let here = at;
        at += line.len() as u64 + 1;
        let line = String::from_utf8_lossy(&line);
        let Some(ev) = parse_line(&line) else { continue };
        if !ISOLATION_TRACE_EVENTS.contains(&ev.name) {
            continue;
        }
        let Some((sid, iova, phys)) = parse_translation(&ev) else { continue };
        let Some(&pci) = pci_of.get(&sid) else { continue };
        *s.translations.entry(pci.to_string()).or_default() += 1;
        let d = s.devices.entry(pci.to_string()).or_default();
        let phase = watch.phase(here);
        d.translations.count(&phase);
        let whose = match watch.judge(pci, phys, here) {
            Landing::Own => {
                d.own_pages += 1;
                continue;
            }
            Landing::Unowned => {
                d.unowned += 1;
                continue;
            }
            Landing::OutsideOwn => {
                d.outside_own_pages += 1;
                "nobody's".to_string()
            }
            Landing::OtherDevice(other) => {
                d.into_other_devices += 1;
                s.cross_device += 1;
                format!("{other}'s")
            }
        };
        d.breaches.count(&phase);
        s.foreign += 1;
        if s.examples.len() < EXAMPLES {
            s.examples.push(format!("{pci} IOVA {iova:#x} -> {phys:#x} ({whose} page)"));
        }
    }
    Ok(s)
}

/// [`check`] on a trace file from byte `offset` on (e.g. where the agent
/// owned the devices; before, host drivers used them). Missing file:
/// nothing checked.
pub fn check_file(path: &Path, offset: u64, watch: &Watch) -> std::io::Result<IsolationSection> {
    use std::io::{Seek, SeekFrom};
    match std::fs::File::open(path) {
        Ok(mut f) => {
            f.seek(SeekFrom::Start(offset))?;
            check(BufReader::new(f), offset, watch)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(IsolationSection::default()),
        Err(e) => Err(e),
    }
}


/// The isolation oracle behind the [`Oracle`](super::registry::Oracle)
/// trait (scenarios with `check_isolation`): QEMU's IOTLB trace from the end
/// of `start_dma` on (before, host drivers owned the devices), judged
/// against the engines that owned each device. report.json `isolation`
/// (null without `check_isolation`).
#[derive(Debug)]
pub struct IsolationOracle;

impl super::registry::Oracle for IsolationOracle {
    fn name(&self) -> &'static str {
        "isolation"
    }

    fn report_field(&self) -> bool {
        true
    }

    fn judge(&self, obs: &super::registry::Observations) -> anyhow::Result<super::registry::Judged> {
        use crate::report::{Finding, Reason};
        let Some(watch) = obs.isolation else {
            return Ok(super::registry::Judged { section: serde_json::Value::Null, findings: Vec::new(), files: Vec::new() });
        };
        let s = check_file(&obs.host_dir.join("trace.log"), obs.facts.dma_trace_offset, watch)?;
        let mut findings = Vec::new();
        if s.foreign > 0 {
            let outside: u64 = s.devices.values().map(|d| d.outside_own_pages).sum();
            findings.push(Finding::new(Reason::IsolationBreach, format!(
                "isolation: {} DMA translations breach isolation: {} into another device's guest RAM, {} outside the device's own pages while its engine owned it; e.g. {:?}",
                s.foreign, s.cross_device, outside, s.examples
            )));
        }
        let devices: std::collections::BTreeSet<&str> = watch.owners.iter().map(|o| o.pci.as_str()).collect();
        if devices.len() > 1 && s.translations.len() < devices.len() {
            findings.push(Finding::new(Reason::IsolationUntraced, format!("isolation: translations traced for only {:?} of {} devices", s.translations.keys(), devices.len())));
        }
        Ok(super::registry::Judged { section: serde_json::to_value(s)?, findings, files: Vec::new() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NIC: &str = "0000:00:02.0";
    const NVME: &str = "0000:00:03.0";

    fn owners() -> Vec<Owner> {
        vec![
            Owner::new(NIC, vec![PhysRange { gpa: 0x4000_0000, len: 0x20_0000 }], true),
            Owner::new(NVME, vec![PhysRange { gpa: 0x4100_0000, len: 0x1000 }], true),
        ]
    }

    /// A `vtd_iotlb_page_hit` line of `sid` translating `iova` to `phys` (4 KiB PTE).
    fn hit(sid: u16, iova: u64, phys: u64) -> String {
        format!("1@1.0:vtd_iotlb_page_hit iotlb page hit sid {sid:#x} iova {iova:#x} slpte {:#x} domain 0x3\n", phys | 3)
    }

    #[test]
    fn sids_follow_bus_device_function() {
        let o = owners();
        assert_eq!((o[0].sid(), o[1].sid()), (Some(0x10), Some(0x18)));
        assert_eq!(Owner::new("0000:01:1f.7", vec![], false).sid(), Some(0x1ff));
        assert_eq!(Owner::new("bogus", vec![], false).sid(), None);
    }

    #[test]
    fn large_pages_translate_at_the_iova_offset() {
        let tr = |args: &str| parse_translation(&parse_line(&format!("vtd_iotlb_page_update update an IOTLB entry {args}")).unwrap());
        assert_eq!(tr("sid 0x10 iova 0x20003000 slpte 0x40000003 domain 0x3"), Some((0x10, 0x2000_3000, 0x4000_0000)));
        assert_eq!(tr("sid 0x10 iova 0x20003000 slpte 0x40000083 domain 0x3"), Some((0x10, 0x2000_3000, 0x4000_3000)));
        assert_eq!(tr("sid 0x10 iova zz"), None);
    }

    #[test]
    fn own_pages_pass_and_other_devices_pages_are_cross_device_breaches() {
        let log = "1@1.0:vtd_iotlb_page_update update iotlb sid 0x10 iova 0x20000000 slpte 0x40001003 domain 0x3\n\
                   1@1.1:vtd_iotlb_page_hit iotlb page hit sid 0x18 iova 0x10000000 slpte 0x41000003 domain 0x4\n\
                   1@1.2:vtd_iotlb_page_hit iotlb page hit sid 0x18 iova 0x20000000 slpte 0x40002003 domain 0x4\n\
                   1@1.3:vtd_iotlb_page_hit iotlb page hit sid 0x10 iova 0x20000000 slpte 0x7000003 domain 0x3\n\
                   1@1.4:vtd_iotlb_page_hit iotlb page hit sid 0x20 iova 0x0 slpte 0x7000003 domain 0x9\n\
                   1@1.5:pci_cfg_write e1000e 00:02.0 @0x4 <- 0x107\n";
        let s = check(log.as_bytes(), 0, &Watch { owners: owners(), updates: vec![] }).unwrap();
        assert_eq!(s.translations.values().sum::<u64>(), 4, "the unwatched sid 0x20 is not counted");
        assert_eq!((s.foreign, s.cross_device), (2, 1));
        assert!(s.examples[0].contains("0000:00:02.0's page"), "{:?}", s.examples);
        assert_eq!((s.devices[NVME].own_pages, s.devices[NVME].into_other_devices), (1, 1));
        assert_eq!((s.devices[NIC].own_pages, s.devices[NIC].outside_own_pages), (1, 1));
        assert!(s.devices.values().all(|d| d.persistent && d.translations.before_update == 2 && d.unowned == 0));
        assert!(s.devices.values().all(|d| d.breaches == Phases { before_update: 1, ..Default::default() }));
    }

    /// A persistent NIC and a non-persistent NVMe across one live update:
    /// the NVMe's first engine ends at the kexec, the host driver uses it,
    /// then a second engine with new pages owns it again.
    fn across_an_update(log: &str) -> (Watch, u64) {
        let kexec = log.find("KEXEC").unwrap() as u64;
        let back = log.find("RETAKEN").unwrap() as u64;
        let nic = Owner::new(NIC, vec![PhysRange { gpa: 0x4000_0000, len: 0x20_0000 }], true);
        let nvme1 = Owner { until: Some(kexec), ..Owner::new(NVME, vec![PhysRange { gpa: 0x1000_0000, len: 0x1000 }], false) };
        let nvme2 = Owner { from: back, ..Owner::new(NVME, vec![PhysRange { gpa: 0x2000_0000, len: 0x1000 }], false) };
        (Watch { owners: vec![nic, nvme1, nvme2], updates: vec![(kexec, back)] }, back)
    }

    #[test]
    fn a_non_persistent_device_is_strict_only_while_an_engine_owns_it() {
        let log = [
            hit(0x18, 0x2000_0000, 0x1000_0000),  // own (first engine)
            "# KEXEC\n".into(),
            hit(0x18, 0x2000_0000, 0x1000_0000),  // old engine draining: unowned
            hit(0x18, 0xffff_f000, 0x0a40_0000),  // the new kernel's nvme driver: unowned
            hit(0x10, 0x2000_0000, 0x4000_1000),  // NIC, frozen domain, during
            "# RETAKEN\n".into(),
            hit(0x18, 0x2000_0000, 0x2000_0000),  // own (second engine)
            hit(0x18, 0x2000_0000, 0x1000_0000),  // the first engine's pages: no longer its own
        ]
        .concat();
        let (w, _) = across_an_update(&log);
        let s = check(log.as_bytes(), 0, &w).unwrap();
        let (nic, nvme) = (&s.devices[NIC], &s.devices[NVME]);
        assert_eq!((nvme.own_pages, nvme.unowned, nvme.outside_own_pages, nvme.into_other_devices), (2, 2, 1, 0), "{nvme:?}");
        assert_eq!(nvme.translations, Phases { before_update: 1, during_update: 2, after_update: 2 });
        assert_eq!(nvme.breaches, Phases { after_update: 1, ..Default::default() });
        assert!(!nvme.persistent && nic.persistent);
        assert_eq!((nic.own_pages, nic.translations.during_update), (1, 1));
        assert_eq!((s.foreign, s.cross_device, s.updates), (1, 0, 1));
        assert_eq!(s.translations[NVME], 5);
    }

    #[test]
    fn another_devices_pages_are_a_breach_even_while_the_host_driver_owns_the_device() {
        let log = [
            "# KEXEC\n".to_string(),
            hit(0x18, 0xffff_f000, 0x4000_3000), // the host driver's DMA lands in the NIC's guest RAM
            "# RETAKEN\n".into(),
            hit(0x18, 0x2000_0000, 0x4000_4000), // the NVMe's engine reaches the NIC's guest RAM
            hit(0x10, 0x2000_0000, 0x2000_0000), // the NIC in the NVMe's pages (strict anyway)
        ]
        .concat();
        let (w, _) = across_an_update(&log);
        let s = check(log.as_bytes(), 0, &w).unwrap();
        assert_eq!((s.foreign, s.cross_device), (3, 3));
        assert_eq!(s.devices[NVME].into_other_devices, 2);
        assert_eq!(s.devices[NVME].breaches, Phases { before_update: 0, during_update: 1, after_update: 1 });
        assert_eq!(s.devices[NIC].into_other_devices, 1);
        assert!(s.examples.iter().all(|e| e.contains("'s page")) && !s.examples[0].contains("nobody"), "{:?}", s.examples);
    }

    #[test]
    fn another_devices_canary_is_its_guest_ram_and_a_devices_own_canary_is_outside_its_pages() {
        let canary = vec![PhysRange { gpa: 0x4020_0000, len: 0x4000 }];
        let nic = Owner { canary: canary.clone(), ..Owner::new(NIC, vec![PhysRange { gpa: 0x4000_0000, len: 0x20_0000 }], true) };
        let nvme = Owner::new(NVME, vec![PhysRange { gpa: 0x1000_0000, len: 0x1000 }], false);
        let log = [hit(0x18, 0x2040_0000, 0x4020_1000), hit(0x10, 0x2000_0000, 0x4020_2000)].concat();
        let s = check(log.as_bytes(), 0, &Watch { owners: vec![nic, nvme], updates: vec![] }).unwrap();
        assert_eq!((s.devices[NVME].into_other_devices, s.devices[NIC].outside_own_pages), (1, 1));
        assert_eq!((s.foreign, s.cross_device), (2, 1));
    }

    #[test]
    fn offsets_count_from_the_base_of_the_log() {
        let log = hit(0x18, 0x2000_0000, 0x1000_0000);
        let o = Owner { from: 1000, ..Owner::new(NVME, vec![PhysRange { gpa: 0x1000_0000, len: 0x1000 }], false) };
        let w = Watch { owners: vec![o], updates: vec![] };
        assert_eq!(check(log.as_bytes(), 0, &w).unwrap().devices[NVME].unowned, 1, "before the engine's span");
        assert_eq!(check(log.as_bytes(), 1000, &w).unwrap().devices[NVME].own_pages, 1, "read from offset 1000 on");
    }
}
