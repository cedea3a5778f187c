//! Guest RAM through a live update (`[guest_ram]`): kept in pkernfs, copied
//! to a disk of the host and back (the baseline), or not kept at all (the
//! negative control). What each report must show beyond its verdict.

use std::path::Path;

use lulab::report::{GuestRamSection, Report};
use lulab::scenario::GuestRamKeep;

fn section(r: &Report) -> &GuestRamSection {
    r.guest_ram.as_ref().expect("report.json has guest_ram")
}

/// The update's downtime reached the engines being back, in its parts.
fn downtime_complete(r: &Report) -> lulab::oracle::downtime::Downtime {
    assert_eq!(r.updates.len(), 1, "{:#?}", r.updates);
    let d = r.updates[0].downtime.clone().expect("a downtime breakdown");
    for (name, part) in &d.parts()[..5] {
        assert!(part.is_some(), "downtime part {name} missing: {d:?}");
    }
    assert!(d.total_ms.is_some(), "{d:?}");
    d
}

/// `live-update-guest-ram`: the RAM stayed in the carve-out (found there
/// from outside), nothing copied, the controller adopted with reads in flight.
pub fn kept_in_pkernfs(r: &Report, dir: &Path) {
    let g = section(r);
    assert_eq!((g.keep, g.size), (GuestRamKeep::Pkernfs, 64 << 20));
    assert_eq!(g.updates.len(), 1);
    let u = &g.updates[0];
    assert_eq!((u.intact_inside, u.intact_outside, u.save_ms, u.restore_ms), (true, Some(true), None, None), "{u:?}");
    assert_eq!((r.nvme.blocks_read, r.nvme.lost, r.nvme.corrupted), (4096, 0, 0), "{:?}", r.nvme);
    assert_eq!((r.iommu.faults, r.iommu.translation_disabled), (0, 0), "{:?}", r.iommu);
    let adopted = super::layout(dir, "layout-0000:00:03.0-update1.json");
    assert!(adopted.persist.and_then(|p| p.resumed_nvme).is_some(), "the new agent adopted the controller from its hand-over");
    downtime_complete(r);
}

/// `copy-update-guest-ram`: saved before the kexec (inside the update's
/// shutdown), restored after it (inside re-adopt); the controller was
/// stopped for it and started again; translation went off only while it was.
pub fn copied(r: &Report, _dir: &Path) {
    let g = section(r);
    assert_eq!((g.keep, g.size), (GuestRamKeep::Copy, 64 << 20));
    let u = &g.updates[0];
    assert!(u.intact_inside && u.intact_outside.is_none(), "{u:?}");
    let (save, restore) = (u.save_ms.expect("saved"), u.restore_ms.expect("restored"));
    let d = downtime_complete(r);
    assert!(d.shutdown_ms.unwrap() >= save, "the save is part of the shutdown: {d:?}, save {save} ms");
    assert!(d.readopt_ms.unwrap() >= restore, "the restore is part of re-adopt: {d:?}, restore {restore} ms");
    assert_eq!((r.nvme.blocks_read, r.nvme.lost, r.nvme.corrupted), (4096, 0, 0), "{:?}", r.nvme);
    assert_eq!(r.nvme.restarts.len(), 1, "the controller was started again after the update: {:?}", r.nvme);
    assert!(r.iommu.translation_disabled >= 1 && r.iommu.translation_disabled == r.iommu.translation_disabled_while_quiesced, "{:?}", r.iommu);
}

/// `copy-update-no-save`: the file is gone after the kexec.
pub fn not_kept(r: &Report, _dir: &Path) {
    let g = section(r);
    assert_eq!(g.keep, GuestRamKeep::None);
    assert_eq!(g.updates.len(), 1);
    assert!(!g.updates[0].intact_inside, "{:?}", g.updates[0]);
    assert!(r.findings.iter().any(|f| f.detail.contains("No such file")), "{:?}", r.findings);
}
