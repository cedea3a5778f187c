//! The VM's guest RAM (`[guest_ram]`) through live updates: the agent
//! writes it, the copy-based baseline saves it to the save disk before the
//! kexec and restores it after, and after every update the harness checks
//! it all came back: the agent hashes it inside, and a pkernfs-kept one is
//! also found and hashed outside, in the carve-out of the RAM file.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use lulab_proto::{pattern, FileDigest, Op, Reply};

use super::pkernfs_fill::fill_timeout;
use super::Runner;
use crate::pkernfs::format::Image;
use crate::report::{Finding, GuestRamSection, GuestRamUpdate, Reason};
use crate::scenario::guest_ram::{PKERNFS_NAME, SAVE_DISK_SERIAL};
use crate::scenario::{GuestRamKeep, GuestRamSpec};

/// What the run did with the guest RAM so far.
#[derive(Debug, Default)]
pub(super) struct GuestRamRun {
    /// `fill_guest_ram` ran: what it wrote.
    written: Option<FileDigest>,
    fill_ms: Option<u64>,
    updates: Vec<GuestRamUpdate>,
    /// The save before the jump of the update under way (ms).
    pending_save_ms: Option<u64>,
    /// Trace offset from which the agent had stopped every engine for the
    /// update under way (`keep = "copy"`).
    quiesced_from: Option<u64>,
    /// Trace byte ranges with every engine stopped (see `RunFacts::quiesced`).
    pub(super) quiesced: Vec<(u64, u64)>,
    pub(super) findings: Vec<Finding>,
}

/// A shell line that puts the save disk's block device in `$d` (the nvme
/// driver names controllers in probe order, so find it by its serial).
fn find_save_disk() -> String {
    format!(
        "d=; for c in /sys/class/nvme/nvme*; do grep -q {SAVE_DISK_SERIAL} $c/serial 2>/dev/null && d=/dev/${{c##*/}}n1; done; \
         [ -b \"$d\" ] || {{ echo 'no block device for the save disk (serial {SAVE_DISK_SERIAL})' >&2; ls /sys/class/nvme >&2; exit 3; }}"
    )
}

impl GuestRamRun {
    /// A save ran for the update under way (its clock starts before it).
    pub(super) fn saved_before_jump(&self) -> bool {
        self.pending_save_ms.is_some()
    }
}

impl Runner<'_> {
    fn guest_ram_spec(&self) -> Result<GuestRamSpec> {
        self.sc.guest_ram.clone().context("no [guest_ram] table")
    }

    /// `fill_guest_ram`: the agent writes the pattern.
    pub(super) fn fill_guest_ram(&mut self) -> Result<()> {
        let g = self.guest_ram_spec()?;
        if g.keep == GuestRamKeep::Pkernfs {
            self.guest_ram_mount()?;
        }
        let start = Instant::now();
        let op = Op::FillFile { path: g.path(self.sc.pkernfs.as_ref()), size: g.size(), seed: g.seed };
        let got = match self.host()?.agent.call(op, fill_timeout(g.size()))? {
            Reply::Digest(d) => d,
            other => bail!("unexpected reply to fill_file: {other:?}"),
        };
        let want = pattern::digest(g.seed, g.size());
        anyhow::ensure!(got == want, "fill_guest_ram: the agent wrote {got:?}, the pattern is {want:?}");
        self.guest_ram.fill_ms = Some(start.elapsed().as_millis() as u64);
        self.guest_ram.written = Some(want);
        Ok(())
    }

    /// pkernfs mounted at its mount point (a persistent engine's agent may
    /// have mounted it already).
    fn guest_ram_mount(&mut self) -> Result<()> {
        let pk = self.pk_spec()?;
        let mounts = self.host()?.agent.read_file("/proc/mounts")?;
        if !mounts.lines().any(|l| l.split_whitespace().nth(1) == Some(pk.mount.as_str())) {
            self.pk_mount(&pk).context("mounting pkernfs for the guest RAM")?;
        }
        Ok(())
    }

    /// Just before a live update's jump: `keep = "copy"` stops the
    /// (non-persistent) engines, as a VMM pauses its VM and devices, and
    /// saves the guest RAM to the save disk (synced: a kexec does not write
    /// back the page cache). Called after the update's clock started.
    pub(super) fn guest_ram_before_jump(&mut self) -> Result<()> {
        let Some(g) = self.sc.guest_ram.clone() else { return Ok(()) };
        if g.keep != GuestRamKeep::Copy || self.guest_ram.written.is_none() {
            return Ok(());
        }
        if self.nvme.as_ref().is_some_and(|nv| nv.ledger.is_some()) {
            let op = Op::DmaStop { pci: crate::qemu::params::NVME_ADDR.into() };
            match self.host()?.agent.call(op, Duration::from_secs(20)).context("stopping the NVMe engine before the copy")? {
                Reply::DmaStatus(_) => {}
                other => bail!("unexpected reply to dma_stop: {other:?}"),
            }
        }
        self.guest_ram.quiesced_from = Some(self.trace_len());
        let script = format!("{} && dd if={} of=$d bs=1M conv=fsync", find_save_disk(), g.path(None));
        let start = Instant::now();
        self.guest_ram_sh(&script, g.size()).context("saving the guest RAM to the save disk")?;
        self.guest_ram.pending_save_ms = Some(start.elapsed().as_millis() as u64);
        Ok(())
    }

    /// After live update `n`'s new agent answered, before the engines are
    /// taken back: `keep = "copy"` restores the guest RAM.
    pub(super) fn guest_ram_after_jump(&mut self, n: u32) -> Result<()> {
        let Some(g) = self.sc.guest_ram.clone() else { return Ok(()) };
        if self.guest_ram.written.is_none() {
            return Ok(());
        }
        let mut u = GuestRamUpdate { live_update: n, save_ms: self.guest_ram.pending_save_ms.take(), ..Default::default() };
        if g.keep == GuestRamKeep::Copy {
            let script = format!("{} && dd if=$d of={} bs=1M count={}", find_save_disk(), g.path(None), g.size_mib);
            let start = Instant::now();
            self.guest_ram_sh(&script, g.size()).context("restoring the guest RAM from the save disk")?;
            u.restore_ms = Some(start.elapsed().as_millis() as u64);
        }
        self.guest_ram.updates.push(u);
        Ok(())
    }

    /// After live update `n` is done (the engines are back; outside its
    /// downtime): the guest RAM is checked inside, and a pkernfs-kept one
    /// outside too.
    pub(super) fn guest_ram_check(&mut self, n: u32) -> Result<()> {
        let Some(g) = self.sc.guest_ram.clone() else { return Ok(()) };
        let Some(want) = self.guest_ram.written else { return Ok(()) };
        if let Some(from) = self.guest_ram.quiesced_from.take() {
            let to = self.trace_len();
            self.guest_ram.quiesced.push((from, to));
        }
        let Some(i) = self.guest_ram.updates.iter().rposition(|u| u.live_update == n) else { return Ok(()) };
        if g.keep == GuestRamKeep::Pkernfs {
            self.guest_ram_mount()?;
        }
        let path = g.path(self.sc.pkernfs.as_ref());
        let inside = match self.host()?.agent.call(Op::HashFile { path: path.clone() }, fill_timeout(g.size())) {
            Ok(Reply::Digest(d)) => Ok(d),
            Ok(other) => bail!("unexpected reply to hash_file: {other:?}"),
            Err(e) => Err(format!("{e:#}")),
        };
        let intact_inside = inside.as_ref() == Ok(&want);
        if !intact_inside {
            let got = inside.map_or_else(|e| e, |d| format!("{d:?}"));
            self.guest_ram.findings.push(Finding::new(Reason::GuestRamChanged, format!("guest RAM after live update {n}, inside: {path}: {got}, written {want:?}")));
        }
        if g.keep == GuestRamKeep::Pkernfs {
            let outside = self.pk_carveout().and_then(|mut bytes| {
                let img = Image::open(&mut bytes).map_err(|e| anyhow::anyhow!("image refused: {}", e.describe()))?;
                super::pkernfs::outside_digest(&img, PKERNFS_NAME).map_err(|e| anyhow::anyhow!(e))
            });
            let intact_outside = matches!(&outside, Ok(d) if *d == want);
            if !intact_outside {
                let got = outside.map_or_else(|e| format!("{e:#}"), |d| format!("{d:?}"));
                self.guest_ram.findings.push(Finding::new(Reason::GuestRamChanged, format!("guest RAM after live update {n}, outside (the RAM file's carve-out): {PKERNFS_NAME}: {got}, written {want:?}")));
            }
            self.guest_ram.updates[i].intact_outside = Some(intact_outside);
        }
        self.guest_ram.updates[i].intact_inside = intact_inside;
        Ok(())
    }

    /// `script` by the host's shell; an error with its output when it fails.
    fn guest_ram_sh(&mut self, script: &str, bytes: u64) -> Result<()> {
        let r = self.host()?.agent.exec(&["sh", "-c", script], fill_timeout(bytes))?;
        if r.status != Some(0) {
            bail!("`{script}` exited {:?}{}: {}{}", r.status, if r.timed_out { " (timed out)" } else { "" }, r.stdout.trim(), r.stderr.trim());
        }
        Ok(())
    }

    /// `guest_ram` of report.json.
    pub(super) fn guest_ram_section(&self) -> Option<GuestRamSection> {
        let g = self.sc.guest_ram.as_ref()?;
        Some(GuestRamSection { size: g.size(), keep: g.keep, path: g.path(self.sc.pkernfs.as_ref()), fill_ms: self.guest_ram.fill_ms, updates: self.guest_ram.updates.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_save_disk_is_found_by_its_serial() {
        let s = find_save_disk();
        assert!(s.contains("grep -q lulab-save $c/serial") && s.contains("d=/dev/${c##*/}n1") && s.contains("exit 3"), "{s}");
    }
}
