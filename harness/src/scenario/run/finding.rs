//! Why a run stopped early: the system under test failed (a
//! [`Finding`], the run is `broken` for its reason) or the harness could
//! not go on (every other error: the outcome is `error`).

pub use crate::report::{Finding, Reason};

/// `ensure!` for a step's check of the system under test: fails with a
/// [`Finding`] of the given [`Reason`].
macro_rules! check {
    ($cond:expr, $reason:expr, $($msg:tt)+) => {
        if !$cond {
            return $crate::report::Finding::err($reason, format!($($msg)+));
        }
    };
}
pub(crate) use check;

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    fn step() -> anyhow::Result<()> {
        check!(1 + 1 == 3, Reason::PkernfsNotBusy, "the kernel said {}", "no");
        Ok(())
    }

    #[test]
    fn a_finding_is_found_under_context() {
        let e = step().context("step 4 (LiveUpdate)").context("driving").unwrap_err();
        let f = Finding::in_chain(&e).expect("a finding");
        assert_eq!((f.reason, f.detail.as_str()), (Reason::PkernfsNotBusy, "the kernel said no"));
        assert!(format!("{e:#}").contains("the kernel said no"));
    }

    #[test]
    fn any_other_error_is_not_a_finding() {
        let e = Err::<(), _>(anyhow::anyhow!("QEMU exited")).context("step 2").unwrap_err();
        assert!(Finding::in_chain(&e).is_none());
    }
}
