//! System tier: DMA scenarios on our kernel — the iommufd positive control
//! and the negative control of a kexec with no persistence configured.

mod common;

use common::{assert_one_update_with_the_device_stopped, our_kernel, run_scenario, TestRun};
use lulab::report::Report;
use lulab::scenario::Verdict;

/// Runs `scenarios/NAME.toml` on our kernel; `None` after SKIP.
fn run(name: &str) -> Option<(Report, TestRun)> {
    our_kernel()?;
    Some(run_scenario(name))
}

#[test]
fn dma_through_iommufd_on_our_kernel_is_intact() {
    let Some((r, t)) = run("lulab-baseline-rx") else { return };
    assert!(r.as_expected, "{:#?}", r.reasons);
    assert_eq!((r.dma.delivered, r.dma.lost), (r.dma.sent, 0), "{:?}", r.dma);
    assert_eq!(r.nvme.blocks_read, 512, "{:?}", r.nvme);
    for dev in ["0000:00:02.0", "0000:00:03.0"] {
        let layout: lulab_proto::DmaLayout =
            serde_json::from_str(&std::fs::read_to_string(t.dir().join(format!("layout-{dev}.json"))).unwrap()).unwrap();
        assert_eq!(layout.iommu, lulab_proto::IommuApi::Iommufd, "{dev} mapped through iommufd");
    }
}

#[test]
fn kexec_of_our_kernel_without_persistence_is_broken() {
    let Some((r, _t)) = run("lulab-kexec-rx") else { return };
    assert_eq!(r.outcome, Verdict::Broken);
    assert!(r.as_expected);
    assert_eq!(r.live_updates, 1);
    assert!(r.dma.bus_master_cleared >= 1, "{:?}", r.dma);
    assert!(r.iommu.translation_disabled >= 1, "{:?}", r.iommu);
    assert!(r.dma.lost + r.dma.queued_on_host > 0, "{:?}", r.dma);
    assert_one_update_with_the_device_stopped(&r, "lulab");
}
