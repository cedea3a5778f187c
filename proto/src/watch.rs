//! The CPU-write watcher's two files, shared by the TCG plugin
//! (`lulab-watcher`, which reads the ranges and writes the records) and the
//! harness (which writes the ranges and judges the records).
//!
//! - **Ranges** (`watch-ranges`): one guest-physical range per line,
//!   `<start> <end>` in hex, end exclusive; `#` starts a comment.
//! - **Records** (`watch.log`): one line per run of stores, see [`Record`];
//!   the plugin's closing line is a [`Trailer`].

use std::fmt;
use std::io::Write;

/// The host's CLOCK_MONOTONIC in ns: what the plugin stamps records with,
/// less the harness clock's zero (see the plugin's `base=`).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

/// Guest-physical ranges, sorted and merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    /// Sorted, merged ranges from `[start, end)` pairs (empty ones dropped).
    pub fn new(mut v: Vec<(u64, u64)>) -> Self {
        v.retain(|(s, e)| s < e);
        v.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
        for (s, e) in v {
            match out.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => out.push((s, e)),
            }
        }
        Self(out)
    }

    /// The ranges.
    pub fn as_slice(&self) -> &[(u64, u64)] {
        &self.0
    }

    /// True when `[addr, addr + len)` overlaps a range.
    pub fn hits(&self, addr: u64, len: u64) -> bool {
        let end = addr.saturating_add(len.max(1));
        // The first range ending after addr is the only candidate.
        let i = self.0.partition_point(|&(_, e)| e <= addr);
        self.0.get(i).is_some_and(|&(s, _)| s < end)
    }

    /// The ranges minus `[start, end)`.
    pub fn without(&self, start: u64, end: u64) -> Self {
        let mut v = Vec::with_capacity(self.0.len() + 1);
        for &(s, e) in &self.0 {
            if e <= start || s >= end {
                v.push((s, e));
                continue;
            }
            if s < start {
                v.push((s, start));
            }
            if e > end {
                v.push((end, e));
            }
        }
        Self(v)
    }

    /// Parses the ranges file; errors name the line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut v = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut it = line.split_whitespace();
            let (Some(s), Some(e), None) = (it.next(), it.next(), it.next()) else {
                return Err(format!("line {}: expected `<start> <end>` in hex, got {line:?}", i + 1));
            };
            let (s, e) = (hex(s).map_err(|m| format!("line {}: start: {m}", i + 1))?, hex(e).map_err(|m| format!("line {}: end: {m}", i + 1))?);
            if s >= e {
                return Err(format!("line {}: start {s:#x} is not below end {e:#x}", i + 1));
            }
            v.push((s, e));
        }
        Ok(Self::new(v))
    }
}

impl fmt::Display for Ranges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (s, e) in &self.0 {
            writeln!(f, "{s:#x} {e:#x}")?;
        }
        Ok(())
    }
}

fn hex(s: &str) -> Result<u64, String> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|e| format!("{s:?} is not a hex number ({e})"))
}

/// Who stored, as the store's virtual address tells: Linux maps the kernel
/// in the upper half and processes in the lower. (Identity-mapped code,
/// purgatory and the decompressor, shows as `User`; it only runs during a
/// kexec, where the harness counts every store as an offender anyway.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A lower-half address.
    User,
    /// An upper-half address.
    Kernel,
}

impl Mode {
    /// The mode of a store to `vaddr`.
    pub fn of(vaddr: u64) -> Self {
        if vaddr >> 63 == 1 {
            Self::Kernel
        } else {
            Self::User
        }
    }
}

/// A run of `count` stores by one instruction (`pc`) of one vCPU into one
/// 4 KiB page, the first at `paddr` at `ns`.
///
/// Line: `<ns> <vcpu> <pc> <vaddr> <paddr> <size> <count> <u|k>`, addresses in
/// hex. `ns` is the host's CLOCK_MONOTONIC (the harness aligns it to its own
/// clock), `size` the first store's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// When the first store ran (host CLOCK_MONOTONIC, ns).
    pub ns: u64,
    /// The vCPU.
    pub vcpu: u32,
    /// The storing instruction's guest virtual address.
    pub pc: u64,
    /// The first store's guest virtual address.
    pub vaddr: u64,
    /// The first store's guest physical address.
    pub paddr: u64,
    /// The first store's size in bytes.
    pub size: u32,
    /// Stores in the run.
    pub count: u64,
    /// User or kernel (from `vaddr`).
    pub mode: Mode,
}

impl Record {
    /// The 4 KiB page of `paddr`.
    pub fn page(&self) -> u64 {
        self.paddr >> 12
    }

    /// Parses one line (not the trailer).
    pub fn parse(line: &str) -> Result<Self, String> {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [ns, vcpu, pc, vaddr, paddr, size, count, mode] = f[..] else {
            return Err(format!("expected 8 fields, got {}", f.len()));
        };
        let num = |name: &str, s: &str| s.parse::<u64>().map_err(|e| format!("{name}: {s:?}: {e}"));
        let mode = match mode {
            "u" => Mode::User,
            "k" => Mode::Kernel,
            m => return Err(format!("mode: {m:?} is neither u nor k")),
        };
        Ok(Self {
            ns: num("ns", ns)?,
            vcpu: u32::try_from(num("vcpu", vcpu)?).map_err(|e| format!("vcpu: {e}"))?,
            pc: hex(pc).map_err(|m| format!("pc: {m}"))?,
            vaddr: hex(vaddr).map_err(|m| format!("vaddr: {m}"))?,
            paddr: hex(paddr).map_err(|m| format!("paddr: {m}"))?,
            size: u32::try_from(num("size", size)?).map_err(|e| format!("size: {e}"))?,
            count: num("count", count)?,
            mode,
        })
    }
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = match self.mode {
            Mode::User => 'u',
            Mode::Kernel => 'k',
        };
        write!(
            f,
            "{} {} {:#x} {:#x} {:#x} {} {} {m}",
            self.ns, self.vcpu, self.pc, self.vaddr, self.paddr, self.size, self.count
        )
    }
}

/// The plugin's closing line: `# end records=<n> stores=<n> dropped=<n>`.
/// `dropped` counts stores not written because the record limit was hit.
/// A log without it was cut short (QEMU killed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trailer {
    /// Record lines written.
    pub records: u64,
    /// Stores into the ranges seen.
    pub stores: u64,
    /// Stores seen after the record limit.
    pub dropped: u64,
}

impl Trailer {
    const PREFIX: &'static str = "# end ";

    /// Parses a trailer line; `None` for any other line.
    pub fn parse(line: &str) -> Option<Self> {
        let rest = line.strip_prefix(Self::PREFIX)?;
        let mut t = Self::default();
        for kv in rest.split_whitespace() {
            let (k, v) = kv.split_once('=')?;
            let v = v.parse().ok()?;
            match k {
                "records" => t.records = v,
                "stores" => t.stores = v,
                "dropped" => t.dropped = v,
                _ => return None,
            }
        }
        Some(t)
    }
}

impl fmt::Display for Trailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}records={} stores={} dropped={}", Self::PREFIX, self.records, self.stores, self.dropped)
    }
}

/// Stores of one instruction into one page further apart than this (ns)
/// start a new record.
pub const RUN_GAP_NS: u64 = 1_000_000;
/// Runs kept open per vCPU (the oldest is written out first).
pub const OPEN_RUNS: usize = 8;

struct Run {
    rec: Record,
    last_ns: u64,
}

/// What the plugin does with each store into the watched ranges: stores
/// of one instruction into one page less than [`RUN_GAP_NS`] apart make one
/// record (a `memset` of a page is one line, not 512); at most `max`
/// records are written, later stores only counted.
pub struct Recorder<W: Write> {
    out: W,
    open: Vec<Vec<Run>>,
    trailer: Trailer,
    max: u64,
}

impl<W: Write> fmt::Debug for Recorder<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder").field("trailer", &self.trailer).field("max", &self.max).finish()
    }
}

impl<W: Write> Recorder<W> {
    /// A recorder writing to `out`, at most `max` records.
    pub fn new(out: W, max: u64) -> Self {
        Self { out, open: Vec::new(), trailer: Trailer::default(), max }
    }

    /// One store at `ns`.
    #[allow(clippy::too_many_arguments)]
    pub fn store(&mut self, ns: u64, vcpu: u32, pc: u64, vaddr: u64, paddr: u64, size: u32) {
        self.trailer.stores += 1;
        let idx = vcpu as usize;
        if self.open.len() <= idx {
            self.open.resize_with(idx + 1, Vec::new);
        }
        let runs = &mut self.open[idx];
        if let Some(run) =
            runs.iter_mut().find(|r| r.rec.pc == pc && r.rec.page() == paddr >> 12 && ns.saturating_sub(r.last_ns) < RUN_GAP_NS)
        {
            run.rec.count += 1;
            run.last_ns = ns;
            return;
        }
        if runs.len() == OPEN_RUNS {
            let old = runs.remove(0);
            self.emit(old.rec);
        }
        let rec = Record { ns, vcpu, pc, vaddr, paddr, size, count: 1, mode: Mode::of(vaddr) };
        self.open[idx].push(Run { rec, last_ns: ns });
    }

    fn emit(&mut self, rec: Record) {
        if self.trailer.records >= self.max {
            self.trailer.dropped += rec.count;
            return;
        }
        self.trailer.records += 1;
        // A full disk loses records, never the guest: the trailer still says how many.
        let _ = writeln!(self.out, "{rec}");
    }

    /// Writes the open runs and the trailer, and flushes.
    pub fn close(&mut self) -> Trailer {
        let open: Vec<Run> = self.open.iter_mut().flat_map(std::mem::take).collect();
        for run in open {
            self.emit(run.rec);
        }
        let trailer = self.trailer;
        let _ = writeln!(self.out, "{trailer}");
        let _ = self.out.flush();
        trailer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_hit_and_cut() {
        let r = Ranges::new(vec![(0x3000, 0x4000), (0x1000, 0x2000), (0x1800, 0x3000), (5, 5)]);
        assert_eq!(r.as_slice(), &[(0x1000, 0x4000)]);
        assert!(r.hits(0x1000, 8) && r.hits(0x3ff8, 8) && r.hits(0xff8, 16));
        assert!(!r.hits(0xff8, 8) && !r.hits(0x4000, 8));
        let cut = r.without(0x2000, 0x3000);
        assert_eq!(cut.as_slice(), &[(0x1000, 0x2000), (0x3000, 0x4000)]);
        assert!(!cut.hits(0x2800, 4));
        assert_eq!(Ranges::parse(&cut.to_string()).unwrap(), cut);
    }

    #[test]
    fn bad_ranges_name_their_line() {
        let e = Ranges::parse("# carve-out\n0x1000 0x2000\n0x3000\n").unwrap_err();
        assert!(e.starts_with("line 3:"), "{e}");
        let e = Ranges::parse("0x2000 0x1000").unwrap_err();
        assert!(e.contains("not below"), "{e}");
        let e = Ranges::parse("0x1000 zz").unwrap_err();
        assert!(e.contains("line 1: end"), "{e}");
    }

    #[test]
    fn records_and_trailer_round_trip() {
        let r = Record {
            ns: 12,
            vcpu: 1,
            pc: 0xffff_ffff_8100_0000,
            vaddr: 0xffff_8880_4000_0010,
            paddr: 0x4000_0010,
            size: 8,
            count: 512,
            mode: Mode::of(0xffff_8880_4000_0010),
        };
        assert_eq!(r.mode, Mode::Kernel);
        assert_eq!(Record::parse(&r.to_string()).unwrap(), r);
        assert_eq!(r.page(), 0x40000);
        assert!(Record::parse("1 2 3").unwrap_err().contains("8 fields"));
        assert!(Record::parse("1 0 0x1 0x1 0x1 8 1 x").unwrap_err().contains("mode"));
        let t = Trailer { records: 3, stores: 700, dropped: 0 };
        assert_eq!(Trailer::parse(&t.to_string()), Some(t));
        assert_eq!(Trailer::parse(&r.to_string()), None);
    }

    #[test]
    fn runs_of_one_instruction_in_one_page_make_one_record_and_the_limit_only_counts() {
        let mut out = Vec::new();
        let mut r = Recorder::new(&mut out, 3);
        // A memset of one page: 512 stores, one record.
        for i in 0..512u64 {
            r.store(1000 + i, 0, 0xffff_ffff_8100_0010, 0xffff_8880_4000_0000 + i * 8, 0x4000_0000 + i * 8, 8);
        }
        // Two instructions alternating (a descriptor refill) stay two runs.
        for i in 0..4u64 {
            r.store(2000 + i, 0, 0x40_1000 + (i % 2), 0x7f00_0000_0000, 0x4010_0000, 8);
        }
        // Long after: a new record, past the limit of 3: counted only.
        r.store(10_000_000, 0, 0xffff_ffff_8100_0010, 0xffff_8880_4000_0000, 0x4000_0000, 8);
        let t = r.close();
        assert_eq!(t, Trailer { records: 3, stores: 517, dropped: 1 });
        let text = String::from_utf8(out).unwrap();
        let recs: Vec<Record> = text.lines().filter_map(|l| Record::parse(l).ok()).collect();
        assert_eq!(recs.len(), 3);
        assert_eq!((recs[0].count, recs[0].paddr, recs[0].mode), (512, 0x4000_0000, Mode::Kernel));
        assert_eq!(recs.iter().skip(1).map(|r| (r.count, r.mode)).collect::<Vec<_>>(), [(2, Mode::User), (2, Mode::User)]);
        assert_eq!(Trailer::parse(text.lines().last().unwrap()), Some(t));
    }

    #[test]
    fn vcpus_keep_their_own_runs() {
        let mut out = Vec::new();
        let mut r = Recorder::new(&mut out, 100);
        r.store(1, 0, 0x1000, 0x7f00_0000_0000, 0x5000, 4);
        r.store(2, 1, 0x1000, 0x7f00_0000_0000, 0x5004, 4);
        r.store(3, 0, 0x1000, 0x7f00_0000_0000, 0x5008, 4);
        assert_eq!(r.close().records, 2);
    }
}
