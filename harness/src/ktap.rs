//! KTAP parsing: the results KUnit (and kselftests) print, read from a
//! console log. Lines may carry a printk timestamp (`[    1.234567] `) and be
//! interleaved with other kernel messages; nesting is by indentation (four
//! spaces per level, as KUnit prints it). Only leaf tests are counted, so a
//! suite line (`ok 1 suite`) does not count again what its cases counted.

use serde::{Deserialize, Serialize};

/// What happened to one test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// `ok`.
    Passed,
    /// `not ok` (without a SKIP directive).
    Failed,
    /// `ok … # SKIP` (or `not ok … # SKIP`).
    Skipped,
}

/// One result line and the results nested under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestResult {
    /// Name after the test number.
    pub name: String,
    /// Outcome.
    pub status: Status,
    /// Text after `#` (e.g. `SKIP no IOMMU`), if any.
    pub directive: Option<String>,
    /// Subtests (cases of a suite, parameters of a case).
    pub children: Vec<TestResult>,
}

/// Counts of leaf tests, as reported in `report.json` under `kunit`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Leaf tests that passed.
    pub passed: usize,
    /// Leaf tests that failed.
    pub failed: usize,
    /// Leaf tests that were skipped.
    pub skipped: usize,
}

/// Everything parsed out of one console log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ktap {
    /// Whether a top-level `KTAP version` / `TAP version` line was seen.
    pub seen: bool,
    /// The top-level plan (`1..N`), if printed.
    pub plan: Option<usize>,
    /// Top-level results (for KUnit: the suites).
    pub tests: Vec<TestResult>,
}

/// Removes printk prefixes such as `[    1.234567] ` or `[    1.2][    T1] `.
/// A serial console under heavy TCG load sometimes repeats a character, so a
/// doubled bracket (`[[    1.2]] ok 1 …`) is tolerated too.
pub fn strip_prefix(line: &str) -> &str {
    let mut s = line.trim_end_matches(['\r', '\n']);
    while let Some(rest) = s.strip_prefix('[') {
        let rest = rest.trim_start_matches('[');
        match rest.find(']') {
            Some(end) if rest[..end].trim().chars().all(|c| c.is_ascii_alphanumeric() || c == '.') => {
                s = rest[end + 1..].trim_start_matches(']');
                s = s.strip_prefix(' ').unwrap_or(s);
            }
            _ => break,
        }
    }
    s
}

/// `ok 3 name # SKIP why` → (ok, name, directive). A space the serial
/// console doubled (`ok  1 suite`) does not lose the line.
fn parse_result(body: &str) -> Option<(bool, String, Option<String>)> {
    let (ok, rest) =
        if let Some(r) = body.strip_prefix("not ok ") { (false, r) } else { (true, body.strip_prefix("ok ")?) };
    let rest = rest.trim_start_matches(' ');
    let (num, after) = rest.split_once(' ').unwrap_or((rest, ""));
    num.parse::<u64>().ok()?;
    let (name, directive) = match after.split_once(" # ").or_else(|| after.strip_prefix("# ").map(|d| ("", d))) {
        Some((n, d)) => (n.trim(), Some(d.trim().to_string())),
        None => (after.trim(), None),
    };
    let name = name.strip_prefix("- ").unwrap_or(name).to_string();
    Some((ok, name, directive))
}

impl Ktap {
    /// Parses every KTAP result in `console`.
    pub fn parse(console: &str) -> Self {
        let mut out = Ktap::default();
        // stack[d] = results seen so far at depth d, not yet attached to a parent.
        let mut stack: Vec<Vec<TestResult>> = vec![Vec::new()];
        for raw in console.lines() {
            let line = strip_prefix(raw);
            let body = line.trim_start_matches(' ');
            let depth = (line.len() - body.len()) / 4;
            if body.starts_with("KTAP version") || body.starts_with("TAP version") {
                out.seen |= depth == 0;
                continue;
            }
            if depth == 0 && out.plan.is_none() {
                if let Some(n) = body.strip_prefix("1..").and_then(|n| n.trim().parse().ok()) {
                    out.plan = Some(n);
                    continue;
                }
            }
            let Some((ok, name, directive)) = parse_result(body) else { continue };
            while stack.len() < depth + 2 {
                stack.push(Vec::new());
            }
            // Everything collected deeper than this line belongs to it.
            let children: Vec<TestResult> = stack.drain(depth + 1..).flatten().collect();
            let skip = directive.as_deref().is_some_and(|d| d.to_ascii_uppercase().starts_with("SKIP"));
            let status = match (skip, ok) {
                (true, _) => Status::Skipped,
                (false, true) => Status::Passed,
                (false, false) => Status::Failed,
            };
            stack[depth].push(TestResult { name, status, directive, children });
        }
        // Results whose parent line never came (a crash mid-suite) stay visible.
        out.tests = stack.into_iter().flatten().collect();
        out
    }

    /// Leaf counts over all results.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for (_, s) in self.leaves() {
            match s {
                Status::Passed => c.passed += 1,
                Status::Failed => c.failed += 1,
                Status::Skipped => c.skipped += 1,
            }
        }
        c
    }

    /// Every leaf test as (`suite.case[.param]`, status), in order.
    pub fn leaves(&self) -> Vec<(String, Status)> {
        fn walk(t: &TestResult, prefix: &str, out: &mut Vec<(String, Status)>) {
            let name = if prefix.is_empty() { t.name.clone() } else { format!("{prefix}.{}", t.name) };
            if t.children.is_empty() {
                out.push((name, t.status));
            } else {
                for c in &t.children {
                    walk(c, &name, out);
                }
            }
        }
        let mut out = Vec::new();
        for t in &self.tests {
            walk(t, "", &mut out);
        }
        out
    }

    /// Names of the failed leaf tests.
    pub fn failed(&self) -> Vec<String> {
        self.leaves().into_iter().filter(|(_, s)| *s == Status::Failed).map(|(n, _)| n).collect()
    }

    /// True when the top-level plan was printed and every planned result arrived.
    pub fn complete(&self) -> bool {
        self.plan.is_some_and(|n| self.tests.len() >= n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSOLE: &str = "\
[    0.000000] Linux version 7.3.4-lulab
[    1.100000] KTAP version 1
[    1.100001] 1..2
[    1.100002]     KTAP version 1
[    1.100003]     # Subtest: pkernfs_layout
[    1.100004]     # module: pkernfs
[    1.100005]     1..3
[    1.100006]     ok 1 crc32_matches_the_standard_check_value
[    1.100007] random driver message: ok 9 not a test
[    1.100008]     # header_round_trips: ASSERTION FAILED at fs/pkernfs/pkernfs.rs:52
[    1.100009]     not ok 2 header_round_trips
[    1.100010]     ok 3 needs_iommu # SKIP no IOMMU in this machine
[    1.100011] # pkernfs_layout: pass:1 fail:1 skip:1 total:3
[    1.100012] not ok 1 pkernfs_layout
[    1.100013]     KTAP version 1
[    1.100014]     # Subtest: rust_kernel_kunit
[    1.100015]     1..2
[    1.100016]         KTAP version 1
[    1.100017]         # Subtest: param_case
[    1.100018]         ok 1 param-0
[    1.100019]         ok 2 param-1
[    1.100020]     ok 1 param_case
[    1.100021]     ok 2 rust_test_kunit_in_kunit_test
[    1.100022] ok 2 rust_kernel_kunit
[    1.200000] pkernfs: lulab pkernfs v0.1 loaded
";

    #[test]
    fn counts_leaves_of_nested_suites() {
        let k = Ktap::parse(CONSOLE);
        assert!(k.seen && k.complete());
        assert_eq!(k.plan, Some(2));
        assert_eq!(k.tests.len(), 2);
        assert_eq!(k.counts(), Counts { passed: 4, failed: 1, skipped: 1 });
        assert_eq!(k.failed(), ["pkernfs_layout.header_round_trips"]);
        let names: Vec<String> = k.leaves().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "pkernfs_layout.crc32_matches_the_standard_check_value",
                "pkernfs_layout.header_round_trips",
                "pkernfs_layout.needs_iommu",
                "rust_kernel_kunit.param_case.param-0",
                "rust_kernel_kunit.param_case.param-1",
                "rust_kernel_kunit.rust_test_kunit_in_kunit_test",
            ]
        );
        let skipped = &k.tests[0].children[2];
        assert_eq!(skipped.directive.as_deref(), Some("SKIP no IOMMU in this machine"));
    }

    #[test]
    fn without_timestamps_and_with_a_skipped_suite() {
        let text = "KTAP version 1\n1..1\nok 1 whole_suite # SKIP not on this arch\n";
        let k = Ktap::parse(text);
        assert_eq!(k.counts(), Counts { passed: 0, failed: 0, skipped: 1 });
        assert!(k.complete());
    }

    #[test]
    fn a_crash_mid_suite_leaves_an_incomplete_run() {
        let text = "[ 1.0] KTAP version 1\n[ 1.0] 1..2\n[ 1.1]     ok 1 a\n[ 1.2] Kernel panic - not syncing\n";
        let k = Ktap::parse(text);
        assert!(!k.complete());
        assert_eq!(k.counts().passed, 1);
        assert_eq!(Ktap::parse("no tests here\n"), Ktap::default());
    }

    #[test]
    fn strips_printk_prefixes_only() {
        assert_eq!(strip_prefix("[    1.234567]     ok 1 x"), "    ok 1 x");
        assert_eq!(strip_prefix("[    1.2][    T1] ok 1 x"), "ok 1 x");
        assert_eq!(strip_prefix("[not a stamp] ok"), "[not a stamp] ok");
    }

    #[test]
    fn a_doubled_space_keeps_the_suite_line() {
        let text = "[ 1.0] KTAP version 1\n[ 1.0] 1..1\n[ 1.1]     ok 1 a\n[ 1.2] ok  1 suite\n";
        let k = Ktap::parse(text);
        assert!(k.complete());
        assert_eq!(k.tests.len(), 1);
        assert_eq!(k.tests[0].name, "suite");
        assert_eq!(k.counts().passed, 1);
    }

    #[test]
    fn doubled_console_brackets_are_tolerated() {
        assert_eq!(strip_prefix("[    1.2]] ok 2 pkernfs_format"), "ok 2 pkernfs_format");
        assert_eq!(strip_prefix("[[    1.2] ok 2 x"), "ok 2 x");
        assert_eq!(strip_prefix("[    1.2] [not a prefix] ok"), "[not a prefix] ok");
    }
}
