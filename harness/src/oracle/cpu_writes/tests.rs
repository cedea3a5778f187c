use super::*;
use crate::oracle::timeline::UpdateEvents;
use crate::watch::owners::PageOwners;
use crate::watch::symbols::SymbolMap;
use crate::watch::WatchLog;

const KTEXT: u64 = 0xffff_ffff_8100_0000;

fn owner_file() -> Owner {
    Owner::File { path: "/rx-ring".into(), file_kind: "file".into() }
}

fn iommu() -> Owner {
    Owner::File { path: "/iommu/root-pgtables".into(), file_kind: "iommu-root".into() }
}

#[test]
fn each_phase_allows_only_its_own_stores() {
    let at = |phase| Place { phase, kernel: 1 };
    let (k, u) = (Mode::Kernel, Mode::User);
    // The running kernel: anywhere but a running engine's pages.
    assert_eq!(verdict(at(Phase::Kernel), false, k, &Owner::Unowned, false), None);
    assert!(verdict(at(Phase::Kernel), false, k, &owner_file(), true).is_some());
    // An agent: its files only.
    assert_eq!(verdict(at(Phase::Agent), false, u, &owner_file(), true), None);
    assert!(verdict(at(Phase::Agent), false, u, &Owner::Metadata, false).is_some());
    // The kexec: the old kernel freezing its VT-d tables, the old agent's hand-over.
    assert_eq!(verdict(at(Phase::Kexec), false, k, &iommu(), false), None);
    assert_eq!(verdict(at(Phase::Kexec), false, u, &owner_file(), false), None);
    assert_eq!(verdict(at(Phase::Kexec), false, k, &owner_file(), false), None, "the hand-over written");
    assert!(verdict(at(Phase::Kexec), false, k, &owner_file(), true).is_some());
    assert!(verdict(at(Phase::Kexec), false, k, &Owner::Unowned, false).is_some());
    // The new kernel before its agent: metadata and VT-d tables.
    assert_eq!(verdict(at(Phase::NewKernelBeforeAgent), false, k, &Owner::Metadata, false), None);
    assert_eq!(verdict(at(Phase::NewKernelBeforeAgent), false, k, &iommu(), false), None);
    assert!(verdict(at(Phase::NewKernelBeforeAgent), false, k, &owner_file(), false).is_some());
    // Purgatory and early boot: nowhere.
    assert!(verdict(at(Phase::Kexec), true, u, &iommu(), false).is_some());
}

fn watch(log: &str) -> WatchObservations {
    let map = format!("{KTEXT:x} T _text\n{:x} T lu_scribble\n{:x} T memset\n{:x} T _etext\n", KTEXT + 0x100, KTEXT + 0x200, KTEXT + 0x1000);
    let map = SymbolMap::parse(&map).unwrap();
    WatchObservations {
        watched: vec![PhysRange { gpa: 0x4000_0000, len: 64 << 20 }],
        log: WatchLog::parse(log).map_err(|e| e.to_string()),
        // Unreadable pkernfs: every page unknown (not a file, not metadata).
        owners: PageOwners::unknown("test"),
        engine_pages: vec![PhysRange { gpa: 0x4020_0000, len: 1 << 20 }],
        dma_since_ns: Some(1_000),
        maps: vec![Some(map.clone()), Some(map)],
    }
}

fn updates() -> Vec<UpdateEvents> {
    vec![UpdateEvents { kexec_started_ns: 10_000_000, kernel_up_ns: Some(20_000_000), agent_up_ns: Some(30_000_000), ..Default::default() }]
}

#[test]
fn a_store_by_the_new_kernel_before_its_agent_is_named_with_phase_symbol_and_address() {
    let scribble = KTEXT + 0x10f;
    let log = format!(
        "500 0 {:#x} 0xffff888040000000 0x40000000 8 3 k\n\
         25000000 0 {scribble:#x} 0xffffc90000123008 0x43f00008 8 1 k\n\
         # end records=2 stores=4 dropped=0\n",
        KTEXT + 0x20f
    );
    let w = watch(&log);
    let (s, found) = judge(&w, &Timeline::new(&updates()), 0);
    assert_eq!((s.stores, s.allowed, s.outside_allowed), (4, 3, 1));
    assert_eq!(s.by_phase["kernel"], 3);
    assert_eq!(s.by_phase["new kernel before the agent"], 1);
    let o = &s.offenders[0];
    assert_eq!((o.phase, o.kernel, o.symbol.as_deref(), o.paddr.as_str(), o.size), (Phase::NewKernelBeforeAgent, 1, Some("lu_scribble+0xf"), "0x43f00008", 8));
    assert_eq!(o.first_ms, 25);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].reason, Reason::MemoryCpuWrite);
    assert!(found[0].detail.contains("lu_scribble+0xf (new kernel before the agent, kernel 1) stored 8 bytes at 0x43f00008"), "{}", found[0].detail);
    let md = CpuWritesOracle.markdown(&serde_json::to_value(&s).unwrap()).unwrap();
    assert!(md.contains("| new kernel before the agent | 1 | lu_scribble+0xf | 0x43f00008 (8 B)"), "{md}");
}

#[test]
fn kernel_stores_into_a_running_engine_and_purgatory_stores_are_offenders() {
    let log = format!(
        "2000 0 {:#x} 0xffff888040200000 0x40200000 8 512 k\n\
         15000000 0 0x7d000 0x40300000 0x40300000 8 1 u\n\
         # end records=2 stores=513 dropped=0\n",
        KTEXT + 0x200
    );
    let (s, found) = judge(&watch(&log), &Timeline::new(&updates()), 0);
    assert_eq!(s.outside_allowed, 513);
    assert_eq!(s.offenders.len(), 2);
    assert_eq!(s.offenders[0].symbol.as_deref(), Some("memset+0x0"));
    assert_eq!((s.offenders[1].phase, s.offenders[1].mode.as_str(), s.offenders[1].symbol.as_deref()), (Phase::Kexec, "identity", None));
    assert_eq!(found.len(), 1);
}

#[test]
fn a_missing_or_cut_log_is_an_error_and_dropped_stores_count_against() {
    let (_, found) = judge(&watch("garbage\n"), &Timeline::default(), 0);
    assert_eq!(found[0].reason, Reason::RunError);
    let (_, found) = judge(&watch("1 0 0x1 0x2 0x40000000 8 1 u\n"), &Timeline::default(), 0);
    assert!(found.iter().any(|f| f.reason == Reason::RunError && f.detail.contains("cut short")), "{found:?}");
    let (s, found) = judge(&watch("# end records=0 stores=9 dropped=9\n"), &Timeline::default(), 0);
    assert_eq!(s.outside_allowed, 9);
    assert!(found[0].detail.contains("past the watcher's record limit"), "{}", found[0].detail);
}

#[test]
fn no_watcher_no_section() {
    let dir = tempfile::tempdir().unwrap();
    let log = crate::console::KernelLog::of_run(dir.path());
    let t = crate::oracle::trace::TraceSummary::default();
    let facts = crate::oracle::registry::RunFacts::default();
    let obs = Observations { facts: &facts, pages: None, nvme: None, rx: None, updates: &[], isolation: None, host_dir: dir.path(), trace: &t, since_dma: &t, log: &log, journal: &[], watch: None };
    let j = CpuWritesOracle.judge(&obs).unwrap();
    assert!(j.section.is_null() && j.findings.is_empty());
}
