//! Isolation oracle: which physical pages each device's DMA was translated
//! to, from QEMU's own VT-d IOTLB trace (`vtd_iotlb_page_update` on a miss,
//! `vtd_iotlb_page_hit` on a hit: source id, IOVA and the second-level PTE
//! that translated it). Every translation of a device must land in that
//! device's own DMA pages; one landing in another device's pages (or
//! anywhere else) is a breach of isolation, before, during or after a live
//! update alike.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

use lulab_proto::PhysRange;
use serde::{Deserialize, Serialize};

use super::trace::parse_line;

/// The trace events this oracle reads (enabled only when a scenario asks:
/// every DMA produces one).
pub const ISOLATION_TRACE_EVENTS: &[&str] = &["vtd_iotlb_page_update", "vtd_iotlb_page_hit"];

/// How many breaches are kept as examples.
const EXAMPLES: usize = 5;

/// A device and the pages its DMA may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// PCI address, e.g. `0000:00:02.0`.
    pub pci: String,
    /// Its pages (the agent's `dma_pages`).
    pub pages: Vec<PhysRange>,
}

impl Owner {
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
}

/// What the oracle found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsolationSection {
    /// Translations checked, per device (PCI address).
    pub translations: BTreeMap<String, u64>,
    /// Translations that landed outside the device's own pages.
    pub foreign: u64,
    /// Of those, landing in another watched device's pages.
    pub cross_device: u64,
    /// The first breaches, as `sid iova -> phys (owner)`.
    pub examples: Vec<String>,
}

/// One IOTLB trace line: (sid, iova, physical address translated to).
pub fn parse_translation(args: &str) -> Option<(u16, u64, u64)> {
    let field = |name: &str| {
        let mut w = args.split_whitespace();
        w.position(|t| t == name).and_then(|_| w.next()).map(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16))
    };
    let (sid, iova, slpte) = (field("sid")?.ok()?, field("iova")?.ok()?, field("slpte")?.ok()?);
    const ADDR: u64 = 0x000f_ffff_ffff_f000;
    const PS: u64 = 1 << 7;
    // A large-page PTE (2 MiB: our mappings never reach 1 GiB) maps the page
    // at the IOVA's offset in it.
    let phys = (slpte & ADDR) + if slpte & PS != 0 { iova & 0x1f_f000 } else { 0 };
    Some((u16::try_from(sid).ok()?, iova, phys))
}

/// Checks every translation in `log` of a device in `owners`.
pub fn check<R: BufRead>(log: R, owners: &[Owner]) -> std::io::Result<IsolationSection> {
    let by_sid: BTreeMap<u16, &Owner> = owners.iter().filter_map(|o| Some((o.sid()?, o))).collect();
    let mut s = IsolationSection::default();
    for line in log.split(b'\n') {
        let line = line?;
        let line = String::from_utf8_lossy(&line);
        let Some(ev) = parse_line(&line) else { continue };
        if !ISOLATION_TRACE_EVENTS.contains(&ev.name) {
            continue;
        }
        let Some((sid, iova, phys)) = parse_translation(ev.args) else { continue };
        let Some(owner) = by_sid.get(&sid) else { continue };
        *s.translations.entry(owner.pci.clone()).or_default() += 1;
        if owner.owns(phys) {
            continue;
        }
        s.foreign += 1;
        let other = owners.iter().find(|o| o.pci != owner.pci && o.owns(phys));
        if other.is_some() {
            s.cross_device += 1;
        }
        if s.examples.len() < EXAMPLES {
            let whose = other.map_or("nobody's".to_string(), |o| format!("{}'s", o.pci));
            s.examples.push(format!("{} IOVA {iova:#x} -> {phys:#x} ({whose} page)", owner.pci));
        }
    }
    Ok(s)
}

/// [`check`] on a trace file from byte `offset` on (e.g. where the agent
/// owned the devices; before, host drivers used them). Missing file:
/// nothing checked.
pub fn check_file(path: &Path, offset: u64, owners: &[Owner]) -> std::io::Result<IsolationSection> {
    use std::io::{Seek, SeekFrom};
    match std::fs::File::open(path) {
        Ok(mut f) => {
            f.seek(SeekFrom::Start(offset))?;
            check(BufReader::new(f), owners)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(IsolationSection::default()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owners() -> Vec<Owner> {
        vec![
            Owner { pci: "0000:00:02.0".into(), pages: vec![PhysRange { gpa: 0x4000_0000, len: 0x20_0000 }] },
            Owner { pci: "0000:00:03.0".into(), pages: vec![PhysRange { gpa: 0x4100_0000, len: 0x1000 }] },
        ]
    }

    #[test]
    fn sids_follow_bus_device_function() {
        let o = owners();
        assert_eq!((o[0].sid(), o[1].sid()), (Some(0x10), Some(0x18)));
        assert_eq!(Owner { pci: "0000:01:1f.7".into(), pages: vec![] }.sid(), Some(0x1ff));
        assert_eq!(Owner { pci: "bogus".into(), pages: vec![] }.sid(), None);
    }

    #[test]
    fn large_pages_translate_at_the_iova_offset() {
        assert_eq!(parse_translation("sid 0x10 iova 0x20003000 slpte 0x40000003 domain 0x3"), Some((0x10, 0x2000_3000, 0x4000_0000)));
        assert_eq!(parse_translation("sid 0x10 iova 0x20003000 slpte 0x40000083 domain 0x3"), Some((0x10, 0x2000_3000, 0x4000_3000)));
        assert_eq!(parse_translation("sid 0x10 iova zz"), None);
    }

    #[test]
    fn own_pages_pass_and_other_devices_pages_are_cross_device_breaches() {
        let log = "1@1.0:vtd_iotlb_page_update update iotlb sid 0x10 iova 0x20000000 slpte 0x40001003 domain 0x3\n\
                   1@1.1:vtd_iotlb_page_hit iotlb page hit sid 0x18 iova 0x10000000 slpte 0x41000003 domain 0x4\n\
                   1@1.2:vtd_iotlb_page_hit iotlb page hit sid 0x18 iova 0x20000000 slpte 0x40002003 domain 0x4\n\
                   1@1.3:vtd_iotlb_page_hit iotlb page hit sid 0x10 iova 0x20000000 slpte 0x7000003 domain 0x3\n\
                   1@1.4:vtd_iotlb_page_hit iotlb page hit sid 0x20 iova 0x0 slpte 0x7000003 domain 0x9\n\
                   1@1.5:pci_cfg_write e1000e 00:02.0 @0x4 <- 0x107\n";
        let s = check(log.as_bytes(), &owners()).unwrap();
        assert_eq!(s.translations.values().sum::<u64>(), 4, "the unwatched sid 0x20 is not counted");
        assert_eq!((s.foreign, s.cross_device), (2, 1));
        assert!(s.examples[0].contains("0000:00:02.0's page"), "{:?}", s.examples);
    }
}
