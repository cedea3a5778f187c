//! The serial console, driven with `rexpect` over QEMU's console socket.
//!
//! It is used for what only the console can tell — boot progress, panics, the
//! interactive shell — never to obtain results (those come from the agent).
//! QEMU's chardev log (`console.log`) records everything, even while nobody
//! is connected, so errors quote its last lines.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rexpect::error::Error as ExpectError;
use rexpect::session::{Options, ReadUntil, StreamSession};

/// Markers that end a boot early: the kernel cannot go on.
pub const PANIC_MARKERS: &[&str] = &["Kernel panic - not syncing", "end Kernel panic", "---[ end trace"];

/// How long one rexpect poll waits before the caller's deadline is checked.
const POLL: Duration = Duration::from_millis(250);

/// A connected serial console.
pub struct Console {
    session: StreamSession<UnixStream>,
    /// Our handle on the connection, to end rexpect's reader thread.
    stream: UnixStream,
    socket: PathBuf,
    log: PathBuf,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").field("log", &self.log).finish_non_exhaustive()
    }
}

/// What [`Console::expect`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Index into the needles.
    pub index: usize,
    /// Console text before the match.
    pub before: String,
}

impl Console {
    /// Connects to the console socket; `log` is QEMU's chardev log of it.
    pub fn connect(socket: &Path, log: &Path) -> Result<Self> {
        let stream = UnixStream::connect(socket).with_context(|| format!("connecting console {}", socket.display()))?;
        let reader = stream.try_clone()?;
        let own = stream.try_clone()?;
        let opts = Options::new().timeout_ms(Some(POLL.as_millis() as u64)).strip_ansi_escape_codes(true);
        Ok(Self { session: StreamSession::new(reader, stream, opts), stream: own, socket: socket.into(), log: log.into() })
    }

    /// Ends the rexpect connection and returns a raw one (for a human at a
    /// terminal). QEMU serves one console client at a time, so this retries
    /// until QEMU has noticed the hang-up. `expect` fails afterwards.
    pub fn hand_over(&mut self, timeout: Duration) -> Result<UnixStream> {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        let deadline = Instant::now() + timeout;
        loop {
            match UnixStream::connect(&self.socket) {
                Ok(s) => return Ok(s),
                Err(e) if Instant::now() > deadline => {
                    return Err(e).with_context(|| format!("reconnecting console {}", self.socket.display()))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Waits for the first of `needles` to appear on the console. Between polls
    /// `alive` is asked whether waiting still makes sense (QEMU alive, …).
    pub fn expect(
        &mut self,
        needles: &[&str],
        deadline: Instant,
        mut alive: impl FnMut() -> Result<()>,
    ) -> Result<Found> {
        let what = needles.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(" or ");
        let wait_start = Instant::now();
        loop {
            let any = ReadUntil::Any(needles.iter().map(|n| ReadUntil::String(n.to_string())).collect());
            match self.session.exp_any(vec![any]) {
                Ok((before, matched)) => {
                    let index = needles.iter().position(|n| *n == matched).unwrap_or(0);
                    return Ok(Found { index, before });
                }
                Err(ExpectError::Timeout { .. }) => {}
                Err(ExpectError::EOF { .. }) => {
                    // The console closes a moment before QEMU can be reaped:
                    // give `alive` the chance to report the exit status.
                    let grace = Instant::now() + Duration::from_secs(5);
                    while Instant::now() < grace {
                        alive()?;
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    bail!("console closed while waiting for {what}\n{}", self.tail_note(20));
                }
                Err(e) => return Err(e).context("reading the console"),
            }
            alive()?;
            if Instant::now() >= deadline {
                bail!(
                    "waited {:.1?} for {what} on the console (deadline passed)\n{}",
                    wait_start.elapsed(),
                    self.tail_note(20)
                );
            }
        }
    }

    /// Types a line (followed by newline) into the console.
    pub fn send_line(&mut self, line: &str) -> Result<()> {
        self.session.send_line(line).context("writing to the console")?;
        Ok(())
    }

    /// The last `n` lines the console printed, from QEMU's log.
    pub fn tail(&self, n: usize) -> String {
        tail_of(&self.log, n)
    }

    fn tail_note(&self, n: usize) -> String {
        format!("last {n} console lines ({}):\n{}", self.log.display(), self.tail(n))
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        // Ends rexpect's reader thread, which holds a clone of the socket.
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// A host's kernel log as both consoles recorded it, for the judge: the
/// UART's (`console.log`, every kernel, now and then a character dropped or
/// doubled under TCG) and the virtio console's (`kmsg.log`, lossless, only
/// our kernel prints there). Bytes that are not UTF-8 are replaced, never a
/// reason to lose a whole log.
#[derive(Debug, Clone, Default)]
pub struct KernelLog {
    uart: String,
    virtio: String,
}

fn boots(text: &str) -> usize {
    text.matches("Linux version ").count()
}

impl KernelLog {
    /// Reads both logs (a missing one is empty).
    pub fn read(uart: &Path, virtio: &Path) -> Self {
        let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
        Self { uart: read(uart), virtio: read(virtio) }
    }

    /// Every boot: the virtio copy when it holds at least as many boots as
    /// the UART's, else the UART's (a run through a kernel without `hvc0`).
    pub fn every_boot(&self) -> &str {
        if !self.virtio.is_empty() && boots(&self.virtio) >= boots(&self.uart) {
            &self.virtio
        } else {
            &self.uart
        }
    }

    /// Where KTAP is read: KUnit runs only in our kernel, and every boot of
    /// it prints on `hvc0`, so the virtio copy whenever it holds a boot —
    /// also in a run through the stock kernel.
    pub fn ktap(&self) -> &str {
        if boots(&self.virtio) > 0 {
            &self.virtio
        } else {
            &self.uart
        }
    }
}

/// The last `n` lines of a console log file (empty when missing).
pub fn tail_of(log: &Path, n: usize) -> String {
    crate::cmd::tail(&std::fs::read(log).unwrap_or_default(), n)
}

#[cfg(test)]
mod tests {
    use super::KernelLog;

    fn log(uart: &str, virtio: &str) -> KernelLog {
        KernelLog { uart: uart.into(), virtio: virtio.into() }
    }

    #[test]
    fn the_virtio_copy_wins_unless_it_missed_a_boot() {
        let uart = "[    0.0] Linux version 7.3\n[[.0] garbled\n[    0.0] Linux version 7.3\n";
        let both = "[    0.0] Linux version 7.3\n[    0.1] clean\n[    0.0] Linux version 7.3\n";
        assert_eq!(log(uart, both).every_boot(), both);
        let one = "[    0.0] Linux version 7.3\n[    1.0] ok 1 suite\n";
        assert_eq!(log(uart, one).every_boot(), uart);
        assert_eq!(log(uart, "").every_boot(), uart);
    }

    #[test]
    fn ktap_comes_from_the_virtio_copy_even_through_the_stock_kernel() {
        let uart = "[    0.0] Linux version 7.3\n[    1.0] ok  1 suite\n[    0.0] Linux version 6.12\n";
        let virtio = "[    0.0] Linux version 7.3\n[    1.0] ok 1 suite\n";
        assert_eq!(log(uart, virtio).ktap(), virtio);
        assert_eq!(log(uart, virtio).every_boot(), uart);
        assert_eq!(log(uart, "[    1.4] e1000e: tail only\n").ktap(), uart);
    }
}
