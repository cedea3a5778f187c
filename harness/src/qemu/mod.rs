//! QEMU hosts: typed machine parameters and the process guard.

pub mod params;
pub mod process;

pub use params::{tcg_race_abort, IommuParams, MachineParams, NetdevKind, NicParams, NvmeParams, RunPaths, TcgThreads};
pub use process::QemuProcess;
