//! `lulab test`: the README's test command. Installs what the machine lacks,
//! says which prerequisites of the system tier are missing (their tests are
//! then skipped, never passed; under CI they fail), builds the kernels the
//! suite boots once before any test starts (so no test races a kernel build
//! for the two cores), then runs a tier with cargo-nextest.

use std::process::Command;

use anyhow::{bail, Context, Result};
use lulab::preflight::{self, Need};

/// Which tests to run: a nextest profile of `.config/nextest.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TierArg {
    /// Unit, property and snapshot tests: no QEMU, seconds.
    Fast,
    /// Real QEMU hosts: scenario files of tier `system` and the hand-written host tests.
    System,
    /// Scenario files of tier `long` (soaks, sweeps) and the matrix files.
    Long,
    /// Tier `nightly`: hours (the soak on every machine shape); not in `all`.
    Nightly,
    /// Fast, system and long, with JUnit XML (`target/nextest/ci/junit.xml`).
    All,
}

impl TierArg {
    fn profile(self) -> &'static str {
        match self {
            TierArg::Fast => "fast",
            TierArg::System => "system",
            TierArg::Long => "long",
            TierArg::Nightly => "nightly",
            TierArg::All => "ci",
        }
    }
}

/// Runs the tier; returns nextest's exit code.
pub fn run(tier: TierArg, nextest_args: &[String]) -> Result<i32> {
    lulab::setup::ensure_host()?;
    lulab::setup::ensure_test_tools()?;
    ensure_nextest()?;
    if tier != TierArg::Fast {
        prepare_system_tier()?;
    }
    let profile = tier.profile();
    println!("test: cargo nextest run --workspace --profile {profile} {}", nextest_args.join(" "));
    let status = Command::new("cargo")
        .args(["nextest", "run", "--workspace", "--profile", profile])
        .args(nextest_args)
        .current_dir(lulab::workspace_root())
        .status()
        .context("running cargo nextest")?;
    if profile == "ci" {
        println!("test: JUnit XML in {}", lulab::workspace_root().join("target/nextest/ci/junit.xml").display());
    }
    Ok(status.code().unwrap_or(2))
}

/// Installs cargo-nextest when this machine lacks it.
fn ensure_nextest() -> Result<()> {
    let ok = Command::new("cargo").args(["nextest", "--version"]).output().is_ok_and(|o| o.status.success());
    if ok {
        return Ok(());
    }
    println!("setup: cargo-nextest missing: cargo install --locked cargo-nextest (a few minutes)");
    let st = Command::new("cargo").args(["install", "--locked", "cargo-nextest"]).status().context("cargo install")?;
    if !st.success() {
        bail!("cargo install --locked cargo-nextest failed ({st})");
    }
    Ok(())
}

/// Prints what the system tier can use here and builds the kernels and
/// images it boots, so tests find them in the cache.
fn prepare_system_tier() -> Result<()> {
    let mut missing = Vec::new();
    for need in [Need::Qemu, Need::KernelBuild, Need::StockKernel] {
        match need.check() {
            Ok(()) => println!("test: {}: available", need.name()),
            Err(why) => {
                println!("test: {}: MISSING ({why}); tests that need it are {}", need.name(), skipped_or_failed());
                missing.push(need);
            }
        }
    }
    let hosts = lulab::slots::hosts()?;
    println!("test: at most {hosts} QEMU host(s) at once ({}; README, \"Host slots\")", lulab::slots::ENV);
    if missing.contains(&Need::Qemu) {
        return Ok(());
    }
    let t = std::time::Instant::now();
    if !missing.contains(&Need::StockKernel) {
        lulab::lab::BootSet::stock().context("preparing the stock kernel and its initramfs")?;
    }
    if !missing.contains(&Need::KernelBuild) {
        lulab::lab::BootSet::lulab().context("building our kernel and its initramfs")?;
    }
    println!("test: kernels and images ready ({:.0} s; cached by content hash)", t.elapsed().as_secs_f64());
    Ok(())
}

fn skipped_or_failed() -> &'static str {
    if preflight::under_ci() {
        "run and fail (CI is set)"
    } else {
        "skipped"
    }
}
