//! `irq_left_armed`: the RX engine (with `interrupts = "msix"`) hands over
//! with its RX interrupt still enabled in the device. Frames arriving
//! while no agent runs then raise MSI-X messages that the IOMMU remaps
//! with the old kernel's interrupt-remapping entry to the old kernel's
//! vector: no agent receives them (the interrupt oracle's negative control;
//! an update that keeps interrupts masks the cause and leaves it pending).

use anyhow::Result;

use super::shaping::Shape;
use super::{Expectation, Fault, FaultKind, HostParts, Moment, Targets};
use crate::report::Reason;
use crate::scenario::Scenario;

pub(super) struct IrqLeftArmed;

impl Fault for IrqLeftArmed {
    fn kind(&self) -> FaultKind {
        FaultKind::IrqLeftArmed
    }

    fn requires(&self, sc: &Scenario) -> Result<(), String> {
        let rx = super::needs_rx(sc, self.kind(), "hands over")?;
        if !rx.in_pkernfs() || rx.interrupts != lulab_proto::RxInterrupts::Msix {
            return Err("fault: \"irq_left_armed\" is about the hand-over of a persistent RX engine's interrupts: needs [rx] with persist = true and interrupts = \"msix\"".into());
        }
        Ok(())
    }

    fn moments(&self) -> &'static [Moment] {
        &[]
    }

    fn shapes(&self) -> Option<Shape> {
        Some(Shape::IrqLeftArmed)
    }

    fn inject(&mut self, _: &mut HostParts, _: &Targets) -> Result<String> {
        Ok("RX engines hand over with the device's RX interrupt still enabled".into())
    }

    fn expects(&self) -> Expectation {
        Expectation::Broken(&[Reason::IrqLost])
    }
}
