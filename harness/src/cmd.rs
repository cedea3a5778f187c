//! Running host tools (apt-get, dpkg-deb, depmod, make…) with errors that name
//! the command and show the tail of what it printed.

use std::process::{Command, Output};

use anyhow::{bail, Context, Result};

/// Runs `cmd` to completion, capturing output; fails unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let shown = describe(cmd);
    let out = cmd.output().with_context(|| format!("could not start `{shown}`"))?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed with {}\n{}",
            out.status,
            tail(&[out.stdout.as_slice(), out.stderr.as_slice()].concat(), 20)
        );
    }
    Ok(out)
}

/// Runs `cmd` and returns its stdout as a string.
pub fn stdout(cmd: &mut Command) -> Result<String> {
    Ok(String::from_utf8_lossy(&run(cmd)?.stdout).into_owned())
}

/// Runs `cmd` with its output going to our terminal (long installs).
pub fn run_visible(cmd: &mut Command) -> Result<()> {
    let shown = describe(cmd);
    let status = cmd.status().with_context(|| format!("could not start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed with {status}");
    }
    Ok(())
}

/// The command line as a user would type it.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last `n` lines of `bytes`.
pub fn tail(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// True when `program` is found on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}
