//! `unmapped_slots`: the RX engine starts with its last `slots` descriptors
//! pointing at an IOVA it never mapped. Frames the device writes there must
//! fault in VT-d and never reach memory (the IOMMU oracle's negative control).

use anyhow::Result;

use super::shaping::Shape;
use super::{Expectation, Fault, FaultKind, HostParts, Moment, Targets};
use crate::report::Reason;
use crate::scenario::Scenario;

pub(super) struct UnmappedSlots {
    pub(super) slots: u32,
}

impl Fault for UnmappedSlots {
    fn kind(&self) -> FaultKind {
        FaultKind::UnmappedSlots
    }

    fn requires(&self, sc: &Scenario) -> Result<(), String> {
        let rx = super::needs_rx(sc, self.kind(), "starts")?;
        if rx.persist {
            return Err("fault: \"unmapped_slots\" is not supported with rx.persist (the kernel refuses to seal a domain with holes in it)".into());
        }
        if self.slots == 0 || self.slots >= rx.ring_size {
            return Err(format!("slots: {} must be in 1..{} (rx.ring_size)", self.slots, rx.ring_size));
        }
        Ok(())
    }

    fn moments(&self) -> &'static [Moment] {
        &[]
    }

    fn shapes(&self) -> Option<Shape> {
        Some(Shape::UnmappedSlots(self.slots))
    }

    fn inject(&mut self, _: &mut HostParts, _: &Targets) -> Result<String> {
        Ok(format!("the RX engine's last {} descriptors go on an unmapped IOVA", self.slots))
    }

    fn expects(&self) -> Expectation {
        Expectation::Broken(&[Reason::IommuFault, Reason::DmaLost])
    }
}
