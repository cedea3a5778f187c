//! Why a run stopped early: the system under test failed (a finding, the
//! run is `broken` for it) or the harness could not go on (`error`).

/// A step stopped because the system under test refused something or failed
/// one of the step's own checks (the new agent's resume refused by the
/// kernel, a DMA-backing file not refused EBUSY…). Steps return it wrapped
/// in `anyhow`; every other error that stops a run makes it an `error`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Finding(pub String);

impl Finding {
    /// `Err(Finding)` as an `anyhow` result.
    pub fn err<T>(msg: impl Into<String>) -> anyhow::Result<T> {
        Err(Finding(msg.into()).into())
    }

    /// Whether `e` (with any context added on the way up) is a finding.
    pub fn in_chain(e: &anyhow::Error) -> bool {
        e.chain().any(|c| c.is::<Finding>())
    }
}

/// `ensure!` for a step's check of the system under test: fails with a
/// [`Finding`].
macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return $crate::scenario::run::Finding::err(format!($($msg)+));
        }
    };
}
pub(crate) use check;

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    fn step() -> anyhow::Result<()> {
        check!(1 + 1 == 3, "the kernel said {}", "no");
        Ok(())
    }

    #[test]
    fn a_finding_is_found_under_context() {
        let e = step().context("step 4 (LiveUpdate)").context("driving").unwrap_err();
        assert!(Finding::in_chain(&e));
        assert!(format!("{e:#}").contains("the kernel said no"));
    }

    #[test]
    fn any_other_error_is_not_a_finding() {
        let e = Err::<(), _>(anyhow::anyhow!("QEMU exited")).context("step 2").unwrap_err();
        assert!(!Finding::in_chain(&e));
    }
}
