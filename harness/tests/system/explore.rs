//! `lulab explore` against real hosts: a bounded property run with a fixed
//! seed (every case as its faults expect), and the explorer's own check —
//! with persistence sabotaged it finds a failing schedule, shrinks it to at
//! most 3 steps past boot and start, and the file it writes passes `lulab
//! check` and reproduces the failure under `lulab run`.

use std::process::Command;

use crate::common::{Suite, TestRun, BOTH, OURS};

/// Seeds chosen for cost, drawn by the same strategy every run (the same
/// seed gives the same schedules, a fast test checks it): 115 draws "RX +
/// NVMe, 200 frames first, an update with memory_pressure at agent_up" and
/// "RX + NVMe (not persistent), 200 frames first, an update after a
/// vm_pause"; 4 draws "RX, an update after
/// bus_master_off, an update with canary_write at its kexec", which shrinks
/// in two runs.
const BOUNDED_SEED: &str = "115";
const SABOTAGE_SEED: &str = "4";

fn lulab(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lulab")).args(args).output().expect("running lulab");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().expect("lulab exited by a signal"), text)
}

fn explore_json(dir: &std::path::Path) -> serde_json::Value {
    let p = dir.join("explore.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

fn bounded_run_matches_every_case() {
    let t = TestRun::new("explore-bounded");
    let out = t.dir().join("explore");
    let (code, text) = lulab(&["explore", "--cases", "2", "--seed", BOUNDED_SEED, "--out", &out.display().to_string()]);
    assert_eq!(code, 0, "{text}");
    let ex = explore_json(&out);
    assert_eq!(ex["cases_run"], 2, "{ex:#}");
    assert!(ex["failed_case"].is_null(), "{ex:#}");
    for case in ex["cases"].as_array().unwrap() {
        assert_eq!(case[1]["as_expected"], true, "{case:#}");
    }
    assert!(text.contains("explore: case 2/2"), "progress names the cases: {text}");
}

fn sabotaged_persistence_is_found_and_shrunk() {
    let t = TestRun::new("explore-sabotage");
    let out = t.dir().join("explore");
    let (code, text) = lulab(&["explore", "--cases", "1", "--seed", SABOTAGE_SEED, "--sabotage", "persistence", "--max-shrink-time", "1200", "--out", &out.display().to_string()]);
    assert_eq!(code, 1, "a mismatch was found: {text}");
    let ex = explore_json(&out);
    assert_eq!(ex["failed_case"], 0, "{ex:#}");
    assert_eq!(ex["shrink_timed_out"], false, "{ex:#}");
    assert!(!ex["shrink"].as_array().unwrap().is_empty(), "the first schedule had more than one update to shrink: {ex:#}");
    let shrunk = &ex["shrunk"][0];
    assert_eq!(shrunk["updates"].as_array().unwrap().len(), 1, "{shrunk:#}");
    let file = out.join(format!("shrunk-{SABOTAGE_SEED}.toml"));
    let f = file.display().to_string();
    assert!(text.contains(&format!("reproduce: lulab run {f}")), "{text}");
    // At most 3 steps past boot and start_dma.
    let sc = lulab::scenario::Scenario::load(&file).unwrap_or_else(|e| panic!("{e}"));
    assert!(sc.steps.len() <= 2 + 3, "{:?}", sc.steps);
    let (code, text) = lulab(&["check", &f]);
    assert_eq!(code, 0, "lulab check accepts it: {text}");
    let rerun = t.dir().join("rerun");
    let (code, text) = lulab(&["run", &f, "--out", &rerun.display().to_string()]);
    assert_ne!(code, 0, "lulab run reproduces the failure: {text}");
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(rerun.join("report.json")).unwrap()).unwrap();
    assert_eq!((r["expect"].as_str(), r["as_expected"].as_bool()), (Some("intact"), Some(false)), "{r:#}");
}

pub fn trials(s: &mut Suite) {
    s.add("system::explore::bounded_run_matches_every_case", OURS, bounded_run_matches_every_case);
    s.add("system::explore::sabotaged_persistence_is_found_and_shrunk", BOTH, sabotaged_persistence_is_found_and_shrunk);
}
