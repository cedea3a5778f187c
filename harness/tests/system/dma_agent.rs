//! System tier for the guest agent's DMA engine on Debian's stock kernel
//! (type1 container): the agent drives the e1000e and the NVMe controller
//! through VFIO, and every check is made from OUTSIDE the guest, in the
//! host's RAM file (1 GiB q35 host: file offset == guest-physical address).
//!
//! Without QEMU the tests are skipped with the reason (a failure under `CI`);
//! hosts take a machine host slot like every other (`lulab::slots`).
//! Run directories live under `$LULAB_RUNS` (or the system temp dir) and are
//! removed when a test passes.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::{stock_kernel, Suite, STOCK};
use lulab::host::{Deadlines, Host};
use lulab::qemu::params::{NIC_ADDR, NVME_ADDR};
use lulab_proto::{DmaConfig, DmaLayout, DmaRegion, DmaStatus, IommuApi, Op, Reply};

const NIC_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const CANARY: &[u8] = b"lulab-canary-never-dma-";

/// A run directory removed when the test passes, kept (and printed) otherwise.
struct RunDir(PathBuf);

impl RunDir {
    fn new(name: &str) -> Self {
        let base = std::env::var_os("LULAB_RUNS").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("lulab-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        Self(dir)
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("run directory kept: {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}


/// Boots a stock-kernel host; `prepare` may write files into the run dir first.
fn boot(run: &RunDir, prepare: impl FnOnce(&Path)) -> Host {
    let set = stock_kernel();
    let params = set.machine(&run.0).expect("machine parameters");
    assert!(params.memory_mib <= 2048, "the RAM-file == GPA identity needs a host below 2 GiB");
    prepare(&run.0);
    let host = Host::boot(&params, &run.0, Deadlines::default()).expect("host boots");
    println!("booted in {} ms (agent ready)", host.timings.agent_ms);
    host
}

fn dma_start(host: &mut Host, cfg: DmaConfig) -> DmaLayout {
    let t = Instant::now();
    match host.agent.call(Op::DmaStart(cfg), Duration::from_secs(120)) {
        Ok(Reply::DmaStarted(layout)) => {
            println!("DmaStart took {} ms: {}", t.elapsed().as_millis(), serde_json::to_string(&layout).unwrap());
            *layout
        }
        other => panic!("DmaStart: {other:?}\n{}", host.console.tail(30)),
    }
}

fn dma_status(host: &mut Host, op: Op) -> DmaStatus {
    match host.agent.call(op, Duration::from_secs(30)) {
        Ok(Reply::DmaStatus(s)) => s,
        other => panic!("DmaStatus: {other:?}"),
    }
}

fn counter(s: &DmaStatus, name: &str) -> u64 {
    s.device_counters.iter().find(|(n, _)| n == name).map(|(_, v)| *v).unwrap_or_else(|| panic!("no counter {name} in {s:?}"))
}

/// The host's RAM, read from the file QEMU shares with us.
struct Ram(memmap2::Mmap);

impl Ram {
    fn open(path: &Path) -> Self {
        let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // SAFETY: a read-only shared view of QEMU's RAM file; the guest keeps
        // writing it, which is what we observe (bytes are copied out at once).
        Self(unsafe { memmap2::Mmap::map(&f) }.unwrap_or_else(|e| panic!("mapping {}: {e}", path.display())))
    }

    /// `len` bytes at offset `off` of `region` (IOVA order), following its chunks.
    fn read(&self, region: &DmaRegion, off: u64, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let (mut skip, mut want) = (off, len as u64);
        for r in &region.phys {
            if skip >= r.len {
                skip -= r.len;
                continue;
            }
            let take = (r.len - skip).min(want);
            let start = (r.gpa + skip) as usize;
            out.extend_from_slice(&self.0[start..start + take as usize]);
            want -= take;
            skip = 0;
            if want == 0 {
                break;
            }
        }
        assert_eq!(out.len(), len, "region {region:?} too short for {len} bytes at {off:#x}");
        out
    }
}

fn check_canary(ram: &Ram, layout: &DmaLayout) {
    let total: u64 = layout.canary.iter().map(|r| r.len).sum();
    assert!(total > 0, "no canary reported");
    let region = DmaRegion { iova: 0, len: total, phys: layout.canary.clone() };
    let bytes = ram.read(&region, 0, total as usize);
    let bad = bytes.iter().zip(CANARY.iter().cycle()).position(|(a, b)| a != b);
    assert_eq!(bad, None, "canary changed at byte {bad:?}");
}

/// Frame `seq`: to the NIC's MAC, ethertype 0x88b5, "LULABDMA", seq, pattern.
fn frame(seq: u32) -> Vec<u8> {
    let mut f = Vec::with_capacity(128);
    f.extend_from_slice(&NIC_MAC);
    f.extend_from_slice(&[0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc, 0x88, 0xb5]);
    f.extend_from_slice(b"LULABDMA");
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend((0..128 - f.len()).map(|i| (seq as usize * 31 + i) as u8));
    f
}

fn accept_net(host: &mut Host) -> UnixStream {
    let listener = host.net.take().expect("host has a netdev socket");
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("QEMU did not connect to the netdev socket within 10 s: {e}"),
        }
    }
}

fn e1000e_rx_frames_land_in_agent_buffers_seen_from_the_ram_file() {
    const FRAMES: u32 = 500;
    const RING: u32 = 256;
    let run = RunDir::new("dma-e1000e");
    let mut host = boot(&run, |_| {});
    let mut net = accept_net(&mut host);
    let cfg = DmaConfig::E1000eRx { pci: NIC_ADDR.into(), ring_size: RING, buf_size: 2048, refill: true, iommu: IommuApi::Type1, unmapped_slots: 0, persist: None, interrupts: Default::default(), irq_left_armed: false };
    let layout = dma_start(&mut host, cfg);
    assert_eq!((layout.iommu, layout.buf_count, layout.buf_size), (IommuApi::Type1, RING, 2048));
    assert_eq!((layout.ring.len, layout.buffers.len), (u64::from(RING) * 16, u64::from(RING) * 2048));
    let ram = Ram::open(&host.paths.ram());
    check_canary(&ram, &layout);

    let sender = std::thread::spawn(move || {
        for seq in 0..FRAMES {
            let f = frame(seq);
            net.write_all(&(f.len() as u32).to_be_bytes()).and_then(|_| net.write_all(&f)).expect("netdev socket write");
        }
        net // keep the connection open until the test is done
    });
    // Scan every buffer from outside, like the ledger: each frame must be seen
    // intact (buffer = whole frame from the Ethernet header) before reuse.
    let mut seen = vec![false; FRAMES as usize];
    let start = Instant::now();
    let deadline = start + Duration::from_secs(180);
    let mut last = DmaStatus::default();
    while seen.iter().any(|s| !s) || last.completed < u64::from(FRAMES) {
        assert!(Instant::now() < deadline, "after 180 s: {} of {FRAMES} frames seen in RAM, status {last:?}", seen.iter().filter(|s| **s).count());
        for i in 0..RING {
            let b = ram.read(&layout.buffers, u64::from(i) * 2048, 128);
            if b[..6] == NIC_MAC && &b[14..22] == b"LULABDMA" {
                let seq = u32::from_be_bytes(b[22..26].try_into().unwrap());
                if seq < FRAMES && b == frame(seq) {
                    seen[seq as usize] = true;
                }
            }
        }
        last = dma_status(&mut host, Op::DmaStatus { pci: NIC_ADDR.into() });
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{FRAMES} frames seen intact in the RAM file in {secs:.2} s ({:.0} frames/s); status {last:?}", f64::from(FRAMES) / secs);
    let _net = sender.join().expect("sender thread");
    assert_eq!(last.completed, u64::from(FRAMES), "agent completions");
    assert!(counter(&last, "GPRC") >= u64::from(FRAMES), "GPRC {last:?}");
    assert_eq!(counter(&last, "completion_errors"), 0);
    // The most recent completions are still held: their descriptors say DD
    // and 128 bytes (CRC stripped).
    let newest = (FRAMES - 1) % RING;
    let d = ram.read(&layout.ring, u64::from(newest) * 16, 16);
    assert_eq!((u16::from_le_bytes([d[8], d[9]]), d[12] & 1), (128, 1), "descriptor {newest}: {d:02x?}");
    check_canary(&ram, &layout);
    let fin = dma_status(&mut host, Op::DmaStop { pci: NIC_ADDR.into() });
    assert!(!fin.running, "still running after stop: {fin:?}");
    host.shutdown().expect("QEMU exits");
}

/// Without refill each descriptor is used once: `ring - 1` frames land in
/// buffers 0.. in order and stay there; later frames are held back by QEMU
/// (back-pressure), not written anywhere.
fn e1000e_rx_without_refill_uses_each_descriptor_once() {
    const RING: u32 = 64;
    const FRAMES: u32 = 100;
    let run = RunDir::new("dma-e1000e-once");
    let mut host = boot(&run, |_| {});
    let mut net = accept_net(&mut host);
    let cfg = DmaConfig::E1000eRx { pci: NIC_ADDR.into(), ring_size: RING, buf_size: 2048, refill: false, iommu: IommuApi::Auto, unmapped_slots: 0, persist: None, interrupts: Default::default(), irq_left_armed: false };
    let layout = dma_start(&mut host, cfg);
    assert_eq!(layout.iommu, IommuApi::Type1, "the stock kernel has no iommufd: Auto must pick type1");
    for seq in 0..FRAMES {
        let f = frame(seq);
        net.write_all(&(f.len() as u32).to_be_bytes()).and_then(|_| net.write_all(&f)).expect("netdev socket write");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut s = dma_status(&mut host, Op::DmaStatus { pci: NIC_ADDR.into() });
    while s.completed < u64::from(RING - 1) {
        assert!(Instant::now() < deadline, "after 60 s: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
        s = dma_status(&mut host, Op::DmaStatus { pci: NIC_ADDR.into() });
    }
    // Watch for a second: nothing more may complete.
    let quiet = Instant::now() + Duration::from_secs(1);
    while Instant::now() < quiet {
        s = dma_status(&mut host, Op::DmaStatus { pci: NIC_ADDR.into() });
        assert_eq!((s.completed, s.refilled), (u64::from(RING - 1), 0), "{s:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("without refill: {s:?}");
    let ram = Ram::open(&host.paths.ram());
    for i in 0..RING - 1 {
        assert_eq!(ram.read(&layout.buffers, u64::from(i) * 2048, 128), frame(i), "buffer {i}");
    }
    let last = ram.read(&layout.ring, u64::from(RING - 1) * 16, 16);
    assert_eq!(last[12] & 1, 0, "descriptor {} was never handed over, yet has DD: {last:02x?}", RING - 1);
    check_canary(&ram, &layout);
    drop(net);
    host.shutdown().expect("QEMU exits");
}

const LBA: usize = 512;

/// Block `lba` of the backing file: "LULABBLK", the LBA, then a pattern.
fn block(lba: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(LBA);
    b.extend_from_slice(b"LULABBLK");
    b.extend_from_slice(&lba.to_le_bytes());
    b.extend((0..LBA - 16).map(|i| (lba as usize * 13 + i) as u8));
    b
}

fn nvme_reads_land_in_agent_buffers_seen_from_the_ram_file() {
    const START: u64 = 100;
    // 11 blocks (5632 bytes) per command: slots start at every 512-byte
    // offset of a page, so reads need PRP1 only, PRP1 + PRP2, or a PRP list;
    // 183 commands, the last one a single block.
    const COUNT: u64 = 2003;
    const PER_CMD: u32 = 11;
    let run = RunDir::new("dma-nvme");
    let mut host = boot(&run, |dir| {
        let img = dir.join("nvme.img");
        let mut data = Vec::with_capacity((START + COUNT + 64) as usize * LBA);
        for lba in 0..START + COUNT + 64 {
            data.extend(block(lba));
        }
        let mut f = std::fs::OpenOptions::new().write(true).open(&img).expect("nvme.img");
        f.write_all(&data).expect("writing nvme.img");
    });
    let cfg = DmaConfig::NvmeRead {
        pci: NVME_ADDR.into(),
        blocks_per_cmd: PER_CMD,
        lba_start: START,
        lba_count: COUNT,
        queue_depth: 16,
        iommu: IommuApi::Type1,
        persist: None,
        buffers_alias: None,
    };
    let layout = dma_start(&mut host, cfg);
    let slots = COUNT.div_ceil(u64::from(PER_CMD));
    assert_eq!((layout.buf_size, u64::from(layout.buf_count)), (PER_CMD * LBA as u32, slots));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(120);
    let status = loop {
        let s = dma_status(&mut host, Op::DmaStatus { pci: NVME_ADDR.into() });
        if s.completed >= slots && !s.running {
            break s;
        }
        assert!(Instant::now() < deadline, "after 120 s: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let secs = start.elapsed().as_secs_f64();
    println!("{slots} reads ({COUNT} blocks) completed in {secs:.2} s; status {status:?}");
    assert_eq!(status.completed, slots);
    assert_eq!((counter(&status, "completion_errors"), counter(&status, "lba_size")), (0, LBA as u64));
    let ram = Ram::open(&host.paths.ram());
    for i in 0..COUNT {
        let got = ram.read(&layout.buffers, i * LBA as u64, LBA);
        assert!(got == block(START + i), "LBA {} (slot {}): RAM holds {:02x?}…", START + i, i / u64::from(PER_CMD), &got[..16]);
    }
    check_canary(&ram, &layout);
    dma_status(&mut host, Op::DmaStop { pci: NVME_ADDR.into() });
    host.shutdown().expect("QEMU exits");
}

/// This module's tests, with what each needs.
pub fn trials(s: &mut Suite) {
    s.add("system::dma_agent::e1000e_rx_frames_land_in_agent_buffers_seen_from_the_ram_file", STOCK, e1000e_rx_frames_land_in_agent_buffers_seen_from_the_ram_file);
    s.add("system::dma_agent::e1000e_rx_without_refill_uses_each_descriptor_once", STOCK, e1000e_rx_without_refill_uses_each_descriptor_once);
    s.add("system::dma_agent::nvme_reads_land_in_agent_buffers_seen_from_the_ram_file", STOCK, nvme_reads_land_in_agent_buffers_seen_from_the_ram_file);
}
