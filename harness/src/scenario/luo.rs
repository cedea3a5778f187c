//! `[luo]`: upstream's Live Update Orchestrator (`/dev/liveupdate`) switched
//! on. Kernel 7.3 builds it in (`CONFIG_LIVEUPDATE`, `CONFIG_LIVEUPDATE_MEMFD`,
//! `CONFIG_KEXEC_HANDOVER`) but leaves it off: KHO needs `kho=on` (else
//! `CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT`) and LUO `liveupdate=on`; without
//! KHO, LUO disables itself ("Disabling liveupdate because KHO is disabled").

use serde::{Deserialize, Serialize};

/// `[luo]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LuoSpec {
    /// `kho_scratch=` (e.g. `"64M,128M,32M"`: lowmem, global, per node);
    /// absent: the kernel sizes the scratch areas itself (200 % of what it
    /// reserved at boot). The kexec image must fit in them.
    pub kho_scratch: Option<String>,
}

impl LuoSpec {
    /// Kernel command-line words; the harness passes the same words to every kexec.
    pub fn cmdline(&self) -> Vec<String> {
        let mut w = vec!["kho=on".to_string(), "liveupdate=on".to_string()];
        if let Some(s) = &self.kho_scratch {
            w.push(format!("kho_scratch={s}"));
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luo_needs_kho_and_liveupdate_on_the_command_line() {
        assert_eq!(LuoSpec::default().cmdline(), ["kho=on", "liveupdate=on"]);
        let s = LuoSpec { kho_scratch: Some("64M,128M,32M".into()) };
        assert_eq!(s.cmdline().last().map(String::as_str), Some("kho_scratch=64M,128M,32M"));
    }
}
