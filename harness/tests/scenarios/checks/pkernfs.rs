//! pkernfs scenarios: files across kexec, corrupted structures refused and
//! left untouched, the stock-kernel round trip, and the mount-time grid
//! (mount after kexec against carve-out size, file count and file data; the
//! times are printed, a benchmark: nothing asserts on them).

use std::path::Path;

use lulab::report::{mount_table, CarveoutHash, Report};

fn pkernfs_json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("pkernfs.json")).unwrap()).unwrap()
}

/// The hashes taken `at` (in order).
fn hashes<'a>(all: &'a [CarveoutHash], at: &str) -> Vec<&'a str> {
    all.iter().filter(|h| h.at == at).map(|h| h.xxh3_128.as_str()).collect()
}

/// `pkernfs-kexec`: files inside and outside after 0..=3 updates; no device,
/// so every DMA field of the timeline is null rather than 0.
pub fn kexec(r: &Report, dir: &Path) {
    assert_eq!(r.live_updates, 3);
    assert_eq!(r.updates.iter().map(|u| u.index).collect::<Vec<_>>(), [1, 2, 3], "{:#?}", r.updates);
    for u in &r.updates {
        assert_eq!(u.kernel, "lulab");
        assert!(u.kexec_transition_ms.is_some() && u.agent_downtime_ms.is_some(), "{u:#?}");
        assert_eq!((u.last_dma_before, u.first_dma_after, u.dma_while_agent_down), (None, None, None), "{u:#?}");
    }
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert!(report["updates"][2]["kexec_transition_ms"].is_u64(), "{}", report["updates"]);
    let json = pkernfs_json(dir);
    let checks = json["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 8, "inside + outside after 0..=3 updates: {checks:?}");
    assert!(json["mmap_passes"].as_u64().unwrap() >= 3, "{json}");
}

/// `pkernfs-corrupt`: a corrupted superblock, inode and allocator are each
/// refused after a kexec (EUCLEAN, the kernel naming the structure), nothing
/// in the carve-out is written, and once restored the image mounts intact.
pub fn corrupt(r: &Report, dir: &Path) {
    let json = pkernfs_json(dir);
    assert_eq!(r.live_updates, 3);
    let pk = r.pkernfs.as_ref().expect("report.json has a pkernfs section");
    assert_eq!(pk.files, 2);
    assert_eq!(pk.refusals.len(), 3, "{:#?}", pk.refusals);
    for (f, (what, structure)) in pk.refusals.iter().zip([("superblock", "superblock"), ("inode", "inode table"), ("allocator", "allocator")]) {
        assert!(f.corrupted.starts_with(what), "{f:#?}");
        assert_eq!(f.expected_structure, structure);
        assert_eq!(f.named_structure.as_deref(), Some(structure), "{f:#?}");
        assert_eq!(f.errno.as_deref(), Some("EUCLEAN"), "{f:#?}");
        assert!(f.mount_error.as_deref().unwrap().contains("Structure needs cleaning"), "{f:#?}");
        let line = f.kernel_line.as_deref().unwrap();
        assert!(line.contains("pkernfs: refusing the image at 0x40000000: ") && line.contains(&f.host_error), "{f:#?}");
        assert!(f.untouched && f.as_expected && f.restored, "{f:#?}");
        assert_eq!(f.remounted, Some(true), "{f:#?}");
    }
    assert!(pk.refusals[1].corrupted.contains("(big)"), "{:?}", pk.refusals[1]);
    // Per round: corrupted = at the jump = before and after the refused mount;
    // restored = before corrupting. The carve-out changed only by the harness.
    let h = &pk.carveout_hashes;
    let (before, corrupted, restored) = (hashes(h, "before corrupting"), hashes(h, "corrupted"), hashes(h, "restored"));
    let (jump, pre, post) = (hashes(h, "jump"), hashes(h, "refusal: before mount"), hashes(h, "refusal: after mount"));
    assert_eq!([before.len(), corrupted.len(), restored.len(), jump.len(), pre.len(), post.len()], [3; 6], "{h:#?}");
    for i in 0..3 {
        assert_eq!([jump[i], pre[i], post[i]], [corrupted[i]; 3], "round {i}: {h:#?}");
        assert_eq!(restored[i], before[i], "round {i}: {h:#?}");
        assert_ne!(corrupted[i], before[i], "round {i}: the corruption changed nothing");
    }
    // Files checked inside and outside after 0..=3 updates, every one intact.
    assert_eq!(pk.checks.len(), 8, "{:?}", pk.checks);
    assert!(pk.checks.iter().any(|c| c == "outside after 3 live update(s): image opens, 2 files"), "{:?}", pk.checks);
    assert_eq!(json["refusals"].as_array().unwrap().len(), 3, "{json}");
    assert!(json["findings"].as_array().unwrap().is_empty(), "{json}");
}

/// `pkernfs-stock-roundtrip`: Debian's stock kernel leaves the carve-out
/// alone (byte-identical, not System RAM) and ours mounts it again after.
pub fn stock_roundtrip(r: &Report, dir: &Path) {
    let json = pkernfs_json(dir);
    assert_eq!(r.live_updates, 2);
    assert!(r.timings_ms.contains_key("live_update1_to_agent") && r.timings_ms.contains_key("live_update2_to_agent"));
    let pk = r.pkernfs.as_ref().expect("report.json has a pkernfs section");
    assert_eq!(pk.files, 3);
    // While the stock kernel ran: identical, reserved, not System RAM.
    let [stock, ours] = &pk.untouched[..] else { panic!("two pkernfs_untouched checks: {:#?}", pk.untouched) };
    assert_eq!((stock.kernel.as_str(), stock.live_updates), ("stock", 1));
    assert!(stock.identical && !stock.system_ram && !stock.iomem.is_empty(), "{stock:#?}");
    assert!(stock.iomem.iter().all(|l| !l.contains("pkernfs")), "the stock kernel has no pkernfs: {stock:#?}");
    assert_eq!((ours.kernel.as_str(), ours.live_updates), ("lulab", 2));
    assert!(ours.identical && !ours.system_ram && ours.iomem.iter().any(|l| l.contains("pkernfs")), "{ours:#?}");
    // One hash from the jump into stock to the mount back on ours.
    let h = &pk.carveout_hashes;
    let mut seq = hashes(h, "jump");
    seq.extend(hashes(h, "untouched"));
    assert_eq!(seq.len(), 4, "{h:#?}");
    assert!(seq.iter().all(|x| *x == seq[0]), "the carve-out changed during the round trip: {h:#?}");
    // Every file with its size and hash, inside and outside, before and after.
    for c in ["inside after 0 live update(s): 3 files", "outside after 0 live update(s): image opens, 3 files"] {
        assert!(pk.checks.iter().any(|x| x == c), "{:?}", pk.checks);
    }
    for c in ["inside after 2 live update(s): 3 files", "outside after 2 live update(s): image opens, 3 files"] {
        assert!(pk.checks.iter().any(|x| x == c), "{:?}", pk.checks);
    }
    assert!(json["findings"].as_array().unwrap().is_empty(), "{json}");
    assert_eq!(json["expected"].as_object().unwrap().len(), 3, "{json}");
}

/// One mount-grid scenario: its carve-out and its points (files, bytes per file) in step order.
fn mount_grid(name: &str, r: &Report, mib: u64, points: [(u64, u64); 4]) {
    assert_eq!(r.live_updates, 4, "{name}");
    let pk = r.pkernfs.as_ref().expect("report.json has a pkernfs section");
    assert_eq!(pk.mounts.len(), points.len(), "{name}: one timed mount per kexec: {:#?}", pk.mounts);
    for (i, (m, (files, size))) in pk.mounts.iter().zip(points).enumerate() {
        assert_eq!((m.live_updates, m.kernel.as_str(), m.carveout_mib), (i as u32 + 1, "lulab", mib), "{name}: {m:#?}");
        assert_eq!((m.files, m.data_bytes), (files, files * size), "{name}: {m:#?}");
        assert_eq!(m.files_found, Some(files), "{name}: {m:#?}");
        assert!(m.mount_us > 0, "{name}: a mount cannot take 0 µs: {m:#?}");
    }
    for n in 1..=4 {
        let c = format!("outside after {n} live update(s): fill/ {0} of {0} files as written", points[n - 1].0);
        assert!(pk.checks.contains(&c), "{name}: no {c:?} in {:#?}", pk.checks);
    }
    println!("{name}: pkernfs mount after kexec, in-guest mount(2) under TCG:\n{}", mount_table(&pk.mounts));
}

pub fn mount_64m(r: &Report, _: &Path) {
    mount_grid("pkernfs-mount-64m", r, 64, [(10, 4096), (500, 4096), (500, 80 << 10), (10, 4 << 20)]);
}

pub fn mount_256m(r: &Report, _: &Path) {
    mount_grid("pkernfs-mount-256m", r, 256, [(10, 4096), (500, 4096), (500, 320 << 10), (10, 16 << 20)]);
}

pub fn mount_1g(r: &Report, _: &Path) {
    mount_grid("pkernfs-mount-1g", r, 1024, [(10, 4096), (500, 4096), (500, 1280 << 10), (10, 64 << 20)]);
}
