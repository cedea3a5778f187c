//! lulab: a live-update lab. Builds kernels and images (cached by content
//! hash), boots them as QEMU hosts with an emulated VT-d, drives them through
//! scenarios and judges the outcome with oracles that live outside the guest.
//!
//! Stages pass typed values one way:
//! `KernelArtifacts → ImageSpec → Initramfs → MachineParams → Host → observations → Report`.

pub mod cache;
pub mod cmd;
pub mod kernel;
pub mod setup;
