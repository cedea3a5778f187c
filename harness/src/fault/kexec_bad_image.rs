//! `kexec_bad_image`: the host is asked to load a kexec image that is not a
//! kernel (random bytes as bzImage and initrd). The kernel must refuse it;
//! the old kernel, its agent and the device keep running with nothing lost.
//! A kernel that loads it is a finding (`update.bad_image_loaded`).

use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine as _;
use lulab_proto::{Op, Reply};

use super::{Expectation, Fault, FaultKind, HostParts, Moment, Targets};
use crate::agent::AgentError;
use crate::report::{Finding, Reason};
use crate::scenario::Scenario;

const IMAGE: &str = "/tmp/lulab-bad-image";
/// Bytes of the bad image: larger than a bzImage header, far smaller than a kernel.
const SIZE: usize = 256 * 1024;

pub(super) struct KexecBadImage;

/// Not a kernel: a xorshift stream, so no magic number can appear by chance.
fn garbage() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..SIZE)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

impl Fault for KexecBadImage {
    fn kind(&self) -> FaultKind {
        FaultKind::KexecBadImage
    }

    fn requires(&self, _: &Scenario) -> Result<(), String> {
        Ok(())
    }

    fn needs_agent(&self) -> bool {
        true
    }

    fn moments(&self) -> &'static [Moment] {
        // A step of its own: the load is what it tests, not a moment of a jump.
        &[]
    }

    fn inject(&mut self, host: &mut HostParts, _: &Targets) -> Result<String> {
        let agent = host.agent.as_deref_mut().context("kexec_bad_image needs a running agent")?;
        let data_b64 = base64::engine::general_purpose::STANDARD.encode(garbage());
        agent.call(Op::PutFile { path: IMAGE.into(), data_b64, append: false }, Duration::from_secs(60)).context("copying the bad image")?;
        let load = Op::KexecLoad { kernel: IMAGE.into(), initrd: IMAGE.into(), cmdline: "lulab_bad_image".into() };
        let refused = match agent.call(load, Duration::from_secs(60)) {
            Err(AgentError::Refused { msg, .. }) => msg,
            Ok(reply) => {
                return Finding::err(Reason::UpdateBadImageLoaded, format!("kexec_file_load accepted {SIZE} random bytes as a kernel ({reply:?})"))
            }
            Err(e) => return Err(e).context("asking the host to load the bad image"),
        };
        match agent.call(Op::Ping, Duration::from_secs(10)).context("the agent after the refused load")? {
            Reply::Pong { .. } => Ok(format!("kexec_file_load of {SIZE} random bytes refused ({refused}); the agent still answers")),
            other => anyhow::bail!("unexpected reply to ping: {other:?}"),
        }
    }

    fn expects(&self) -> Expectation {
        Expectation::Intact
    }
}
