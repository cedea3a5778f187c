//! Faults that change what the harness asks for instead of acting on a
//! running host: an engine started with unmapped ring slots, a resume with
//! skewed mappings, a device mapped onto another's memory, a next kernel
//! told to copy the VT-d tables. Each holds from its step on; the runner
//! reads the sum of them ([`Shaping`]) where it builds the request it changes.

use serde::Serialize;

/// What one shaping fault changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// The RX engine starts with its last N descriptors on an IOVA it never mapped.
    UnmappedSlots(u32),
    /// Resuming agents rebuild the persistent RX engine's mappings this many bytes off.
    ResumeIovaSkew(u64),
    /// Resuming agents rebuild the persistent RX engine's buffers read-only.
    ResumeReadOnly,
    /// The NVMe engine's buffer IOVAs map the e1000e's guest-RAM file.
    CrossDeviceMapping,
    /// Every following live update's kernel gets this parameter.
    NextKernelParam(&'static str),
    /// RX engines hand over with their RX interrupt still enabled.
    IrqLeftArmed,
}

impl Shape {
    /// What it shapes, which must come after the fault's step.
    pub fn shapes(&self) -> Shaped {
        match self {
            Shape::UnmappedSlots(_) | Shape::CrossDeviceMapping | Shape::IrqLeftArmed => Shaped::EngineStart,
            Shape::ResumeIovaSkew(_) | Shape::ResumeReadOnly | Shape::NextKernelParam(_) => Shaped::LiveUpdate,
        }
    }
}

/// The request a [`Shape`] changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shaped {
    /// `start_dma` (the fault's step must come before it).
    EngineStart,
    /// A later `live_update` (its kernel, or its resume).
    LiveUpdate,
}

/// Everything the shaping faults so far change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Shaping {
    /// RX descriptors on an unmapped IOVA at the engine's start.
    pub unmapped_slots: u32,
    /// Bytes the resuming agent maps the RX buffers off by.
    pub resume_iova_skew: u64,
    /// The resuming agent maps the RX buffers read-only for the device.
    pub resume_read_only: bool,
    /// The NVMe buffers map the e1000e's guest RAM.
    pub cross_device_mapping: bool,
    /// Extra parameters of every following live update's kernel.
    pub kernel_params: Vec<String>,
    /// RX engines hand over with their RX interrupt still enabled.
    pub irq_left_armed: bool,
}

impl Shaping {
    /// Adds `shape`.
    pub fn apply(&mut self, shape: &Shape) {
        match shape {
            Shape::UnmappedSlots(n) => self.unmapped_slots = *n,
            Shape::ResumeIovaSkew(b) => self.resume_iova_skew = *b,
            Shape::ResumeReadOnly => self.resume_read_only = true,
            Shape::CrossDeviceMapping => self.cross_device_mapping = true,
            Shape::NextKernelParam(p) => self.kernel_params.push(p.to_string()),
            Shape::IrqLeftArmed => self.irq_left_armed = true,
        }
    }
}
