//! `ir_not_kept`: every following live update's kernel boots with
//! `lulab_ir_keep=0` and throws the interrupt-remapping table the old
//! kernel kept in pkernfs away, as a stock kernel does: it switches
//! interrupt remapping off and starts a table of its own, so a persistent
//! device's interrupt handles point at nothing meanwhile (the interrupt
//! oracle's negative control for kept remapping entries).

use anyhow::Result;

use super::shaping::Shape;
use super::{Expectation, Fault, FaultKind, HostParts, Moment, Targets};
use crate::report::Reason;
use crate::scenario::{KernelChoice, Scenario};

pub(super) struct IrNotKept;

impl Fault for IrNotKept {
    fn kind(&self) -> FaultKind {
        FaultKind::IrNotKept
    }

    fn requires(&self, sc: &Scenario) -> Result<(), String> {
        let msix = sc.rx.as_ref().is_some_and(|rx| rx.in_pkernfs() && rx.interrupts == lulab_proto::RxInterrupts::Msix);
        if sc.host.kernel != KernelChoice::Lulab || !msix {
            return Err("fault: \"ir_not_kept\" is a parameter of our kernel's kept interrupt remapping: needs [host] kernel = \"lulab\" and [rx] with persist = true and interrupts = \"msix\"".into());
        }
        Ok(())
    }

    fn moments(&self) -> &'static [Moment] {
        &[]
    }

    fn shapes(&self) -> Option<Shape> {
        Some(Shape::NextKernelParam("lulab_ir_keep=0"))
    }

    fn inject(&mut self, _: &mut HostParts, _: &Targets) -> Result<String> {
        Ok("following live updates boot with lulab_ir_keep=0".into())
    }

    fn expects(&self) -> Expectation {
        Expectation::Broken(&[Reason::IrqRemappingOff])
    }
}
