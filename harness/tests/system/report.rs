//! report.html as a reader sees it: `lulab report` regenerates a recorded
//! run (a live update, `tests/fixtures/report-run`), and headless Chromium
//! renders the page; its screenshot must show the plots, and a blank page
//! must not pass the same check.

use std::path::Path;
use std::process::Command;

use lulab::preflight::Need;
use lulab::report::browser::{pixels, screenshot, Pixels};

use crate::common::{Suite, TestRun};

/// Copies the recorded run into `to`.
fn copy_fixture(to: &Path) {
    let from = lulab::workspace_root().join("harness/tests/fixtures/report-run");
    for entry in walk(&from) {
        let rel = entry.strip_prefix(&from).unwrap();
        std::fs::create_dir_all(to.join(rel).parent().unwrap()).unwrap();
        std::fs::copy(&entry, to.join(rel)).unwrap();
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A page with its plots: a good part of it inked, and coloured series.
fn shows_plots(p: Pixels) -> bool {
    p.inked * 100 > p.total * 3 && p.coloured * 1000 > p.total * 5
}

fn html_renders_in_chromium() {
    let t = TestRun::new("report-html");
    let run = t.dir().join("run");
    copy_fixture(&run);
    let out = Command::new(env!("CARGO_BIN_EXE_lulab")).arg("report").arg(&run).output().expect("running lulab report");
    assert!(out.status.success(), "lulab report: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 3, "latency over time, histogram, blackouts");
    let png = t.dir().join("report.png");
    screenshot(&run.join("report.html"), &png, 1100, 1800).unwrap_or_else(|e| panic!("{e:#}"));
    let p = pixels(&png).unwrap();
    assert!(shows_plots(p), "the screenshot of report.html shows no plots: {p:?} ({})", png.display());
    // The negative control: a blank page fails the same check.
    let blank = t.dir().join("blank.html");
    std::fs::write(&blank, "<!DOCTYPE html><html><body></body></html>\n").unwrap();
    let png = t.dir().join("blank.png");
    screenshot(&blank, &png, 1100, 1800).unwrap_or_else(|e| panic!("{e:#}"));
    let p = pixels(&png).unwrap();
    assert!(!shows_plots(p), "a blank page passed for one with plots: {p:?}");
}

pub fn trials(s: &mut Suite) {
    s.add("system::report::html_renders_in_chromium", &[Need::Chromium], html_renders_in_chromium);
}
