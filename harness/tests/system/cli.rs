//! `lulab run`'s exit status, as a CI script sees it: 0 the expected
//! outcome, 1 another verdict, 2 the scenario could not be carried out
//! (never counted as `broken`); `lulab check` validates without a host.

use std::path::Path;
use std::process::Command;

use crate::common::{Suite, TestRun, STOCK};

const BOOT_ONLY: &str = "description = \"boot only\"\nexpect = \"intact\"\n\n[[steps]]\ndo = \"boot\"\n";

/// Asks for VFIO DMA on a host without an emulated IOMMU: the agent cannot
/// take the NIC, so the run cannot be carried out. It expects `broken`,
/// which an error must never satisfy.
const NO_IOMMU: &str = "description = \"VFIO DMA without an IOMMU\"\nexpect = \"broken\"\nexpect_reasons = [\"dma.lost\"]\n\n[host]\nkernel = \"stock\"\nmemory_mib = 1024\niommu = false\n\n\
[rx]\nring_size = 256\nrate_fps = 200.0\nframe_size = 256\nframes = 100\n\n[[steps]]\ndo = \"boot\"\n\n[[steps]]\ndo = \"start_dma\"\n";

fn lulab(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lulab")).args(args).output().expect("running lulab");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().expect("lulab exited by a signal"), text)
}

fn scenario(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn run(dir: &Path, file: &str, name: &str) -> (i32, String) {
    let out = dir.join(format!("run-{name}"));
    lulab(&["run", file, "--out", &out.display().to_string()])
}

fn run_exits_0_1_2() {
    let t = TestRun::new("cli-exit");
    let d = t.dir();
    let (code, text) = run(d, &scenario(d, "malformed", "description = 3\n"), "malformed");
    assert_eq!(code, 2, "a file that does not parse: {text}");
    assert!(text.contains("malformed.toml") && text.contains("line 1"), "{text}");

    let (code, text) = run(d, &scenario(d, "boot-intact", BOOT_ONLY), "intact");
    assert_eq!(code, 0, "expected outcome: {text}");
    assert!(!text.contains("lulab replay"), "a run as expected needs no replay: {text}");
    let (code, text) = run(d, &scenario(d, "boot-broken", &BOOT_ONLY.replace("\"intact\"", "\"broken\"\nexpect_reasons = [\"dma.lost\"]")), "mismatch");
    assert_eq!(code, 1, "intact where broken was expected: {text}");
    assert!(text.contains("expected broken, outcome intact"), "{text}");
    let replay = format!("replay it step by step: lulab replay {}", d.join("run-mismatch").display());
    assert!(text.contains(&replay), "a run not as expected says how to replay it: {text}");

    let (code, text) = run(d, &scenario(d, "no-iommu", NO_IOMMU), "error");
    assert_eq!(code, 2, "could not be carried out: {text}");
    assert!(text.contains("outcome error") && text.contains("StartDma"), "{text}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("run-error/report.json")).unwrap()).unwrap();
    assert_eq!(report["outcome"], "error");
    assert_eq!(report["as_expected"], false);
}

/// A broken scenario passes only for the reasons it names: the same run
/// with another reason in `expect_reasons` fails (exit 1) and says which
/// finding's reason was not expected.
fn another_expected_reason_fails_a_broken_scenario() {
    let t = TestRun::new("cli-reasons");
    let d = t.dir();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/fault-device-reset.toml");
    let text = std::fs::read_to_string(&root).unwrap();
    let named = "expect_reasons = [\"dma.stalled\", \"dma.lost\"]";
    assert!(text.contains(named), "fault-device-reset.toml no longer names its reasons as this test expects");
    let swapped = text.replace(named, "expect_reasons = [\"memory.changed\"]");
    let (code, out) = run(d, &scenario(d, "device-reset-swapped", &swapped), "swapped");
    assert_eq!(code, 1, "a finding of a reason the scenario does not name must fail it: {out}");
    assert!(out.contains("expected broken, outcome broken") && out.contains("NOT as expected") && out.contains("dma.stalled"), "{out}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("run-swapped/report.json")).unwrap()).unwrap();
    assert_eq!((report["outcome"].as_str(), report["as_expected"].as_bool()), (Some("broken"), Some(false)));
}

fn check_validates_without_a_host() {
    let t = TestRun::new("cli-check");
    let d = t.dir();
    let good = scenario(d, "good", BOOT_ONLY);
    let bad = scenario(d, "bad", &BOOT_ONLY.replace("[[steps]]", "[[steps]]\nspeed = 1"));
    assert_eq!(lulab(&["check", &good]).0, 0);
    let (code, text) = lulab(&["check", &good, &bad]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("bad.toml:5: steps[0].speed: unknown field"), "{text}");
    let kind = scenario(d, "kind", &format!("{BOOT_ONLY}\n[[steps]]\ndo = \"fault\"\nfault = \"cosmic_ray\"\n"));
    let (code, text) = lulab(&["check", &kind]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("kind.toml:9: steps[1]") && text.contains("unknown variant `cosmic_ray`"), "{text}");
    // A step that cannot stand where it is: refused with its line, before any host boots.
    let early = "description = \"inject first\"\nexpect = \"intact\"\n\n[rx]\nring_size = 256\nrate_fps = 200.0\nframe_size = 256\nframes = 100\n\n\
                 [[steps]]\ndo = \"boot\"\n\n[[steps]]\ndo = \"inject\"\n";
    let (code, text) = lulab(&["check", &scenario(d, "early", early)]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("early.toml:14: steps[1].do: `inject` needs the RX engine: a `start_dma` step before it"), "{text}");
    // --plan: each step with what holds before it.
    let (code, text) = lulab(&["check", "--plan", &good]);
    assert_eq!(code, 0, "{text}");
    assert!(text.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["1", "boot", "no", "host"]), "{text}");
}

/// `lulab run --matrix`: one run directory and one verdict per cell, each
/// host on its shape (QEMU's command line; the stock kernel logs no CPU
/// count at its log level, scenario tests check ours); a shape
/// the scenario cannot run on is a cell that says why, and exit 2.
fn run_matrix_runs_every_cell_on_its_shape() {
    let t = TestRun::new("cli-matrix");
    let d = t.dir();
    let file = scenario(d, "boot", BOOT_ONLY);
    let out = d.join("m");
    let (code, text) = lulab(&["run", &file, "--out", &out.display().to_string(), "--matrix", "cpus=1,2", "--matrix", "caching_mode=true"]);
    assert_eq!(code, 0, "{text}");
    for (cell, cpus) in [("cpus=1,caching_mode=true", "1"), ("cpus=2,caching_mode=true", "2")] {
        assert!(text.contains(&format!("| {cell} | intact (as expected) |")), "{text}");
        // The cell's directory has no ',' (QEMU's option separator).
        let argv = std::fs::read_to_string(out.join(cell.replace(',', "+")).join("host/qemu.argv")).unwrap();
        let args: Vec<&str> = argv.lines().collect();
        assert!(args.windows(2).any(|w| w == ["-smp", cpus]), "{cell}: {argv}");
        assert!(args.iter().any(|a| a.starts_with("intel-iommu") && a.contains("caching-mode=on")), "{cell}: {argv}");
    }
    // A run directory QEMU's options would cut is refused with the reason.
    let (code, text) = lulab(&["run", &file, "--out", &d.join("a,b").display().to_string()]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("may not contain ','"), "{text}");
    // A shape the scenario cannot run on (its carve-out beyond 1 GiB of RAM):
    // said per cell, before any host.
    let persist = "description = \"p\"\nexpect = \"intact\"\n\n[host]\nkernel = \"lulab\"\n\n[pkernfs]\nsize_mib = 64\nbase_mib = 512\n\n\
                   [rx]\nring_size = 256\nrate_fps = 100.0\nframe_size = 128\nframes = 100\npersist = true\n\n[[steps]]\ndo = \"boot\"\n";
    let file = scenario(d, "persist", persist);
    let (code, text) = lulab(&["run", &file, "--out", &d.join("s").display().to_string(), "--matrix", "memory_mib=1024@4352"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("memory_mib=1024@4352: cannot run here") && text.contains("pkernfs"), "{text}");
    let (code, text) = lulab(&["run", &file, "--matrix", "smp=2"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("smp is not one of cpus"), "{text}");
}

pub fn trials(s: &mut Suite) {
    s.add("system::cli::run_matrix_runs_every_cell_on_its_shape", STOCK, run_matrix_runs_every_cell_on_its_shape);
    s.add("system::cli::run_exits_0_1_2", STOCK, run_exits_0_1_2);
    s.add("system::cli::check_validates_without_a_host", &[], check_validates_without_a_host);
    s.add("system::cli::another_expected_reason_fails_a_broken_scenario", STOCK, another_expected_reason_fails_a_broken_scenario);
}
