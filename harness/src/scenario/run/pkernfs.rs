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

use super::pkernfs_corrupt::Pending;
use super::pkernfs_fill::FillTree;
use super::Runner;
use crate::pkernfs::format::{Image, Ino, ROOT_INO};
use crate::report::{CarveoutHash, PkernfsMount, PkernfsRefusal, PkernfsSection, UntouchedCheck};
use crate::scenario::PkernfsSpec;

/// What the pkernfs steps expect and found.
#[derive(Debug, Default, Serialize)]
pub(super) struct PkRun {
    /// File name → size and hash it must have.
    pub(super) expected: BTreeMap<String, FileDigest>,
    /// Shared-mapping passes the agent wrote.
    mmap_passes: u64,
    /// One line per check made (`inside`/`outside`, after how many updates).
    pub(super) checks: Vec<String>,
    /// Damage found; each becomes a reason of the verdict.
    pub(super) findings: Vec<crate::report::Finding>,
    /// Whole-carve-out hashes from the RAM file, in the order taken.
    pub(super) carveout_hashes: Vec<CarveoutHash>,
    /// One per `pkernfs_corrupt`.
    pub(super) refusals: Vec<PkernfsRefusal>,
    /// One per `pkernfs_untouched`.
    untouched: Vec<UntouchedCheck>,
    /// The tree the last `pkernfs_fill` wrote.
    pub(super) fill: Option<FillTree>,
    /// The first successful mount after each live update.
    pub(super) mounts: Vec<PkernfsMount>,
    /// Live updates done at the last successful mount.
    #[serde(skip)]
    pub(super) mounted_after: Option<u32>,
    /// The corruption `pkernfs_restore` will undo.
    #[serde(skip)]
    pub(super) pending: Option<Pending>,
    /// The carve-out's hash right before the last jump.
    #[serde(skip)]
    last_jump: Option<String>,
}

impl PkRun {
    /// Writes `pkernfs.json` into the run directory.
    pub(super) fn write(&self, out: &Path) -> Result<()> {
        if self.expected.is_empty() && self.findings.is_empty() && self.carveout_hashes.is_empty() {
            return Ok(());
        }
        std::fs::write(out.join("pkernfs.json"), serde_json::to_string_pretty(self)?).context("writing pkernfs.json")
    }

    /// The `pkernfs` section of report.json.
    pub(super) fn section(&self) -> PkernfsSection {
        PkernfsSection {
            files: self.expected.len() as u64,
            checks: self.checks.clone(),
            carveout_hashes: self.carveout_hashes.clone(),
            refusals: self.refusals.clone(),
            untouched: self.untouched.clone(),
            mounts: self.mounts.clone(),
        }
    }
}

/// `lulab` or `stock`, as in scenario files.
/// xxh3-128 of `bytes` as 32 hex digits.
pub(super) fn hash_hex(bytes: &[u8]) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(bytes))
}

/// `/proc/iomem` lines (trimmed) whose range overlaps `[base, base + size)`.
pub(super) fn iomem_over(iomem: &str, base: u64, size: u64) -> Vec<String> {
    iomem
        .lines()
        .filter(|l| {
            let range = l.split(" : ").next().unwrap_or("").trim();
            let Some((a, b)) = range.split_once('-') else { return false };
            match (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                (Ok(a), Ok(b)) => a < base + size && b >= base,
                _ => false,
            }
        })
        .map(|l| l.trim().to_string())
        .collect()
}

pub(super) const FILE_OP: Duration = Duration::from_secs(180);

impl Runner<'_> {
    pub(super) fn pk_spec(&self) -> Result<PkernfsSpec> {
        self.sc.pkernfs.clone().context("no [pkernfs] table")
    }

    pub(super) fn pk_call(&mut self, op: Op, timeout: Duration) -> Result<Reply> {
        Ok(self.host()?.agent.call(op, timeout)?)
    }

    /// (Re-)mounts pkernfs; true when this was the first mount after a
    /// live update (timed in `pkernfs.mounts`).
    pub(super) fn pk_mount(&mut self, pk: &PkernfsSpec) -> Result<bool> {
        let _ = self.pk_call(Op::Umount { target: pk.mount.clone() }, Duration::from_secs(10));
        let op = Op::Mount { fstype: "pkernfs".into(), source: "none".into(), target: pk.mount.clone() };
        let elapsed_ns = match self.pk_call(op, Duration::from_secs(30))? {
            Reply::Mounted { elapsed_ns } => elapsed_ns,
            other => bail!("unexpected reply to mount: {other:?}"),
        };
        Ok(self.pk_record_mount(pk, elapsed_ns))
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
            self.pk.findings.push(crate::report::Finding::new(crate::report::Reason::PkernfsData, format!("pkernfs: {name} {what}: {got:?}, pattern says {want:?}")));
        }
        self.pk.expected.insert(name.to_string(), want);
    }

    /// `pkernfs_verify`: re-mount and check every file, inside and outside.
    pub(super) fn pk_verify(&mut self) -> Result<()> {
        let pk = self.pk_spec()?;
        let n = self.live_updates;
        let mounted = self.pk_mount(&pk);
        // The first mount after a `pkernfs_restore` shows the refused image was not destroyed.
        if let Some(r) = self.pk.refusals.last_mut().filter(|r| r.restored && r.remounted.is_none()) {
            r.remounted = Some(mounted.is_ok());
        }
        let timed = match mounted {
            Ok(timed) => timed,
            Err(e) => {
                self.pk.findings.push(crate::report::Finding::new(crate::report::Reason::PkernfsMountRefused, format!("pkernfs: mount refused after {n} live update(s): {e:#}")));
                return Ok(());
            }
        };
        let mut found = self.pk_verify_fill_inside(&pk, n)?;
        for (name, want) in self.pk.expected.clone() {
            let got = match self.pk_call(Op::HashFile { path: pk.path(&name) }, FILE_OP) {
                Ok(Reply::Digest(d)) => Ok(d),
                Ok(other) => Err(format!("unexpected reply {other:?}")),
                Err(e) => Err(format!("{e:#}")),
            };
            found += u64::from(got.is_ok());
            match got {
                Ok(d) if d == want => {}
                Ok(d) => self.pk.findings.push(crate::report::Finding::new(crate::report::Reason::PkernfsData, format!("pkernfs: {name} after {n} update(s), inside: {d:?}, expected {want:?}"))),
                Err(e) => self.pk.findings.push(crate::report::Finding::new(crate::report::Reason::PkernfsData, format!("pkernfs: {name} after {n} update(s), inside: {e}"))),
            }
        }
        if timed {
            if let Some(row) = self.pk.mounts.last_mut() {
                row.files_found = Some(found);
            }
        }
        self.pk.checks.push(format!("inside after {n} live update(s): {} files", self.pk.expected.len()));
        self.pk_verify_outside(n)
    }

    /// The whole carve-out, copied out of the RAM file.
    pub(super) fn pk_carveout(&self) -> Result<Vec<u8>> {
        let pk = self.pk_spec()?;
        let mem = self.mem.as_ref().context("no guest memory")?;
        let mut bytes = vec![0u8; pk.size() as usize];
        mem.read(pk.base(), &mut bytes).context("reading the carve-out from the RAM file")?;
        Ok(bytes)
    }

    /// Records the hash of `bytes` (the carve-out) taken `at`.
    pub(super) fn pk_record_hash(&mut self, at: &str, bytes: &[u8]) -> String {
        let h = hash_hex(bytes);
        let kernel = self.current.name().into();
        self.pk.carveout_hashes.push(CarveoutHash { at: at.into(), live_updates: self.live_updates, kernel, xxh3_128: h.clone() });
        h
    }

    /// Hashes the carve-out from the RAM file and records it.
    pub(super) fn pk_hash(&mut self, at: &str) -> Result<String> {
        let bytes = self.pk_carveout()?;
        Ok(self.pk_record_hash(at, &bytes))
    }

    /// Right before a live update's jump: what `pkernfs_untouched` compares with.
    pub(super) fn pk_hash_at_jump(&mut self) -> Result<()> {
        self.pk.last_jump = Some(self.pk_hash("jump")?);
        Ok(())
    }

    /// `pkernfs_untouched`: the carve-out is as it was at the jump (outside),
    /// and the running kernel did not take it as System RAM (inside).
    pub(super) fn pk_untouched(&mut self) -> Result<()> {
        let pk = self.pk_spec()?;
        let (n, kernel) = (self.live_updates, self.current.name());
        let now = self.pk_hash("untouched")?;
        let jump = self.pk.last_jump.clone().context("`pkernfs_untouched` before any live update")?;
        let identical = now == jump;
        if !identical {
            self.pk.findings.push(crate::report::Finding::new(crate::report::Reason::PkernfsCarveoutChanged, format!(
                "pkernfs: after {n} update(s) ({kernel} kernel) the carve-out changed since the jump (xxh3-128 {jump} -> {now})"
            )));
        }
        let r = self.host()?.agent.exec(&["cat", "/proc/iomem"], Duration::from_secs(10))?;
        let iomem = iomem_over(&r.stdout, pk.base(), pk.size());
        let system_ram = iomem.iter().any(|l| l.contains("System RAM"));
        if iomem.is_empty() {
            self.pk.findings.push(crate::report::Finding::new(crate::report::Reason::PkernfsCarveoutChanged, format!("pkernfs: after {n} update(s) ({kernel} kernel) no /proc/iomem line covers the carve-out")));
        }
        if system_ram {
            self.pk.findings.push(crate::report::Finding::new(crate::report::Reason::PkernfsCarveoutChanged, format!("pkernfs: after {n} update(s) the {kernel} kernel took the carve-out as System RAM: {iomem:?}")));
        }
        self.pk.untouched.push(UntouchedCheck { live_updates: n, kernel: kernel.into(), identical, iomem, system_ram });
        Ok(())
    }

    /// Parses the carve-out from the RAM file with the kernel's format code.
    fn pk_verify_outside(&mut self, n: u32) -> Result<()> {
        let mut bytes = self.pk_carveout()?;
        let img = match Image::open(&mut bytes) {
            Ok(img) => img,
            Err(e) => {
                self.pk.findings.push(crate::report::Finding::new(crate::report::Reason::PkernfsData, format!("pkernfs: outside after {n} update(s): image refused: {}", e.describe())));
                return Ok(());
            }
        };
        for (name, want) in &self.pk.expected {
            match outside_digest(&img, name) {
                Ok(d) if d == *want => {}
                Ok(d) => self.pk.findings.push(crate::report::Finding::new(crate::report::Reason::PkernfsData, format!("pkernfs: {name} after {n} update(s), outside: {d:?}, expected {want:?}"))),
                Err(e) => self.pk.findings.push(crate::report::Finding::new(crate::report::Reason::PkernfsData, format!("pkernfs: {name} after {n} update(s), outside: {e}"))),
            }
        }
        self.pk.checks.push(format!("outside after {n} live update(s): image opens, {} files", self.pk.expected.len()));
        self.pk_verify_fill_outside(&img, n);
        Ok(())
    }
}

/// The inode of `name` (a `/`-separated path) in a parsed image.
pub(super) fn lookup_path(img: &Image<'_>, name: &str) -> Result<Ino, String> {
    let mut ino: Ino = ROOT_INO;
    for part in name.split('/').filter(|p| !p.is_empty()) {
        ino = img.lookup(ino, part.as_bytes()).map_err(|e| format!("lookup {part}: {}", e.describe()))?;
    }
    Ok(ino)
}

/// Size and hash of `name` (a `/`-separated path) in a parsed image.
pub(super) fn outside_digest(img: &Image<'_>, name: &str) -> Result<FileDigest, String> {
    let ino = lookup_path(img, name)?;
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

#[cfg(test)]
mod tests {
    use super::iomem_over;

    #[test]
    fn iomem_lines_over_the_carve_out() {
        let iomem = "00100000-3fffffff : System RAM\n40000000-43ffffff : Persistent Memory (legacy)\n  40000000-43ffffff : pkernfs\n44000000-7ffdffff : System RAM\n";
        assert_eq!(iomem_over(iomem, 1 << 30, 64 << 20), ["40000000-43ffffff : Persistent Memory (legacy)", "40000000-43ffffff : pkernfs"]);
        let taken = "00100000-7ffdffff : System RAM\n";
        assert_eq!(iomem_over(taken, 1 << 30, 64 << 20), ["00100000-7ffdffff : System RAM"]);
        assert!(iomem_over("00000000-00000000 : System RAM\n", 1 << 30, 64 << 20).is_empty(), "unprivileged reads show zeros");
    }
}
