//! The kernel-log oracle: kernel warnings, BUGs, oopses, sanitizer reports,
//! lockdep splats, RCU stalls and hung tasks in a host's console logs, each
//! a `kernel.warning` finding with its first lines quoted; a panic is a
//! `kernel.panic` finding. Every kernel of
//! the run (the first boot and each kexec) prints into the same logs.

use serde::{Deserialize, Serialize};

use crate::console::KernelLog;
use crate::oracle::registry::{Judged, Observations, Oracle};
use crate::report::{Finding, Reason};

/// What kind of report the kernel printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplatKind {
    /// `WARNING: CPU: … at file:line` (WARN_ON and friends).
    Warning,
    /// `BUG: …` (not a sanitizer's).
    Bug,
    /// `Oops: …`.
    Oops,
    /// `BUG: KASAN: …`.
    Kasan,
    /// `UBSAN: …`.
    Ubsan,
    /// lockdep: circular/recursive locking, inconsistent lock state, …
    Lockdep,
    /// RCU CPU stall.
    RcuStall,
    /// `INFO: task … blocked for more than N seconds`.
    HungTask,
    /// `Kernel panic - not syncing: …`: the kernel stopped.
    Panic,
}

impl SplatKind {
    /// The finding's reason: a panic is `kernel.panic`, the rest `kernel.warning`.
    pub fn reason(self) -> Reason {
        match self {
            SplatKind::Panic => Reason::KernelPanic,
            _ => Reason::KernelWarning,
        }
    }
}

/// One report, where it starts and its first lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Splat {
    /// Its kind.
    pub kind: SplatKind,
    /// 1-based line in the log where it starts.
    pub line: usize,
    /// That line and the next few, printk timestamps removed.
    pub quote: Vec<String>,
}

/// Lines quoted per splat.
const QUOTE: usize = 5;

const LOCKDEP: &[&str] = &[
    "possible circular locking dependency detected",
    "possible recursive locking detected",
    "inconsistent lock state",
    "possible irq lock inversion dependency detected",
    "suspicious RCU usage",
    "bad unlock balance detected",
    "held lock freed",
    "lock held when returning to user space",
];

/// The message of a console line without its printk timestamp.
fn message(line: &str) -> &str {
    let l = line.trim_start();
    match l.strip_prefix('[').and_then(|r| r.split_once(']')) {
        Some((ts, rest)) if ts.trim().chars().all(|c| c.is_ascii_digit() || c == '.') => rest.trim_start(),
        _ => l,
    }
}

/// The WARN banner of newer kernels (7.x): `WARNING: <file>:<line> at
/// <function>+<off>, CPU#<n>: <comm>/<pid>`.
fn is_file_line_warning(msg: &str) -> bool {
    let Some(rest) = msg.strip_prefix("WARNING: ") else { return false };
    let Some((place, after)) = rest.split_once(' ') else { return false };
    let Some((file, line)) = place.rsplit_once(':') else { return false };
    !file.is_empty() && !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit()) && after.starts_with("at ")
}

fn kind_of(msg: &str) -> Option<SplatKind> {
    if msg.starts_with("Kernel panic - not syncing") {
        return Some(SplatKind::Panic);
    }
    if LOCKDEP.iter().any(|p| msg.contains(p)) {
        return Some(SplatKind::Lockdep);
    }
    if msg.starts_with("BUG: KASAN:") {
        return Some(SplatKind::Kasan);
    }
    if msg.starts_with("UBSAN:") {
        return Some(SplatKind::Ubsan);
    }
    if msg.starts_with("WARNING: CPU:") || msg.starts_with("WARNING: at ") || is_file_line_warning(msg) {
        return Some(SplatKind::Warning);
    }
    if msg.starts_with("BUG: ") {
        return Some(SplatKind::Bug);
    }
    if msg.starts_with("Oops: ") || msg.starts_with("Oops[") {
        return Some(SplatKind::Oops);
    }
    if (msg.contains("rcu") || msg.contains("RCU")) && (msg.contains("self-detected stall") || msg.contains("detected stalls")) {
        return Some(SplatKind::RcuStall);
    }
    if msg.starts_with("INFO: task ") && msg.contains(" blocked for more than ") {
        return Some(SplatKind::HungTask);
    }
    None
}

/// Every splat in `log`, in order. A splat's own follow-up lines (the call
/// trace, a lockdep report's "WARNING:" banner line) do not start another.
pub fn scan(log: &str) -> Vec<Splat> {
    let lines: Vec<&str> = log.lines().collect();
    let mut out: Vec<Splat> = Vec::new();
    let mut quiet_until = 0;
    for (i, l) in lines.iter().enumerate() {
        let Some(kind) = kind_of(message(l)) else { continue };
        if i < quiet_until {
            // lockdep prints "WARNING: possible circular …": one splat.
            if let Some(last) = out.last_mut().filter(|s| s.kind == SplatKind::Warning && kind == SplatKind::Lockdep) {
                last.kind = SplatKind::Lockdep;
            }
            continue;
        }
        let quote = lines[i..lines.len().min(i + QUOTE)].iter().map(|l| message(l).to_string()).collect();
        out.push(Splat { kind, line: i + 1, quote });
        quiet_until = i + 2;
    }
    out
}

/// The oracle: report.json `kernel_splats` (every [`Splat`]), one
/// `kernel.warning` (a panic: `kernel.panic`) finding each.
#[derive(Debug)]
pub struct KernelLogOracle;

impl Oracle for KernelLogOracle {
    fn name(&self) -> &'static str {
        "kernel_splats"
    }

    fn judge(&self, obs: &Observations) -> anyhow::Result<Judged> {
        let (splats, findings) = judge(obs.log);
        Ok(Judged { section: serde_json::to_value(splats)?, findings, files: Vec::new() })
    }

    fn markdown(&self, section: &serde_json::Value) -> Option<String> {
        let splats: Vec<Splat> = serde_json::from_value(section.clone()).ok()?;
        if splats.is_empty() {
            return None;
        }
        let mut s = String::from("## Kernel log\n\n");
        for sp in splats {
            s += &format!("- {:?} at console line {}:\n\n```\n{}\n```\n", sp.kind, sp.line, sp.quote.join("\n"));
        }
        Some(s)
    }
}

/// The splats in a run's logs (the copy that holds more of them) and one
/// finding each.
pub fn judge(log: &KernelLog) -> (Vec<Splat>, Vec<Finding>) {
    let splats = scan(log.fuller(|c| scan(c).len()));
    let found = splats
        .iter()
        .map(|s| {
            let first = s.quote.first().map(String::as_str).unwrap_or("");
            Finding::new(s.kind.reason(), format!("the kernel printed a {:?} report (console line {}): {first}", s.kind, s.line))
        })
        .collect();
    (splats, found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WARN: &str = "[   12.345678] lulab: switching domains\n\
[   12.400001] ------------[ cut here ]------------\n\
[   12.400002] WARNING: CPU: 0 PID: 91 at drivers/iommu/intel/lulab_persist.c:120 lu_switch+0x4a/0x90\n\
[   12.400003] Modules linked in: vfio_pci\n\
[   12.400004] CPU: 0 UID: 0 PID: 91 Comm: lulab-agent Not tainted 7.3.4-lulab #1\n\
[   12.400005] RIP: 0010:lu_switch+0x4a/0x90\n\
[   12.400006] Call Trace:\n\
[   12.400007] ---[ end trace 0000000000000000 ]---\n";

    #[test]
    fn a_splat_in_either_log_is_a_kernel_warning_finding_and_a_clean_log_none() {
        let dir = tempfile::tempdir().unwrap();
        let paths = crate::qemu::params::RunPaths::new(dir.path());
        std::fs::write(paths.console_log(), "[    0.000000] Linux version 7.3.4-lulab\n").unwrap();
        let (splats, found) = judge(&KernelLog::of_run(dir.path()));
        assert!(splats.is_empty() && found.is_empty());
        std::fs::write(paths.kernel_log(), WARN).unwrap();
        let (splats, found) = judge(&KernelLog::of_run(dir.path()));
        assert_eq!(splats.len(), 1);
        assert_eq!(found[0].reason, Reason::KernelWarning);
        assert!(found[0].detail.contains("Warning report (console line 3): WARNING: CPU: 0 PID: 91"), "{}", found[0].detail);
    }

    #[test]
    fn a_warn_is_one_splat_quoted_without_timestamps() {
        let s = scan(WARN);
        assert_eq!(s.len(), 1, "{s:#?}");
        assert_eq!((s[0].kind, s[0].line), (SplatKind::Warning, 3));
        assert!(s[0].quote[0].starts_with("WARNING: CPU: 0 PID: 91 at drivers/iommu/intel/lulab_persist.c:120"));
        assert_eq!(s[0].quote.len(), QUOTE);
    }

    #[test]
    fn lockdep_banner_and_report_are_one_lockdep_splat() {
        let log = "[ 3.1] ======================================================\n\
[ 3.2] WARNING: possible circular locking dependency detected\n\
[ 3.3] 7.3.4-lulab #1 Not tainted\n";
        let s = scan(log);
        assert_eq!(s.len(), 1, "{s:#?}");
        assert_eq!(s[0].kind, SplatKind::Lockdep);
    }

    #[test]
    fn each_kind_is_recognised() {
        let cases = [
            ("BUG: kernel NULL pointer dereference, address: 0000000000000008", SplatKind::Bug),
            ("BUG: KASAN: slab-out-of-bounds in pkernfs_read+0x1c/0x80", SplatKind::Kasan),
            ("UBSAN: array-index-out-of-bounds in fs/pkernfs/inode.c:42:7", SplatKind::Ubsan),
            ("Oops: general protection fault, probably for non-canonical address 0xdead: 0000 [#1] SMP", SplatKind::Oops),
            ("rcu: INFO: rcu_preempt self-detected stall on CPU", SplatKind::RcuStall),
            ("INFO: task kworker/0:1:12 blocked for more than 122 seconds.", SplatKind::HungTask),
            ("inconsistent lock state", SplatKind::Lockdep),
            ("Kernel panic - not syncing: lulab: dmar0: lulab_vtd_adopt=panic: test panic before adopting the tables", SplatKind::Panic),
        ];
        for (line, kind) in cases {
            let s = scan(&format!("[    1.000000] {line}\n"));
            assert_eq!(s.iter().map(|s| s.kind).collect::<Vec<_>>(), [kind], "{line}");
        }
    }

    #[test]
    fn the_warn_banner_of_7x_kernels_is_a_warning() {
        // As our kernel prints it (lulab_vtd_adopt=warn, the oracle's negative control).
        let log = "[    2.397748] lulab: dmar0: lulab_vtd_adopt=warn: test warning while adopting the tables\n\
[    2.397942] WARNING: drivers/iommu/intel/persist.c:246 at intel_lu_adopt_in_place+0x4d/0x70, CPU#0: swapper/0/1\n\
[    2.398001] Modules linked in:\n";
        let s = scan(log);
        assert_eq!(s.iter().map(|s| (s.kind, s.line)).collect::<Vec<_>>(), [(SplatKind::Warning, 2)], "{s:#?}");
        for not in ["WARNING: this is a message", "WARNING: a:b at c", "WARNING: file.c:12x at f"] {
            assert!(scan(&format!("[ 1.0] {not}\n")).is_empty(), "{not}");
        }
    }

    #[test]
    fn a_panic_after_a_warning_is_its_own_splat_with_its_own_reason() {
        let log = format!("{WARN}[ 13.0] Kernel panic - not syncing: lulab: dmar0: test panic\n[ 13.1] ---[ end Kernel panic - not syncing: lulab ]---\n");
        let s = scan(&log);
        assert_eq!(s.iter().map(|s| s.kind).collect::<Vec<_>>(), [SplatKind::Warning, SplatKind::Panic], "{s:#?}");
        assert_eq!(s[1].kind.reason(), Reason::KernelPanic);
        assert_eq!(s[0].kind.reason(), Reason::KernelWarning);
    }

    #[test]
    fn ordinary_lines_are_not_splats() {
        let log = "[ 1.0] workqueue: work func 0xffffffff96628554 enqueued on deprecated workqueue. Use system_{percpu|dfl}_wq instead.\n\
[ 1.1] DMAR: DRHD: handling fault status reg 2\n\
[ 1.2] lulab-agent: kexec now\n\
[ 1.3] Warning: unable to open an initial console.\n\
[ 1.4]     # Subtest: rust_spinlock_irq_condvar\n";
        assert!(scan(log).is_empty(), "{:#?}", scan(log));
    }

    #[test]
    fn two_warnings_far_apart_are_two_splats() {
        let log = format!("{WARN}[ 20.0] more\n{WARN}");
        assert_eq!(scan(&log).len(), 2);
    }
}
