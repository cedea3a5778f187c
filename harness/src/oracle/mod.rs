//! Oracles: judges that read the host from outside (the RAM file, QEMU's
//! trace log, the console log) and never ask the guest.
//!
//! - [`rx_scan`] + [`ledger`]: every injected frame accounted for.
//! - [`nvme`]: every block the agent read checked against the backing file's pattern.
//! - [`memory`]: per-page hashes; pages that changed outside the device-writable ranges.
//! - [`iommu`]: VT-d faults and translation on/off from QEMU's trace and the console.
//! - [`timeline`]: per live update, kexec → new kernel → agent back, and the DMA around it.
//! - [`trace`]: QEMU's trace log as counts and example lines.
//! - [`isolation`]: each device's DMA translated only into its own pages (QEMU's IOTLB trace).
//! - [`kernel_log`]: warnings, BUGs, sanitizer and lockdep reports in the kernels' log.
//! - [`stray`]: where lost frames went, searched for in the whole RAM file.
//!
//! - [`interrupts`]: an RX engine's MSI-X interrupts, sent, delivered and received (QEMU's trace).
//! - [`kunit`]: the in-kernel KUnit tests' KTAP on the console.
//!
//! Each judges behind the [`registry::Oracle`] trait, from observations the
//! scenario runner collects once after the steps.

pub mod iommu;
pub mod cpu_writes;
pub mod dma_timing;
pub mod downtime;
pub mod interrupts;
pub mod isolation;
pub mod kernel_log;
pub mod kunit;
pub mod ledger;
pub mod memory;
pub mod nvme;
pub mod registry;
pub mod rx_scan;
pub mod stray;
pub mod timeline;
pub mod trace;

#[cfg(test)]
mod selftest;

/// Every trace event these oracles read, for `MachineParams::trace_events`.
pub fn trace_events() -> Vec<String> {
    let registered: Vec<&'static str> = registry::registered().iter().flat_map(|o| o.trace_events().iter().copied()).collect();
    ledger::LEDGER_TRACE_EVENTS.iter().chain(&registered).map(|s| s.to_string()).collect()
}
