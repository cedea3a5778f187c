//! `lulab replay` driven as a person would, through a terminal (rexpect on
//! a pty): step, look at the ledger, QMP, the agent and the console, set a
//! breakpoint, continue to the verdict; or quit half-way. Either way no
//! QEMU of the run may be left.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rexpect::reader::ReadUntil;
use rexpect::session::{Options, PtySession};

use crate::common::{pid_alive, wait_pidfile, Suite, TestRun, OURS};

/// RX through one live update of our kernel, short: the headline scenario
/// (`live-update-rx`) without the watcher and with fewer frames.
const SHORT_UPDATE: &str = r#"description = "replay test: RX through one live update, short"
expect = "intact"

[host]
kernel = "lulab"
memory_mib = 2048
iommu = true

[pkernfs]
size_mib = 64
base_mib = 1024

[rx]
ring_size = 2048
rate_fps = 200.0
frame_size = 256
frames = 2000
refill = true
persist = true

[[steps]]
do = "boot"

[[steps]]
do = "start_dma"

[[steps]]
do = "inject"

[[steps]]
do = "await_sent"
frames = 200

[[steps]]
do = "live_update"

[[steps]]
do = "await_sent"

[[steps]]
do = "settle"
"#;

/// Up to how long one expectation waits: the boot step waits for a host
/// slot while other hosts run on this machine (a soak holds one for most
/// of an hour); nextest's own timeout bounds the whole test.
const WAIT: Duration = Duration::from_secs(40 * 60);

/// `lulab replay` on the short scenario, its run directory in `t`.
fn spawn(t: &TestRun) -> (PtySession, PathBuf) {
    let file = t.dir().join("short-update.toml");
    std::fs::write(&file, SHORT_UPDATE).unwrap();
    let out = t.dir().join("run");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lulab"));
    cmd.arg("replay").arg(&file).arg("--out").arg(&out);
    let opts = Options::new().timeout_ms(Some(WAIT.as_millis() as u64)).strip_ansi_escape_codes(true);
    (rexpect::session::spawn_with_options(cmd, opts).expect("spawning lulab replay"), out)
}

/// Waits for `needle`, then for the prompt; returns what came before the
/// prompt. A step that fails ends the wait (its prompt would wait forever).
fn until_prompt(p: &mut PtySession, needle: &str) -> String {
    const FAILED: &str = ") failed: ";
    let any = vec![ReadUntil::String(needle.into()), ReadUntil::String(FAILED.into())];
    let (before, found) = p.exp_any(any).unwrap_or_else(|e| panic!("waiting for {needle:?}: {e}"));
    if found == FAILED {
        let why = p.exp_string("replay> ").unwrap_or_default();
        panic!("a step failed while waiting for {needle:?}: {before}{FAILED}{why}");
    }
    let rest = p.exp_string("replay> ").unwrap_or_else(|e| panic!("waiting for the prompt after {needle:?}: {e}"));
    // rustyline asks the terminal where its cursor is right after the
    // prompt; typing into that question would be taken as its answer.
    std::thread::sleep(Duration::from_millis(300));
    format!("{before}{needle}{rest}")
}

fn send(p: &mut PtySession, line: &str) {
    p.send_line(line).unwrap_or_else(|e| panic!("typing {line:?}: {e}"));
}

/// The PID of the run's QEMU, from `host/qemu.pid` while it runs (QEMU
/// removes the file when it exits cleanly).
fn qemu_pid(out: &Path) -> i32 {
    let pid = wait_pidfile(&out.join("host"), Instant::now() + Duration::from_secs(5));
    let pid = pid.unwrap_or_else(|| panic!("no host/qemu.pid in {} after boot", out.display()));
    assert!(pid_alive(pid), "QEMU (pid {pid}) runs after boot");
    pid
}

/// The QEMU of the run is gone, and exited cleanly (its pidfile removed).
fn assert_no_qemu_left(out: &Path, pid: i32) {
    assert!(!pid_alive(pid), "QEMU (pid {pid}) of {} is still running", out.display());
    assert!(!out.join("host/qemu.pid").exists(), "QEMU (pid {pid}) did not exit cleanly: its pidfile is left");
}

fn steps_looks_and_continues_to_the_verdict() {
    let t = TestRun::new("replay-continue");
    let (mut p, out) = spawn(&t);
    let shown = until_prompt(&mut p, "step 1/7: boot");
    assert!(shown.contains("next 2/7: start_dma"), "the step and the next are shown: {shown}");
    send(&mut p, "step");
    until_prompt(&mut p, "step 2/7: start_dma");
    let pid = qemu_pid(&out);
    send(&mut p, "step");
    until_prompt(&mut p, "step 3/7: inject");
    send(&mut p, "step");
    let shown = until_prompt(&mut p, "step 4/7: await_sent {\"frames\":200}");
    assert!(shown.contains("next 5/7: live_update"), "{shown}");
    send(&mut p, "step");
    until_prompt(&mut p, "step 5/7: live_update");

    send(&mut p, "ledger");
    let ledger = until_prompt(&mut p, "frames sent ");
    let [sent, delivered, _corrupted, lost] = ledger_counts(&ledger);
    assert!(sent >= 200, "await_sent 200 ran: {ledger}");
    assert!(delivered > 0 && delivered + lost == sent, "{ledger}");
    assert!(ledger.contains("lost so far") && ledger.contains("s from send to seen"), "{ledger}");

    send(&mut p, "qmp query-status");
    let reply = until_prompt(&mut p, "\"status\":");
    assert!(reply.contains("\"status\": \"running\""), "{reply}");
    send(&mut p, "agent ping");
    let reply = until_prompt(&mut p, "\"kind\": \"pong\"");
    assert!(reply.contains("agent_version"), "{reply}");
    send(&mut p, "qmp no-such-command");
    until_prompt(&mut p, "error: QMP `no-such-command` failed");

    // The console, and back: the live update after it follows the new
    // kernel on the console through the harness's connection taken back.
    send(&mut p, "console");
    p.exp_string("attached to the host console").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    p.send_control(']').unwrap();
    until_prompt(&mut p, "detached from the host console");

    send(&mut p, "break settle");
    until_prompt(&mut p, "breakpoint before every `settle` step");
    send(&mut p, "continue");
    let ran = until_prompt(&mut p, "step 7/7: settle");
    assert!(ran.contains("step 6/7: await_sent"), "continued through the steps before the breakpoint: {ran}");

    // rexpect reads the pty byte by byte as Latin-1: needles stay ASCII.
    send(&mut p, "timeline");
    let timeline = until_prompt(&mut p, "lulab: agent down +");
    assert!(timeline.contains("update 1 "), "{timeline}");
    assert!(timeline.contains("milestone=kexec") && timeline.contains("milestone=done"), "{timeline}");

    send(&mut p, "continue");
    let verdict = p.exp_string("report: ").unwrap();
    assert!(verdict.contains("short-update: expected intact, outcome intact") && !verdict.contains("NOT as expected"), "{verdict}");
    p.exp_eof().unwrap();
    assert!(out.join("report.json").exists() && out.join("journal.jsonl").exists());
    assert_no_qemu_left(&out, pid);
}

/// The four numbers of `frames sent A, delivered B, corrupted C, lost so far D`.
fn ledger_counts(text: &str) -> [u64; 4] {
    let line = text.lines().find(|l| l.contains("frames sent ")).unwrap_or_else(|| panic!("no ledger line in {text}"));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .take(4)
        .map(|s| s.parse().unwrap())
        .collect();
    nums.try_into().unwrap_or_else(|_| panic!("four counts in {line}"))
}

fn quit_shuts_the_host_down_and_keeps_the_run_directory() {
    let t = TestRun::new("replay-quit");
    let (mut p, out) = spawn(&t);
    until_prompt(&mut p, "step 1/7: boot");
    for next in ["step 2/7: start_dma", "step 3/7: inject", "step 4/7: await_sent"] {
        send(&mut p, "s");
        until_prompt(&mut p, next);
    }
    let pid = qemu_pid(&out);
    // Frames are flowing and the scanner runs: quitting stops both and the host.
    send(&mut p, "quit");
    let said = p.exp_eof().unwrap();
    let kept = format!("quit before step 4: the host is shut down; run directory kept: {}", out.display());
    assert!(said.contains(&kept), "{said}");
    assert!(!said.contains("outcome"), "no verdict after a quit half-way: {said}");
    assert!(out.join("scenario.resolved.toml").exists() && out.join("host/console.log").exists());
    assert!(!out.join("report.json").exists());
    assert_no_qemu_left(&out, pid);
}

pub fn trials(s: &mut Suite) {
    s.add("system::replay::steps_looks_and_continues_to_the_verdict", OURS, steps_looks_and_continues_to_the_verdict);
    s.add("system::replay::quit_shuts_the_host_down_and_keeps_the_run_directory", OURS, quit_shuts_the_host_down_and_keeps_the_run_directory);
}
