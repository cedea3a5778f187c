//! Kconfig fragments: parse what was requested, merge onto tinyconfig, and
//! check that every requested option survived `olddefconfig` (as kunit.py
//! does), naming each one that did not and where it was asked for.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::toolchain::Toolchain;

/// One requested option: its value (`y`, `m`, `n`, `"str"`, `4`) and origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The value as written in the fragment (`n` for `# CONFIG_X is not set`).
    pub value: String,
    /// `file:line` that asked for it (the last one wins, as in a merge).
    pub origin: String,
}

/// Every option asked for by a set of fragments, by name (`CONFIG_…`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requested(pub BTreeMap<String, Request>);

/// The `*.config` fragments of `dir`, in name order.
pub fn fragments(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading config fragments in {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "config"))
        .collect();
    v.sort();
    if v.is_empty() {
        bail!("no *.config fragments in {}", dir.display());
    }
    Ok(v)
}

/// Parses a `.config`-style text into `(name, value, line)` assignments.
pub fn parse(text: &str) -> Vec<(String, String, usize)> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let l = raw.trim();
        if let Some(rest) = l.strip_prefix("# ").and_then(|r| r.strip_suffix(" is not set")) {
            if rest.starts_with("CONFIG_") {
                out.push((rest.to_string(), "n".to_string(), i + 1));
            }
        } else if let Some((k, v)) = l.split_once('=').filter(|(k, _)| k.starts_with("CONFIG_")) {
            out.push((k.to_string(), v.to_string(), i + 1));
        }
    }
    out
}

impl Requested {
    /// What `files` ask for, later files overriding earlier ones.
    pub fn from_files(files: &[PathBuf]) -> Result<Self> {
        let mut map = BTreeMap::new();
        for f in files {
            let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            for (k, value, line) in parse(&text) {
                map.insert(k, Request { value, origin: format!("{}:{line}", f.display()) });
            }
        }
        Ok(Self(map))
    }

    /// Every request the final `.config` text does not honour.
    pub fn missing(&self, dot_config: &str) -> Vec<Unmet> {
        let have: BTreeMap<String, String> = parse(dot_config).into_iter().map(|(k, v, _)| (k, v)).collect();
        self.0
            .iter()
            .filter_map(|(name, req)| {
                let got = have.get(name).cloned();
                let ok = match (req.value.as_str(), got.as_deref()) {
                    ("n", None | Some("n")) => true,
                    (want, Some(g)) => want == g,
                    _ => false,
                };
                (!ok).then(|| Unmet { name: name.clone(), request: req.clone(), got })
            })
            .collect()
    }
}

/// A requested option that `olddefconfig` did not keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmet {
    /// `CONFIG_…`.
    pub name: String,
    /// What was asked and where.
    pub request: Request,
    /// What the final `.config` has (`None`: absent — unknown symbol or unmet dependency).
    pub got: Option<String>,
}

impl fmt::Display for Unmet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let got = match &self.got {
            Some(v) if v == "n" => "is not set".to_string(),
            Some(v) => format!("is {v}"),
            None => "is absent (unknown symbol or unmet dependency)".to_string(),
        };
        write!(f, "{}={} (asked in {}) {got}", self.name, self.request.value, self.request.origin)
    }
}

/// Writes `tree/.config`: tinyconfig + `fragments` merged in order + olddefconfig,
/// then fails listing every requested option that did not survive.
pub fn configure(tc: &Toolchain, tree: &Path, frags: &[PathBuf], log: &mut super::make::Log) -> Result<()> {
    let requested = Requested::from_files(frags)?;
    let dot = tree.join(".config");
    let before = std::fs::read(&dot).ok().zip(std::fs::metadata(&dot).and_then(|m| m.modified()).ok());
    log.run(tc.make(tree).arg("tinyconfig"), "make tinyconfig")?;
    let mut merge = Command::new("scripts/kconfig/merge_config.sh");
    merge.current_dir(tree).args(["-m", ".config"]).args(frags);
    log.run(&mut merge, "merge_config.sh")?;
    log.run(tc.make(tree).arg("olddefconfig"), "make olddefconfig")?;
    let text = std::fs::read_to_string(&dot).with_context(|| format!("reading {}", dot.display()))?;
    let unmet = requested.missing(&text);
    if !unmet.is_empty() {
        bail!(
            "{} of {} requested kernel options did not survive olddefconfig ({}):\n  {}",
            unmet.len(),
            requested.0.len(),
            dot.display(),
            unmet.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  ")
        );
    }
    println!("kernel: [configure] all {} requested options kept", requested.0.len());
    // Same config as last time: keep the old mtime so Kbuild does not re-run
    // syncconfig (which rewrites generated headers) for nothing.
    if let Some((_, mtime)) = before.filter(|(old, _)| old.as_slice() == text.as_bytes()) {
        let f =
            std::fs::File::options().write(true).open(&dot).with_context(|| format!("opening {}", dot.display()))?;
        f.set_modified(mtime).with_context(|| format!("restoring the mtime of {}", dot.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Requested {
        let mut m = BTreeMap::new();
        for (k, value, line) in parse(text) {
            m.insert(k, Request { value, origin: format!("frag:{line}") });
        }
        Requested(m)
    }

    #[test]
    fn parses_assignments_and_not_set() {
        let p = parse("# comment\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_S=\"-x\"\nFOO=1\n");
        assert_eq!(p.len(), 3);
        assert_eq!(p[1], ("CONFIG_B".into(), "n".into(), 3));
        assert_eq!(p[2].1, "\"-x\"");
    }

    #[test]
    fn reports_every_option_that_did_not_survive() {
        let r = req("CONFIG_A=y\nCONFIG_B=n\nCONFIG_C=y\nCONFIG_D=m\nCONFIG_E=n\nCONFIG_NO_SUCH=y\n");
        let unmet = r.missing("CONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\nCONFIG_D=y\n");
        let names: Vec<&str> = unmet.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["CONFIG_B", "CONFIG_C", "CONFIG_D", "CONFIG_NO_SUCH"]);
        let shown = unmet[3].to_string();
        assert!(shown.contains("CONFIG_NO_SUCH=y") && shown.contains("frag:6") && shown.contains("absent"), "{shown}");
    }
}
