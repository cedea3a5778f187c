//! `resume_iova_skew`: after each following live update, the resuming agent
//! rebuilds the persistent RX engine's mappings `skew` bytes off the frozen
//! ones. The kernel must refuse to switch the device to them (the replace
//! check's negative control).

use anyhow::Result;

use super::shaping::Shape;
use super::{Expectation, Fault, FaultKind, HostParts, Moment, Targets};
use crate::report::Reason;
use crate::scenario::Scenario;

pub(super) struct ResumeIovaSkew {
    pub(super) skew: u64,
}

impl Fault for ResumeIovaSkew {
    fn kind(&self) -> FaultKind {
        FaultKind::ResumeIovaSkew
    }

    fn requires(&self, sc: &Scenario) -> Result<(), String> {
        if !sc.rx.as_ref().is_some_and(|r| r.persist) {
            return Err("fault: \"resume_iova_skew\" skews the persistent RX engine's resume: needs [rx] with persist = true".into());
        }
        if self.skew == 0 || !self.skew.is_multiple_of(4096) {
            return Err(format!("skew: {} must be a positive multiple of 4096", self.skew));
        }
        Ok(())
    }

    fn moments(&self) -> &'static [Moment] {
        &[]
    }

    fn shapes(&self) -> Option<Shape> {
        Some(Shape::ResumeIovaSkew(self.skew))
    }

    fn inject(&mut self, _: &mut HostParts, _: &Targets) -> Result<String> {
        Ok(format!("resuming agents map the RX buffers {:#x} bytes off the frozen mappings", self.skew))
    }

    fn expects(&self) -> Expectation {
        Expectation::Broken(&[Reason::UpdateResumeFailed, Reason::DmaStalled])
    }
}
