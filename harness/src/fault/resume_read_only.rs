//! `resume_read_only`: after each following live update, the resuming agent
//! rebuilds the persistent RX engine's mappings with its buffers readable
//! only by the device, where the frozen domain let it write them. Same
//! addresses, other permissions: the kernel's replace check must compare
//! those too and refuse to switch (its negative control for permissions;
//! `resume_iova_skew` is the one for addresses).

use anyhow::Result;

use super::shaping::Shape;
use super::{Expectation, Fault, FaultKind, HostParts, Moment, Targets};
use crate::report::Reason;
use crate::scenario::Scenario;

pub(super) struct ResumeReadOnly;

impl Fault for ResumeReadOnly {
    fn kind(&self) -> FaultKind {
        FaultKind::ResumeReadOnly
    }

    fn requires(&self, sc: &Scenario) -> Result<(), String> {
        if !sc.rx.as_ref().is_some_and(|r| r.persist && r.backing == lulab_proto::PersistBacking::Pkernfs) {
            return Err("fault: \"resume_read_only\" rebuilds the persistent RX engine's mappings: needs [rx] with persist = true in pkernfs".into());
        }
        Ok(())
    }

    fn moments(&self) -> &'static [Moment] {
        &[]
    }

    fn shapes(&self) -> Option<Shape> {
        Some(Shape::ResumeReadOnly)
    }

    fn inject(&mut self, _: &mut HostParts, _: &Targets) -> Result<String> {
        Ok("resuming agents map the RX buffers read-only for the device (the frozen mappings are read-write)".into())
    }

    fn expects(&self) -> Expectation {
        Expectation::Broken(&[Reason::UpdateResumeFailed, Reason::DmaStalled])
    }
}
