//! System tier: a stock host kexecs into the same kernel through the agent
//! and the harness follows it to the new agent.

use crate::common::{stock_kernel, Suite, TestRun, STOCK};
use lulab::host::{Deadlines, Host};
use lulab::update::KexecTarget;

fn stock_host_kexecs_and_the_new_agent_answers() {
    let run = TestRun::new("kexec");
    let set = stock_kernel();
    let params = set.machine(run.dir()).unwrap();
    let mut host = Host::boot(&params, run.dir(), Deadlines::default()).unwrap();
    let before = host.agent.read_file("/proc/sys/kernel/random/boot_id").unwrap();
    let target = KexecTarget {
        kernel: set.kernel.bzimage.clone(),
        initrd: set.initramfs.path.clone(),
        cmdline: params.cmdline.clone(),
    };
    let t = host.live_update(&target, Deadlines::default()).unwrap();
    let after = host.agent.read_file("/proc/sys/kernel/random/boot_id").unwrap();
    assert_ne!(before, after, "a new kernel instance answers after kexec");
    assert!(t.to_banner_ms <= t.to_init_ms && t.to_init_ms <= t.to_agent_ms, "{t:?}");
    let console = std::fs::read_to_string(host.paths.console_log()).unwrap();
    assert_eq!(console.matches("lulab-init: ready").count(), 2, "two boots on the console");
    println!("live update timings: {t:?}");
    host.shutdown().unwrap();
}

/// This module's tests, with what each needs.
pub fn trials(s: &mut Suite) {
    s.add("system::kexec::stock_host_kexecs_and_the_new_agent_answers", STOCK, stock_host_kexecs_and_the_new_agent_answers);
}
