//! Our kernel without persistence: the iommufd positive control, the kexec
//! negative control, and the kernel-boot scenario's KUnit counts.

use std::path::Path;

use lulab::report::Report;

pub fn lulab_baseline_rx(r: &Report, dir: &Path) {
    assert_eq!((r.dma.delivered, r.dma.lost), (r.dma.sent, 0), "{:?}", r.dma);
    assert_eq!(r.nvme.blocks_read, 512, "{:?}", r.nvme);
    for dev in ["0000:00:02.0", "0000:00:03.0"] {
        let layout = super::layout(dir, &format!("layout-{dev}.json"));
        assert_eq!(layout.iommu, lulab_proto::IommuApi::Iommufd, "{dev} mapped through iommufd");
    }
}

pub fn lulab_kexec_rx(r: &Report, _: &Path) {
    assert_eq!(r.live_updates, 1);
    assert!(r.dma.bus_master_cleared >= 1, "{:?}", r.dma);
    assert!(r.iommu.translation_disabled >= 1, "{:?}", r.iommu);
    assert!(r.dma.lost + r.dma.queued_on_host > 0, "{:?}", r.dma);
    super::one_update_with_the_device_stopped(r, "lulab");
}

pub fn kernel_boot(r: &Report, dir: &Path) {
    let k = r.kunit.as_ref().expect("kunit counts in the report");
    assert!(k.passed >= 4 && k.failed == 0, "{k:?}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["kunit"]["failed"], 0);
    assert!(r.versions.kernel.contains("7.3"), "{}", r.versions.kernel);
}
