//! QEMU's trace log (`-trace events=FILE -D trace.log`, log backend) as data.
//!
//! The log backend writes one line per event, `NAME ARGS`, optionally
//! prefixed by `PID@SECONDS.MICROS:` (`-msg timestamp=on`, and older QEMUs
//! always), or by an ISO 8601 time and a space (newer QEMUs with
//! timestamps). Other lines (QEMU warnings) are ignored.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;

/// How many lines of each event are kept as examples.
pub const EXAMPLES_PER_EVENT: usize = 5;

/// One parsed trace line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceLine<'a> {
    /// Event name, e.g. `vtd_dmar_fault`.
    pub name: &'a str,
    /// The formatted arguments after the name.
    pub args: &'a str,
}

impl TraceLine<'_> {
    /// The number after the word `key` in the arguments (`vec 3`, `index
    /// 0x15`, `value: 0x1`): decimal, or hex with `0x`; `None` when absent.
    pub fn field(&self, key: &str) -> Option<u64> {
        let mut words = self.args.split_whitespace();
        words.position(|w| w == key)?;
        let tok = words.next()?.trim_end_matches(',');
        match tok.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).ok(),
            None => tok.parse().ok(),
        }
    }
}

fn is_event_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.contains('_')
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Parses one line of the log; `None` when it is not a trace event.
pub fn parse_line(line: &str) -> Option<TraceLine<'_>> {
    let line = line.trim_end();
    let mut rest = line;
    // At most two leading tokens can be prefix (ISO time) + event.
    for _ in 0..2 {
        let (tok, after) = rest.split_once(' ').unwrap_or((rest, ""));
        let name = tok.rsplit_once(':').map_or(tok, |(_, n)| n);
        if is_event_name(name) {
            return Some(TraceLine { name, args: after.trim_start() });
        }
        rest = after.trim_start();
    }
    None
}

/// Counts and example lines of every event in a log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceSummary {
    /// Event name → occurrences.
    pub counts: BTreeMap<String, u64>,
    /// Event name → first [`EXAMPLES_PER_EVENT`] lines, verbatim.
    pub examples: BTreeMap<String, Vec<String>>,
    /// `vtd_dmar_enable` values in order (translation on/off transitions).
    pub dmar_enable: Vec<bool>,
    /// Root table addresses given to the IOMMU (`vtd_reg_dmar_root`, one per
    /// SRTP), in order.
    pub dmar_root: Vec<u64>,
    /// Bus-master changes written to a device's PCI command register
    /// (`pci_cfg_write … @0x4 <- VAL`), as (device address, bus master on).
    pub bus_master: Vec<(String, bool)>,
}

impl TraceSummary {
    /// Summarises a whole log text.
    pub fn from_text(text: &str) -> Self {
        let mut s = Self::default();
        text.lines().for_each(|l| s.add_line(l));
        s
    }

    /// Summarises `path` from byte `offset` on (the log's size when the
    /// step of interest began), so counts belong to that step only. A
    /// missing file is an empty summary (tracing was off).
    pub fn from_file(path: &Path, offset: u64) -> std::io::Result<Self> {
        let mut f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e),
        };
        f.seek(SeekFrom::Start(offset))?;
        let mut s = Self::default();
        for line in BufReader::new(f).split(b'\n') {
            s.add_line(&String::from_utf8_lossy(&line?));
        }
        Ok(s)
    }

    /// Adds one line.
    pub fn add_line(&mut self, line: &str) {
        let Some(ev) = parse_line(line) else { return };
        *self.counts.entry(ev.name.to_string()).or_default() += 1;
        let ex = self.examples.entry(ev.name.to_string()).or_default();
        if ex.len() < EXAMPLES_PER_EVENT {
            ex.push(line.trim_end().to_string());
        }
        match ev.name {
            "vtd_dmar_enable" => {
                if let Some(v) = ev.args.split_whitespace().last() {
                    self.dmar_enable.push(v != "0");
                }
            }
            "vtd_reg_dmar_root" => {
                // `addr 0x40800000 scalable 0`
                if let Some(v) = ev.field("addr") {
                    self.dmar_root.push(v);
                }
            }
            "pci_cfg_write" => self.add_cfg_write(ev.args),
            _ => {}
        }
    }

    /// `pci_cfg_write` prints `NAME BB:DD.F @0xOFF <- 0xVAL`.
    fn add_cfg_write(&mut self, args: &str) {
        let words: Vec<&str> = args.split_whitespace().collect();
        let Some(at) = words.iter().position(|w| *w == "@0x4") else { return };
        let (Some(dev), Some(val)) = (at.checked_sub(1).map(|i| words[i]), words.get(at + 2)) else { return };
        if let Ok(v) = u32::from_str_radix(val.trim_start_matches("0x"), 16) {
            self.bus_master.push((dev.to_string(), v & 0x4 != 0));
        }
    }

    /// Times device `dev` (e.g. `00:02.0`) had bus mastering switched from
    /// on to off (a stock kexec's `pci_device_shutdown` does this).
    pub fn bus_master_cleared(&self, dev: &str) -> u64 {
        self.bus_master_cleared_from(dev, false)
    }

    /// [`TraceSummary::bus_master_cleared`] for a log excerpt that starts
    /// with bus mastering `initially_on` (e.g. cut after the agent enabled it).
    pub fn bus_master_cleared_from(&self, dev: &str, initially_on: bool) -> u64 {
        let mut on = initially_on;
        let mut cleared = 0;
        for (_, now) in self.bus_master.iter().filter(|(d, _)| d == dev) {
            if on && !now {
                cleared += 1;
            }
            on = *now;
        }
        cleared
    }

    /// Occurrences of one event.
    pub fn count(&self, name: &str) -> u64 {
        self.counts.get(name).copied().unwrap_or(0)
    }

    /// Occurrences of all events whose name starts with `prefix`.
    pub fn count_prefix(&self, prefix: &str) -> u64 {
        self.counts.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v).sum()
    }

    /// Example lines of the events whose names satisfy `pick`, at most `max`.
    pub fn examples_where(&self, pick: impl Fn(&str) -> bool, max: usize) -> Vec<String> {
        self.examples.iter().filter(|(k, _)| pick(k)).flat_map(|(_, v)| v.iter().cloned()).take(max).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_as_decimal_or_hex() {
        let l = parse_line("vtd_ir_irte_get index 21 low 0x10010 high 0x0002, value: 0x1f").unwrap();
        assert_eq!((l.field("index"), l.field("low"), l.field("value:")), (Some(21), Some(0x10010), Some(0x1f)));
        assert_eq!(l.field("high"), Some(2), "a trailing comma ends the number");
        assert_eq!(l.field("vector"), None);
        assert_eq!(l.field("ind"), None, "whole words only");
    }

    #[test]
    fn parses_every_prefix_style() {
        for l in [
            "vtd_dmar_enable enable 0",
            "12345@1700000000.123456:vtd_dmar_enable enable 0",
            "12345@10:11:12.123456:vtd_dmar_enable enable 0",
            "2025-06-01T10:11:12.123456Z vtd_dmar_enable enable 0",
        ] {
            assert_eq!(parse_line(l), Some(TraceLine { name: "vtd_dmar_enable", args: "enable 0" }), "{l}");
        }
        assert_eq!(parse_line("qemu-system-x86_64: warning: something"), None);
        assert_eq!(parse_line(""), None);
        assert_eq!(parse_line("e1000e_rx_can_recv_rings_full").unwrap().args, "");
    }

    #[test]
    fn summary_counts_and_transitions() {
        let log = "\
1@1.000001:vtd_dmar_enable enable 1
1@1.000002:e1000e_rx_written_to_guest Received packet written to guest (ICR causes 0)
1@1.000003:e1000e_rx_written_to_guest Received packet written to guest (ICR causes 0)
1@1.000004:pci_cfg_write e1000e 00:02.0 @0x4 <- 0x103
1@1.000005:vtd_dmar_enable enable 0
1@1.000006:vtd_reg_dmar_root addr 0x40800000 scalable 0
1@1.000007:vtd_reg_dmar_root addr zz scalable 0
garbage line
";
        let s = TraceSummary::from_text(log);
        assert_eq!(s.count("e1000e_rx_written_to_guest"), 2);
        assert_eq!(s.count_prefix("vtd_"), 4);
        assert_eq!(s.dmar_enable, vec![true, false]);
        assert_eq!(s.dmar_root, vec![0x4080_0000], "an unparsable address is not a root");
        assert_eq!(s.bus_master, vec![("00:02.0".to_string(), false)]);
        assert_eq!(s.bus_master_cleared("00:02.0"), 0, "never on, so never cleared");
        assert_eq!(s.examples["vtd_dmar_enable"].len(), 2);
    }

    #[test]
    fn bus_master_cleared_counts_on_to_off_per_device() {
        let s = TraceSummary::from_text(
            "pci_cfg_write e1000e 00:02.0 @0x4 <- 0x103\n\
             1234@1.5:pci_cfg_write e1000e 00:02.0 @0x4 <- 0x107\n\
             pci_cfg_write nvme 00:03.0 @0x4 <- 0x100\n\
             pci_cfg_write e1000e 00:02.0 @0x4 <- 0x100103\n\
             pci_cfg_write e1000e 00:02.0 @0x4 <- 0x100\n",
        );
        assert_eq!(s.bus_master_cleared("00:02.0"), 1);
        assert_eq!(s.bus_master_cleared("00:03.0"), 0);
        let excerpt = TraceSummary::from_text("pci_cfg_write e1000e 00:02.0 @0x4 <- 0x103\n");
        assert_eq!(excerpt.bus_master_cleared("00:02.0"), 0);
        assert_eq!(excerpt.bus_master_cleared_from("00:02.0", true), 1, "on when the excerpt starts");
    }

    #[test]
    fn from_file_starts_at_offset_and_tolerates_absence() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("trace.log");
        assert_eq!(TraceSummary::from_file(&p, 0).unwrap(), TraceSummary::default());
        let first = "vtd_dmar_enable enable 1\n";
        std::fs::write(&p, format!("{first}vtd_dmar_enable enable 0\n")).unwrap();
        let s = TraceSummary::from_file(&p, first.len() as u64).unwrap();
        assert_eq!(s.dmar_enable, vec![false]);
    }
}
