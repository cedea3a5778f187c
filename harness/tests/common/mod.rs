//! Shared fixtures for the system tier: SKIP (or, under CI, fail) when the
//! machine cannot run QEMU hosts; run directories kept only when a test fails.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Returns false (after printing `SKIP: reason`) when this machine cannot run
/// the system tier. Under CI (`CI` set) a missing prerequisite is a failure.
pub fn system_tier_available() -> bool {
    match lulab::setup::require_qemu() {
        Ok(_) => true,
        Err(e) => {
            if std::env::var_os("CI").is_some() {
                panic!("system tier cannot run on CI: {e:#}");
            }
            println!("SKIP: {e:#}");
            false
        }
    }
}

/// Our kernel with the host initramfs, built or taken from the cache; `None`
/// (after `SKIP: reason`) when this machine cannot run the system tier or build
/// the kernel. Under CI a missing prerequisite is a failure.
pub fn our_kernel() -> Option<lulab::lab::BootSet> {
    if !system_tier_available() {
        return None;
    }
    match lulab::lab::BootSet::lulab() {
        Ok(set) => Some(set),
        Err(e) if std::env::var_os("CI").is_none() => {
            println!("SKIP: cannot build our kernel here: {e:#}");
            None
        }
        Err(e) => panic!("building our kernel on CI: {e:#}"),
    }
}

/// Runs `scenarios/NAME.toml` with its output in a [`TestRun`]; checks that
/// report.json and report.md were written and agree with the returned report.
pub fn run_scenario(name: &str) -> (lulab::report::Report, TestRun) {
    let path = lulab::workspace_root().join("scenarios").join(format!("{name}.toml"));
    let scenario = lulab::scenario::Scenario::load(&path).unwrap();
    let t = TestRun::new(name);
    let report = lulab::scenario::run::run(name, &scenario, t.dir()).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.dir().join("report.json")).unwrap()).unwrap();
    assert_eq!(json["outcome"], report.outcome.to_string(), "report.json matches");
    assert!(t.dir().join("report.md").exists());
    (report, t)
}

/// A negative control on our kernel: runs `name` (`None` after SKIP, as
/// [`our_kernel`]) and checks it was judged broken, as the scenario expects.
pub fn negative_control(name: &str) -> Option<(lulab::report::Report, TestRun)> {
    our_kernel()?;
    let (r, t) = run_scenario(name);
    assert_eq!(r.outcome, lulab::scenario::Verdict::Broken, "{name}");
    assert!(r.as_expected, "{name}: {:#?}", r.reasons);
    Some((r, t))
}

/// A positive scenario on our kernel: runs `name` (`None` after SKIP, as
/// [`our_kernel`]) and checks it was judged intact, as the scenario expects.
pub fn intact_run(name: &str) -> Option<(lulab::report::Report, TestRun)> {
    our_kernel()?;
    let (r, t) = run_scenario(name);
    assert_eq!(r.outcome, lulab::scenario::Verdict::Intact, "{name}: {:#?}\n{:?}", r.reasons, r.dma);
    assert!(r.as_expected, "{name}");
    Some((r, t))
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

/// The timeline of a broken control: one update, every milestone seen, frames
/// before the kexec and none DMAed while no agent ran (the device stopped).
/// Frames may still land while the old kernel shuts down (`first_dma_after`
/// is then set), so it is not asserted; nor is any time.
pub fn assert_one_update_with_the_device_stopped(r: &lulab::report::Report, kernel: &str) {
    assert_eq!(r.updates.len(), 1, "{:#?}", r.updates);
    let u = &r.updates[0];
    assert_eq!((u.index, u.kernel.as_str()), (1, kernel));
    assert!(u.agent_down.is_some() && u.kernel_up.is_some() && u.agent_up.is_some(), "{u:#?}");
    assert!(u.kexec_transition_ms.is_some() && u.agent_downtime_ms.is_some(), "{u:#?}");
    assert!(u.last_dma_before.is_some(), "frames flowed before the kexec: {u:#?}");
    assert_eq!(u.dma_while_agent_down, Some(0), "{u:#?}");
}
