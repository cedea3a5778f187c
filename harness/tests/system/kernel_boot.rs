//! System tier for our kernel: built (or taken from the cache), booted by the
//! harness exactly like the stock kernel, with the pkernfs unit's banner and
//! every KUnit test passing, parsed from the kernel log's KTAP.

use crate::common::{our_kernel, Suite, TestRun, OURS};
use lulab::console::KernelLog;
use lulab::host::{Deadlines, Host};
use lulab::ktap::Ktap;
use lulab::qemu::params::{NIC_ADDR, NVME_ADDR};

fn our_kernel_boots_with_pkernfs_and_all_kunit_tests_pass() {
    let set = our_kernel();
    let run = TestRun::new("kernel-boot");
    let params = set.machine(run.dir()).unwrap();
    let mut host = Host::boot(&params, run.dir(), Deadlines::default()).expect("our kernel boots");

    let info = host.agent.kernel_info().unwrap();
    assert_eq!(info.release, set.kernel.release);
    assert!(info.release.ends_with("-lulab"), "{}", info.release);
    assert!(info.dmar_enabled(), "DMAR: {:?}", info.iommu_log);
    let devices = host.agent.pci_devices().unwrap();
    for addr in [NIC_ADDR, NVME_ADDR] {
        let d = devices.iter().find(|d| d.address == addr).unwrap_or_else(|| panic!("{addr} missing"));
        assert!(d.iommu_group.is_some(), "{addr} has no IOMMU group");
    }
    // iommufd is first class in our kernel.
    let r = host.agent.exec(&["ls", "/dev/iommu", "/dev/vfio"], std::time::Duration::from_secs(10)).unwrap();
    assert_eq!(r.status, Some(0), "/dev/iommu and /dev/vfio: {r:?}");
    host.shutdown().unwrap();

    let log = KernelLog::of_run(run.dir());
    assert!(log.contains("pkernfs: lulab pkernfs"), "the Rust unit's banner is in the kernel log");
    let ktap = Ktap::parse(log.ktap());
    let c = ktap.counts();
    assert!(ktap.complete(), "KTAP incomplete");
    assert!(c.passed >= 4, "KUnit passed {c:?}");
    assert_eq!(c.failed, 0, "KUnit failures: {:?}", ktap.failed());
    // The C KUnit suite of the VT-d freeze copy (kernel/patches/0003) ran.
    let persist: Vec<_> = ktap.leaves().into_iter().filter(|(n, _)| n.starts_with("lulab_vtd_persist.")).collect();
    assert!(!persist.is_empty(), "suite lulab_vtd_persist missing from KTAP");
    assert!(persist.iter().all(|(_, s)| *s == lulab::ktap::Status::Passed), "{persist:?}");
}


/// This module's tests, with what each needs.
pub fn trials(s: &mut Suite) {
    s.add("system::kernel_boot::our_kernel_boots_with_pkernfs_and_all_kunit_tests_pass", OURS, our_kernel_boots_with_pkernfs_and_all_kunit_tests_pass);
}
