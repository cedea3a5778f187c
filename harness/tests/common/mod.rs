//! Shared fixtures for the system tier's two test binaries (`scenarios`,
//! `system`), both run by libtest-mimic so that a test this machine cannot
//! run is *ignored* — counted as skipped by cargo test and nextest alike,
//! never as passed — with its reason printed. Under CI (`CI` set) nothing is
//! skipped: a missing prerequisite fails the test.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use libtest_mimic::{Arguments, Trial};
use lulab::preflight::{self, Need};

/// The trials of one test binary, with the reasons some are skipped here.
#[derive(Default)]
pub struct Suite {
    trials: Vec<Trial>,
    skipped: Vec<(String, String)>,
}

impl Suite {
    /// Adds the test `name` needing `needs`; `body` fails by panicking.
    pub fn add(&mut self, name: impl Into<String>, needs: &[Need], body: impl FnOnce() + Send + 'static) {
        let name = name.into();
        let skip = preflight::skip_reason(needs);
        let trial = Trial::test(name.clone(), move || {
            body();
            Ok(())
        });
        match skip {
            Some(why) => {
                self.trials.push(trial.with_ignored_flag(true));
                self.skipped.push((name, why));
            }
            None => self.trials.push(trial),
        }
    }

    /// Runs the trials the command line selects (libtest's arguments, which
    /// nextest speaks too) and exits as libtest does.
    pub fn run(self) -> ExitCode {
        let args = Arguments::from_args();
        if !args.list {
            for (name, why) in &self.skipped {
                if args.filter.as_deref().is_none_or(|f| name.contains(f)) {
                    println!("SKIP {name}: {why}");
                }
            }
        }
        libtest_mimic::run(&args, self.trials).exit_code()
    }
}

/// QEMU, to boot a stock host.
pub const STOCK: &[Need] = &[Need::Qemu, Need::StockKernel];
/// QEMU and our kernel.
pub const OURS: &[Need] = &[Need::Qemu, Need::KernelBuild];
/// QEMU, our kernel and the stock one.
pub const BOTH: &[Need] = &[Need::Qemu, Need::KernelBuild, Need::StockKernel];

/// Our kernel with the host initramfs, built or taken from the cache (the
/// preflight said this machine can: a failure here is the test's).
pub fn our_kernel() -> lulab::lab::BootSet {
    lulab::lab::BootSet::lulab().unwrap_or_else(|e| panic!("building our kernel: {e:#}"))
}

/// Debian's stock kernel with the host initramfs.
pub fn stock_kernel() -> lulab::lab::BootSet {
    lulab::lab::BootSet::stock().unwrap_or_else(|e| panic!("fetching the stock kernel: {e:#}"))
}

/// The directory scenario files are listed from: `scenarios/`, or
/// `$LULAB_SCENARIOS` (a test shows that a new file there is a new test).
pub fn scenario_dir() -> PathBuf {
    std::env::var_os("LULAB_SCENARIOS")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| lulab::workspace_root().join("scenarios"))
}

/// Runs the scenario file `path` with its output in a [`TestRun`]; checks
/// that report.json and report.md were written and agree with the report.
pub fn run_scenario_file(path: &Path) -> (lulab::report::Report, TestRun) {
    let name = path.file_stem().unwrap().to_string_lossy().into_owned();
    let scenario = lulab::scenario::Scenario::load(path).unwrap_or_else(|e| panic!("{e}"));
    run_scenario(&name, &scenario)
}

/// Runs `scenario` as `name` with its output in a [`TestRun`] (see
/// [`run_scenario_file`]).
pub fn run_scenario(name: &str, scenario: &lulab::scenario::Scenario) -> (lulab::report::Report, TestRun) {
    let t = TestRun::new(name);
    let report = lulab::scenario::run::run(name, scenario, t.dir()).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.dir().join("report.json")).unwrap()).unwrap();
    assert_eq!(json["outcome"], report.outcome.to_string(), "report.json matches");
    assert!(t.dir().join("report.md").exists());
    (report, t)
}

/// A run directory for one test, removed when the test passes and kept (with
/// its path printed) when it fails.
pub struct TestRun {
    dir: PathBuf,
}

impl TestRun {
    pub fn new(name: &str) -> Self {
        let base = std::env::var_os("LULAB_TEST_RUNS")
            .map(PathBuf::from)
            .unwrap_or_else(|| lulab::workspace_root().join("target").join("lulab-test-runs"));
        std::fs::create_dir_all(&base).unwrap();
        let dir = base.join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for TestRun {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("run directory kept: {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// True while a process with this PID exists.
pub fn pid_alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// Reads QEMU's pidfile in `dir` once it exists.
pub fn wait_pidfile(dir: &Path, deadline: std::time::Instant) -> Option<i32> {
    while std::time::Instant::now() < deadline {
        if let Ok(s) = std::fs::read_to_string(dir.join("qemu.pid")) {
            if let Ok(p) = s.trim().parse() {
                return Some(p);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    None
}
