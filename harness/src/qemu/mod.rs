//! QEMU hosts: typed machine parameters and the process guard.

pub mod params;
pub mod process;

pub use params::{IommuParams, MachineParams, NetdevKind, NicParams, NvmeParams, RunPaths};
pub use process::QemuProcess;
