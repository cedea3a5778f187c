//! `cross_device_mapping`: the NVMe engine (not persistent) starts with its
//! buffer IOVAs mapping the e1000e's guest-RAM file in pkernfs, so its
//! reads land in the other device's memory (the isolation oracle's negative
//! control).

use anyhow::Result;

use super::shaping::Shape;
use super::{Expectation, Fault, FaultKind, HostParts, Moment, Targets};
use crate::report::Reason;
use crate::scenario::{RxSpec, Scenario};

pub(super) struct CrossDeviceMapping;

impl Fault for CrossDeviceMapping {
    fn kind(&self) -> FaultKind {
        FaultKind::CrossDeviceMapping
    }

    fn requires(&self, sc: &Scenario) -> Result<(), String> {
        match &sc.nvme {
            None => return Err("fault: \"cross_device_mapping\" maps the NVMe's buffers: needs an [nvme] table".into()),
            Some(nv) if nv.persist => {
                return Err("fault: \"cross_device_mapping\" is injected into a non-persistent NVMe domain: set nvme.persist = false".into())
            }
            Some(_) => {}
        }
        if !sc.rx.as_ref().is_some_and(RxSpec::in_pkernfs) {
            return Err("fault: \"cross_device_mapping\" maps the e1000e's guest-RAM file: needs [rx] with persist = true in pkernfs".into());
        }
        Ok(())
    }

    fn moments(&self) -> &'static [Moment] {
        &[]
    }

    fn shapes(&self) -> Option<Shape> {
        Some(Shape::CrossDeviceMapping)
    }

    fn inject(&mut self, _: &mut HostParts, _: &Targets) -> Result<String> {
        Ok("the NVMe engine's buffer IOVAs map the e1000e's guest-RAM file".into())
    }

    fn expects(&self) -> Expectation {
        Expectation::Broken(&[
            Reason::IsolationBreach,
            Reason::DmaLost,
            Reason::DmaCorrupted,
            Reason::NvmeLost,
            Reason::MemoryChanged,
            Reason::IommuFault,
        ])
    }
}
