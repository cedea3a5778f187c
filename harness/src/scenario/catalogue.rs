//! The scenario catalogue as a user sees it: `lulab check` validates files
//! without running them, `lulab list` prints one line per scenario.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{Scenario, ScenarioError};

/// Every `*.toml` in `dir`, sorted by name.
pub fn files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    v.sort();
    Ok(v)
}

/// `lulab check`: each file loaded and validated; the report lists one line
/// per file (`ok` or the error naming file, line and field), and with
/// `plan` each valid file's steps with what holds before them. True when
/// all are valid.
pub fn check(paths: &[PathBuf], plan: bool) -> (bool, String) {
    let mut out = String::new();
    let mut all = true;
    for p in paths {
        match Scenario::load(p) {
            Ok(s) => {
                let _ = writeln!(out, "ok      {} ({}, expects {})", p.display(), s.tier, s.expect);
                if let (true, Ok(plan)) = (plan, s.plan()) {
                    for step in &plan.steps {
                        let _ = writeln!(out, "        {:>3}  {:<22} {}", step.index + 1, step.step.name(), step.before.describe());
                    }
                }
            }
            Err(e) => {
                all = false;
                let _ = writeln!(out, "invalid {}", indent(&e));
            }
        }
    }
    (all, out)
}

fn indent(e: &ScenarioError) -> String {
    e.to_string().lines().collect::<Vec<_>>().join("\n        ")
}

/// `lulab list`: name, expected outcome, its reasons, tier, kernels,
/// description; one line each. A file that does not parse is listed as
/// invalid, not skipped.
pub fn list(paths: &[PathBuf]) -> String {
    let mut rows = vec![["name".to_string(), "expect".into(), "reasons".into(), "tier".into(), "kernels".into(), "description".into()]];
    for p in paths {
        let name = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        rows.push(match Scenario::load(p) {
            Ok(s) => {
                let kernels = s.kernels().iter().map(|k| k.name()).collect::<Vec<_>>().join("+");
                let reasons = if s.expect_reasons.is_empty() {
                    "-".to_string()
                } else {
                    s.expect_reasons.iter().map(|r| r.name()).collect::<Vec<_>>().join(",")
                };
                [name, s.expect.to_string(), reasons, s.tier.to_string(), kernels, s.description]
            }
            Err(e) => [name, "-".into(), "-".into(), "-".into(), "-".into(), format!("INVALID: {}", e.to_string().lines().next().unwrap_or(""))],
        });
    }
    let widths: Vec<usize> = (0..5).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in &rows {
        for (cell, w) in r.iter().zip(&widths) {
            let _ = write!(out, "{cell:w$}  ");
        }
        let _ = writeln!(out, "{}", r[5]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    const OK: &str = "description = \"fine\"\nexpect = \"broken\"\nexpect_reasons = [\"dma.lost\"]\ntier = \"long\"\n\n[[steps]]\ndo = \"boot\"\n";

    #[test]
    fn check_names_file_line_and_field_of_an_unknown_field() {
        let d = tempfile::tempdir().unwrap();
        let good = write(d.path(), "good.toml", OK);
        let bad = write(d.path(), "bad.toml", &OK.replace("tier = \"long\"", "tier = \"long\"\nspeed = 3"));
        let (all, out) = check(&[good, bad.clone()], false);
        assert!(!all);
        assert!(out.contains("ok      ") && out.contains("good.toml (long, expects broken)"), "{out}");
        let want = format!("invalid {}: TOML parse error at line 5", bad.display());
        assert!(out.contains(&want) && out.contains("unknown field `speed`"), "{out}");
    }

    #[test]
    fn check_names_an_unknown_step_kind_and_its_line() {
        let d = tempfile::tempdir().unwrap();
        let bad = write(d.path(), "bad.toml", &format!("{OK}[[steps]]\ndo = \"teleport\"\n"));
        let (all, out) = check(&[bad], false);
        assert!(!all);
        assert!(out.contains("bad.toml:9:") && out.contains("unknown variant `teleport`"), "{out}");
    }

    #[test]
    fn check_names_an_unknown_fault_kind_or_fault_field_and_its_line() {
        let d = tempfile::tempdir().unwrap();
        let bad = write(d.path(), "kind.toml", &format!("{OK}[[steps]]\ndo = \"fault\"\nfault = \"solar_flare\"\n"));
        let (all, out) = check(&[bad], false);
        assert!(!all);
        assert!(out.contains("kind.toml:10:") && out.contains("unknown variant `solar_flare`") && out.contains("vm_pause"), "{out}");
        let bad = write(d.path(), "field.toml", &format!("{OK}[[steps]]\ndo = \"fault\"\nfault = \"vm_pause\"\nduration_ms = 5\nwhen = \"soon\"\n"));
        let (all, out) = check(&[bad], false);
        assert!(!all);
        assert!(out.contains("field.toml:12:") && out.contains("unknown field `when`"), "{out}");
    }

    #[test]
    fn list_prints_one_line_per_file_and_marks_the_invalid() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "b.toml", OK);
        write(d.path(), "a.toml", "nonsense");
        write(d.path(), "notes.md", "not a scenario");
        let out = list(&files(d.path()).unwrap());
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[1].starts_with("a ") && lines[1].contains("INVALID"), "{out}");
        assert!(lines[2].starts_with("b ") && lines[2].contains("broken") && lines[2].contains("dma.lost") && lines[2].contains("long") && lines[2].ends_with("fine"), "{out}");
    }

    #[test]
    fn broken_must_name_its_reasons_and_only_broken_may() {
        let d = tempfile::tempdir().unwrap();
        let none = write(d.path(), "none.toml", &OK.replace("expect_reasons = [\"dma.lost\"]\n", ""));
        let intact = write(d.path(), "intact.toml", &OK.replace("\"broken\"", "\"intact\""));
        let unknown = write(d.path(), "unknown.toml", &OK.replace("dma.lost", "dma.misplaced"));
        let (_, out) = check(&[none, intact, unknown], false);
        assert!(out.contains("none.toml:2: expect: \"broken\" must name its reasons in expect_reasons, from: run.error, dma.lost"), "{out}");
        assert!(out.contains("intact.toml:3: expect_reasons: only for expect = \"broken\""), "{out}");
        assert!(out.contains("unknown.toml: TOML parse error at line 3") && out.contains("unknown variant `dma.misplaced`"), "{out}");
    }

    #[test]
    fn the_shipped_catalogue_is_valid() {
        let (all, out) = check(&files(&crate::workspace_root().join("scenarios")).unwrap(), true);
        assert!(all, "{out}");
    }
}
