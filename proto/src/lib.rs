//! The agent protocol: one JSON object per line over the virtio-serial port
//! `lulab.agent`. The harness sends a [`Request`], the agent answers with a
//! [`Response`] carrying the same `id`. Both sides compile this crate, so the
//! wire format has exactly one definition.
#![deny(missing_docs)]

use serde::{Deserialize, Serialize};

/// Name of the virtio-serial port the agent listens on.
pub const AGENT_PORT_NAME: &str = "lulab.agent";

/// A request from the harness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Echoed in the response so replies can be matched.
    pub id: u64,
    /// What to do.
    #[serde(flatten)]
    pub op: Op,
}

/// The operations the agent understands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Liveness check; answered with [`Reply::Pong`].
    Ping,
    /// Run a program (no shell) and wait for it, up to `timeout_ms`.
    Exec {
        /// argv[0] and arguments.
        argv: Vec<String>,
        /// Kill the program when it runs longer than this.
        timeout_ms: u64,
    },
    /// Read a file (at most `max_bytes`).
    ReadFile {
        /// Absolute path in the host.
        path: String,
        /// Upper bound on bytes returned.
        max_bytes: u64,
    },
    /// List PCI devices with their IOMMU groups and drivers.
    PciDevices,
    /// Kernel release, version string, command line and IOMMU state.
    KernelInfo,
    /// Write (or append to) a file in the host, e.g. the kexec target's
    /// kernel and initramfs. Data is base64 (standard alphabet, padded).
    PutFile {
        /// Absolute path.
        path: String,
        /// Chunk contents, base64.
        data_b64: String,
        /// Append instead of truncating first.
        append: bool,
    },
    /// `kexec_file_load` the given kernel and initramfs.
    KexecLoad {
        /// Kernel image path in the host.
        kernel: String,
        /// Initramfs path in the host.
        initrd: String,
        /// Command line of the next kernel.
        cmdline: String,
    },
    /// Every persistent engine stops polling and writes its hand-over (a
    /// non-persistent one that must stop before a kexec stops); the devices
    /// keep running. The kexec is not requested yet: `kexec_exec` then only
    /// jumps. (The hand-over is the first half of a live update, split off
    /// so that faults can be aimed between the two.)
    HandOver,
    /// Hands over (unless `hand_over` did), replies, then
    /// `reboot(LINUX_REBOOT_CMD_KEXEC)` into the loaded kernel.
    KexecExec,
    /// Take a device through VFIO and start DMA into agent-owned memory.
    DmaStart(DmaConfig),
    /// Counters and state of the DMA engine driving `pci`.
    DmaStatus {
        /// PCI address the engine was started for.
        pci: String,
    },
    /// Change the running engine's DMA mappings (map one more page of its
    /// memory at a spare IOVA, then unmap it), as a VMM adding and removing
    /// guest memory; answered with [`Reply::Done`].
    DmaRemapProbe {
        /// PCI address the engine was started for.
        pci: String,
    },
    /// Reset the device under the running engine, as a VMM bug would (the
    /// e1000e: `CTRL.RST` through its BAR; the engine keeps polling a
    /// device that forgot its ring); answered with [`Reply::Done`].
    DmaDeviceReset {
        /// PCI address the engine was started for.
        pci: String,
    },
    /// Stop the engine driving `pci` (device quiesced, mappings kept until
    /// the agent exits); a later `DmaStart` for the same device replaces it.
    DmaStop {
        /// PCI address the engine was started for.
        pci: String,
    },
    /// Take back the persistent engine for `pci` that an agent which died
    /// left running: its VFIO device fd and iommufd, held by the engine's
    /// fd keeper, its ring and buffers in the same pkernfs file, its
    /// position read from the ring itself. The device is neither reset nor
    /// programmed again; answered with [`Reply::DmaStarted`] (the same
    /// layout as at its start).
    DmaReattach {
        /// PCI address the engine was started for.
        pci: String,
    },
    /// The agent dies at once (SIGKILL to itself, right after its reply), as
    /// a VMM that crashes: its fds close, except those an fd keeper holds.
    /// `/init` starts a new agent, which holds no engine until asked.
    Crash,
    /// `mount(2)` (the target directory is created first); answered with
    /// [`Reply::Mounted`] (how long the syscall took).
    Mount {
        /// Filesystem type, e.g. `pkernfs`.
        fstype: String,
        /// Source, e.g. `none`.
        source: String,
        /// Mount point.
        target: String,
    },
    /// `umount(2)`.
    Umount {
        /// Mount point.
        target: String,
    },
    /// Create or overwrite `path` with `size` bytes of [`pattern::fill`]`(seed)`;
    /// answered with [`Reply::Digest`] of what was written.
    FillFile {
        /// Absolute path.
        path: String,
        /// Bytes.
        size: u64,
        /// Pattern seed.
        seed: u64,
    },
    /// Size and [`pattern::Fnv1a64`] of a file; answered with [`Reply::Digest`].
    HashFile {
        /// Absolute path.
        path: String,
    },
    /// Replace `dir` (removed first if it exists) with `files` files of
    /// `size` bytes each: file `i` is [`pattern::tree_file_name`]`(i)` holding
    /// [`pattern::fill`]`(`[`pattern::tree_file_seed`]`(seed, i))`. Nothing is
    /// hashed in the guest (the harness checks contents from outside);
    /// answered with [`Reply::Tree`] of what was written.
    FillTree {
        /// Absolute path of the directory.
        dir: String,
        /// Number of files.
        files: u64,
        /// Bytes per file.
        size: u64,
        /// Pattern seed of file 0.
        seed: u64,
    },
    /// Count the regular files directly in `dir` and their bytes (`stat`);
    /// answered with [`Reply::Tree`].
    StatTree {
        /// Absolute path of the directory.
        dir: String,
    },
    /// Size `path` to `size`, `mmap` it `MAP_SHARED` and keep rewriting it
    /// through the mapping (like guest RAM) for `until_ms`; the last pass
    /// writes [`pattern::fill`]`(seed)`. Answered with [`Reply::MmapWritten`].
    MmapWrite {
        /// Absolute path.
        path: String,
        /// Bytes mapped (the file is sized to this).
        size: u64,
        /// Pattern seed of the final pass.
        seed: u64,
        /// How long to keep writing.
        until_ms: u64,
    },
}

/// The agent's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The id of the request this answers.
    pub id: u64,
    /// Outcome.
    pub result: Result<Reply, String>,
}

/// Successful replies, one variant per [`Op`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    /// Answer to [`Op::Ping`].
    Pong {
        /// Agent version (crate version).
        agent_version: String,
        /// Milliseconds since the host kernel booted.
        uptime_ms: u64,
    },
    /// Answer to [`Op::Exec`].
    Exec(ExecResult),
    /// Answer to [`Op::ReadFile`].
    File {
        /// File contents, lossily decoded as UTF-8.
        contents: String,
        /// True when the file was longer than `max_bytes`.
        truncated: bool,
    },
    /// Answer to [`Op::PciDevices`].
    PciDevices {
        /// Every device under /sys/bus/pci/devices.
        devices: Vec<PciDevice>,
    },
    /// Answer to [`Op::KernelInfo`].
    KernelInfo(KernelInfo),
    /// Answer to operations with nothing to return.
    Done,
    /// Answer to [`Op::DmaStart`].
    DmaStarted(Box<DmaLayout>),
    /// Answer to [`Op::DmaStatus`] and [`Op::DmaStop`].
    DmaStatus(DmaStatus),
    /// Answer to [`Op::FillFile`] and [`Op::HashFile`].
    Digest(FileDigest),
    /// Answer to [`Op::Mount`].
    Mounted {
        /// Nanoseconds the `mount(2)` call took, measured in the guest with
        /// `CLOCK_MONOTONIC` (0 from an agent that did not measure).
        #[serde(default)]
        elapsed_ns: u64,
    },
    /// Answer to [`Op::FillTree`] and [`Op::StatTree`].
    Tree(TreeStat),
    /// Answer to [`Op::MmapWrite`].
    MmapWritten {
        /// The file after the last pass (read back through the mapping).
        digest: FileDigest,
        /// Full passes written through the mapping.
        passes: u64,
    },
}

/// A file's size and content hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// Bytes.
    pub size: u64,
    /// [`pattern::Fnv1a64`] of the contents.
    pub fnv1a64: u64,
}

/// Regular files in a directory and their total size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeStat {
    /// Regular files.
    pub files: u64,
    /// Sum of their sizes in bytes.
    pub bytes: u64,
}

mod dma;
pub mod pattern;
pub mod watch;

pub use dma::{DmaConfig, DmaLayout, DmaRegion, DmaStatus, Handover, IommuApi, NvmeHandover, PersistLayout, PersistSpec, PhysRange, RxInterrupts};
mod persist;

pub use persist::{handover_path, LuoFindings, PersistBacking};

/// Outcome of [`Op::Exec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecResult {
    /// Exit code, `None` when killed by a signal or the timeout.
    pub status: Option<i32>,
    /// Captured stdout (lossy UTF-8).
    pub stdout: String,
    /// Captured stderr (lossy UTF-8).
    pub stderr: String,
    /// True when the agent killed the program at its timeout.
    pub timed_out: bool,
}

/// One PCI function as the host kernel sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciDevice {
    /// Domain:bus:device.function, e.g. `0000:00:02.0`.
    pub address: String,
    /// Vendor id.
    pub vendor: u16,
    /// Device id.
    pub device: u16,
    /// 24-bit class code.
    pub class: u32,
    /// Bound driver, if any.
    pub driver: Option<String>,
    /// IOMMU group number, if the device is in one.
    pub iommu_group: Option<u32>,
}

/// Kernel identity and IOMMU state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    /// `uname -r`.
    pub release: String,
    /// `/proc/version`.
    pub version: String,
    /// `/proc/cmdline`.
    pub cmdline: String,
    /// Entries of /sys/class/iommu (e.g. `dmar0`).
    pub iommus: Vec<String>,
    /// Kernel log lines mentioning DMAR or IOMMU.
    pub iommu_log: Vec<String>,
}

impl KernelInfo {
    /// True when the kernel reports an enabled Intel IOMMU.
    pub fn dmar_enabled(&self) -> bool {
        !self.iommus.is_empty() && self.iommu_log.iter().any(|l| l.contains("DMAR: IOMMU enabled"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_format_is_flat() {
        let r = Request { id: 7, op: Op::ReadFile { path: "/proc/cmdline".into(), max_bytes: 64 } };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"id":7,"op":"read_file","path":"/proc/cmdline","max_bytes":64}"#);
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
    }

    #[test]
    fn pattern_is_position_independent_and_hashed() {
        let mut whole = vec![0u8; 100];
        pattern::fill(7, 0, &mut whole);
        let mut tail = vec![0u8; 37];
        pattern::fill(7, 63, &mut tail);
        assert_eq!(&whole[63..], &tail[..]);
        let mut h = pattern::Fnv1a64::new();
        h.update(&whole);
        assert_eq!(pattern::digest(7, 100), FileDigest { size: 100, fnv1a64: h.finish() });
        let mut e = pattern::Fnv1a64::new();
        e.update(b"a");
        assert_eq!(e.finish(), 0xaf63_dc4c_8601_ec8c); // FNV-1a 64 test vector
    }

    #[test]
    fn persist_spec_without_backing_is_pkernfs() {
        let s: PersistSpec = serde_json::from_str(r#"{"file":"/mnt/pkernfs/x","resume":false}"#).unwrap();
        assert_eq!(s.backing, PersistBacking::Pkernfs);
        let l = r#"{"file":"f","image_path":"/f","ring_offset":0,"buffers_offset":4096,"canary_offset":8192,"canary_len":4096,"persistent":true,"resumed_from":null}"#;
        let l: PersistLayout = serde_json::from_str(l).unwrap();
        assert_eq!((l.backing, l.luo), (PersistBacking::Pkernfs, None));
        let m = serde_json::to_string(&PersistSpec { file: "lulab-rx".into(), resume: true, iova_skew: 0, read_only: false, backing: PersistBacking::LuoMemfd }).unwrap();
        assert!(m.contains(r#""backing":"luo_memfd""#), "{m}");
    }

    #[test]
    fn mount_reply_carries_its_time_and_defaults_to_zero() {
        let r = Reply::Mounted { elapsed_ns: 1_500_000 };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"kind":"mounted","elapsed_ns":1500000}"#);
        assert_eq!(serde_json::from_str::<Reply>(r#"{"kind":"mounted"}"#).unwrap(), Reply::Mounted { elapsed_ns: 0 });
        let t = Reply::Tree(TreeStat { files: 3, bytes: 12 });
        assert_eq!(serde_json::from_str::<Reply>(&serde_json::to_string(&t).unwrap()).unwrap(), t);
    }

    #[test]
    fn response_round_trips() {
        let r = Response {
            id: 1,
            result: Ok(Reply::Pong { agent_version: "0.1.0".into(), uptime_ms: 1500 }),
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Response>(&s).unwrap(), r);
        let e = Response { id: 2, result: Err("no such file".into()) };
        let s = serde_json::to_string(&e).unwrap();
        assert_eq!(s, r#"{"id":2,"result":{"Err":"no such file"}}"#);
    }
}
