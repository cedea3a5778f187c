//! System tier: the pkernfs scenarios of issue 6 beyond the kexec one.
//! `pkernfs-corrupt`: a corrupted superblock, inode and allocator are each
//! refused after a kexec (EUCLEAN, the kernel naming the structure), nothing in
//! the carve-out is written, and once the harness restores the byte the image
//! mounts with every file intact. `pkernfs-stock-roundtrip`: Debian's stock
//! kernel leaves the carve-out alone (byte-identical, not System RAM) and our
//! kernel mounts it again afterwards.

mod common;

use common::{our_kernel, run_scenario, TestRun};
use lulab::report::{CarveoutHash, Report};
use lulab::scenario::Verdict;

/// Runs `scenarios/NAME.toml`; `None` (after SKIP) when QEMU, our kernel or
/// (with `stock`) Debian's kernel is not available here (a failure under CI).
fn run(name: &str, stock: bool) -> Option<(Report, serde_json::Value, TestRun)> {
    our_kernel()?;
    if stock {
        if let Err(e) = lulab::lab::BootSet::stock() {
            if std::env::var_os("CI").is_some() {
                panic!("fetching the stock kernel on CI: {e:#}");
            }
            println!("SKIP: cannot fetch the stock kernel here: {e:#}");
            return None;
        }
    }
    let (r, t) = run_scenario(name);
    let json = serde_json::from_str(&std::fs::read_to_string(t.dir().join("pkernfs.json")).unwrap()).unwrap();
    Some((r, json, t))
}

/// The hashes taken `at` (in order).
fn hashes<'a>(all: &'a [CarveoutHash], at: &str) -> Vec<&'a str> {
    all.iter().filter(|h| h.at == at).map(|h| h.xxh3_128.as_str()).collect()
}

#[test]
fn corrupted_structures_are_refused_named_untouched_and_mount_once_restored() {
    let Some((r, json, _t)) = run("pkernfs-corrupt", false) else { return };
    assert!(r.as_expected, "{:#?}", r.reasons);
    assert_eq!(r.outcome, Verdict::Intact);
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

#[test]
fn stock_kernel_round_trip_leaves_the_carve_out_and_every_file_intact() {
    let Some((r, json, _t)) = run("pkernfs-stock-roundtrip", true) else { return };
    assert!(r.as_expected, "{:#?}", r.reasons);
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
