//! Running the kernel's build commands with everything they print going to
//! one log file in the cache, a running count of compiled objects on stdout,
//! and the log's tail in the error when a step fails.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmd;

/// Lines of the log shown when a step fails.
const TAIL_LINES: usize = 40;

/// The build log: every command's output, appended.
#[derive(Debug)]
pub struct Log {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

impl Log {
    /// Creates (truncates) the log at `path`.
    pub fn create(path: &Path) -> Result<Self> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let file = File::create(path).with_context(|| format!("creating build log {}", path.display()))?;
        Ok(Self { path: path.to_path_buf(), file: Arc::new(Mutex::new(file)) })
    }

    /// Where the log is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a line to the log.
    pub fn note(&self, line: &str) {
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(f, "{line}");
    }

    /// Runs a short step (configure, patch) into the log.
    pub fn run(&mut self, c: &mut Command, what: &str) -> Result<()> {
        self.stream(c, what, |_| {})
    }

    /// Runs `make` targets, printing a running count of compiled objects.
    pub fn make(&mut self, c: &mut Command, stage: &str) -> Result<u64> {
        let tty = std::io::stdout().is_terminal();
        let start = Instant::now();
        let mut count = 0u64;
        let mut shown = Instant::now();
        let res = self.stream(c, stage, |line| {
            if !is_compile_line(line) {
                return;
            }
            count += 1;
            if tty {
                print!("\rkernel: [{stage}] {count} objects, {:.0?}", start.elapsed());
                let _ = std::io::stdout().flush();
            } else if shown.elapsed() >= Duration::from_secs(20) {
                println!("kernel: [{stage}] {count} objects, {:.0?}", start.elapsed());
                shown = Instant::now();
            }
        });
        if tty {
            println!();
        }
        res?;
        println!("kernel: [{stage}] done: {count} objects in {:.1?}", start.elapsed());
        Ok(count)
    }

    /// Runs `c`, teeing stdout and stderr into the log and each stdout/stderr
    /// line into `on_line`; on failure the error holds the log's tail.
    fn stream(&mut self, c: &mut Command, what: &str, mut on_line: impl FnMut(&str)) -> Result<()> {
        let shown = cmd::describe(c);
        self.note(&format!("$ {shown}"));
        let mut child = c
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("could not start `{shown}`"))?;
        let err = child.stderr.take().context("no stderr pipe")?;
        let file = Arc::clone(&self.file);
        let err_thread = std::thread::spawn(move || copy_lines(err, &file, |_| {}));
        let out = child.stdout.take().context("no stdout pipe")?;
        copy_lines(out, &self.file, &mut on_line);
        let _ = err_thread.join();
        let status = child.wait().with_context(|| format!("waiting for `{shown}`"))?;
        if !status.success() {
            let text = std::fs::read(&self.path).unwrap_or_default();
            bail!(
                "{what} failed ({status}); full log: {}\n--- last {TAIL_LINES} lines ---\n{}",
                self.path.display(),
                cmd::tail(&text, TAIL_LINES)
            );
        }
        Ok(())
    }
}

fn copy_lines(r: impl Read, file: &Mutex<File>, mut on_line: impl FnMut(&str)) {
    for line in BufReader::new(r).lines().map_while(Result::ok) {
        {
            let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(f, "{line}");
        }
        on_line(&line);
    }
}

/// Kbuild's quiet output for one compiled object: `  CC      path.o`,
/// `  RUSTC L  rust/core.o`, `  AS      …`.
pub fn is_compile_line(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("  ") else { return false };
    let tag = rest.split_whitespace().next().unwrap_or("");
    matches!(tag, "CC" | "AS" | "RUSTC" | "HOSTCC" | "HOSTRUSTC" | "CC [M]") || rest.starts_with("CC [M]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_kbuild_compile_lines_only() {
        assert!(is_compile_line("  CC      kernel/fork.o"));
        assert!(is_compile_line("  RUSTC L rust/core.o"));
        assert!(is_compile_line("  CC [M]  samples/rust/rust_minimal.o"));
        assert!(!is_compile_line("  LD      vmlinux.o"));
        assert!(!is_compile_line("make[1]: Entering directory"));
    }

    #[test]
    fn failure_shows_the_log_tail() {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = Log::create(&tmp.path().join("build.log")).unwrap();
        let err = log.run(Command::new("sh").args(["-c", "echo first; echo boom >&2; exit 3"]), "step x").unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("step x failed") && msg.contains("boom") && msg.contains("build.log"), "{msg}");
    }
}
