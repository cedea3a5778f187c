//! The fill tree and timed mounts. `pkernfs_fill` has the agent replace
//! `<mount>/fill/` with N pattern files in one call; every first mount after
//! a live update is timed in the guest and recorded with what the image held
//! (carve-out size, files, bytes of data), and `pkernfs_verify` counts the
//! tree inside and checks every byte of it outside, from the RAM file.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use lulab_proto::pattern;
use lulab_proto::{Op, Reply, TreeStat};
use serde::Serialize;

use super::pkernfs::{outside_digest, FILE_OP};
use super::Runner;
use crate::pkernfs::format::Image;
use crate::report::PkernfsMount;
use crate::scenario::{PkernfsSpec, FILL_DIR};

/// What the last `pkernfs_fill` wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(super) struct FillTree {
    /// Files `f000000`…
    pub(super) files: u64,
    /// Bytes per file.
    pub(super) file_size: u64,
    /// Pattern seed of file 0 (file `i`: `seed + i`).
    pub(super) seed: u64,
}

impl FillTree {
    fn stat(&self) -> TreeStat {
        TreeStat { files: self.files, bytes: self.files.saturating_mul(self.file_size) }
    }
}

/// The agent writes (or copies) at a few MiB/s at worst under TCG.
pub(super) fn fill_timeout(bytes: u64) -> Duration {
    FILE_OP + Duration::from_secs(bytes >> 21)
}

impl Runner<'_> {
    /// `pkernfs_fill`: mount, then the agent replaces the fill tree.
    pub(super) fn pk_fill(&mut self, files: u64, file_size: u64, seed: u64) -> Result<()> {
        let pk = self.pk_spec()?;
        self.pk_mount(&pk).context("mounting pkernfs")?;
        let tree = FillTree { files, file_size, seed };
        let op = Op::FillTree { dir: pk.fill_dir(), files, size: file_size, seed };
        let got = match self.pk_call(op, fill_timeout(tree.stat().bytes))? {
            Reply::Tree(t) => t,
            other => bail!("unexpected reply to fill_tree: {other:?}"),
        };
        if got != tree.stat() {
            self.pk.findings.push(crate::report::Finding::new(crate::report::Reason::PkernfsData, format!("pkernfs: fill tree written as {got:?}, asked for {:?}", tree.stat())));
        }
        self.pk.fill = Some(tree);
        Ok(())
    }

    /// Records a successful mount taking `elapsed_ns` in the guest when it
    /// is the first since the last live update; true when it was.
    pub(super) fn pk_record_mount(&mut self, pk: &PkernfsSpec, elapsed_ns: u64) -> bool {
        let n = self.live_updates;
        let first = n > 0 && self.pk.mounted_after != Some(n);
        self.pk.mounted_after = Some(n);
        if first {
            let fill = self.pk.fill.map(|f| f.stat()).unwrap_or_default();
            let named: u64 = self.pk.expected.values().map(|d| d.size).sum();
            self.pk.mounts.push(PkernfsMount {
                live_updates: n,
                kernel: self.current.name().into(),
                carveout_mib: pk.size_mib,
                files: self.pk.expected.len() as u64 + fill.files,
                data_bytes: named + fill.bytes,
                mount_us: elapsed_ns / 1000,
                files_found: None,
            });
        }
        first
    }

    /// Counts the fill tree inside (no fill: 0); returns the files found.
    pub(super) fn pk_verify_fill_inside(&mut self, pk: &PkernfsSpec, n: u32) -> Result<u64> {
        let Some(tree) = self.pk.fill else { return Ok(0) };
        let got = match self.pk_call(Op::StatTree { dir: pk.fill_dir() }, Duration::from_secs(60)) {
            Ok(Reply::Tree(t)) => t,
            Ok(other) => bail!("unexpected reply to stat_tree: {other:?}"),
            Err(e) => {
                self.pk.findings.push(crate::report::Finding::new(crate::report::Reason::PkernfsData, format!("pkernfs: {FILL_DIR}/ after {n} update(s), inside: {e:#}")));
                return Ok(0);
            }
        };
        if got != tree.stat() {
            self.pk.findings.push(crate::report::Finding::new(crate::report::Reason::PkernfsData, format!("pkernfs: {FILL_DIR}/ after {n} update(s), inside: {got:?}, expected {:?}", tree.stat())));
        }
        self.pk.checks.push(format!("inside after {n} live update(s): {FILL_DIR}/ holds {} files, {} bytes", got.files, got.bytes));
        Ok(got.files)
    }

    /// Every file of the fill tree, parsed from the carve-out, against the
    /// pattern (the first few differences are named, the rest counted).
    pub(super) fn pk_verify_fill_outside(&mut self, img: &Image<'_>, n: u32) {
        let Some(tree) = self.pk.fill else { return };
        let mut bad = 0u64;
        for i in 0..tree.files {
            let name = format!("{FILL_DIR}/{}", pattern::tree_file_name(i));
            let want = pattern::digest(pattern::tree_file_seed(tree.seed, i), tree.file_size);
            let wrong = match outside_digest(img, &name) {
                Ok(d) if d == want => continue,
                Ok(d) => format!("{d:?}, expected {want:?}"),
                Err(e) => e,
            };
            bad += 1;
            if bad <= 4 {
                self.pk.findings.push(crate::report::Finding::new(crate::report::Reason::PkernfsData, format!("pkernfs: {name} after {n} update(s), outside: {wrong}")));
            }
        }
        if bad > 4 {
            self.pk.findings.push(crate::report::Finding::new(crate::report::Reason::PkernfsData, format!("pkernfs: {bad} of {} files in {FILL_DIR}/ wrong outside after {n} update(s)", tree.files)));
        }
        self.pk.checks.push(format!("outside after {n} live update(s): {FILL_DIR}/ {} of {} files as written", tree.files - bad, tree.files));
    }
}
