//! `root_table_copy`: every following live update's kernel adopts the VT-d
//! root and context tables through the kdump copy path
//! (`lulab_vtd_adopt=copy`) instead of in place: the hardware ends up
//! walking tables outside pkernfs, which the IOMMU oracle must see.

use anyhow::Result;

use super::shaping::Shape;
use super::{Expectation, Fault, FaultKind, HostParts, Moment, Targets};
use crate::report::Reason;
use crate::scenario::{KernelChoice, Scenario};

pub(super) struct RootTableCopy;

impl Fault for RootTableCopy {
    fn kind(&self) -> FaultKind {
        FaultKind::RootTableCopy
    }

    fn requires(&self, sc: &Scenario) -> Result<(), String> {
        if sc.host.kernel != KernelChoice::Lulab || sc.pkernfs.is_none() {
            return Err("fault: \"root_table_copy\" is a parameter of our kernel's persistent VT-d: needs [host] kernel = \"lulab\" and a [pkernfs] table".into());
        }
        Ok(())
    }

    fn moments(&self) -> &'static [Moment] {
        &[]
    }

    fn shapes(&self) -> Option<Shape> {
        Some(Shape::NextKernelParam("lulab_vtd_adopt=copy"))
    }

    fn inject(&mut self, _: &mut HostParts, _: &Targets) -> Result<String> {
        Ok("following live updates boot with lulab_vtd_adopt=copy".into())
    }

    fn expects(&self) -> Expectation {
        Expectation::Broken(&[Reason::IommuRootOutsidePkernfs])
    }
}
