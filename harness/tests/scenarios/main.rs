//! Every scenario file is a test: one trial per `scenarios/*.toml`, named
//! `<tier>::<file stem>` (`system::live-update-rx`, `long::live-update-soak`),
//! so a new file is a new test with no Rust change, and CI can filter a tier.
//!
//! Each trial runs the file and passes exactly when the outcome is the one
//! the file expects (the verdict is asserted here, once). What a scenario
//! file cannot say — kernel log lines, the agent's layout files, counts a
//! kernel engineer wants pinned — lives in `checks/`, keyed by file stem,
//! and runs on the same report after the verdict. A file that does not
//! parse is a failing trial naming the file, line and field.
//!
//! A matrix file (`scenarios/matrix/*.toml`) is a trial of the long tier,
//! `long::matrix::<file stem>`: its scenario on every machine shape of its
//! axes, each cell judged as the scenario's own trial is (verdict, reasons,
//! shape, checks); it fails naming every cell that failed.

#[path = "../common/mod.rs"]
mod common;
mod checks;

use lulab::report::Reason;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use common::{run_scenario, run_scenario_file, scenario_dir, Suite};
use lulab::scenario::matrix::MatrixFile;
use lulab::scenario::{Scenario, Tier};

fn main() -> ExitCode {
    let mut suite = Suite::default();
    registry_trials(&mut suite);
    for path in scenario_files(&scenario_dir()) {
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        match Scenario::load(&path) {
            Ok(sc) => {
                let name = format!("{}::{stem}", sc.tier);
                suite.add(name, &sc.needs(), move || run_one(&path, &stem));
            }
            // Listed in the system tier, failing with the parse error.
            Err(e) => {
                let msg = e.to_string();
                suite.add(format!("{}::{stem}", Tier::System), &[], move || panic!("{msg}"));
            }
        }
    }
    for path in matrix_files() {
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let m = MatrixFile::load(&path).ok();
        let tier = m.as_ref().map_or(Tier::Long, |m| m.tier);
        let needs = m
            .and_then(|m| Scenario::load(&scenario_dir().join(format!("{}.toml", m.scenario))).ok())
            .map(|sc| sc.needs())
            .unwrap_or_default();
        suite.add(format!("{tier}::matrix::{stem}"), &needs, move || run_matrix(&path));
    }
    suite.run()
}

/// A matrix file's trial: every cell run and judged; fails naming each cell
/// that could not run or failed.
fn run_matrix(path: &Path) {
    let m = MatrixFile::load(path).unwrap_or_else(|e| panic!("{e}"));
    let base = scenario_dir().join(format!("{}.toml", m.scenario));
    let sc = Scenario::load(&base).unwrap_or_else(|e| panic!("{}: scenario = {:?}: {e}", path.display(), m.scenario));
    let mut failed = Vec::new();
    for (i, cell) in lulab::scenario::matrix::cells(&sc, &m.axes()).into_iter().enumerate() {
        // Short: the run directory holds QEMU's sockets (108 bytes at most).
        let run_name = format!("{}-cell{i}", m.scenario);
        let result = match cell.scenario {
            Err(why) => Err(format!("cannot run on this shape: {why}")),
            Ok(c) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let (r, t) = run_scenario(&run_name, &c);
                judge_run(&m.scenario, &c, &r, t.dir());
            }))
            .map_err(|p| p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()),
        };
        println!("cell {i} ({}): {}", cell.label, if result.is_ok() { "as expected" } else { "FAILED" });
        if let Err(e) = result {
            failed.push(format!("{}: {e}", cell.label));
        }
    }
    assert!(failed.is_empty(), "{}: {} cell(s) failed:\n{}", path.display(), failed.len(), failed.join("\n"));
}

/// `scenarios/matrix/*.toml`, sorted (none without the directory).
fn matrix_files() -> Vec<PathBuf> {
    let dir = scenario_dir().join("matrix");
    if dir.is_dir() { scenario_files(&dir) } else { Vec::new() }
}

/// `dir/*.toml`, sorted.
fn scenario_files(dir: &Path) -> Vec<PathBuf> {
    lulab::scenario::catalogue::files(dir).unwrap_or_else(|e| panic!("listing scenarios in {}: {e}", dir.display()))
}

fn run_one(path: &Path, stem: &str) {
    let original = Scenario::load(path).unwrap();
    let (r, t) = run_scenario_file(path);
    judge_run(stem, &original, &r, t.dir());
}

/// Everything a scenario's trial asserts of its run of `original` in `dir`.
fn judge_run(stem: &str, original: &Scenario, r: &lulab::report::Report, dir: &Path) {
    assert!(
        r.as_expected,
        "{stem}: expected {}, outcome {}\nreasons:\n  {}\nrun directory: {}",
        r.expect,
        r.outcome,
        r.findings.iter().map(|f| format!("{} {}", f.reason, f.detail)).collect::<Vec<_>>().join("\n  "),
        dir.display()
    );
    // The reasons are part of the verdict: named otherwise, the same run fails.
    if r.expect == lulab::scenario::Verdict::Broken {
        let other = Reason::ALL.iter().copied().find(|x| !r.findings.iter().any(|f| f.reason == *x)).expect("a reason not found");
        assert!(
            !lulab::scenario::as_expected(r.expect, &[other], r.outcome, &r.findings),
            "{stem}: the same findings must fail a scenario expecting only `{other}`"
        );
    }
    faults_hit_their_moments(stem, r);
    // The run directory holds the scenario as run, and it is this one.
    let resolved = Scenario::load(&dir.join(lulab::scenario::run::RESOLVED)).unwrap_or_else(|e| panic!("{stem}: {e}"));
    assert_eq!((resolved.steps, resolved.rx, resolved.nvme), (original.steps.clone(), original.rx.clone(), original.nvme.clone()), "{stem}: scenario.resolved.toml");
    machine_shape_as_asked(stem, original, dir);
    if let Some(check) = checks::for_scenario(stem) {
        check(r, dir);
    }
}

/// The host ran on the shape `[host]` asked for: QEMU's own command line
/// has its vCPUs and VT-d modes, and every one of our kernels that booted
/// brought up that many CPUs (its console; Debian's logs no count at its
/// log level).
fn machine_shape_as_asked(stem: &str, sc: &Scenario, dir: &Path) {
    let host = dir.join("host");
    let Ok(argv) = std::fs::read_to_string(host.join("qemu.argv")) else { return };
    let args: Vec<&str> = argv.lines().collect();
    let smp = args.windows(2).find(|w| w[0] == "-smp").map(|w| w[1]);
    assert_eq!(smp, Some(sc.host.cpus.to_string().as_str()), "{stem}: -smp in qemu.argv");
    let accel = args.windows(2).find(|w| w[0] == "-accel").map(|w| w[1]);
    assert_eq!(accel, Some(sc.host.tcg_threads.accel()), "{stem}: -accel in qemu.argv");
    if sc.host.iommu {
        let onoff = |b: bool| if b { "on" } else { "off" };
        let vtd = args.iter().find(|a| a.starts_with("intel-iommu")).unwrap_or_else(|| panic!("{stem}: no intel-iommu in qemu.argv"));
        let scalable = sc.host.iommu_mode == lulab::scenario::IommuMode::Scalable;
        for want in [format!("caching-mode={}", onoff(sc.host.caching_mode)), format!("x-scalable-mode={}", onoff(scalable))] {
            assert!(vtd.contains(&want), "{stem}: {vtd} lacks {want}");
        }
    }
    if sc.host.cpus > 1 && sc.host.kernel == lulab::scenario::KernelChoice::Lulab {
        let console = std::fs::read_to_string(host.join("console.log")).unwrap_or_default();
        let want = format!("Brought up 1 node, {} CPUs", sc.host.cpus);
        let boots = console.matches("Linux version").count();
        assert!(boots > 0 && console.matches(&want).count() >= boots, "{stem}: {boots} kernel(s) booted, not each said \"{want}\"");
    }
}

/// Every fault aimed at a moment of an update was injected inside that
/// moment's window of the update's timeline ([`lulab::fault::outside_their_moment`]).
fn faults_hit_their_moments(stem: &str, r: &lulab::report::Report) {
    let bad = lulab::fault::outside_their_moment(&r.faults, &r.updates);
    assert!(bad.is_empty(), "{stem}: faults outside their moment:\n  {}", bad.join("\n  "));
}

/// Trials about the list itself (no QEMU): every check names a file, and a
/// file added to the directory is a test.
fn registry_trials(suite: &mut Suite) {
    suite.add("registry::every_check_names_a_scenario_file", &[], || {
        let stems: Vec<String> = scenario_files(&scenario_dir())
            .iter()
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        for name in checks::NAMES {
            assert!(stems.iter().any(|s| s == name), "checks/ has checks for {name:?}, but there is no scenarios/{name}.toml");
        }
    });
    suite.add("registry::matrix_files_name_a_scenario_and_every_cell_can_run", &[], || {
        for path in matrix_files() {
            let m = MatrixFile::load(&path).unwrap_or_else(|e| panic!("{e}"));
            let sc = Scenario::load(&scenario_dir().join(format!("{}.toml", m.scenario)))
                .unwrap_or_else(|e| panic!("{}: scenario = {:?}: {e}", path.display(), m.scenario));
            assert!(!m.axes().is_empty(), "{}: no axes", path.display());
            for cell in lulab::scenario::matrix::cells(&sc, &m.axes()) {
                assert!(cell.scenario.is_ok(), "{}: cell {}: {}", path.display(), cell.label, cell.scenario.unwrap_err());
            }
        }
    });
    suite.add("registry::a_new_scenario_file_is_a_new_test", &[], || {
        let dir = tempfile::tempdir().unwrap();
        let src = lulab::workspace_root().join("scenarios/baseline-rx.toml");
        let text = std::fs::read_to_string(&src).unwrap();
        std::fs::write(dir.path().join("my-new-scenario.toml"), &text).unwrap();
        std::fs::write(dir.path().join("my-long-one.toml"), text.replacen("expect =", "tier = \"long\"\nexpect =", 1)).unwrap();
        std::fs::write(dir.path().join("broken-file.toml"), "expect = \"intact\"\nno_such_field = 1\n").unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--list", "--format", "terse"])
            .env("LULAB_SCENARIOS", dir.path())
            .output()
            .unwrap();
        let list = String::from_utf8_lossy(&out.stdout);
        for name in ["system::my-new-scenario: test", "long::my-long-one: test", "system::broken-file: test"] {
            assert!(list.lines().any(|l| l == name), "{name:?} not listed:\n{list}");
        }
        // The malformed one fails naming its file and field.
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "system::broken-file"])
            .env("LULAB_SCENARIOS", dir.path())
            .output()
            .unwrap();
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "{all}");
        assert!(all.contains("broken-file.toml") && all.contains("no_such_field"), "{all}");
    });
}
