//! The KUnit oracle: our kernel runs its in-kernel KUnit tests (pkernfs,
//! the VT-d persistence helpers) at every boot and prints KTAP; every boot
//! of the run prints them again, and all must pass. report.json `kunit`
//! {passed, failed, skipped} (null when no kernel printed KTAP, e.g. the
//! stock kernel); a failure, or KTAP that stops mid-way, is `kunit.failed`.

use super::registry::{Judged, Observations, Oracle};
use crate::ktap::{Counts, Ktap};
use crate::report::{Finding, Reason};

/// The oracle.
#[derive(Debug)]
pub struct KunitOracle;

impl Oracle for KunitOracle {
    fn name(&self) -> &'static str {
        "kunit"
    }

    fn report_field(&self) -> bool {
        true
    }

    fn judge(&self, obs: &Observations) -> anyhow::Result<Judged> {
        let (counts, findings) = judge(obs.log.ktap());
        Ok(Judged { section: serde_json::to_value(counts)?, findings, files: Vec::new() })
    }
}

/// The counts in `console`'s KTAP (None: no KTAP at all) and the findings.
pub fn judge(console: &str) -> (Option<Counts>, Vec<Finding>) {
    let ktap = Ktap::parse(console);
    let counts = ktap.counts();
    if counts == Counts::default() && !ktap.complete() {
        return (None, Vec::new());
    }
    let mut found = Vec::new();
    if counts.failed > 0 {
        found.push(Finding::new(Reason::KunitFailed, format!("{} KUnit tests failed: {}", counts.failed, ktap.failed().join(", "))));
    }
    if !ktap.complete() {
        found.push(Finding::new(Reason::KunitFailed, "KTAP output is incomplete (the kernel stopped mid-test?)"));
    }
    (Some(counts), found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_ktap_is_no_section_and_a_failure_or_a_cut_is_a_finding() {
        assert_eq!(judge("[ 0.0] Linux version 6.12\n"), (None, Vec::new()));
        let ok = "[ 1.0] KTAP version 1\n[ 1.0] 1..1\n[ 1.1] ok 1 pkernfs_format\n";
        let (c, f) = judge(ok);
        assert_eq!((c.map(|c| c.passed), f.len()), (Some(1), 0));
        let failed = "[ 1.0] KTAP version 1\n[ 1.0] 1..2\n[ 1.1] ok 1 a\n[ 1.2] not ok 2 b\n";
        let (_, f) = judge(failed);
        assert_eq!(f.iter().map(|f| f.reason).collect::<Vec<_>>(), [Reason::KunitFailed]);
        assert!(f[0].detail.contains("1 KUnit tests failed"), "{}", f[0].detail);
        let cut = "[ 1.0] KTAP version 1\n[ 1.0] 1..2\n[ 1.1] ok 1 a\n";
        let (_, f) = judge(cut);
        assert!(f.iter().any(|f| f.detail.contains("incomplete")), "{f:#?}");
    }
}
