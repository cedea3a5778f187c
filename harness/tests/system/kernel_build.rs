//! Kernel build tier: builds our kernel (or takes it from the cache) and
//! checks its artefacts; a bad config option and a bad patch must fail naming
//! what is wrong. Cold build about 8 min on 2 cores; cached, seconds.
//!
//! When the machine cannot build (not Debian, not root with packages missing,
//! `LULAB_SKIP_KERNEL_BUILD` set) the tests are skipped with the reason,
//! except under CI (`CI` set), where that is a failure.

use std::path::{Path, PathBuf};

use crate::common::Suite;
use lulab::preflight::Need;
use std::sync::Mutex;
use std::time::Instant;

use lulab::kernel::build::{self, KernelSpec};

/// One kernel build at a time in this process (apt and dpkg hold locks too;
/// nextest runs each test in its own process: its `kernel-build` group
/// serialises them there).
static SERIAL: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn builds_our_kernel_with_every_requested_option_then_hits_the_cache() {
    let _g = lock();
    let spec = KernelSpec::lulab();
    let root = lulab::cache::root();
    let built = build::build_at(&root, &spec).expect("kernel build");
    let k = &built.artifacts;
    let size = std::fs::metadata(&k.bzimage).map(|m| m.len()).unwrap_or(0);
    assert!(size > 1 << 20, "bzImage {} is missing or tiny ({size} bytes)", k.bzimage.display());
    assert_eq!(k.name, "lulab");
    assert!(k.release.starts_with("7.3") && k.release.ends_with("-lulab"), "release {}", k.release);
    assert!(k.source_version.starts_with("7.3"), "source version {}", k.source_version);
    let config = std::fs::read_to_string(&built.config).expect("reading built .config");
    let unmet = spec.requested().expect("fragments").missing(&config);
    assert!(unmet.is_empty(), "options lost: {}", unmet.iter().map(|u| u.to_string()).collect::<Vec<_>>().join("; "));
    for opt in [
        "CONFIG_RUST=y",
        "CONFIG_PKERNFS=y",
        "CONFIG_PKERNFS_KUNIT_TEST=y",
        "CONFIG_KUNIT=y",
        "CONFIG_VIRTIO_CONSOLE=y",
    ] {
        assert!(config.lines().any(|l| l == opt), "{opt} missing from {}", built.config.display());
    }
    let map = std::fs::read_to_string(built.dir.join("System.map")).expect("System.map");
    assert!(map.contains("pkernfs"), "no pkernfs symbol in System.map: the Rust unit was not built in");

    // Nothing changed: the second build is a cache hit — the same entry, not
    // rebuilt (speed belongs in benchmarks, not in test assertions).
    let mtime = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).expect("bzImage mtime");
    let before = mtime(&built.artifacts.bzimage);
    let t = Instant::now();
    let again = build::build_at(&root, &spec).expect("cached kernel build");
    assert_eq!(again.artifacts, built.artifacts);
    assert_eq!(again.dir, built.dir);
    assert_eq!(mtime(&again.artifacts.bzimage), before, "the cached bzImage was rebuilt");
    println!("cached build: {:.1?}; the build that made this entry took {:.0} s", t.elapsed(), again.manifest.build_seconds);
}

/// A copy of our `kernel/` directory to break on purpose.
fn kernel_copy(tmp: &Path) -> KernelSpec {
    let mut spec = KernelSpec::lulab();
    let dst = tmp.join("kernel");
    copy_dir(&spec.kernel_dir, &dst);
    spec.kernel_dir = dst;
    spec
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p: PathBuf = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

fn an_impossible_option_fails_naming_it() {
    let _g = lock();
    let tmp = tempfile::tempdir().unwrap();
    let spec = kernel_copy(tmp.path());
    std::fs::write(spec.kernel_dir.join("config/99-impossible.config"), "CONFIG_LULAB_NO_SUCH_OPTION=y\n").unwrap();
    let err = build::build_at(&lulab::cache::root(), &spec).expect_err("an impossible option must fail");
    let msg = format!("{err:#}");
    assert!(msg.contains("CONFIG_LULAB_NO_SUCH_OPTION=y") && msg.contains("99-impossible.config:1"), "{msg}");
    assert!(!msg.contains("CONFIG_PKERNFS="), "only the impossible option may be listed: {msg}");
}

fn a_patch_that_does_not_apply_fails_naming_it() {
    let _g = lock();
    let tmp = tempfile::tempdir().unwrap();
    let spec = kernel_copy(tmp.path());
    let patches = spec.kernel_dir.join("patches");
    let bad = "--- a/fs/Kconfig\n+++ b/fs/Kconfig\n@@ -1,3 +1,4 @@\n this context\n+never\n is not\n in fs/Kconfig\n";
    std::fs::write(patches.join("0099-does-not-apply.patch"), bad).unwrap();
    let mut series = std::fs::read_to_string(patches.join("series")).unwrap();
    series.push_str("0099-does-not-apply.patch\n");
    std::fs::write(patches.join("series"), series).unwrap();
    let err = build::build_at(&lulab::cache::root(), &spec).expect_err("a bad patch must fail");
    let msg = format!("{err:#}");
    assert!(msg.contains("patch 0099-does-not-apply.patch does not apply: fs/Kconfig"), "{msg}");
}

fn a_missing_source_package_fails_naming_what_was_looked_for() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = KernelSpec::lulab();
    spec.source_package = "linux-source-0.1".into();
    let err = build::source::fetch(tmp.path(), &spec).expect_err("there is no linux-source-0.1");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("linux-source-0.1") && msg.contains("trixie-backports, forky") && msg.contains(&spec.mirror),
        "{msg}"
    );
    println!("{msg}");
}

/// This module's tests, with what each needs.
pub fn trials(s: &mut Suite) {
    s.add("system::kernel_build::builds_our_kernel_with_every_requested_option_then_hits_the_cache", &[Need::KernelBuild], builds_our_kernel_with_every_requested_option_then_hits_the_cache);
    s.add("system::kernel_build::an_impossible_option_fails_naming_it", &[Need::KernelBuild], an_impossible_option_fails_naming_it);
    s.add("system::kernel_build::a_patch_that_does_not_apply_fails_naming_it", &[Need::KernelBuild], a_patch_that_does_not_apply_fails_naming_it);
    s.add("system::kernel_build::a_missing_source_package_fails_naming_what_was_looked_for", &[Need::KernelBuild], a_missing_source_package_fails_naming_what_was_looked_for);
}
