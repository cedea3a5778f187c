//! Our own QMP transport: newline-delimited JSON over the QMP unix socket.
//!
//! `qapi` 0.15 knows QEMU's schema only up to 9.1, and its client stalls on
//! events it does not know. Here every message is first read as plain JSON:
//! events (known or not) are logged and kept, replies are matched by `id`, and
//! only then is a reply decoded into the `qapi` command's `Ok` type. A reply that
//! does not decode is an error that carries the raw JSON, never a hang.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

/// An asynchronous event QEMU sent.
#[derive(Debug, Clone, PartialEq)]
pub struct QmpEvent {
    /// Event name (e.g. `STOP`, `SHUTDOWN`, or one qapi does not know).
    pub name: String,
    /// The `data` member, or null.
    pub data: Value,
}

/// A connected, capability-negotiated QMP session.
#[derive(Debug)]
pub struct Qmp {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    log: std::fs::File,
    next_id: u64,
    events: Vec<QmpEvent>,
    /// QEMU's version from the greeting, e.g. (10, 0, 2).
    pub version: (u64, u64, u64),
}

impl Qmp {
    /// Connects to `socket`, reads the greeting and negotiates capabilities.
    /// Every message in either direction is appended to `log`.
    pub fn connect(socket: &Path, log: &Path, timeout: Duration) -> Result<Self> {
        let stream = UnixStream::connect(socket).with_context(|| format!("connecting QMP {}", socket.display()))?;
        stream.set_read_timeout(Some(timeout))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut qmp = Self {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
            log,
            next_id: 1,
            events: Vec::new(),
            version: (0, 0, 0),
        };
        let greeting = qmp.read_message(Instant::now() + timeout).context("reading the QMP greeting")?;
        let v = &greeting["QMP"]["version"]["qemu"];
        qmp.version = (
            v["major"].as_u64().unwrap_or(0),
            v["minor"].as_u64().unwrap_or(0),
            v["micro"].as_u64().unwrap_or(0),
        );
        qmp.execute_raw("qmp_capabilities", json!({}), timeout)?;
        Ok(qmp)
    }

    /// Runs a typed `qapi` command and decodes its reply.
    pub fn execute<C: qapi::Command>(&mut self, cmd: &C, timeout: Duration) -> Result<C::Ok> {
        let args = serde_json::to_value(cmd)?;
        let ret = self.execute_raw(C::NAME, args, timeout)?;
        serde_json::from_value(ret.clone())
            .with_context(|| format!("QMP `{}` returned a reply qapi 0.15 cannot decode: {ret}", C::NAME))
    }

    /// Runs any command by name; returns the `return` member.
    pub fn execute_raw(&mut self, name: &str, args: Value, timeout: Duration) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({ "execute": name, "id": id });
        if !args.is_null() && args.as_object().is_none_or(|o| !o.is_empty()) {
            msg["arguments"] = args;
        }
        let line = format!("{msg}\n");
        let _ = write!(self.log, "-> {line}");
        self.writer.write_all(line.as_bytes()).with_context(|| format!("sending QMP `{name}`"))?;
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.read_message(deadline).with_context(|| format!("waiting for the reply to QMP `{name}`"))?;
            if m.get("id").and_then(Value::as_u64) != Some(id) {
                continue; // a reply to a command we gave up on
            }
            if let Some(ret) = m.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = m.get("error") {
                bail!("QMP `{name}` failed: {} ({})", err["desc"].as_str().unwrap_or("?"), err["class"]);
            }
            bail!("QMP `{name}`: unexpected reply {m}");
        }
    }

    /// Events received so far (drained).
    pub fn take_events(&mut self) -> Vec<QmpEvent> {
        std::mem::take(&mut self.events)
    }

    /// Waits until an event named `name` arrives (or was already received).
    pub fn wait_event(&mut self, name: &str, timeout: Duration) -> Result<QmpEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.events.iter().position(|e| e.name == name) {
                return Ok(self.events.remove(i));
            }
            self.read_message(deadline).with_context(|| format!("waiting for QMP event {name}"))?;
        }
    }

    /// Reads one message; events are recorded and also returned.
    fn read_message(&mut self, deadline: Instant) -> Result<Value> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("QMP timed out");
            }
            self.reader.get_ref().set_read_timeout(Some(left))?;
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => bail!("QMP connection closed by QEMU"),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    bail!("QMP timed out")
                }
                Err(e) => return Err(anyhow!(e).context("reading QMP")),
            }
            let _ = write!(self.log, "<- {line}");
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue; // not JSON: logged above, ignored
            };
            if let Some(name) = v.get("event").and_then(Value::as_str) {
                self.events.push(QmpEvent { name: name.to_string(), data: v["data"].clone() });
            }
            return Ok(v);
        }
    }
}

/// Connects to QMP, retrying while QEMU creates its socket.
pub fn connect_when_ready(
    socket: &Path,
    log: &Path,
    deadline: Instant,
    mut alive: impl FnMut() -> Result<()>,
) -> Result<Qmp> {
    loop {
        alive()?;
        match Qmp::connect(socket, log, Duration::from_secs(10)) {
            Ok(q) => return Ok(q),
            Err(e) if Instant::now() > deadline => return Err(e.context("QMP socket never became ready")),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The QMP log path inside a run directory.
pub fn log_path(run_dir: &Path) -> PathBuf {
    run_dir.join("qmp.log")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A fake QEMU that sends an unknown event and an undecodable reply.
    fn fake_qemu(sock: &Path, script: Vec<(&'static str, String)>) -> std::thread::JoinHandle<()> {
        let l = UnixListener::bind(sock).unwrap();
        std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            writeln!(w, r#"{{"QMP": {{"version": {{"qemu": {{"micro": 2, "minor": 0, "major": 10}}, "package": ""}}, "capabilities": []}}}}"#).unwrap();
            for (expect_cmd, reply) in script {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let v: Value = serde_json::from_str(&line).unwrap();
                assert_eq!(v["execute"], expect_cmd);
                let id = v["id"].clone();
                let reply = reply.replace("ID", &id.to_string());
                w.write_all(reply.as_bytes()).unwrap();
            }
        })
    }

    #[test]
    fn survives_unknown_events_and_matches_ids() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        let t = fake_qemu(
            &sock,
            vec![
                ("qmp_capabilities", "{\"return\": {}, \"id\": ID}\n".into()),
                (
                    "query-status",
                    concat!(
                        "{\"event\": \"SOMETHING_NEW_IN_QEMU_10\", \"data\": {\"x\": 1}, \"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}\n",
                        "{\"return\": {\"status\": \"running\", \"running\": true}, \"id\": ID}\n"
                    )
                    .into(),
                ),
                ("query-status", "{\"return\": {\"status\": \"a-state-from-the-future\", \"running\": true}, \"id\": ID}\n".into()),
                ("bogus", "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command bogus has not been found\"}, \"id\": ID}\n".into()),
            ],
        );
        let mut q = Qmp::connect(&sock, &dir.path().join("qmp.log"), Duration::from_secs(5)).unwrap();
        assert_eq!(q.version, (10, 0, 2));
        let st = q.execute(&qapi::qmp::query_status {}, Duration::from_secs(5)).unwrap();
        assert!(st.running);
        let ev = q.take_events();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].name, "SOMETHING_NEW_IN_QEMU_10");
        let err = q.execute(&qapi::qmp::query_status {}, Duration::from_secs(5)).unwrap_err();
        assert!(format!("{err:#}").contains("a-state-from-the-future"), "{err:#}");
        let err = q.execute_raw("bogus", Value::Null, Duration::from_secs(5)).unwrap_err();
        assert!(err.to_string().contains("has not been found"));
        t.join().unwrap();
        let log = std::fs::read_to_string(dir.path().join("qmp.log")).unwrap();
        assert!(log.contains("SOMETHING_NEW_IN_QEMU_10"));
    }
}
