//! The `lulab` command line.

mod table;
mod test_cmd;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use lulab::host::{Deadlines, Host};
use lulab::lab::{new_run_dir, BootSet};

#[derive(Debug, Parser)]
#[command(name = "lulab", version, about = "Live-update lab: boot, live-update and judge QEMU hosts")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Install what this machine lacks (QEMU 10 from bookworm-backports, busybox…).
    Setup,
    /// Boot a host and attach to its serial console (Ctrl-] detaches and shuts it down).
    Boot {
        /// Run directory (default: reports/<timestamp>-boot).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The headline demo: set up, build, boot a host, then RX through a live update: controls and the device kept running.
    Demo,
    /// Run one scenario. Exit status: 0 the outcome is the expected one;
    /// 1 it is not (intact where broken was expected, or the reverse);
    /// 2 the scenario could not be carried out (outcome `error`, a file that
    /// does not parse, a machine that lacks what it needs).
    Run {
        /// Scenario file (scenarios/*.toml).
        scenario: PathBuf,
        /// Output directory (default: reports/<timestamp>-<scenario>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Run the scenario on every combination of these `[host]` values,
        /// one run directory per cell (e.g. `--matrix cpus=1,4 --matrix
        /// caching_mode=false,true`; keys: cpus, iommu_mode, caching_mode,
        /// memory_mib, tcg_threads), and print one verdict per cell.
        #[arg(long, value_name = "KEY=V1,V2")]
        matrix: Vec<lulab::scenario::matrix::Axis>,
    },
    /// Re-run a scenario step by step at a prompt: step, continue, break
    /// before a kind of step, look at the host (console, QMP, agent) and
    /// the run so far (ledger, timeline); `quit` shuts the host down and
    /// keeps the run directory. `help` at the prompt lists the commands.
    Replay {
        /// A run directory (its scenario.resolved.toml) or a scenario file.
        path: PathBuf,
        /// Output directory (default: reports/<timestamp>-<scenario>-replay).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run schedules nobody wrote: drawn from a seed (engines, frames, live
    /// updates, faults of the catalogue at their moments), each a real run
    /// judged against what its faults make it expect. The first mismatch is
    /// shrunk (every candidate a real run) into DIR/shrunk-<seed>.toml,
    /// which `lulab run` reproduces. Exit 0: every case as expected; 1: a
    /// mismatch was found (and shrunk).
    Explore {
        /// Schedules to run.
        #[arg(long, default_value_t = 10)]
        cases: usize,
        /// Seed: the same seed draws the same schedules.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output directory (default: reports/<timestamp>-explore).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Seconds after which shrinking starts no new run.
        #[arg(long, default_value_t = 1800)]
        max_shrink_time: u64,
        /// Check the explorer itself: break the system under test on purpose.
        #[arg(long, value_enum)]
        sabotage: Option<lulab::explore::Sabotage>,
    },
    /// Validate scenario files without running them (exit 1 if any is
    /// invalid; errors name the file, line and field).
    Check {
        /// Also print each valid file's checked plan: every step with what
        /// holds before it (kernel, updates so far, engines, faults armed).
        #[arg(long)]
        plan: bool,
        /// Scenario files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// The scenario catalogue: name, expected outcome and reasons, tier, kernels, description.
    List {
        /// Directory of scenario files (default: the workspace's scenarios/).
        dir: Option<PathBuf>,
    },
    /// Print reports side by side (Markdown), e.g. a live update on pkernfs
    /// against the same run on upstream's LUO.
    Compare {
        /// report.json files or run directories holding one.
        #[arg(required = true, num_args = 2..)]
        reports: Vec<PathBuf>,
    },
    /// Regenerate report.json, report.md and report.html of a run directory
    /// from its raw data (the DMA timing again from QEMU's trace; the
    /// sections that needed the live host as the run judged them).
    Report {
        /// The run directory.
        dir: PathBuf,
    },
    /// The README's test command: set up, build the kernels once, then run a
    /// test tier with cargo-nextest (exit status: nextest's). Arguments after
    /// `--` go to nextest, e.g. `-- --partition hash:1/3` to shard over machines.
    Test {
        /// Which tier (a nextest profile of .config/nextest.toml).
        #[arg(long, value_enum, default_value = "all")]
        tier: test_cmd::TierArg,
        /// Passed on to `cargo nextest run`.
        #[arg(last = true)]
        nextest_args: Vec<String>,
    },
    /// Benchmarks: measured side by side in one run, written to DIR/bench.json and bench.md.
    Bench {
        #[command(subcommand)]
        cmd: BenchCmd,
    },
    /// Image stage on its own: build (or take from cache) the host initramfs.
    Image {
        #[command(subcommand)]
        cmd: ImageCmd,
    },
    /// Kernel stage on its own: build our kernel (linux-source + kernel/) or take it from the cache.
    Kernel {
        #[command(subcommand)]
        cmd: KernelCmd,
    },
}

#[derive(Debug, Subcommand)]
enum KernelCmd {
    /// Build (or take from cache) our kernel and print where its bzImage is.
    Build,
    /// Parse the KUnit KTAP results in a console log and print the counts.
    Ktap {
        /// Console log (printk timestamps are fine).
        log: PathBuf,
    },
    /// Kernel warnings, BUGs, oopses, sanitizer and lockdep reports, RCU
    /// stalls and hung tasks in console logs, each with its first lines
    /// (exit 1 if any).
    Splats {
        /// Console logs (console.log, kmsg.log).
        #[arg(required = true)]
        logs: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCmd {
    /// N live updates in a row under RX load with the device kept running:
    /// per-update agent downtime, kexec transition and DMA blackout; exit 1
    /// when a frame was lost or an update failed.
    Soak {
        /// Live updates.
        #[arg(long, default_value_t = 100)]
        updates: usize,
        /// The soak scenario it is built from (its live_update entry repeated).
        #[arg(long, default_value = "scenarios/live-update-soak.toml")]
        scenario: PathBuf,
        /// Load the CPU-write watcher too (slower: about 1.6×).
        #[arg(long)]
        watch: bool,
        /// Output directory (default: reports/<timestamp>-bench-soak).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Send → DMA latency (µs, QEMU's trace) before, during and after a
    /// live update, and the DMA blackout, over several runs; with --b, two
    /// scenarios interleaved and each metric judged with a permutation test.
    DmaLatency {
        /// Scenario A (needs [rx]).
        #[arg(long, default_value = "scenarios/live-update-rx.toml")]
        scenario: PathBuf,
        /// Scenario B, run interleaved with A (A B, B A, …).
        #[arg(long)]
        b: Option<PathBuf>,
        /// Runs of each (with --b, at least 4 for a p-value below 0.05).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// A permutation p-value below this calls a difference.
        #[arg(long, default_value_t = 0.05)]
        alpha: f64,
        /// Output directory (default: reports/<timestamp>-bench-dma-latency).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// VM downtime of one live update against guest RAM size, for the
    /// pkernfs live update and the copy-based baseline (save the RAM to a
    /// disk, kexec, restore) side by side; writes bench.json, bench.md and
    /// report.html (downtime against RAM); exit 1 when a cell failed.
    Downtime {
        /// Guest RAM sizes (M or G), e.g. 64M,256M,1G.
        #[arg(long, default_value = "64M,256M,1G")]
        ram: String,
        /// Output directory (default: reports/<timestamp>-bench-downtime).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The CPU-write watcher's cost: a scenario without and with the TCG
    /// plugin, in pairs of alternating order; prints wall-time ratios.
    Watcher {
        /// Scenario file (needs [pkernfs]).
        #[arg(long, default_value = "scenarios/live-update-rx.toml")]
        scenario: PathBuf,
        /// Pairs of runs.
        #[arg(long, default_value_t = 2)]
        pairs: usize,
        /// Output directory (default: reports/<timestamp>-bench-watcher).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ImageCmd {
    /// Build the stock kernel's initramfs and print where it is.
    Build,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Setup => lulab::setup::ensure_host(),
        Cmd::Boot { out } => boot(out),
        Cmd::Demo => demo(),
        Cmd::Test { tier, nextest_args } => std::process::exit(test_cmd::run(tier, &nextest_args)?),
        Cmd::Check { plan, files } => {
            let (all, out) = lulab::scenario::catalogue::check(&files, plan);
            print!("{out}");
            std::process::exit(if all { 0 } else { 1 });
        }
        Cmd::List { dir } => {
            let dir = dir.unwrap_or_else(|| lulab::workspace_root().join("scenarios"));
            let files = lulab::scenario::catalogue::files(&dir).with_context(|| format!("reading {}", dir.display()))?;
            print!("{}", lulab::scenario::catalogue::list(&files));
            Ok(())
        }
        Cmd::Compare { reports } => {
            let reports = reports.iter().map(|p| lulab::report::Report::read(p)).collect::<Result<Vec<_>>>()?;
            print!("{}", lulab::report::compare::side_by_side(&reports.iter().collect::<Vec<_>>()));
            Ok(())
        }
        Cmd::Report { dir } => {
            let r = lulab::report::Report::regenerate(&dir)?;
            println!("{}: {} ({}), report.json, report.md and report.html rewritten", dir.display(), r.outcome, if r.as_expected { "as expected" } else { "NOT as expected" });
            Ok(())
        }
        Cmd::Run { scenario, out, matrix } if !matrix.is_empty() => std::process::exit(run_matrix(&scenario, out, &matrix)?),
        Cmd::Run { scenario, out, .. } => std::process::exit(match run_scenario(&scenario, out) {
            Ok(report) => exit_status(&report),
            Err(e) => {
                eprintln!("error: {e:#}");
                EXIT_ERROR
            }
        }),
        Cmd::Explore { cases, seed, out, max_shrink_time, sabotage } => {
            let out = match out {
                Some(o) => o,
                None => new_run_dir("explore")?,
            };
            let set = lulab::explore::Settings { cases, seed, out: out.clone(), max_shrink: std::time::Duration::from_secs(max_shrink_time), sabotage };
            let ex = lulab::explore::explore(&set, &mut lulab::explore::HostRunner)?;
            println!("explore: {} of {} case(s) run, seed {}; {}", ex.cases_run, ex.cases_asked, ex.seed, out.join("explore.json").display());
            match &ex.shrunk {
                Some((s, file)) => {
                    println!("mismatch in case {}, shrunk in {} run(s) to {} steps past the start: {file}
reproduce: lulab run {file}", ex.failed_case.unwrap_or(0), ex.shrink.len(), s.steps_beyond_start());
                    std::process::exit(1);
                }
                None => Ok(()),
            }
        }
        Cmd::Replay { path, out } => std::process::exit(match replay(&path, out) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                EXIT_ERROR
            }
        }),
        Cmd::Kernel { cmd: KernelCmd::Build } => {
            let k = lulab::kernel::build::build(&lulab::kernel::build::KernelSpec::lulab())?;
            println!("bzImage: {}", k.bzimage.display());
            println!("release: {}", k.release);
            println!("source:  linux-source {}", k.source_version);
            Ok(())
        }
        Cmd::Kernel { cmd: KernelCmd::Ktap { log } } => {
            let text = std::fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
            let k = lulab::ktap::Ktap::parse(&text);
            for (name, status) in k.leaves() {
                println!("{status:?}\t{name}");
            }
            let c = k.counts();
            println!("kunit: passed {} failed {} skipped {} (complete: {})", c.passed, c.failed, c.skipped, k.complete());
            Ok(())
        }
        Cmd::Kernel { cmd: KernelCmd::Splats { logs } } => {
            let mut any = false;
            for log in &logs {
                let text = String::from_utf8_lossy(&std::fs::read(log).with_context(|| format!("reading {}", log.display()))?).into_owned();
                for s in lulab::oracle::kernel_log::scan(&text) {
                    any = true;
                    println!("{}:{}: {:?}", log.display(), s.line, s.kind);
                    for q in &s.quote {
                        println!("    {q}");
                    }
                }
            }
            std::process::exit(i32::from(any));
        }
        Cmd::Bench { cmd: BenchCmd::Soak { updates, scenario, watch, out } } => {
            let out = match out {
                Some(d) => d,
                None => new_run_dir("bench-soak")?,
            };
            let bench = lulab::bench::soak::run(&scenario, updates, watch, &out)?;
            print!("{}", bench.markdown());
            println!("\nbench: {}", out.join("bench.json").display());
            std::process::exit(i32::from(!bench.passed()));
        }
        Cmd::Bench { cmd: BenchCmd::DmaLatency { scenario, b, runs, alpha, out } } => {
            let out = match out {
                Some(d) => d,
                None => new_run_dir("bench-dma-latency")?,
            };
            let bench = lulab::bench::dma_latency::run(&scenario, b.as_deref(), runs, alpha, &out)?;
            print!("{}", bench.markdown());
            println!("\nbench: {}", out.join("bench.json").display());
            Ok(())
        }
        Cmd::Bench { cmd: BenchCmd::Downtime { ram, out } } => {
            let sizes = lulab::bench::downtime::parse_sizes(&ram)?;
            let out = match out {
                Some(o) => o,
                None => new_run_dir("bench-downtime")?,
            };
            let bench = lulab::bench::downtime::run(&sizes, &out)?;
            print!("{}", bench.markdown());
            println!("\nbench: {} (plot: {})", out.join("bench.json").display(), out.join("report.html").display());
            std::process::exit(i32::from(!bench.passed()));
        }
        Cmd::Bench { cmd: BenchCmd::Watcher { scenario, pairs, out } } => {
            let out = match out {
                Some(d) => d,
                None => new_run_dir("bench-watcher")?,
            };
            let b = lulab::bench::watcher::run(&scenario, pairs, &out)?;
            print!("{}", b.markdown());
            println!("\nbench: {}", out.join("bench.json").display());
            Ok(())
        }
        Cmd::Image { cmd: ImageCmd::Build } => {
            let set = BootSet::stock()?;
            println!("kernel:    {} ({})", set.kernel.bzimage.display(), set.kernel.source_version);
            println!("initramfs: {}", set.initramfs.path.display());
            println!("modules loaded at boot: {}", set.initramfs.loaded_modules.join(" "));
            Ok(())
        }
    }
}

/// `lulab run`'s exit status when the scenario could not be carried out.
const EXIT_ERROR: i32 = 2;

/// 0 as expected, 1 a verdict other than the expected one, 2 an `error`
/// outcome that was not expected.
fn exit_status(report: &lulab::report::Report) -> i32 {
    match (report.as_expected, report.outcome) {
        (true, _) => 0,
        (false, lulab::scenario::Verdict::Error) => EXIT_ERROR,
        (false, _) => 1,
    }
}

fn boot(out: Option<PathBuf>) -> Result<()> {
    lulab::setup::require_qemu()?;
    let set = BootSet::stock()?;
    let dir = match out {
        Some(d) => d,
        None => new_run_dir("boot")?,
    };
    println!("{}", lulab::setup::kvm_note());
    println!("booting {} … (run directory {})", set.kernel.source_version, dir.display());
    let mut host = Host::boot(&set.machine(&dir)?, &dir, Deadlines::default())?;
    let sock = host.paths.console_sock();
    let attached = lulab::attach::attach(&mut host.console, &format!("{}; detaching shuts the host down", sock.display()));
    println!("shutting the host down (logs in {})", host.paths.dir.display());
    host.shutdown()?;
    attached
}

fn run_scenario(path: &std::path::Path, out: Option<PathBuf>) -> Result<lulab::report::Report> {
    lulab::setup::require_qemu()?;
    let scenario = lulab::scenario::Scenario::load(path)?;
    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "scenario".into());
    let out = match out {
        Some(d) => d,
        None => new_run_dir(&name)?,
    };
    println!("running {name}: {} (output {})", scenario.description, out.display());
    // A run that could not be judged can be replayed too, once it got as far as writing its scenario.
    let report = lulab::scenario::run::run(&name, &scenario, &out).map_err(|e| match out.join(lulab::scenario::run::RESOLVED).exists() {
        true => anyhow::anyhow!("{e:#}\nreplay it step by step: lulab replay {}", out.display()),
        false => e,
    })?;
    print_verdict(&name, &report, &out);
    if !report.as_expected {
        println!("replay it step by step: lulab replay {}", out.display());
    }
    Ok(report)
}

/// The verdict, the findings and where the report is.
fn print_verdict(name: &str, report: &lulab::report::Report, out: &std::path::Path) {
    println!(
        "{name}: expected {}, outcome {} — {}",
        report.expect,
        report.outcome,
        if report.as_expected { "as expected" } else { "NOT as expected" }
    );
    for f in &report.findings {
        let named = report.expect_reasons.is_empty() || report.expect_reasons.contains(&f.reason);
        println!("  - {}{}: {}", f.reason, if named { "" } else { " (not an expected reason)" }, f.detail);
    }
    println!("report: {}/report.md", out.display());
}

/// `lulab replay`: the exit status is `lulab run`'s when the steps ran
/// and were judged, 0 when the person quit.
fn replay(path: &std::path::Path, out: Option<PathBuf>) -> Result<i32> {
    lulab::setup::require_qemu()?;
    let (name, file) = lulab::replay::source(path)?;
    let scenario = lulab::scenario::Scenario::load(&file)?;
    let out = match out {
        Some(d) => d,
        None => new_run_dir(&format!("{name}-replay"))?,
    };
    println!("replaying {name}: {} (from {}, output {})", scenario.description, file.display(), out.display());
    println!("before each step: `step`, `continue`, `break DO`, `console`, `qmp`, `agent`, `ledger`, `timeline`, `quit`; `help` says more");
    match lulab::replay::run(&name, &scenario, &out)? {
        lulab::scenario::run::Ended::Judged(report) => {
            print_verdict(&name, &report, &out);
            Ok(exit_status(&report))
        }
        lulab::scenario::run::Ended::Quit { before } => {
            println!("quit before step {}: the host is shut down; run directory kept: {}", before + 1, out.display());
            Ok(0)
        }
    }
}

/// `lulab run --matrix`: every cell of the scenario, one verdict each.
/// Exit 0 when every cell ran as expected, 2 when a cell could not be
/// carried out (or cannot run on its shape), else 1.
fn run_matrix(path: &std::path::Path, out: Option<PathBuf>, axes: &[lulab::scenario::matrix::Axis]) -> Result<i32> {
    lulab::setup::require_qemu()?;
    let scenario = lulab::scenario::Scenario::load(path)?;
    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "scenario".into());
    let out = match out {
        Some(d) => d,
        None => new_run_dir(&format!("{name}-matrix"))?,
    };
    let cells = lulab::scenario::matrix::cells(&scenario, axes);
    println!("running {name} on {} machine shapes (output {})", cells.len(), out.display());
    let mut rows = Vec::new();
    let mut code = 0;
    for cell in cells {
        let dir = out.join(cell.dir_name());
        let (verdict, worst) = match cell.scenario {
            Err(why) => (format!("cannot run here: {why}"), EXIT_ERROR),
            Ok(sc) => match lulab::scenario::run::run(&name, &sc, &dir) {
                Ok(r) => (format!("{} ({})", r.outcome, if r.as_expected { "as expected" } else { "NOT as expected" }), exit_status(&r)),
                Err(e) => (format!("error: {e:#}"), EXIT_ERROR),
            },
        };
        println!("{}: {verdict}", cell.label);
        code = code.max(worst);
        rows.push((cell.label, verdict));
    }
    println!("\n| cell | {name} (expected {}) |\n|---|---|", scenario.expect);
    for (label, verdict) in &rows {
        println!("| {label} | {verdict} |");
    }
    Ok(code)
}

fn demo() -> Result<()> {
    lulab::setup::ensure_host()?;
    println!("{}", lulab::setup::kvm_note());
    let set = BootSet::stock()?;
    let dir = new_run_dir("demo")?;
    println!("booting {} under TCG with intel-iommu … (run directory {})", set.kernel.source_version, dir.display());
    let mut host = Host::boot(&set.machine(&dir.join("host"))?, &dir.join("host"), Deadlines::default())?;
    let info = host.agent.kernel_info()?;
    let devices = host.agent.pci_devices()?;
    print!("{}", table::host_table(&info, &devices, &host.timings));
    host.shutdown()?;

    println!("\nRX through a live update, judged from outside (RAM file, QEMU's trace, the console):");
    println!("  baseline-rx     no update (positive control)");
    println!("  stock-kexec-rx  Debian's kernel, plain kexec (negative control)");
    println!("  lulab-kexec-rx  our kernel, persistence off (negative control)");
    println!("  live-update-rx  our kernel: guest RAM in pkernfs, VT-d domain frozen and adopted, device kept running");
    let mut reports = Vec::new();
    for name in ["baseline-rx", "stock-kexec-rx", "lulab-kexec-rx", "live-update-rx"] {
        let path = lulab::workspace_root().join("scenarios").join(format!("{name}.toml"));
        reports.push(run_scenario(&path, Some(dir.join(name)))?);
    }
    print!("{}", table::side_by_side(&reports));
    let ok = reports.iter().all(|r| r.as_expected);
    println!("\n{} (reports under {})", if ok { "every run as expected" } else { "a run is NOT as expected" }, dir.display());
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
