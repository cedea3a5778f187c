//! System tier: the mount time after a kexec against carve-out size, file
//! count and file data (the last item of the pkernfs issue). Three scenarios
//! (`pkernfs-mount-64m`, `-256m`, `-1g`), four points each: 10 and 500 files
//! with 4 KiB each or most of the carve-out in data. Every row of
//! `pkernfs.mounts` must be there with its inputs and every file found; the
//! times are printed as one table (a benchmark: nothing asserts on them).

mod common;

use common::{our_kernel, run_scenario};
use lulab::report::{mount_table, PkernfsMount};

/// One scenario: its carve-out and its points (files, bytes per file) in step order.
struct Carveout {
    scenario: &'static str,
    mib: u64,
    points: [(u64, u64); 4],
}

const GRID: [Carveout; 3] = [
    Carveout { scenario: "pkernfs-mount-64m", mib: 64, points: [(10, 4096), (500, 4096), (500, 80 << 10), (10, 4 << 20)] },
    Carveout { scenario: "pkernfs-mount-256m", mib: 256, points: [(10, 4096), (500, 4096), (500, 320 << 10), (10, 16 << 20)] },
    Carveout { scenario: "pkernfs-mount-1g", mib: 1024, points: [(10, 4096), (500, 4096), (500, 1280 << 10), (10, 64 << 20)] },
];

#[test]
fn mount_after_kexec_is_timed_for_every_grid_point_with_every_file_found() {
    if our_kernel().is_none() {
        return;
    }
    let mut rows: Vec<PkernfsMount> = Vec::new();
    for Carveout { scenario: name, mib, points } in GRID {
        let (r, _t) = run_scenario(name);
        assert!(r.as_expected, "{name}: {:#?}", r.reasons);
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
        rows.extend(pk.mounts.iter().cloned());
    }
    println!("pkernfs mount after kexec, in-guest mount(2) under TCG:\n{}", mount_table(&rows));
}
