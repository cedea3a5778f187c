//! pkernfs steps: write files with known patterns, keep one busy through a
//! shared mapping, and after each live update check every file from inside
//! (the agent re-mounts and hashes) and from outside (the harness parses the
//! carve-out straight from the RAM file with the kernel's own format code).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use lulab_proto::pattern::{self, Fnv1a64};
use lulab_proto::{FileDigest, Op, Reply};
use serde::Serialize;

use super::Runner;
use crate::pkernfs::format::{Image, Ino, ROOT_INO};
use crate::scenario::PkernfsSpec;

/// What the pkernfs steps expect and found.
#[derive(Debug, Default, Serialize)]
pub(super) struct PkRun {
    /// File name → size and hash it must have.
    expected: BTreeMap<String, FileDigest>,
    /// Shared-mapping passes the agent wrote.
    mmap_passes: u64,
    /// One line per check made (`inside`/`outside`, after how many updates).
    checks: Vec<String>,
    /// Damage found; each becomes a reason of the verdict.
    pub(super) findings: Vec<String>,
}

impl PkRun {
    /// Writes `pkernfs.json` into the run directory.
    pub(super) fn write(&self, out: &Path) -> Result<()> {
        if self.expected.is_empty() && self.findings.is_empty() {
            return Ok(());
        }
        std::fs::write(out.join("pkernfs.json"), serde_json::to_string_pretty(self)?).context("writing pkernfs.json")
    }
}

const FILE_OP: Duration = Duration::from_secs(180);

impl Runner<'_> {
    fn pk_spec(&self) -> Result<PkernfsSpec> {
        self.sc.pkernfs.clone().context("no [pkernfs] table")
    }

    fn pk_call(&mut self, op: Op, timeout: Duration) -> Result<Reply> {
        Ok(self.host()?.agent.call(op, timeout)?)
    }

    fn pk_mount(&mut self, pk: &PkernfsSpec) -> Result<()> {
        let _ = self.pk_call(Op::Umount { target: pk.mount.clone() }, Duration::from_secs(10));
        let op = Op::Mount { fstype: "pkernfs".into(), source: "none".into(), target: pk.mount.clone() };
        self.pk_call(op, Duration::from_secs(30)).map(|_| ())
    }

    /// `pkernfs_prepare`: mount, then write every file.
    pub(super) fn pk_prepare(&mut self) -> Result<()> {
        let pk = self.pk_spec()?;
        self.pk_mount(&pk).context("mounting pkernfs")?;
        for f in &pk.files {
            let path = pk.path(&f.name);
            if let Some((dir, _)) = path.rsplit_once('/') {
                self.host()?.agent.exec(&["mkdir", "-p", dir], Duration::from_secs(10))?;
            }
            let got = match self.pk_call(Op::FillFile { path: path.clone(), size: f.size, seed: f.seed }, FILE_OP)? {
                Reply::Digest(d) => d,
                other => bail!("unexpected reply to fill_file: {other:?}"),
            };
            self.pk_expect(&f.name, got, pattern::digest(f.seed, f.size), "written");
        }
        Ok(())
    }

    /// `pkernfs_mmap`: the agent rewrites the file through `MAP_SHARED`.
    pub(super) fn pk_mmap(&mut self) -> Result<()> {
        let pk = self.pk_spec()?;
        let m = pk.mmap.clone().context("no [pkernfs.mmap] table")?;
        let op = Op::MmapWrite { path: pk.path(&m.name), size: m.size, seed: m.seed, until_ms: m.until_ms };
        let (got, passes) = match self.pk_call(op, FILE_OP + Duration::from_millis(m.until_ms))? {
            Reply::MmapWritten { digest, passes } => (digest, passes),
            other => bail!("unexpected reply to mmap_write: {other:?}"),
        };
        self.pk.mmap_passes += passes;
        self.pk_expect(&m.name, got, pattern::digest(m.seed, m.size), "written through the mapping");
        Ok(())
    }

    fn pk_expect(&mut self, name: &str, got: FileDigest, want: FileDigest, what: &str) {
        if got != want {
            self.pk.findings.push(format!("pkernfs: {name} {what}: {got:?}, pattern says {want:?}"));
        }
        self.pk.expected.insert(name.to_string(), want);
    }

    /// `pkernfs_verify`: re-mount and check every file, inside and outside.
    pub(super) fn pk_verify(&mut self) -> Result<()> {
        let pk = self.pk_spec()?;
        let n = self.live_updates;
        if let Err(e) = self.pk_mount(&pk) {
            self.pk.findings.push(format!("pkernfs: mount refused after {n} live update(s): {e:#}"));
            return Ok(());
        }
        for (name, want) in self.pk.expected.clone() {
            let got = match self.pk_call(Op::HashFile { path: pk.path(&name) }, FILE_OP) {
                Ok(Reply::Digest(d)) => Ok(d),
                Ok(other) => Err(format!("unexpected reply {other:?}")),
                Err(e) => Err(format!("{e:#}")),
            };
            match got {
                Ok(d) if d == want => {}
                Ok(d) => self.pk.findings.push(format!("pkernfs: {name} after {n} update(s), inside: {d:?}, expected {want:?}")),
                Err(e) => self.pk.findings.push(format!("pkernfs: {name} after {n} update(s), inside: {e}")),
            }
        }
        self.pk.checks.push(format!("inside after {n} live update(s): {} files", self.pk.expected.len()));
        self.pk_verify_outside(&pk, n)
    }

    /// Parses the carve-out from the RAM file with the kernel's format code.
    fn pk_verify_outside(&mut self, pk: &PkernfsSpec, n: u32) -> Result<()> {
        let mem = self.mem.clone().context("no guest memory")?;
        let mut bytes = vec![0u8; pk.size() as usize];
        mem.read(pk.base(), &mut bytes).context("reading the carve-out from the RAM file")?;
        let img = match Image::open(&mut bytes) {
            Ok(img) => img,
            Err(e) => {
                self.pk.findings.push(format!("pkernfs: outside after {n} update(s): image refused: {}", e.describe()));
                return Ok(());
            }
        };
        for (name, want) in &self.pk.expected {
            match outside_digest(&img, name) {
                Ok(d) if d == *want => {}
                Ok(d) => self.pk.findings.push(format!("pkernfs: {name} after {n} update(s), outside: {d:?}, expected {want:?}")),
                Err(e) => self.pk.findings.push(format!("pkernfs: {name} after {n} update(s), outside: {e}")),
            }
        }
        self.pk.checks.push(format!("outside after {n} live update(s): image opens, {} files", self.pk.expected.len()));
        Ok(())
    }
}

/// Size and hash of `name` (a `/`-separated path) in a parsed image.
fn outside_digest(img: &Image<'_>, name: &str) -> Result<FileDigest, String> {
    let mut ino: Ino = ROOT_INO;
    for part in name.split('/').filter(|p| !p.is_empty()) {
        ino = img.lookup(ino, part.as_bytes()).map_err(|e| format!("lookup {part}: {}", e.describe()))?;
    }
    let size = img.stat(ino).map_err(|e| format!("stat: {}", e.describe()))?.size;
    let mut h = Fnv1a64::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < size {
        let want = (size - off).min(buf.len() as u64) as usize;
        let got = img.read(ino, off, &mut buf[..want]).map_err(|e| format!("read at {off}: {}", e.describe()))?;
        if got == 0 {
            return Err(format!("read returned 0 at {off} of {size}"));
        }
        h.update(&buf[..got]);
        off += got as u64;
    }
    Ok(FileDigest { size, fnv1a64: h.finish() })
}
