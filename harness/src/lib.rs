//! lulab: a live-update lab. Builds kernels and images (cached by content
//! hash), boots them as QEMU hosts with an emulated VT-d, drives them through
//! scenarios and judges the outcome with oracles that live outside the guest.
//!
//! Stages pass typed values one way:
//! `KernelArtifacts → ImageSpec → Initramfs → MachineParams → Host → observations → Report`.

pub mod agent;
pub mod attach;
pub mod bench;
pub mod cache;
pub mod cmd;
pub mod fault;
pub mod console;
pub mod explore;
pub mod guest_memory;
pub mod host;
pub mod image;
pub mod journal;
pub mod kernel;
pub mod lab;
pub mod oracle;
pub mod preflight;
pub mod pkernfs;
pub mod ktap;
pub mod qemu;
pub mod qmp;
pub mod replay;
pub mod report;
pub mod scenario;
pub mod setup;
pub mod slots;
pub mod update;
pub mod traffic;
pub mod watch;

/// How a unit enum variant is spelled in files and reports: its serde name
/// (`Reason::DmaLost` → `dma.lost`, `Moment::KernelUp` → `kernel_up`).
pub fn wire_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

/// The repository root (the harness is always run from its checkout).
pub fn workspace_root() -> std::path::PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}
