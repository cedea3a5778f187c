//! Kernel symbolisation from `System.map`: a PC becomes `function+0xoff`.
//! The watched hosts boot with `nokaslr`, so the map's addresses are the
//! running kernel's.

use std::path::Path;

use anyhow::{Context, Result};

/// The text symbols of one kernel, by address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SymbolMap {
    syms: Vec<(u64, String)>,
    /// End of kernel text (`_etext`); PCs past it are not symbolised.
    etext: u64,
}

impl SymbolMap {
    /// Parses `System.map` text (`<addr> <type> <name>` per line); only
    /// text symbols (`t`, `T`, `w`, `W`) are kept. Errors name the line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut syms = Vec::new();
        let mut etext = 0;
        for (i, line) in text.lines().enumerate() {
            let mut it = line.split_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
                if line.trim().is_empty() {
                    continue;
                }
                return Err(format!("line {}: expected `<addr> <type> <name>`, got {line:?}", i + 1));
            };
            let addr = u64::from_str_radix(addr, 16).map_err(|e| format!("line {}: address {addr:?}: {e}", i + 1))?;
            if name == "_etext" {
                etext = addr;
            }
            if matches!(kind, "t" | "T" | "w" | "W") {
                syms.push((addr, name.to_string()));
            }
        }
        syms.sort();
        Ok(Self { syms, etext })
    }

    /// Reads and parses a `System.map`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// `function+0xoff` for `pc`, or `None` outside the kernel's text.
    pub fn symbolise(&self, pc: u64) -> Option<String> {
        let first = self.syms.first()?.0;
        if pc < first || (self.etext != 0 && pc >= self.etext) {
            return None;
        }
        let i = self.syms.partition_point(|(a, _)| *a <= pc).checked_sub(1)?;
        let (addr, name) = &self.syms[i];
        Some(format!("{name}+{:#x}", pc - addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = "\
ffffffff81000000 T _text
ffffffff81000000 T startup_64
ffffffff815a3660 T memset
ffffffff815a3680 t memset_orig
ffffffff81a00000 D some_data
ffffffff81c00000 T _etext
";

    #[test]
    fn pcs_in_text_become_function_plus_offset() {
        let m = SymbolMap::parse(MAP).unwrap();
        assert_eq!(m.symbolise(0xffff_ffff_815a_366f).as_deref(), Some("memset+0xf"));
        assert_eq!(m.symbolise(0xffff_ffff_815a_3680).as_deref(), Some("memset_orig+0x0"));
        // Data symbols are not functions: the PC stays in the text before them.
        assert_eq!(m.symbolise(0xffff_ffff_81a0_0010).as_deref(), Some("memset_orig+0x45c990"));
        assert_eq!(m.symbolise(0xffff_ffff_81c0_0000), None, "past _etext");
        assert_eq!(m.symbolise(0x7f00_0000_1000), None, "user space");
        assert_eq!(m.symbolise(0x1_0000), None, "identity-mapped (purgatory)");
    }

    #[test]
    fn a_bad_line_is_named() {
        let e = SymbolMap::parse("ffffffff81000000 T _text\nzz T x\n").unwrap_err();
        assert!(e.starts_with("line 2: address"), "{e}");
        assert!(SymbolMap::parse("ffffffff81000000\n").unwrap_err().starts_with("line 1:"));
    }
}
