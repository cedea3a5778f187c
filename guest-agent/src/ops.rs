//! Request handlers. Each returns the reply or an error message for the harness.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lulab_proto::{ExecResult, KernelInfo, Op, PciDevice, Reply};

use crate::dma;

/// What the main loop does after sending a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Keep serving.
    Continue,
    /// Jump into the kexec-loaded kernel.
    Kexec,
    /// Die at once ([`Op::Crash`]).
    Die,
}

/// The agent's state across requests.
#[derive(Debug, Default)]
pub struct Agent {
    /// One engine per device, keyed by PCI address.
    dma: std::collections::BTreeMap<String, dma::Engine>,
    /// `hand_over` ran: `kexec_exec` only jumps (a second hand-over would
    /// rewrite what a fault aimed between the two did to the first).
    handed_over: bool,
}

impl Agent {
    /// Dispatches one operation.
    pub fn handle(&mut self, op: Op) -> (Result<Reply, String>, After) {
        match op {
            Op::HandOver => (self.hand_over().map(|()| Reply::Done), After::Continue),
            Op::KexecExec => match if self.handed_over { Ok(()) } else { self.hand_over() } {
                Ok(()) => (Ok(Reply::Done), After::Kexec),
                Err(e) => (Err(e), After::Continue),
            },
            Op::DmaStart(cfg) => (self.dma_start(&cfg), After::Continue),
            Op::DmaStatus { pci } => {
                let r = self.dma.get(&pci).map(|e| Reply::DmaStatus(e.status()));
                (r.ok_or_else(|| format!("no DMA engine for {pci}")), After::Continue)
            }
            Op::DmaRemapProbe { pci } => {
                let r = self.dma.get(&pci).ok_or_else(|| format!("no DMA engine for {pci}")).and_then(|e| e.remap_probe());
                (r.map(|_| Reply::Done), After::Continue)
            }
            Op::DmaDeviceReset { pci } => {
                let r = self.dma.get(&pci).ok_or_else(|| format!("no DMA engine for {pci}")).and_then(|e| e.reset_device());
                (r.map(|_| Reply::Done), After::Continue)
            }
            Op::DmaReattach { pci } => (self.dma_reattach(&pci), After::Continue),
            Op::Crash => (Ok(Reply::Done), After::Die),
            Op::DmaStop { pci } => {
                // A stopped engine needs no keeper: its device goes when this agent closes it.
                dma::keeper::release(&pci);
                let r = self.dma.get_mut(&pci).map(|e| Reply::DmaStatus(e.stop()));
                (r.ok_or_else(|| format!("no DMA engine for {pci}")), After::Continue)
            }
            other => (handle(other), After::Continue),
        }
    }

    /// Before kexec: every persistent engine stops polling and writes its
    /// hand-over; the devices keep running. A non-persistent engine whose
    /// driver asks for it is stopped (an NVMe read engine: see `Nvme`); the
    /// others are left as they are, for the kernel to stop.
    fn hand_over(&mut self) -> Result<(), String> {
        for (pci, engine) in &mut self.dma {
            if let Some(line) = engine.hand_over().map_err(|e| format!("{pci}: hand-over: {e}"))? {
                crate::port::kmsg(&format!("lulab-agent: {pci}: {line}"));
            } else if let Some(st) = engine.stop_before_kexec() {
                let failed = st.device_counters.iter().any(|(k, _)| k == "quiesce_failed");
                crate::port::kmsg(&format!(
                    "lulab-agent: {pci}: not persistent: stopped before kexec after {} completions{}",
                    st.completed,
                    if failed { " (quiescing failed)" } else { ", device quiesced" }
                ));
            }
        }
        self.handed_over = true;
        Ok(())
    }

    fn dma_reattach(&mut self, pci: &str) -> Result<Reply, String> {
        if self.dma.contains_key(pci) {
            return Err(format!("{pci}: this agent already runs an engine for it; re-attaching is for an agent that died"));
        }
        let (engine, layout) = dma::Engine::reattach(pci)?;
        self.dma.insert(pci.to_string(), engine);
        Ok(Reply::DmaStarted(Box::new(layout)))
    }

    fn dma_start(&mut self, cfg: &lulab_proto::DmaConfig) -> Result<Reply, String> {
        let pci = cfg.pci().to_string();
        if let Some(old) = self.dma.get(&pci) {
            if old.status().running {
                return Err(format!("a DMA engine is already running for {pci}; stop it first"));
            }
            // A stopped engine: release its VFIO device before taking it again.
            self.dma.remove(&pci);
        }
        // So does an engine a dead agent left with a keeper: started afresh, it is not taken back.
        dma::keeper::release(&pci);
        let (engine, layout) = dma::Engine::start(cfg)?;
        self.dma.insert(pci, engine);
        Ok(Reply::DmaStarted(Box::new(layout)))
    }
}

/// Stateless operations.
fn handle(op: Op) -> Result<Reply, String> {
    match op {
        Op::Ping => Ok(Reply::Pong {
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_ms: uptime_ms()?,
        }),
        Op::Exec { argv, timeout_ms } => exec(&argv, Duration::from_millis(timeout_ms)).map(Reply::Exec),
        Op::ReadFile { path, max_bytes } => read_file(&path, max_bytes),
        Op::PciDevices => pci_devices().map(|devices| Reply::PciDevices { devices }),
        Op::KernelInfo => kernel_info().map(Reply::KernelInfo),
        Op::PutFile { path, data_b64, append } => put_file(&path, &data_b64, append).map(|_| Reply::Done),
        Op::KexecLoad { kernel, initrd, cmdline } => crate::kexec::load(&kernel, &initrd, &cmdline).map(|_| Reply::Done),
        Op::Mount { fstype, source, target } => crate::fs::mount(&fstype, &source, &target),
        Op::Umount { target } => crate::fs::umount(&target),
        Op::FillFile { path, size, seed } => crate::fs::fill_file(&path, size, seed),
        Op::HashFile { path } => crate::fs::hash_file(&path),
        Op::FillTree { dir, files, size, seed } => crate::fs::fill_tree(&dir, files, size, seed),
        Op::StatTree { dir } => crate::fs::stat_tree(&dir),
        Op::MmapWrite { path, size, seed, until_ms } => crate::fs::mmap_write(&path, size, seed, until_ms),
        Op::HandOver | Op::KexecExec | Op::DmaStart(_) | Op::DmaStatus { .. } | Op::DmaRemapProbe { .. } | Op::DmaDeviceReset { .. } | Op::DmaStop { .. } | Op::DmaReattach { .. } | Op::Crash => Err("stateful op reached the stateless handler".into()),
    }
}

fn put_file(path: &str, data_b64: &str, append: bool) -> Result<(), String> {
    use base64::Engine as _;
    use std::io::Write;
    let data = base64::engine::general_purpose::STANDARD.decode(data_b64).map_err(|e| format!("{path}: bad base64: {e}"))?;
    if let Some(dir) = Path::new(path).parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(path)
        .map_err(|e| format!("{path}: {e}"))?;
    f.write_all(&data).map_err(|e| format!("{path}: {e}"))
}

fn uptime_ms() -> Result<u64, String> {
    let s = std::fs::read_to_string("/proc/uptime").map_err(|e| format!("/proc/uptime: {e}"))?;
    let secs: f64 = s
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("/proc/uptime: unexpected contents {s:?}"))?;
    Ok((secs * 1000.0) as u64)
}

fn exec(argv: &[String], timeout: Duration) -> Result<ExecResult, String> {
    let (prog, args) = argv.split_first().ok_or("exec: empty argv")?;
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("exec {prog}: {e}"))?;
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        match child.try_wait().map_err(|e| format!("wait {prog}: {e}"))? {
            Some(s) => break s.code(),
            None if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                timed_out = true;
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    Ok(ExecResult {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        timed_out,
    })
}

fn drain<R: Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

fn read_file(path: &str, max_bytes: u64) -> Result<Reply, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    let mut buf = Vec::new();
    f.take(max_bytes.saturating_add(1)).read_to_end(&mut buf).map_err(|e| format!("{path}: {e}"))?;
    let truncated = buf.len() as u64 > max_bytes;
    buf.truncate(max_bytes as usize);
    Ok(Reply::File { contents: String::from_utf8_lossy(&buf).into_owned(), truncated })
}

fn read_hex(path: &Path) -> Result<u32, String> {
    let s = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).map_err(|e| format!("{}: {e}", path.display()))
}

fn link_name(path: &Path) -> Option<String> {
    std::fs::read_link(path).ok()?.file_name().map(|n| n.to_string_lossy().into_owned())
}

fn pci_devices() -> Result<Vec<PciDevice>, String> {
    let root = Path::new("/sys/bus/pci/devices");
    let mut devices = Vec::new();
    for entry in std::fs::read_dir(root).map_err(|e| format!("{}: {e}", root.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        let p = entry.path();
        devices.push(PciDevice {
            address: entry.file_name().to_string_lossy().into_owned(),
            vendor: read_hex(&p.join("vendor"))? as u16,
            device: read_hex(&p.join("device"))? as u16,
            class: read_hex(&p.join("class"))?,
            driver: link_name(&p.join("driver")),
            iommu_group: link_name(&p.join("iommu_group")).and_then(|g| g.parse().ok()),
        });
    }
    devices.sort_by(|a, b| a.address.cmp(&b.address));
    Ok(devices)
}

fn kernel_info() -> Result<KernelInfo, String> {
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string()).map_err(|e| format!("{p}: {e}"));
    let mut iommus: Vec<String> = std::fs::read_dir("/sys/class/iommu")
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    iommus.sort();
    let iommu_log = kernel_log()?
        .into_iter()
        .filter(|l| l.contains("DMAR") || l.contains("IOMMU") || l.contains("iommu"))
        .collect();
    Ok(KernelInfo {
        release: read("/proc/sys/kernel/osrelease")?,
        version: read("/proc/version")?,
        cmdline: read("/proc/cmdline")?,
        iommus,
        iommu_log,
    })
}

/// Reads every record currently in the kernel log buffer through /dev/kmsg.
fn kernel_log() -> Result<Vec<String>, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .map_err(|e| format!("/dev/kmsg: {e}"))?;
    let mut lines = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes and `f` is an open fd.
        let n = unsafe { libc::read(f.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EAGAIN) => break,
                Some(libc::EPIPE) => continue, // record overwritten while reading: skip it
                _ => return Err(format!("/dev/kmsg: {err}")),
            }
        }
        if n == 0 {
            break;
        }
        let rec = String::from_utf8_lossy(&buf[..n as usize]);
        // "prio,seq,ts,flags;message\n CONTINUATION"
        if let Some((_, msg)) = rec.split_once(';') {
            lines.push(msg.lines().next().unwrap_or("").to_string());
        }
    }
    Ok(lines)
}
