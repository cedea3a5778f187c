//! System tier: a stock-kernel host boots under TCG and the agent reports its
//! IOMMU state and devices; faults during boot are reported, not hung on.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{pid_alive, stock_kernel, wait_pidfile, Suite, TestRun, STOCK};
use lulab::host::{Deadlines, Host};
use lulab::qemu::params::{NIC_ADDR, NVME_ADDR};

/// Upper bound for a QEMU to start: a host first waits for a free host slot
/// (other tests' hosts run minutes each), so this is long; it is never waited
/// out when things work.
const SLOT_AND_START: Duration = Duration::from_secs(30 * 60);

fn stock_host_boots_with_iommu_and_devices_in_groups() {
    let run = TestRun::new("boot");
    let set = stock_kernel();
    let params = set.machine(run.dir()).unwrap();
    let mut host = Host::boot(&params, run.dir(), Deadlines::default()).expect("boot");

    let info = host.agent.kernel_info().unwrap();
    assert_eq!(info.release, set.kernel.release, "agent reports the kernel we booted");
    assert!(info.dmar_enabled(), "DMAR not enabled: iommus {:?}, log {:?}", info.iommus, info.iommu_log);

    let devices = host.agent.pci_devices().unwrap();
    let nic = devices.iter().find(|d| d.address == NIC_ADDR).expect("e1000e present");
    let nvme = devices.iter().find(|d| d.address == NVME_ADDR).expect("nvme present");
    assert_eq!((nic.vendor, nic.device), (0x8086, 0x10d3));
    assert_eq!((nvme.vendor, nvme.device), (0x1b36, 0x0010));
    let (g_nic, g_nvme) = (nic.iommu_group.expect("e1000e group"), nvme.iommu_group.expect("nvme group"));
    assert_ne!(g_nic, g_nvme);
    for (addr, g) in [(NIC_ADDR, g_nic), (NVME_ADDR, g_nvme)] {
        let members: Vec<_> = devices.iter().filter(|d| d.iommu_group == Some(g)).map(|d| &d.address).collect();
        assert_eq!(members, [addr], "{addr} must be alone in IOMMU group {g}");
    }

    // The agent runs real programs (no shell scraping).
    let r = host.agent.exec(&["uname", "-r"], Duration::from_secs(10)).unwrap();
    assert_eq!(r.stdout.trim(), set.kernel.release);
    let status = host.shutdown().unwrap();
    assert!(status.success(), "QEMU exit status after QMP quit: {status}");
}

fn boot_that_does_not_finish_names_deadline_console_and_run_dir() {
    let run = TestRun::new("boot-stuck");
    let set = stock_kernel();
    let mut params = set.machine(run.dir()).unwrap();
    // A shell instead of our /init: the kernel boots, "lulab-init: ready" never comes.
    params.cmdline.push("rdinit=/bin/sh".into());
    // Long enough for the stock kernel to reach the shell on a loaded machine
    // (beside a kernel build it was still initialising at 25 s, so the tail
    // could not show BusyBox); the deadline is always waited out here.
    let d = Deadlines { init: Duration::from_secs(90), ..Deadlines::default() };
    let err = format!("{:#}", Host::boot(&params, run.dir(), d).unwrap_err());
    assert!(err.contains("lulab-init: ready"), "names what it waited for: {err}");
    assert!(err.contains("90s init deadline"), "names the deadline: {err}");
    assert!(err.contains("last 20 console lines"), "quotes the console: {err}");
    assert!(err.contains("BusyBox"), "console tail shows where it stopped: {err}");
    assert!(err.contains(&run.dir().display().to_string()), "names the run directory: {err}");
    let pid: i32 = err.split("QEMU (pid ").nth(1).and_then(|r| r.split(')').next()).unwrap().parse().unwrap();
    assert!(!pid_alive(pid), "QEMU {pid} left running after a failed boot");
}

fn qemu_that_dies_reports_exit_status_and_stderr() {
    let run = TestRun::new("boot-killed");
    let set = stock_kernel();
    let params = set.machine(run.dir()).unwrap();
    let dir = run.dir().to_path_buf();
    let killer = std::thread::spawn(move || {
        // Host::boot may first wait for a host slot: the deadline is only an upper bound.
        let pid = wait_pidfile(&dir, Instant::now() + SLOT_AND_START).expect("qemu.pid");
        // Let it get into the boot, then kill it behind the harness's back.
        let log = dir.join("console.log");
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline && !std::fs::read_to_string(&log).unwrap_or_default().contains("Linux version") {
            std::thread::sleep(Duration::from_millis(20));
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    });
    let err = format!("{:#}", Host::boot(&params, run.dir(), Deadlines::default()).unwrap_err());
    killer.join().unwrap();
    assert!(err.contains("exited with signal: 9"), "names the exit status: {err}");
    assert!(err.contains("stderr"), "includes stderr: {err}");
}

fn missing_or_old_qemu_says_how_to_install() {
    let lulab = env!("CARGO_BIN_EXE_lulab");
    let out = Command::new(lulab).arg("boot").env("LULAB_QEMU", "/nonexistent/qemu-system-x86_64").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("bookworm-backports") && err.contains("lulab -- setup"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("qemu-system-x86_64");
    std::fs::write(&fake, "#!/bin/sh\necho 'QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u18)'\n").unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(&mut std::fs::metadata(&fake).unwrap().permissions(), 0o755);
    Command::new("chmod").arg("755").arg(&fake).status().unwrap();
    let out = Command::new(lulab).arg("boot").env("LULAB_QEMU", &fake).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("7.2 is too old") && err.contains("bookworm-backports"), "{err}");
}

fn sigint_mid_boot_leaves_no_qemu_behind() {
    // Build once here so the child does not spend its time building.
    stock_kernel();
    for sig in [nix::sys::signal::Signal::SIGINT, nix::sys::signal::Signal::SIGTERM] {
        let run = TestRun::new(&format!("boot-{sig}"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_lulab"))
            .arg("boot")
            .arg("--out")
            .arg(run.dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let qemu = wait_pidfile(run.dir(), Instant::now() + SLOT_AND_START).expect("QEMU started");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "{sig}: lulab exited {status}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while pid_alive(qemu) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!pid_alive(qemu), "{sig}: QEMU {qemu} outlived the harness");
        assert!(run.dir().join("qemu.argv").exists() && run.dir().join("qemu.stderr").exists(), "logs kept");
    }
}

/// This module's tests, with what each needs.
pub fn trials(s: &mut Suite) {
    s.add("system::boot::stock_host_boots_with_iommu_and_devices_in_groups", STOCK, stock_host_boots_with_iommu_and_devices_in_groups);
    s.add("system::boot::boot_that_does_not_finish_names_deadline_console_and_run_dir", STOCK, boot_that_does_not_finish_names_deadline_console_and_run_dir);
    s.add("system::boot::qemu_that_dies_reports_exit_status_and_stderr", STOCK, qemu_that_dies_reports_exit_status_and_stderr);
    s.add("system::boot::missing_or_old_qemu_says_how_to_install", &[], missing_or_old_qemu_says_how_to_install);
    s.add("system::boot::sigint_mid_boot_leaves_no_qemu_behind", STOCK, sigint_mid_boot_leaves_no_qemu_behind);
}
