//! `MachineParams`: the host machine as typed data, turned into QEMU argv in
//! exactly one place ([`MachineParams::argv`]).

use std::path::{Path, PathBuf};

use lulab_proto::AGENT_PORT_NAME;

/// Files of one QEMU host inside its run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPaths {
    /// The run directory itself.
    pub dir: PathBuf,
}

impl RunPaths {
    /// Paths below `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    /// Where the host's Unix sockets go: the run directory, or, when its
    /// path is too long for a socket address (`sun_path`: 108 bytes with
    /// the NUL), a short directory in the system's temp directory named by
    /// a hash of it (created by `Host::start`, removed with the host).
    pub fn sock_dir(&self) -> PathBuf {
        const SUN_PATH: usize = 108;
        const LONGEST: &str = "/console.sock";
        if self.dir.as_os_str().len() + LONGEST.len() < SUN_PATH {
            return self.dir.clone();
        }
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.dir.hash(&mut h);
        std::env::temp_dir().join(format!("lulab-sock-{:016x}", h.finish()))
    }
    /// Guest RAM backing file (the harness maps it).
    pub fn ram(&self) -> PathBuf {
        self.dir.join("ram")
    }
    /// QMP socket.
    pub fn qmp_sock(&self) -> PathBuf {
        self.sock_dir().join("qmp.sock")
    }
    /// Serial console socket.
    pub fn console_sock(&self) -> PathBuf {
        self.sock_dir().join("console.sock")
    }
    /// Everything the serial console printed (QEMU's chardev log).
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    /// The kernel log as the virtio console (`hvc0`) printed it: unlike the
    /// emulated UART under TCG it never drops or doubles a character, but it
    /// misses what is printed after the devices shut down for kexec (see
    /// [`crate::console::KernelLog`]).
    pub fn kernel_log(&self) -> PathBuf {
        self.dir.join("kmsg.log")
    }
    /// Agent virtio-serial socket.
    pub fn agent_sock(&self) -> PathBuf {
        self.sock_dir().join("agent.sock")
    }
    /// The e1000e's netdev socket (owned by the harness: QEMU connects to it).
    pub fn net_sock(&self) -> PathBuf {
        self.sock_dir().join("net.sock")
    }
    /// Every frame QEMU's netdev took from the harness's socket (pcap,
    /// `filter-dump` on the netdev's transmit queue).
    pub fn net_capture(&self) -> PathBuf {
        self.dir.join("net-rx.pcap")
    }
    /// Trace event patterns QEMU enables.
    pub fn trace_events(&self) -> PathBuf {
        self.dir.join("trace-events")
    }
    /// QEMU's log: trace events land here.
    pub fn trace_log(&self) -> PathBuf {
        self.dir.join("trace.log")
    }
    /// QEMU's stderr.
    pub fn stderr(&self) -> PathBuf {
        self.dir.join("qemu.stderr")
    }
    /// QEMU writes its PID here.
    pub fn pidfile(&self) -> PathBuf {
        self.dir.join("qemu.pid")
    }
    /// Guest-physical ranges the CPU-write watcher plugin watches.
    pub fn watch_ranges(&self) -> PathBuf {
        self.dir.join("watch-ranges")
    }
    /// The watcher plugin's records of CPU stores into those ranges.
    pub fn watch_log(&self) -> PathBuf {
        self.dir.join("watch.log")
    }
    /// The argv QEMU was started with, one argument per line.
    pub fn argv(&self) -> PathBuf {
        self.dir.join("qemu.argv")
    }
}

/// Emulated Intel VT-d.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IommuParams {
    /// Add `-device intel-iommu` at all (off = negative control).
    pub enabled: bool,
    /// Interrupt remapping (needs `kernel-irqchip=split`).
    pub intremap: bool,
    /// Caching mode: forces strict IOTLB flushing (not needed for emulated devices).
    pub caching_mode: bool,
    /// Scalable mode instead of legacy.
    pub scalable_mode: bool,
    /// Ask QEMU to drain DMA before changing translation state.
    pub dma_drain: bool,
}

impl Default for IommuParams {
    fn default() -> Self {
        Self { enabled: true, intremap: true, caching_mode: false, scalable_mode: false, dma_drain: true }
    }
}

/// How TCG runs the vCPUs (`-accel tcg,thread=…`).
///
/// `multi` (QEMU's default) gives each vCPU a host thread, so the guest's
/// CPUs really run at once. `single` runs them in turn on one thread: the
/// guest still has that many CPUs (IPIs, per-CPU state, kexec's stop of
/// the others), without parallel execution. QEMU 10.0.2 (bookworm-
/// backports) can abort under `multi` with several vCPUs when the memory
/// map changes ("iotlb_to_section: Assertion `section_index <
/// d->map.sections_nb' failed", upstream QEMU issue 3040, fixed after
/// 10.0): a vCPU fills a TLB entry from the new map and looks it up in its
/// stale copy. `single` does not race there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TcgThreads {
    /// A host thread per vCPU.
    #[default]
    Multi,
    /// All vCPUs on one host thread, in turn.
    Single,
}

impl TcgThreads {
    /// The `-accel` value.
    pub fn accel(self) -> &'static str {
        match self {
            Self::Multi => "tcg,thread=multi",
            Self::Single => "tcg,thread=single",
        }
    }
}

/// QEMU's stderr when it hit the multi-threaded TCG race of [`TcgThreads`].
pub fn tcg_race_abort(stderr: &str) -> bool {
    stderr.contains("iotlb_to_section: Assertion")
}

/// How frames reach the e1000e from the harness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetdevKind {
    /// Stream socket: 4-byte big-endian length + frame; ~286 frames of queue.
    Stream,
}

/// The DMA-generating NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicParams {
    /// Backend socket kind.
    pub netdev: NetdevKind,
    /// MAC address.
    pub mac: String,
    /// Record every frame the netdev takes from the socket
    /// ([`RunPaths::net_capture`]): the ledger's evidence of frames QEMU's
    /// net layer freed without giving them to the device.
    pub capture: bool,
}

impl Default for NicParams {
    fn default() -> Self {
        Self { netdev: NetdevKind::Stream, mac: "52:54:00:12:34:56".into(), capture: true }
    }
}

/// The NVMe controller; its backing file is written by the harness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvmeParams {
    /// Raw backing file.
    pub backing: PathBuf,
    /// Optional IOPS throttle to keep commands in flight.
    pub throttle_iops: Option<u32>,
}

/// A TCG plugin QEMU loads (`-plugin`): the CPU-write watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginParams {
    /// The plugin's shared object.
    pub file: PathBuf,
    /// Its record limit (`max=`).
    pub max_records: u64,
    /// The guest-physical ranges it watches (written to [`RunPaths::watch_ranges`]).
    pub ranges: lulab_proto::watch::Ranges,
    /// Subtracted from CLOCK_MONOTONIC in its records (`base=`): the
    /// harness clock's zero.
    pub clock_base_ns: u64,
}

/// One QEMU host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineParams {
    /// Kernel image.
    pub kernel: PathBuf,
    /// Initramfs.
    pub initrd: PathBuf,
    /// Kernel command line words.
    pub cmdline: Vec<String>,
    /// RAM in MiB (a shared file in the run directory).
    pub memory_mib: u64,
    /// vCPUs.
    pub cpus: u32,
    /// How TCG runs them.
    pub tcg_threads: TcgThreads,
    /// VT-d.
    pub iommu: IommuParams,
    /// e1000e at 00:02.0.
    pub nic: Option<NicParams>,
    /// NVMe at 00:03.0.
    pub nvme: Option<NvmeParams>,
    /// QEMU trace event patterns (written to the run dir's trace-events file).
    pub trace_events: Vec<String>,
    /// Start with vCPUs stopped (`-S`); the harness resumes after connecting.
    pub start_paused: bool,
    /// The CPU-write watcher (ranges in [`RunPaths::watch_ranges`], records
    /// in [`RunPaths::watch_log`]).
    pub watcher: Option<PluginParams>,
    /// A second NVMe controller at 00:05.0 (serial `lulab-save`) backed by
    /// this raw file, for the host kernel's own nvme driver: where the
    /// copy-based baseline saves guest RAM across a kexec.
    pub save_disk: Option<PathBuf>,
}

/// The e1000e's qdev id (its NIC net client: QMP `set_link` names it).
pub const NIC_ID: &str = "nic0";
/// PCI slots, fixed so every report names the same addresses: the e1000e.
pub const NIC_ADDR: &str = "0000:00:02.0";
/// See [`NIC_ADDR`].
pub const NVME_ADDR: &str = "0000:00:03.0";
/// The save disk's serial (see [`MachineParams::save_disk`]).
pub use crate::scenario::guest_ram::SAVE_DISK_SERIAL;

/// Trace events every host records: VT-d faults and translation state.
pub const DEFAULT_TRACE_EVENTS: &[&str] =
    &["vtd_dmar_fault", "vtd_fault*", "vtd_dmar_enable", "vtd_err*", "vtd_switch_address_space"];

impl MachineParams {
    /// A small host: 1 GiB, one vCPU, VT-d with interrupt remapping, e1000e and
    /// (when `nvme` is given) NVMe.
    pub fn new(kernel: &Path, initrd: &Path) -> Self {
        Self {
            kernel: kernel.into(),
            initrd: initrd.into(),
            // no_timer_check: under TCG on a loaded machine the IO-APIC timer
            // check can miss its ticks and panic the boot ("timer doesn't
            // work through Interrupt-remapped IO-APIC").
            cmdline: ["console=ttyS0", "panic=-1", "intel_iommu=on", "iommu=nopt", "loglevel=6", "no_timer_check"]
                .map(String::from)
                .to_vec(),
            memory_mib: 1024,
            cpus: 1,
            tcg_threads: TcgThreads::Multi,
            iommu: IommuParams::default(),
            nic: Some(NicParams::default()),
            nvme: None,
            trace_events: DEFAULT_TRACE_EVENTS.iter().map(|s| s.to_string()).collect(),
            start_paused: true,
            watcher: None,
            save_disk: None,
        }
    }

    /// The QEMU argument vector (without the program name).
    pub fn argv(&self, paths: &RunPaths) -> Vec<String> {
        let p = |p: PathBuf| p.display().to_string();
        let mut a: Vec<String> = Vec::new();
        let mut push = |args: &[&str]| a.extend(args.iter().map(|s| s.to_string()));
        push(&["-nodefaults", "-no-user-config", "-display", "none", "-vga", "none", "-no-reboot"]);
        push(&["-accel", self.tcg_threads.accel(), "-cpu", "max", "-smp", &self.cpus.to_string()]);
        let mem = format!("{}M", self.memory_mib);
        push(&["-machine", "q35,kernel-irqchip=split,memory-backend=ram0", "-m", &mem]);
        push(&["-object", &format!("memory-backend-file,id=ram0,size={mem},mem-path={},share=on", p(paths.ram()))]);
        if self.iommu.enabled {
            let i = &self.iommu;
            let onoff = |b: bool| if b { "on" } else { "off" };
            push(&[
                "-device",
                &format!(
                    "intel-iommu,intremap={},caching-mode={},x-scalable-mode={},dma-drain={}",
                    onoff(i.intremap),
                    onoff(i.caching_mode),
                    onoff(i.scalable_mode),
                    onoff(i.dma_drain)
                ),
            ]);
        }
        push(&["-kernel", &p(self.kernel.clone()), "-initrd", &p(self.initrd.clone())]);
        push(&["-append", &self.cmdline.join(" ")]);
        if let Some(nic) = &self.nic {
            match nic.netdev {
                NetdevKind::Stream => push(&[
                    "-netdev",
                    &format!("stream,id=net0,server=off,addr.type=unix,addr.path={}", p(paths.net_sock())),
                ]),
            }
            if nic.capture {
                // queue=tx: what the netdev sends towards the NIC, taken
                // before QEMU's net layer queues or drops it.
                push(&["-object", &format!("filter-dump,id=cap0,netdev=net0,queue=tx,file={}", p(paths.net_capture()))]);
            }
            push(&["-device", &format!("e1000e,id={NIC_ID},netdev=net0,mac={},addr=0x2", nic.mac)]);
        }
        if let Some(nvme) = &self.nvme {
            let mut drive = format!("file={},if=none,id=nvm0,format=raw,cache=writeback", p(nvme.backing.clone()));
            if let Some(iops) = nvme.throttle_iops {
                drive.push_str(&format!(",throttling.iops-total={iops}"));
            }
            push(&["-drive", &drive, "-device", "nvme,serial=lulab0,drive=nvm0,addr=0x3"]);
        }
        if let Some(disk) = &self.save_disk {
            let drive = format!("file={},if=none,id=save0,format=raw,cache=writeback", p(disk.clone()));
            push(&["-drive", &drive, "-device", &format!("nvme,serial={SAVE_DISK_SERIAL},drive=save0,addr=0x5")]);
        }
        push(&[
            "-chardev",
            &format!("socket,id=con0,path={},server=on,wait=off,logfile={}", p(paths.console_sock()), p(paths.console_log())),
            "-serial",
            "chardev:con0",
        ]);
        push(&["-chardev", &format!("socket,id=qmp0,path={},server=on,wait=off", p(paths.qmp_sock()))]);
        push(&["-mon", "chardev=qmp0,mode=control"]);
        push(&["-device", "virtio-serial-pci,id=vser0,addr=0x4"]);
        push(&["-chardev", &format!("file,id=kmsg0,path={}", p(paths.kernel_log()))]);
        push(&["-device", "virtconsole,bus=vser0.0,chardev=kmsg0,nr=0"]);
        push(&["-chardev", &format!("socket,id=agent0,path={},server=on,wait=off", p(paths.agent_sock()))]);
        push(&["-device", &format!("virtserialport,bus=vser0.0,chardev=agent0,name={AGENT_PORT_NAME}")]);
        if !self.trace_events.is_empty() {
            // Timestamps on every trace line (`pid@sec.usec:event …`).
            push(&["-trace", &format!("events={}", p(paths.trace_events())), "-D", &p(paths.trace_log()), "-msg", "timestamp=on"]);
        }
        if let Some(w) = &self.watcher {
            push(&[
                "-plugin",
                &format!(
                    "file={},ranges={},out={},max={},base={}",
                    p(w.file.clone()),
                    p(paths.watch_ranges()),
                    p(paths.watch_log()),
                    w.max_records,
                    w.clock_base_ns
                ),
            ]);
        }
        push(&["-pidfile", &p(paths.pidfile())]);
        if self.start_paused {
            push(&["-S"]);
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_snapshot() {
        let mut m = MachineParams::new(Path::new("/k/bzImage"), Path::new("/k/initrd.gz"));
        m.nvme = Some(NvmeParams { backing: "/run/nvme.img".into(), throttle_iops: Some(100) });
        m.watcher = Some(PluginParams { file: "/w/liblulab_watcher.so".into(), max_records: 1000, ranges: Default::default(), clock_base_ns: 7 });
        insta::assert_snapshot!(m.argv(&RunPaths::new("/run")).join("\n"));
    }

    #[test]
    fn sockets_of_a_deep_run_directory_get_a_short_directory() {
        let short = RunPaths::new("/work/reports/run-1/host");
        assert_eq!(short.net_sock(), Path::new("/work/reports/run-1/host/net.sock"));
        let deep = RunPaths::new(format!("/work/main/reports/20261206-211015-live-update-rx-irq-matrix/{}/host", "cpus=1+iommu_mode=legacy+caching_mode=false+memory_mib=2048"));
        for sock in [deep.qmp_sock(), deep.console_sock(), deep.agent_sock(), deep.net_sock()] {
            assert!(sock.as_os_str().len() < 108, "{}", sock.display());
            assert_eq!(sock.parent(), Some(deep.sock_dir().as_path()));
        }
        assert_ne!(deep.sock_dir(), RunPaths::new("/other/deep/enough/path/".repeat(4)).sock_dir());
    }

    #[test]
    fn the_save_disk_is_a_second_nvme_for_the_host_driver() {
        let mut m = MachineParams::new(Path::new("/k"), Path::new("/i"));
        m.save_disk = Some("/r/save.img".into());
        let a = m.argv(&RunPaths::new("/r")).join(" ");
        assert!(a.contains("-drive file=/r/save.img,if=none,id=save0,format=raw,cache=writeback -device nvme,serial=lulab-save,drive=save0,addr=0x5"), "{a}");
    }

    #[test]
    fn single_threaded_tcg_is_asked_on_the_command_line() {
        let mut m = MachineParams::new(Path::new("/k"), Path::new("/i"));
        m.cpus = 4;
        m.tcg_threads = TcgThreads::Single;
        let argv = m.argv(&RunPaths::new("/run"));
        assert!(argv.windows(2).any(|w| w == ["-accel", "tcg,thread=single"]), "{argv:?}");
        assert!(argv.windows(2).any(|w| w == ["-smp", "4"]), "the guest still has 4 CPUs");
    }

    #[test]
    fn qemus_multi_threaded_tcg_abort_is_recognised() {
        let stderr = "qemu-system-x86_64: system/physmem.c:2678: iotlb_to_section: Assertion `section_index < d->map.sections_nb' failed.";
        assert!(tcg_race_abort(stderr));
        assert!(!tcg_race_abort("qemu-system-x86_64: terminating on signal 15"));
    }

    #[test]
    fn iommu_off_drops_the_device() {
        let mut m = MachineParams::new(Path::new("/k"), Path::new("/i"));
        m.iommu.enabled = false;
        assert!(!m.argv(&RunPaths::new("/r")).iter().any(|a| a.contains("intel-iommu")));
    }
}
