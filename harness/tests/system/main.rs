//! The system tier's hand-written tests: what a scenario file cannot say
//! (boot faults, a killed harness, the agent's DMA engine checked byte by
//! byte, pkernfs driven directly, the kernel build's own errors, `lulab
//! replay` at a terminal). Named `system::<area>::<test>`; every host takes
//! a machine host slot.

#[path = "../common/mod.rs"]
mod common;

mod boot;
mod cli;
mod dma_agent;
mod explore;
mod kernel_boot;
mod kernel_build;
mod kexec;
mod pkernfs;
mod replay;
mod report;

fn main() -> std::process::ExitCode {
    let mut s = common::Suite::default();
    boot::trials(&mut s);
    cli::trials(&mut s);
    kexec::trials(&mut s);
    dma_agent::trials(&mut s);
    explore::trials(&mut s);
    kernel_build::trials(&mut s);
    kernel_boot::trials(&mut s);
    pkernfs::trials(&mut s);
    replay::trials(&mut s);
    report::trials(&mut s);
    s.run()
}
