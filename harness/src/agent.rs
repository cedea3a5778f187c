//! Host side of the agent channel: JSON requests over the virtio-serial
//! socket, replies matched by id. Results come from here, never from the console.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use lulab_proto::{ExecResult, KernelInfo, Op, PciDevice, Reply, Request, Response};

/// A connection to the guest agent.
#[derive(Debug)]
pub struct AgentClient {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    next_id: u64,
    socket: PathBuf,
    /// Times QEMU's end of the socket hung up and the client connected again.
    pub reconnects: u32,
    /// Each reconnect: the request it happened during and when
    /// ([`crate::traffic::clock::now_ns`]), for the run's journal and report.
    pub hangups: Vec<(String, u64)>,
}

/// Why a call did not produce a reply.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// No reply before the deadline (agent not up yet, or busy).
    #[error("No reply from the agent within {0:?}")]
    Timeout(Duration),
    /// The agent answered with an error.
    #[error("Agent refused `{op}`: {msg}")]
    Refused {
        /// Operation name.
        op: String,
        /// The agent's message.
        msg: String,
    },
    /// Transport failure.
    #[error(transparent)]
    Io(#[from] anyhow::Error),
}

impl AgentClient {
    /// Connects to QEMU's end of the agent port.
    pub fn connect(socket: &Path) -> Result<Self> {
        let s = UnixStream::connect(socket).with_context(|| format!("connecting agent socket {}", socket.display()))?;
        Ok(Self { writer: s.try_clone()?, reader: BufReader::new(s), next_id: 1, socket: socket.into(), reconnects: 0, hangups: Vec::new() })
    }

    /// QEMU's chardev (`server=on`) takes a new client once the old one is
    /// gone: connects again after QEMU hung up on us.
    fn reconnect(&mut self) -> Result<()> {
        let s = UnixStream::connect(&self.socket)
            .with_context(|| format!("reconnecting agent socket {}", self.socket.display()))?;
        self.writer = s.try_clone()?;
        self.reader = BufReader::new(s);
        self.reconnects += 1;
        Ok(())
    }

    /// Sends `op` and waits up to `timeout` for its reply.
    pub fn call(&mut self, op: Op, timeout: Duration) -> Result<Reply, AgentError> {
        self.call_inner(op, timeout, None)
    }

    /// [`AgentClient::call`], calling `poll` about every 20 ms while the
    /// reply has not come (faults aimed at this moment fire, lasting ones
    /// end on time, QEMU must live); `poll`'s error ends the wait.
    pub fn call_polling(&mut self, op: Op, timeout: Duration, poll: &mut dyn FnMut() -> Result<()>) -> Result<Reply, AgentError> {
        self.call_inner(op, timeout, Some(poll))
    }

    fn call_inner(&mut self, op: Op, timeout: Duration, mut poll: Option<&mut dyn FnMut() -> Result<()>>) -> Result<Reply, AgentError> {
        const SLICE: Duration = Duration::from_millis(20);
        let id = self.next_id;
        self.next_id += 1;
        let name = serde_json::to_value(&op).ok().and_then(|v| v["op"].as_str().map(String::from)).unwrap_or_default();
        let mut line = serde_json::to_vec(&Request { id, op }).map_err(|e| anyhow!(e))?;
        line.push(b'\n');
        self.writer.write_all(&line).context("writing to the agent socket")?;
        let deadline = Instant::now() + timeout;
        let mut hung_up = false;
        // Kept across reads: a line cut by a polling slice goes on in the next read.
        let mut buf = String::new();
        loop {
            if let Some(poll) = poll.as_mut() {
                poll().map_err(AgentError::Io)?;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(AgentError::Timeout(timeout));
            }
            let wait = if poll.is_some() { left.min(SLICE) } else { left };
            self.reader.get_ref().set_read_timeout(Some(wait)).context("agent socket")?;
            match self.reader.read_line(&mut buf) {
                // Seen once in several hundred runs on a loaded machine, with
                // QEMU alive: connect again and send the request once more
                // (same id: whichever copy is answered first is the reply, and later
                // calls skip the other's answer by its id).
                Ok(0) if !hung_up => {
                    hung_up = true;
                    eprintln!("lulab: agent socket closed by QEMU during `{name}`; reconnecting and sending it again");
                    self.hangups.push((name.to_string(), crate::traffic::clock::now_ns()));
                    self.reconnect()?;
                    self.writer.write_all(&line).context("writing to the agent socket")?;
                    continue;
                }
                Ok(0) => return Err(anyhow!("agent socket closed by QEMU (again after reconnecting)").into()),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    if wait < left {
                        continue; // a polling slice ended, not the deadline
                    }
                    return Err(AgentError::Timeout(timeout));
                }
                Err(e) => return Err(anyhow!(e).context("reading the agent socket").into()),
            }
            let line_read = std::mem::take(&mut buf);
            let Ok(resp) = serde_json::from_str::<Response>(line_read.trim()) else {
                continue; // a partial line from an agent that died mid-write
            };
            if resp.id != id {
                continue; // the reply to an earlier call we stopped waiting for
            }
            return resp.result.map_err(|msg| AgentError::Refused { op: name, msg });
        }
    }

    /// Waits until the agent answers a ping; `alive` is checked between tries.
    pub fn wait_ready(&mut self, deadline: Instant, mut alive: impl FnMut() -> Result<()>) -> Result<Reply> {
        loop {
            alive()?;
            match self.call(Op::Ping, Duration::from_millis(500)) {
                Ok(r) => return Ok(r),
                Err(AgentError::Timeout(_)) if Instant::now() < deadline => {}
                Err(AgentError::Timeout(_)) => bail!("the agent did not answer a ping before the deadline"),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Runs a program in the host.
    pub fn exec(&mut self, argv: &[&str], timeout: Duration) -> Result<ExecResult> {
        let op = Op::Exec { argv: argv.iter().map(|s| s.to_string()).collect(), timeout_ms: timeout.as_millis() as u64 };
        match self.call(op, timeout + Duration::from_secs(5))? {
            Reply::Exec(r) => Ok(r),
            other => bail!("unexpected reply to exec: {other:?}"),
        }
    }

    /// Reads a file in the host.
    pub fn read_file(&mut self, path: &str) -> Result<String> {
        match self.call(Op::ReadFile { path: path.into(), max_bytes: 1 << 20 }, Duration::from_secs(10))? {
            Reply::File { contents, .. } => Ok(contents),
            other => bail!("unexpected reply to read_file: {other:?}"),
        }
    }

    /// PCI devices with IOMMU groups and drivers.
    pub fn pci_devices(&mut self) -> Result<Vec<PciDevice>> {
        match self.call(Op::PciDevices, Duration::from_secs(10))? {
            Reply::PciDevices { devices } => Ok(devices),
            other => bail!("unexpected reply to pci_devices: {other:?}"),
        }
    }

    /// Kernel identity and IOMMU state.
    pub fn kernel_info(&mut self) -> Result<KernelInfo> {
        match self.call(Op::KernelInfo, Duration::from_secs(10))? {
            Reply::KernelInfo(k) => Ok(k),
            other => bail!("unexpected reply to kernel_info: {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// QEMU's side of the socket for two clients in turn: reads one request
    /// from each, answers it when `answer[i]`, then hangs up. Returns the
    /// request lines.
    fn fake_qemu(path: &Path, answer: [bool; 2]) -> std::thread::JoinHandle<Vec<String>> {
        let listener = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            let mut lines = Vec::new();
            for answer in answer {
                let (s, _) = listener.accept().unwrap();
                let mut line = String::new();
                BufReader::new(s.try_clone().unwrap()).read_line(&mut line).unwrap();
                if answer {
                    let req: serde_json::Value = serde_json::from_str(&line).unwrap();
                    let resp = Response { id: req["id"].as_u64().unwrap(), result: Ok(Reply::Done) };
                    let mut out = serde_json::to_vec(&resp).unwrap();
                    out.push(b'\n');
                    (&s).write_all(&out).unwrap();
                }
                lines.push(line);
            }
            lines
        })
    }

    #[test]
    fn a_hang_up_is_followed_by_one_reconnect_and_the_same_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let server = fake_qemu(&path, [false, true]);
        let mut client = AgentClient::connect(&path).unwrap();
        let reply = client.call(Op::Ping, Duration::from_secs(10)).unwrap();
        assert!(matches!(reply, Reply::Done));
        assert_eq!(client.reconnects, 1);
        assert_eq!(client.hangups.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>(), ["ping"]);
        let lines = server.join().unwrap();
        assert_eq!(lines[0], lines[1], "the same request, same id, is sent again");
    }

    #[test]
    fn a_second_hang_up_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let server = fake_qemu(&path, [false, false]);
        let mut client = AgentClient::connect(&path).unwrap();
        let err = client.call(Op::Ping, Duration::from_secs(10)).unwrap_err();
        assert!(err.to_string().contains("again after reconnecting"), "{err}");
        server.join().unwrap();
    }
}
