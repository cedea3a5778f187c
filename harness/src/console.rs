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

/// Markers that end a boot early: the kernel cannot go on. (Not `---[ end
/// trace`: a WARN or an oops in a process ends with it too, and the kernel
/// goes on; the kernel-log oracle judges those.)
pub const PANIC_MARKERS: &[&str] = &["Kernel panic - not syncing", "end Kernel panic"];

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

    /// After [`Console::hand_over`]: a new rexpect connection, once QEMU
    /// has noticed the person's hang-up (it serves one client at a time).
    pub fn reconnect(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let fresh = loop {
            match Self::connect(&self.socket, &self.log) {
                Ok(c) => break c,
                Err(e) if Instant::now() > deadline => return Err(e.context("taking the console back")),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        *self = fresh;
        Ok(())
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

/// A host's kernel log as both consoles recorded it, for the judge and the
/// tests: the UART's (`console.log`) and the virtio console's (`kmsg.log`,
/// only our kernel prints there). Each copy only ever loses text: the UART
/// under TCG now and then a character (`ok  1 suite`, `[[.000000]`), the
/// virtio console what a kernel prints after its devices were shut down for
/// kexec. So a count is the larger of the two. Bytes that are not UTF-8 are
/// replaced, never a reason to lose a whole log.
#[derive(Debug, Clone, Default)]
pub struct KernelLog {
    uart: String,
    virtio: String,
}

impl KernelLog {
    /// Reads both logs of the host whose run directory is `dir` (a missing
    /// one is empty).
    pub fn of_run(dir: &Path) -> Self {
        let paths = crate::qemu::params::RunPaths::new(dir);
        let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
        Self { uart: read(&paths.console_log()), virtio: read(&paths.kernel_log()) }
    }

    /// Neither copy holds anything.
    pub fn is_empty(&self) -> bool {
        self.uart.trim().is_empty() && self.virtio.trim().is_empty()
    }

    /// The copy on which `measure` is larger (the virtio one on a tie).
    pub fn fuller(&self, measure: impl Fn(&str) -> usize) -> &str {
        if measure(&self.uart) > measure(&self.virtio) {
            &self.uart
        } else {
            &self.virtio
        }
    }

    /// How often `needle` occurs: the larger count of the two copies.
    pub fn count(&self, needle: &str) -> usize {
        self.uart.matches(needle).count().max(self.virtio.matches(needle).count())
    }

    /// Whether either copy holds `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.count(needle) > 0
    }

    /// Where KTAP is read: KUnit runs at boot and only in our kernel, whose
    /// every boot prints on `hvc0` (patch 0004 keeps the replayed start), so
    /// the virtio copy whenever it holds a boot — also in a run through the
    /// stock kernel.
    pub fn ktap(&self) -> &str {
        if self.virtio.contains("Linux version ") {
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

    const UART: &str = "[    0.0] Linux version 7.3\n[    1.0] ok  1 suite\n[    9.0] lulab: sealed: at kexec\n\
                        [    0.0] Linux version 7.3\n[    4.0] lulab: sealed: after the switch\n";
    const VIRTIO: &str = "[    0.0] Linux version 7.3\n[    1.0] ok 1 suite\n\
                          [    0.0] Linux version 7.3\n[    4.0] lulab: sealed: after the switch\n";

    #[test]
    fn counts_take_the_copy_that_lost_less() {
        let l = log(UART, VIRTIO);
        // The virtio copy lacks what was printed after the kexec shutdown.
        assert_eq!(l.count("sealed: "), 2);
        assert!(l.contains("at kexec"));
        // The UART's copy doubled a space.
        assert_eq!(l.count("ok 1 suite"), 1);
        assert!(!l.contains("not in either"));
        assert_eq!(l.fuller(|c| c.matches("sealed: ").count()), UART);
        assert_eq!(l.fuller(|c| c.matches("ok 1 ").count()), VIRTIO);
        assert_eq!(l.fuller(|_| 0), VIRTIO, "a tie goes to the clean copy");
    }

    #[test]
    fn ktap_comes_from_the_virtio_copy_even_through_the_stock_kernel() {
        let uart = format!("{UART}[    0.0] Linux version 6.12\n");
        assert_eq!(log(&uart, VIRTIO).ktap(), VIRTIO);
        assert_eq!(log(&uart, "[    1.4] e1000e: tail only\n").ktap(), uart);
        assert_eq!(log(&uart, "").ktap(), uart);
    }
}
