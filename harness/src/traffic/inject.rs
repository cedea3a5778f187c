//! The injector: writes test frames into the e1000e's `-netdev stream`
//! socket (4-byte big-endian length, then the frame) at a fixed rate, and
//! records what happened to every frame.
//!
//! The socket is non-blocking. EAGAIN means QEMU stopped reading (the NIC
//! cannot receive: back-pressure, not loss), so the frame stays queued here
//! and is retried; frames are never dropped by the injector. Pacing is by
//! deadline (`start + seq / rate`), so a stall is followed by a burst and the
//! average rate does not drift.

use std::collections::VecDeque;
use std::io::{ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::clock::now_ns;
use super::frame::{self, MAX_FRAME, MIN_FRAME};

/// What to inject.
#[derive(Debug, Clone, PartialEq)]
pub struct InjectConfig {
    /// Run id carried in every frame.
    pub run_id: u64,
    /// Frames per second (> 0).
    pub rate_fps: f64,
    /// Total frame size in bytes ([`MIN_FRAME`]..=[`MAX_FRAME`]).
    pub frame_size: usize,
    /// Stop generating after this many frames (`None`: until [`Injector::stop`]).
    pub max_frames: Option<u64>,
    /// At stop, how long to keep trying to finish a half-written frame.
    pub finish_timeout: Duration,
}

impl InjectConfig {
    /// `rate_fps` frames/s of `frame_size` bytes, unbounded.
    pub fn new(run_id: u64, rate_fps: f64, frame_size: usize) -> Self {
        Self { run_id, rate_fps, frame_size, max_frames: None, finish_timeout: Duration::from_millis(200) }
    }
}

/// Errors of the injector.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// Bad configuration.
    #[error("Invalid injector config: {0}")]
    Config(String),
    /// The socket could not be made non-blocking.
    #[error("Cannot set netdev socket non-blocking")]
    Socket(#[source] std::io::Error),
    /// The injector thread could not be started.
    #[error("Cannot start injector thread")]
    Spawn(#[source] std::io::Error),
    /// The injector thread panicked.
    #[error("Injector thread panicked")]
    Panicked,
}

/// One generated frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentFrame {
    /// Sequence number.
    pub seq: u64,
    /// When it was due by the rate ([`now_ns`] clock).
    pub due_ns: u64,
    /// When its last byte went into the socket; `None`: still queued in the
    /// injector at stop (never or only partly written).
    pub written_ns: Option<u64>,
}

/// Everything the injector did, returned by [`Injector::stop`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SentLog {
    /// Run id of the frames.
    pub run_id: u64,
    /// Frame size.
    pub frame_size: usize,
    /// Every generated frame, in seq order (`frames[i].seq == i`).
    pub frames: Vec<SentFrame>,
    /// Writes refused with EAGAIN (QEMU not reading).
    pub eagain: u64,
    /// First EAGAIN, if any.
    pub first_eagain_ns: Option<u64>,
    /// Longest queue of unwritten frames seen.
    pub max_queued: u64,
    /// The socket failed (peer gone); generation stopped there.
    pub write_error: Option<String>,
    /// Injection start and stop ([`now_ns`] clock).
    pub started_ns: u64,
    /// See `started_ns`.
    pub stopped_ns: u64,
}

impl SentLog {
    /// Frames generated (written or still queued).
    pub fn sent(&self) -> u64 {
        self.frames.len() as u64
    }
    /// Frames fully written into the socket.
    pub fn written(&self) -> u64 {
        self.frames.iter().filter(|f| f.written_ns.is_some()).count() as u64
    }
    /// Frames still queued in the injector at stop (back-pressure).
    pub fn unwritten(&self) -> u64 {
        self.sent() - self.written()
    }
    /// Sequence numbers of the unwritten frames.
    pub fn unwritten_seqs(&self) -> impl Iterator<Item = u64> + '_ {
        self.frames.iter().filter(|f| f.written_ns.is_none()).map(|f| f.seq)
    }
}

/// A running injector thread.
#[derive(Debug)]
pub struct Injector {
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    thread: Option<JoinHandle<SentLog>>,
    /// The connection itself, held open until the injector is stopped: when
    /// QEMU's stream netdev reads EOF it goes link-down, and frames it has
    /// already taken but the NIC has not (back-pressure) are never delivered.
    _conn: UnixStream,
}

impl Injector {
    /// Starts injecting into `stream` (the accepted connection of QEMU's
    /// stream netdev).
    pub fn start(stream: UnixStream, cfg: InjectConfig) -> Result<Self, InjectError> {
        if !(cfg.rate_fps.is_finite() && cfg.rate_fps > 0.0) {
            return Err(InjectError::Config(format!("rate_fps {} must be > 0", cfg.rate_fps)));
        }
        if !(MIN_FRAME..=MAX_FRAME).contains(&cfg.frame_size) {
            return Err(InjectError::Config(format!(
                "frame_size {} outside {MIN_FRAME}..={MAX_FRAME}",
                cfg.frame_size
            )));
        }
        stream.set_nonblocking(true).map_err(InjectError::Socket)?;
        let conn = stream.try_clone().map_err(InjectError::Socket)?;
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let mut pump = Pump::new(stream, cfg, stop.clone(), written.clone());
        let thread = std::thread::Builder::new()
            .name("lulab-inject".into())
            .spawn(move || pump.run())
            .map_err(InjectError::Spawn)?;
        Ok(Self { stop, written, thread: Some(thread), _conn: conn })
    }

    /// The live count behind [`Injector::written`], for watchers on other threads.
    pub fn written_counter(&self) -> Arc<AtomicU64> {
        self.written.clone()
    }

    /// Frames fully written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// True when the thread has ended by itself (`max_frames` written, or a
    /// socket error).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stops injecting and returns the log.
    pub fn stop(mut self) -> Result<SentLog, InjectError> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().ok_or(InjectError::Panicked)?;
        thread.join().map_err(|_| InjectError::Panicked)
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A message being written: length prefix + frame, and how much is out.
#[derive(Debug)]
struct Partial {
    seq: u64,
    bytes: Vec<u8>,
    done: usize,
}

/// What one write attempt achieved.
enum Outcome {
    /// Nothing left to write.
    Idle,
    /// QEMU is not reading.
    Blocked,
}

#[derive(Debug)]
struct Pump {
    stream: UnixStream,
    cfg: InjectConfig,
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    log: SentLog,
    queue: VecDeque<u64>,
    partial: Option<Partial>,
    scratch: Vec<u8>,
}

impl Pump {
    fn new(stream: UnixStream, cfg: InjectConfig, stop: Arc<AtomicBool>, written: Arc<AtomicU64>) -> Self {
        let log = SentLog { run_id: cfg.run_id, frame_size: cfg.frame_size, ..SentLog::default() };
        Self { stream, cfg, stop, written, log, queue: VecDeque::new(), partial: None, scratch: Vec::new() }
    }

    fn due_ns(&self, seq: u64) -> u64 {
        self.log.started_ns + (seq as f64 * 1e9 / self.cfg.rate_fps) as u64
    }

    fn run(&mut self) -> SentLog {
        self.log.started_ns = now_ns();
        let mut next = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            let now = now_ns();
            while self.cfg.max_frames.is_none_or(|m| next < m) && self.due_ns(next) <= now {
                self.log.frames.push(SentFrame { seq: next, due_ns: self.due_ns(next), written_ns: None });
                self.queue.push_back(next);
                next += 1;
            }
            self.log.max_queued = self.log.max_queued.max(self.queue.len() as u64);
            let outcome = match self.pump() {
                Ok(o) => o,
                Err(e) => {
                    self.log.write_error = Some(e.to_string());
                    break;
                }
            };
            let all_done = self.cfg.max_frames.is_some_and(|m| next >= m);
            if all_done && matches!(outcome, Outcome::Idle) {
                break;
            }
            let wait = match outcome {
                Outcome::Blocked => 500_000,
                Outcome::Idle => self.due_ns(next).saturating_sub(now_ns()).min(2_000_000),
            };
            std::thread::sleep(Duration::from_nanos(wait));
        }
        self.finish_partial();
        self.log.stopped_ns = now_ns();
        std::mem::take(&mut self.log)
    }

    /// Writes queued frames until the queue is empty or the socket is full.
    fn pump(&mut self) -> std::io::Result<Outcome> {
        loop {
            if self.partial.is_none() {
                let Some(seq) = self.queue.pop_front() else { return Ok(Outcome::Idle) };
                self.partial = Some(self.message(seq));
            }
            if !self.write_partial()? {
                self.log.eagain += 1;
                self.log.first_eagain_ns.get_or_insert_with(now_ns);
                return Ok(Outcome::Blocked);
            }
        }
    }

    /// Tries to finish the current message; Ok(false) on EAGAIN.
    fn write_partial(&mut self) -> std::io::Result<bool> {
        let Some(p) = self.partial.as_mut() else { return Ok(true) };
        while p.done < p.bytes.len() {
            match self.stream.write(&p.bytes[p.done..]) {
                Ok(0) => return Err(std::io::Error::new(ErrorKind::WriteZero, "netdev socket closed")),
                Ok(n) => p.done += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let seq = p.seq;
        self.partial = None;
        self.log.frames[seq as usize].written_ns = Some(now_ns());
        self.written.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    fn message(&mut self, seq: u64) -> Partial {
        let payload = frame::payload_len_for(self.cfg.frame_size) as u16;
        frame::encode_into(self.cfg.run_id, seq, now_ns(), payload, &mut self.scratch);
        let mut bytes = Vec::with_capacity(4 + self.scratch.len());
        bytes.extend_from_slice(&(self.scratch.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&self.scratch);
        Partial { seq, bytes, done: 0 }
    }

    /// Keeps the stream's framing intact: a half-written frame is finished if
    /// QEMU reads within the timeout; otherwise it counts as unwritten.
    fn finish_partial(&mut self) {
        let deadline = now_ns() + self.cfg.finish_timeout.as_nanos() as u64;
        while self.partial.as_ref().is_some_and(|p| p.done > 0) && now_ns() < deadline {
            match self.write_partial() {
                Ok(true) => break,
                Ok(false) => std::thread::sleep(Duration::from_millis(1)),
                Err(_) => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn read_messages(peer: &mut UnixStream, n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|_| {
                let mut len = [0u8; 4];
                peer.read_exact(&mut len).unwrap();
                let mut f = vec![0; u32::from_be_bytes(len) as usize];
                peer.read_exact(&mut f).unwrap();
                f
            })
            .collect()
    }

    /// QEMU's stream netdev goes link-down at EOF and never delivers the
    /// frames it already took from the socket (back-pressure): the
    /// connection must outlive the last write, until `stop`.
    #[test]
    fn the_connection_stays_open_after_the_last_frame_until_stop() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut cfg = InjectConfig::new(7, 5000.0, 128);
        cfg.max_frames = Some(5);
        let inj = Injector::start(a, cfg).unwrap();
        read_messages(&mut b, 5);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !inj.is_finished() {
            assert!(std::time::Instant::now() < deadline, "injector did not finish");
            std::thread::sleep(Duration::from_millis(5));
        }
        b.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 16];
        let e = b.read(&mut buf).expect_err("no EOF while the injector lives");
        assert_eq!(e.kind(), ErrorKind::WouldBlock);
        inj.stop().unwrap();
        b.set_nonblocking(false).unwrap();
        assert_eq!(b.read(&mut buf).unwrap(), 0, "EOF once stopped");
    }

    #[test]
    fn sends_paced_sequenced_frames() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut cfg = InjectConfig::new(42, 2000.0, 128);
        cfg.max_frames = Some(20);
        let t0 = now_ns();
        let inj = Injector::start(a, cfg).unwrap();
        let msgs = read_messages(&mut b, 20);
        let log = inj.stop().unwrap();
        for (i, m) in msgs.iter().enumerate() {
            assert_eq!(m.len(), 128);
            assert_eq!(frame::decode(m, 42).unwrap().seq, i as u64);
        }
        assert_eq!((log.sent(), log.written(), log.unwritten()), (20, 20, 0));
        // 20 frames at 2000/s take at least 9.5 ms (frame 19 is due at 9.5 ms).
        assert!(log.frames[19].written_ns.unwrap() - t0 >= 9_500_000);
    }

    #[test]
    fn back_pressure_queues_instead_of_dropping() {
        let (a, mut b) = UnixStream::pair().unwrap();
        // Nobody reads `b` for a while: the socket buffer fills, then EAGAIN.
        let inj = Injector::start(a, InjectConfig::new(7, 50_000.0, 1500)).unwrap();
        std::thread::sleep(Duration::from_millis(150));
        let log = inj.stop().unwrap();
        assert!(log.eagain > 0, "socket never filled");
        assert!(log.unwritten() > 0);
        assert_eq!(log.sent(), log.written() + log.unwritten());
        // Everything written is readable, in order, without gaps.
        let msgs = read_messages(&mut b, log.written() as usize);
        for (i, m) in msgs.iter().enumerate() {
            assert_eq!(frame::decode(m, 7).unwrap().seq, i as u64);
        }
        let unwritten: Vec<u64> = log.unwritten_seqs().collect();
        assert_eq!(unwritten[0], log.written(), "unwritten frames are the tail");
    }

    #[test]
    fn rejects_bad_config() {
        let (a, _b) = UnixStream::pair().unwrap();
        assert!(Injector::start(a, InjectConfig::new(1, 0.0, 128)).is_err());
        let (a, _b) = UnixStream::pair().unwrap();
        assert!(Injector::start(a, InjectConfig::new(1, 10.0, 20)).is_err());
    }

    #[test]
    fn peer_gone_is_reported() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let inj = Injector::start(a, InjectConfig::new(1, 1000.0, 64)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let log = inj.stop().unwrap();
        assert!(log.write_error.is_some());
    }
}
