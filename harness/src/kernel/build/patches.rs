//! Our changes to the kernel tree: `kernel/patches/series` (quilt-style,
//! applied in order with `patch -p1`) and overlays (directories such as
//! `kernel/pkernfs/` copied to `fs/pkernfs/`).
//!
//! The cached work tree is never patched in place. Every file our patches or
//! overlays touch (now or in the previous build) is rebuilt in a scratch
//! directory from the pristine source, and only files whose content differs
//! are written into the work tree. Unchanged files keep their mtimes, so a
//! changed patch rebuilds only what it touches.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// A directory of our own copied into the kernel tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    /// Source directory (e.g. `kernel/pkernfs`).
    pub from: PathBuf,
    /// Destination relative to the kernel tree (e.g. `fs/pkernfs`).
    pub to: String,
}

/// The patches named by `dir/series`, in order (`#` comments, blank lines ignored).
pub fn read_series(dir: &Path) -> Result<Vec<PathBuf>> {
    let series = dir.join("series");
    let text = std::fs::read_to_string(&series).with_context(|| format!("reading {}", series.display()))?;
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let Some(name) = l.split('#').next().and_then(|s| s.split_whitespace().next()) else { continue };
        let p = dir.join(name);
        if !p.is_file() {
            bail!("{}:{}: patch {name} does not exist ({})", series.display(), i + 1, p.display());
        }
        out.push(p);
    }
    Ok(out)
}

/// Tree-relative paths a `-p1` unified diff touches.
pub fn touched_files(patch: &str) -> BTreeSet<String> {
    patch
        .lines()
        .filter_map(|l| l.strip_prefix("--- ").or_else(|| l.strip_prefix("+++ ")))
        .map(|p| p.split('\t').next().unwrap_or(p).trim())
        .filter(|p| *p != "/dev/null")
        .filter_map(|p| p.split_once('/').map(|(_, rest)| rest.to_string()))
        .collect()
}

/// Makes `work` equal to `pristine` + `patches` + `overlays` for every file
/// they touch now or touched last time (recorded in `state`).
pub fn prepare(pristine: &Path, work: &Path, patches: &[PathBuf], overlays: &[Overlay], state: &Path) -> Result<()> {
    let previous: BTreeSet<String> =
        std::fs::read_to_string(state).map(|s| s.lines().map(str::to_string).collect()).unwrap_or_default();
    let mut now = BTreeSet::new();
    for p in patches {
        let text = std::fs::read_to_string(p).with_context(|| format!("reading patch {}", p.display()))?;
        now.extend(touched_files(&text));
    }
    let scratch = state.with_extension("scratch");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch).with_context(|| format!("clearing {}", scratch.display()))?;
    }
    for rel in previous.union(&now) {
        let src = pristine.join(rel);
        if src.is_file() {
            copy(&src, &scratch.join(rel))?;
        }
    }
    std::fs::create_dir_all(&scratch)?;
    for p in patches {
        apply(p, &scratch)?;
    }
    for o in overlays {
        for f in files_below(&o.from)? {
            let rel = format!("{}/{}", o.to, f.strip_prefix(&o.from).unwrap_or(&f).display());
            copy(&f, &scratch.join(&rel))?;
            now.insert(rel);
        }
    }
    let all: BTreeSet<String> = previous.union(&now).cloned().collect();
    write_state(state, &all)?;
    let mut changed = 0;
    for rel in &all {
        changed += sync(&scratch.join(rel), &work.join(rel))? as usize;
    }
    write_state(state, &now)?;
    std::fs::remove_dir_all(&scratch).with_context(|| format!("clearing {}", scratch.display()))?;
    println!("kernel: [patch] {} patches applied; {changed} files changed in the tree", patches.len());
    Ok(())
}

fn write_state(state: &Path, files: &BTreeSet<String>) -> Result<()> {
    let body: String = files.iter().map(|f| format!("{f}\n")).collect();
    std::fs::write(state, body).with_context(|| format!("writing {}", state.display()))
}

/// `patch -p1` in `dir`; the error names the patch and the failing file.
fn apply(patch: &Path, dir: &Path) -> Result<()> {
    let out = Command::new("patch")
        .args(["-p1", "--batch", "--forward", "--no-backup-if-mismatch", "--fuzz=0", "-r", "-", "-d"])
        .arg(dir)
        .arg("-i")
        .arg(patch)
        .output()
        .context("could not start `patch` (apt package patch)")?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&[out.stdout.as_slice(), out.stderr.as_slice()].concat()).into_owned();
    let name = patch.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    bail!("patch {name} does not apply: {}\n({})\n{}", failing_file(&text), patch.display(), text.trim_end())
}

/// The file `patch` was working on when it failed.
fn failing_file(out: &str) -> String {
    let mut current = None;
    for l in out.lines() {
        if let Some(f) = l.strip_prefix("patching file ") {
            current = Some(f.trim().trim_matches('\'').to_string());
        } else if l.contains("FAILED") || l.contains("Reversed") || l.contains("malformed") {
            if let Some(f) = &current {
                return format!("{f}: {}", l.trim());
            }
        } else if l.starts_with("can't find file to patch") {
            let f = out.lines().find_map(|x| x.strip_prefix("|+++ ")).unwrap_or("(unknown file)");
            return format!("{}: file not found in the tree", f.split('\t').next().unwrap_or(f));
        }
    }
    current.map(|f| format!("{f}: does not apply")).unwrap_or_else(|| "no file could be patched".into())
}

fn files_below(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.is_file() {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    if let Some(d) = to.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    std::fs::copy(from, to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// Makes `dest` equal to `want` (or absent); true when it changed anything.
fn sync(want: &Path, dest: &Path) -> Result<bool> {
    match (std::fs::read(want).ok(), std::fs::read(dest).ok()) {
        (Some(w), Some(d)) if w == d => Ok(false),
        (Some(w), _) => {
            if let Some(p) = dest.parent() {
                std::fs::create_dir_all(p)?;
            }
            let tmp = dest.with_extension("lulab-tmp");
            std::fs::write(&tmp, w).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, dest).with_context(|| format!("replacing {}", dest.display()))?;
            Ok(true)
        }
        (None, Some(_)) => {
            std::fs::remove_file(dest).with_context(|| format!("removing {}", dest.display()))?;
            Ok(true)
        }
        (None, None) => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADD_LINE: &str = "--- a/fs/Kconfig\n+++ b/fs/Kconfig\n@@ -1,2 +1,3 @@\n one\n+inserted\n two\n";

    fn tree(root: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let (pristine, work, pdir) = (root.join("pristine"), root.join("work"), root.join("patches"));
        for d in [&pristine, &work] {
            std::fs::create_dir_all(d.join("fs")).unwrap();
            std::fs::write(d.join("fs/Kconfig"), "one\ntwo\n").unwrap();
            std::fs::write(d.join("fs/other"), "x\n").unwrap();
        }
        std::fs::create_dir_all(&pdir).unwrap();
        (pristine, work, pdir)
    }

    #[test]
    fn touched_files_strip_one_component_and_dev_null() {
        let t = touched_files("--- /dev/null\n+++ b/fs/new.c\t2024\n--- a/fs/Kconfig\n+++ b/fs/Kconfig\n");
        assert_eq!(t.into_iter().collect::<Vec<_>>(), ["fs/Kconfig", "fs/new.c"]);
    }

    #[test]
    fn applies_in_order_then_reverts_when_the_series_shrinks() {
        let tmp = tempfile::tempdir().unwrap();
        let (pristine, work, pdir) = tree(tmp.path());
        std::fs::write(pdir.join("0001.patch"), ADD_LINE).unwrap();
        std::fs::write(pdir.join("series"), "# ours\n0001.patch\n\n").unwrap();
        let ov = tmp.path().join("ov");
        std::fs::create_dir_all(&ov).unwrap();
        std::fs::write(ov.join("a.rs"), "// a\n").unwrap();
        let overlays = [Overlay { from: ov.clone(), to: "fs/pk".into() }];
        let state = tmp.path().join("state");
        let series = read_series(&pdir).unwrap();
        prepare(&pristine, &work, &series, &overlays, &state).unwrap();
        assert_eq!(std::fs::read_to_string(work.join("fs/Kconfig")).unwrap(), "one\ninserted\ntwo\n");
        assert_eq!(std::fs::read_to_string(work.join("fs/pk/a.rs")).unwrap(), "// a\n");
        std::fs::remove_file(ov.join("a.rs")).unwrap();
        prepare(&pristine, &work, &[], &overlays, &state).unwrap();
        assert_eq!(std::fs::read_to_string(work.join("fs/Kconfig")).unwrap(), "one\ntwo\n");
        assert!(!work.join("fs/pk/a.rs").exists());
    }

    #[test]
    fn a_patch_that_does_not_apply_is_named_with_its_file() {
        let tmp = tempfile::tempdir().unwrap();
        let (pristine, work, pdir) = tree(tmp.path());
        let bad = "--- a/fs/Kconfig\n+++ b/fs/Kconfig\n@@ -1,2 +1,3 @@\n nothing\n+here\n matches\n";
        std::fs::write(pdir.join("0002-bad.patch"), bad).unwrap();
        std::fs::write(pdir.join("series"), "0002-bad.patch\n").unwrap();
        let err = prepare(&pristine, &work, &read_series(&pdir).unwrap(), &[], &tmp.path().join("s")).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("0002-bad.patch") && msg.contains("fs/Kconfig"), "{msg}");
        assert_eq!(std::fs::read_to_string(work.join("fs/Kconfig")).unwrap(), "one\ntwo\n");
    }

    #[test]
    fn a_missing_patch_names_the_series_line() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("series"), "a.patch\n").unwrap();
        let msg = format!("{:#}", read_series(tmp.path()).unwrap_err());
        assert!(msg.contains("series:1") && msg.contains("a.patch"), "{msg}");
    }
}
