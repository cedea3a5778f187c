//! Memory-integrity oracle: xxh3 hashes of every 4 KiB page of chosen
//! guest-physical ranges, taken before and after a step; pages that changed
//! outside the ranges the device was allowed to write are reported.
//!
//! Ranges are widened to whole pages. A page counts as device-writable when
//! it overlaps an allowed range (the agent allocates DMA memory in pages).

use std::collections::BTreeMap;

use lulab_proto::PhysRange;
use serde::Serialize;
use xxhash_rust::xxh3::xxh3_64;

use crate::guest_memory::{GuestMemory, GuestMemoryError};

/// Page size of the oracle.
pub const PAGE: u64 = 4096;
/// Pages copied out of the mapping per read.
const BATCH_PAGES: u64 = 16;

/// Page GPA → hash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageHashes {
    /// Hash of each page, keyed by the page's guest-physical address.
    pub pages: BTreeMap<u64, u64>,
}

/// Result of comparing two [`PageHashes`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MemoryDiff {
    /// Pages compared (present in both).
    pub pages_checked: u64,
    /// Pages that changed although the device was not allowed to write them.
    pub unexpected: Vec<u64>,
    /// Device-writable pages that changed (expected while DMA runs).
    pub allowed_changed: u64,
    /// Pages hashed only before or only after (the range sets differ).
    pub unmatched: u64,
}

impl MemoryDiff {
    /// No page changed that should not have.
    pub fn clean(&self) -> bool {
        self.unexpected.is_empty() && self.unmatched == 0
    }
}

fn page_span(r: &PhysRange) -> std::ops::Range<u64> {
    let start = r.gpa / PAGE * PAGE;
    let end = (r.gpa + r.len).div_ceil(PAGE) * PAGE;
    start..end
}

/// Hashes every page overlapping `ranges`.
pub fn hash_pages(mem: &GuestMemory, ranges: &[PhysRange]) -> Result<PageHashes, GuestMemoryError> {
    let mut out = PageHashes::default();
    let mut buf = vec![0u8; (BATCH_PAGES * PAGE) as usize];
    for r in ranges {
        let span = page_span(r);
        let mut gpa = span.start;
        while gpa < span.end {
            let n = ((span.end - gpa) / PAGE).min(BATCH_PAGES);
            let chunk = &mut buf[..(n * PAGE) as usize];
            mem.read(gpa, chunk)?;
            for (i, page) in chunk.chunks_exact(PAGE as usize).enumerate() {
                out.pages.insert(gpa + i as u64 * PAGE, xxh3_64(page));
            }
            gpa += n * PAGE;
        }
    }
    Ok(out)
}

impl PageHashes {
    /// Removes and returns the pages overlapping `ranges` (memory that stops
    /// being watched, e.g. a non-persistent engine's at a kexec).
    pub fn take(&mut self, ranges: &[PhysRange]) -> PageHashes {
        let mut out = PageHashes::default();
        for span in ranges.iter().map(page_span) {
            let keys: Vec<u64> = self.pages.range(span).map(|(k, _)| *k).collect();
            for k in keys {
                if let Some(h) = self.pages.remove(&k) {
                    out.pages.insert(k, h);
                }
            }
        }
        out
    }
}

impl MemoryDiff {
    /// Adds `other`'s findings (pages judged at another time) to these.
    pub fn merge(&mut self, other: MemoryDiff) {
        self.pages_checked += other.pages_checked;
        self.unexpected.extend(other.unexpected);
        self.allowed_changed += other.allowed_changed;
        self.unmatched += other.unmatched;
    }
}

/// Compares two hash sets; `allowed` are the device-writable ranges.
pub fn diff(before: &PageHashes, after: &PageHashes, allowed: &[PhysRange]) -> MemoryDiff {
    let spans: Vec<_> = allowed.iter().map(page_span).collect();
    let is_allowed = |gpa: u64| spans.iter().any(|s| s.contains(&gpa));
    let mut d = MemoryDiff::default();
    for (gpa, h) in &before.pages {
        let Some(h2) = after.pages.get(gpa) else {
            d.unmatched += 1;
            continue;
        };
        d.pages_checked += 1;
        if h != h2 {
            if is_allowed(*gpa) {
                d.allowed_changed += 1;
            } else {
                d.unexpected.push(*gpa);
            }
        }
    }
    d.unmatched += after.pages.keys().filter(|g| !before.pages.contains_key(g)).count() as u64;
    d
}


/// The memory oracle behind the [`Oracle`](super::registry::Oracle) trait:
/// report.json `memory`. Pages that changed outside the device-writable
/// ranges (a canary, a page no device maps) are `memory.changed`.
#[derive(Debug)]
pub struct MemoryOracle;

impl super::registry::Oracle for MemoryOracle {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn report_field(&self) -> bool {
        true
    }

    fn judge(&self, obs: &super::registry::Observations) -> anyhow::Result<super::registry::Judged> {
        let Some(p) = obs.pages else {
            return Ok(super::registry::Judged { section: serde_json::to_value(crate::report::MemorySection::default())?, findings: Vec::new(), files: Vec::new() });
        };
        let mut d = diff(&p.before, &p.after, &p.allowed);
        d.merge(p.retired.clone());
        let mut findings = Vec::new();
        if !d.unexpected.is_empty() {
            let first: Vec<String> = d.unexpected.iter().take(4).map(|p| format!("{p:#x}")).collect();
            findings.push(crate::report::Finding::new(crate::report::Reason::MemoryChanged, format!(
                "{} of {} agent pages changed although no device may write them (first at {})",
                d.unexpected.len(),
                d.pages_checked,
                first.join(", ")
            )));
        }
        let section = crate::report::MemorySection {
            pages_checked: d.pages_checked,
            unexpected_changes: d.unexpected.len() as u64,
            dma_pages_changed: d.allowed_changed,
            first_unexpected: d.unexpected.iter().take(8).map(|p| format!("{p:#x}")).collect(),
            // Filled from the CPU-write oracle (`cpu_writes`) by the runner.
            cpu_writes_outside_allowed: None,
        };
        Ok(super::registry::Judged { section: serde_json::to_value(section)?, findings, files: Vec::new() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> (tempfile::NamedTempFile, GuestMemory) {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(1 << 20).unwrap();
        let m = GuestMemory::open(f.path(), 1 << 20).unwrap();
        (f, m)
    }

    #[test]
    fn ranges_widen_to_pages() {
        assert_eq!(page_span(&PhysRange { gpa: 0x1ff0, len: 0x20 }), 0x1000..0x3000);
        assert_eq!(page_span(&PhysRange { gpa: 0x2000, len: 0x1000 }), 0x2000..0x3000);
    }

    #[test]
    fn reports_exactly_the_changed_forbidden_page() {
        let (_f, mut m) = mem();
        let all = [PhysRange { gpa: 0x10000, len: 0x40000 }];
        let dma = [PhysRange { gpa: 0x20000, len: 0x8000 }];
        let before = hash_pages(&m, &all).unwrap();
        assert_eq!(before.pages.len(), 64);
        m.write(0x21234, &[1, 2, 3]).unwrap(); // device-writable
        m.write(0x3f000, &[9]).unwrap(); // forbidden
        let after = hash_pages(&m, &all).unwrap();
        let d = diff(&before, &after, &dma);
        assert_eq!(d.unexpected, vec![0x3f000]);
        assert_eq!((d.allowed_changed, d.pages_checked, d.unmatched), (1, 64, 0));
        assert!(!d.clean());
        assert!(diff(&before, &before, &[]).clean());
    }

    #[test]
    fn retired_pages_are_judged_apart_and_merged() {
        let (_f, mut m) = mem();
        let kept = PhysRange { gpa: 0x10000, len: 0x2000 };
        let retired = [PhysRange { gpa: 0x20000, len: 0x1000 }, PhysRange { gpa: 0x30800, len: 0x10 }];
        let mut before = hash_pages(&m, &[kept, retired[0], retired[1]]).unwrap();
        let old = before.take(&retired);
        assert_eq!((old.pages.len(), before.pages.len()), (2, 2));
        assert!(old.pages.contains_key(&0x30000) && !before.pages.contains_key(&0x20000));
        m.write(0x30800, &[7]).unwrap(); // a retired, forbidden page changed before it was retired
        let mut d = diff(&old, &hash_pages(&m, &retired).unwrap(), &retired[..1]);
        m.write(0x20000, &[7]).unwrap(); // retired: no longer watched
        d.merge(diff(&before, &hash_pages(&m, &[kept]).unwrap(), &[]));
        assert_eq!((d.pages_checked, d.unexpected.clone(), d.unmatched), (4, vec![0x30000], 0));
    }

    #[test]
    fn differing_range_sets_are_flagged() {
        let (_f, m) = mem();
        let a = hash_pages(&m, &[PhysRange { gpa: 0, len: 0x2000 }]).unwrap();
        let b = hash_pages(&m, &[PhysRange { gpa: 0x1000, len: 0x2000 }]).unwrap();
        assert_eq!(diff(&a, &b, &[]).unmatched, 2);
    }
}
