use super::*;

const GOOD: &str = r#"
description = "t"
expect = "intact"

[rx]
ring_size = 512
rate_fps = 100.0
frame_size = 128
frames = 300

[[steps]]
do = "boot"
[[steps]]
do = "start_dma"
[[steps]]
do = "inject"
[[steps]]
do = "await_sent"
frames = 100
[[steps]]
do = "settle"
"#;

#[test]
fn parses_a_good_scenario() {
    let s = Scenario::parse(GOOD, "good.toml").unwrap();
    assert_eq!(s.expect, Verdict::Intact);
    assert_eq!(s.steps[3], Step::AwaitSent { frames: Some(100) });
    assert_eq!(s.steps[4], Step::Settle { quiet_ms: 5000 });
    assert_eq!(s.host, HostSpec::default());
}

#[test]
fn unknown_field_names_file_line_and_field() {
    let bad = GOOD.replace("frame_size = 128", "frame_size = 128\nframe_sise = 64");
    let e = Scenario::parse(&bad, "scenarios/x.toml").unwrap_err().to_string();
    assert!(e.starts_with("scenarios/x.toml: "), "{e}");
    assert!(e.contains("line 9"), "{e}");
    assert!(e.contains("frame_sise"), "{e}");
}

#[test]
fn unknown_step_is_refused_with_its_line() {
    let bad = GOOD.replace("do = \"settle\"", "do = \"sleep\"");
    let e = Scenario::parse(&bad, "s.toml").unwrap_err().to_string();
    let line = bad.lines().position(|l| l.contains("\"sleep\"")).unwrap() + 1;
    assert!(e.contains("sleep") && e.starts_with(&format!("s.toml:{line}: steps[")), "{e}");
}

#[test]
fn wrong_type_names_the_field() {
    let bad = GOOD.replace("frames = 300", "frames = \"many\"");
    let e = Scenario::parse(&bad, "s.toml").unwrap_err().to_string();
    assert!(e.contains("frames") && e.contains("line 9"), "{e}");
}

#[test]
fn inconsistent_values_name_the_field() {
    let e = Scenario::parse(&GOOD.replace("frames = 300", "frames = 3000"), "s.toml").unwrap_err().to_string();
    assert!(e.contains("rx.frames"), "{e}");
    let e = Scenario::parse(&GOOD.replace("ring_size = 512", "ring_size = 500"), "s.toml").unwrap_err().to_string();
    assert!(e.contains("rx.ring_size"), "{e}");
    let no_boot = GOOD.replacen("[[steps]]\ndo = \"boot\"\n", "", 1);
    let e = Scenario::parse(&no_boot, "s.toml").unwrap_err().to_string();
    assert!(e.contains("first step"), "{e}");
}

#[test]
fn every_scenario_in_the_repository_parses() {
    let dir = crate::workspace_root().join("scenarios");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            Scenario::load(&p).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 2, "found {n} scenarios in {}", dir.display());
}

#[test]
fn a_luo_memfd_engine_needs_luo_and_our_kernel() {
    let luo = GOOD.replace("frames = 300", "frames = 300\nrefill = true\npersist = true\nbacking = \"luo_memfd\"");
    let e = Scenario::parse(&luo, "s.toml").unwrap_err().to_string();
    assert!(e.contains("rx.backing") && e.contains("[luo]"), "{e}");
    let ok = luo.replace("[rx]", "[host]\nkernel = \"lulab\"\nmemory_mib = 2048\niommu = true\n\n[luo]\n\n[rx]");
    let s = Scenario::parse(&ok, "s.toml").unwrap();
    assert_eq!(s.rx.unwrap().backing, lulab_proto::PersistBacking::LuoMemfd);
    assert_eq!(s.luo.unwrap().cmdline(), ["kho=on", "liveupdate=on"]);
}

#[test]
fn host_machine_shape_is_checked_with_its_line() {
    let with = |host: &str| GOOD.replace("[rx]", &format!("[host]\nkernel = \"lulab\"\n{host}\n\n[rx]"));
    let s = Scenario::parse(&with("cpus = 4\niommu_mode = \"scalable\"\ncaching_mode = true"), "s.toml").unwrap();
    assert_eq!((s.host.cpus, s.host.iommu_mode, s.host.caching_mode), (4, IommuMode::Scalable, true));
    let e = Scenario::parse(&with("cpus = 0"), "s.toml").unwrap_err().to_string();
    assert!(e.starts_with("s.toml:7: host.cpus: 0 must be in 1..=8"), "{e}");
    let e = Scenario::parse(&with("iommu_mode = \"nested\""), "s.toml").unwrap_err().to_string();
    assert!(e.contains("s.toml") && e.contains("line 7") && e.contains("iommu_mode"), "{e}");
    let e = Scenario::parse(&with("iommu = false\ncaching_mode = true"), "s.toml").unwrap_err().to_string();
    assert!(e.contains("without VT-d"), "{e}");
    // Persistence runs in scalable mode too (its PASID tables are kept).
    let persistent = with("iommu_mode = \"scalable\"").replace("frames = 300\n", "frames = 300\npersist = true\n").replace("[rx]", "[pkernfs]\nsize_mib = 64\nbase_mib = 512\n\n[rx]");
    let s = Scenario::parse(&persistent, "s.toml").unwrap();
    assert_eq!(s.host.iommu_mode, IommuMode::Scalable);
}

#[test]
fn host_cmdline_words_are_checked() {
    let with = |words: &str| GOOD.replace("[rx]", &format!("[host]\nkernel = \"lulab\"\nmemory_mib = 1024\niommu = true\ncmdline = {words}\n\n[rx]"));
    let s = Scenario::parse(&with(r#"["lulab_vtd_adopt=copy"]"#), "s.toml").unwrap();
    assert_eq!(s.host.cmdline, ["lulab_vtd_adopt=copy"]);
    let e = Scenario::parse(&with(r#"["a=1", "two words"]"#), "s.toml").unwrap_err().to_string();
    assert!(e.starts_with("s.toml: host.cmdline[1]"), "{e}");
    let e = Scenario::parse(&with(r#"[""]"#), "s.toml").unwrap_err().to_string();
    assert!(e.contains("host.cmdline[0]"), "{e}");
}

#[test]
fn a_field_on_a_step_that_takes_none_is_an_error_with_its_line() {
    let text = GOOD.replace("do = \"inject\"", "do = \"inject\"\nspeed = 1");
    let e = Scenario::parse(&text, "s.toml").unwrap_err().to_string();
    let line = text.lines().position(|l| l.starts_with("speed")).unwrap() + 1;
    assert!(e.starts_with(&format!("s.toml:{line}: steps[2].speed: unknown field")), "{e}");
    // Steps with fields already refuse unknown ones (serde).
    let text = GOOD.replace("frames = 100", "frames = 100\nspeed = 1");
    let e = Scenario::parse(&text, "s.toml").unwrap_err().to_string();
    assert!(e.contains("unknown field `speed`"), "{e}");
}

#[test]
fn as_expected_wants_the_outcome_and_for_broken_only_named_reasons() {
    use crate::report::{Finding, Reason};
    let lost = [Finding::new(Reason::DmaLost, "3 lost")];
    let two = [Finding::new(Reason::DmaLost, "3 lost"), Finding::new(Reason::IommuFault, "9 faults")];
    let named = [Reason::DmaLost, Reason::IommuFault];
    assert!(as_expected(Verdict::Intact, &[], Verdict::Intact, &[]));
    assert!(!as_expected(Verdict::Intact, &[], Verdict::Broken, &lost));
    assert!(as_expected(Verdict::Broken, &named, Verdict::Broken, &lost), "a subset of the named reasons");
    assert!(as_expected(Verdict::Broken, &named, Verdict::Broken, &two));
    assert!(!as_expected(Verdict::Broken, &[Reason::DmaLost], Verdict::Broken, &two), "iommu.fault is not named");
    assert!(!as_expected(Verdict::Broken, &[Reason::NvmeLost], Verdict::Broken, &lost), "another reason");
    let error = [Finding::new(Reason::RunError, "QEMU exited")];
    assert!(!as_expected(Verdict::Broken, &named, Verdict::Error, &error), "an error is never broken");
    assert!(as_expected(Verdict::Error, &[], Verdict::Error, &error));
}

#[test]
fn a_host_table_takes_the_default_of_every_field_it_does_not_write() {
    let text = GOOD.replace("[rx]", "[host]\nkernel = \"lulab\"\n\n[rx]");
    let s = Scenario::parse(&text, "s.toml").unwrap();
    assert_eq!(s.host, HostSpec { kernel: KernelChoice::Lulab, ..HostSpec::default() });
    let e = Scenario::parse(&GOOD.replace("[rx]", "[host]\nkernal = \"lulab\"\n\n[rx]"), "s.toml").unwrap_err().to_string();
    assert!(e.contains("unknown field `kernal`"), "{e}");
}

#[test]
fn repeat_runs_an_entry_n_times_and_errors_keep_their_lines() {
    let once = GOOD.replace("do = \"inject\"", "do = \"inject\"\n[[steps]]\ndo = \"stage_update\"\n[[steps]]\ndo = \"stage_update\"\n[[steps]]\ndo = \"stage_update\"");
    let thrice = GOOD.replace("do = \"inject\"", "do = \"inject\"\n[[steps]]\ndo = \"stage_update\"\nrepeat = 3");
    let (t, o) = (Scenario::parse(&thrice, "t.toml").unwrap(), Scenario::parse(&once, "o.toml").unwrap());
    assert_eq!(t.step_entries, [0, 1, 2, 3, 3, 3, 4, 5]);
    assert_eq!(o.step_entries, [0, 1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(Scenario { step_entries: vec![], ..t }, Scenario { step_entries: vec![], ..o });
    // An error after a repeat still names its own line.
    let bad = thrice.replace("do = \"settle\"", "do = \"teleport\"");
    let line = bad.lines().position(|l| l.contains("\"teleport\"")).unwrap() + 1;
    let e = Scenario::parse(&bad, "t.toml").unwrap_err().to_string();
    assert!(e.starts_with(&format!("t.toml:{line}: steps[")) && e.contains("unknown variant `teleport`"), "{e}");
    let e = Scenario::parse(&thrice.replace("repeat = 3", "repeat = 0"), "t.toml").unwrap_err().to_string();
    let line = thrice.lines().position(|l| l.starts_with("repeat")).unwrap() + 1;
    assert!(e.starts_with(&format!("t.toml:{line}: steps: repeat = 0")), "{e}");
}

#[test]
fn the_soak_is_twenty_updates_written_once() {
    let s = Scenario::load(&crate::workspace_root().join("scenarios/live-update-soak.toml")).unwrap();
    let mut want = vec![Step::Boot, Step::StartDma, Step::Inject, Step::AwaitSent { frames: Some(100) }];
    want.extend(std::iter::repeat_n(Step::LiveUpdate { kernel: None, cmdline: vec![], resume: true }, 20));
    want.extend([Step::AwaitSent { frames: None }, Step::Settle { quiet_ms: 5000 }]);
    assert_eq!(s.steps, want);
    assert_eq!(s.live_updates(), 20);
}

#[test]
fn the_plan_says_what_holds_before_each_step() {
    let s = Scenario::load(&crate::workspace_root().join("scenarios/fault-pause-resume.toml")).unwrap();
    let plan = s.plan().unwrap();
    let lines: Vec<String> = plan.steps.iter().map(|p| format!("{} <- {}", p.step.name(), p.before.describe())).collect();
    assert_eq!(
        lines,
        [
            "boot <- no host",
            "start_dma <- lulab kernel, 0 updates",
            "stage_update <- lulab kernel, 0 updates, engines rx(persistent)",
            "inject <- lulab kernel, 0 updates, engines rx(persistent), lulab staged",
            "await_sent <- lulab kernel, 0 updates, engines rx(persistent), injecting, lulab staged",
            "fault <- lulab kernel, 0 updates, engines rx(persistent), injecting, lulab staged",
            "live_update <- lulab kernel, 0 updates, engines rx(persistent), injecting, lulab staged, vm_pause armed at resume",
            "await_sent <- lulab kernel, 1 update, engines rx(persistent), injecting",
            "settle <- lulab kernel, 1 update, engines rx(persistent), injecting",
        ]
    );
    // The soak: one entry, twenty steps, each knowing how many updates came before.
    let soak = Scenario::load(&crate::workspace_root().join("scenarios/live-update-soak.toml")).unwrap().plan().unwrap();
    let updates: Vec<(usize, u32)> = soak.steps.iter().filter(|p| p.step.name() == "live_update").map(|p| (p.entry, p.before.updates)).collect();
    assert_eq!(updates, (0..20).map(|n| (4, n)).collect::<Vec<_>>());
}

#[test]
fn a_step_that_cannot_stand_where_it_is_names_its_entry_and_line() {
    let e = Scenario::parse(&GOOD.replace("[[steps]]\ndo = \"start_dma\"\n", ""), "s.toml").unwrap_err().to_string();
    assert!(e.starts_with("s.toml:14: steps[1].do: `inject` needs the RX engine: a `start_dma` step before it"), "{e}");
    let twice = GOOD.replace("do = \"start_dma\"", "do = \"start_dma\"\n[[steps]]\ndo = \"start_dma\"");
    let e = Scenario::parse(&twice, "s.toml").unwrap_err().to_string();
    assert!(e.contains("steps[2].do: `start_dma` again"), "{e}");
    let e = Scenario::parse(&GOOD.replace("do = \"inject\"\n", "do = \"settle\"\n"), "s.toml").unwrap_err().to_string();
    assert!(e.contains("steps[3].do: `await_sent` waits for the injector"), "{e}");
    let busy = GOOD.replace("do = \"settle\"", "do = \"pkernfs_expect_busy\"").replace("[rx]", "[pkernfs]\nsize_mib = 64\nbase_mib = 512\n\n[rx]");
    let e = Scenario::parse(&busy, "s.toml").unwrap_err().to_string();
    assert!(e.contains("steps[4].do: `pkernfs_expect_busy`") && e.contains("persistent engine must run"), "{e}");
}

#[test]
fn every_scenario_file_resolves_to_toml_that_parses_back_to_the_same_scenario() {
    let dir = crate::workspace_root().join("scenarios");
    for path in crate::scenario::catalogue::files(&dir).unwrap() {
        let s = Scenario::load(&path).unwrap();
        let text = s.resolved_toml().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let back = Scenario::parse(&text, "resolved.toml").unwrap_or_else(|e| panic!("{}: resolved form does not parse: {e}\n{text}", path.display()));
        assert_eq!(back.plan().unwrap().steps.len(), s.steps.len());
        assert_eq!(Scenario { step_entries: vec![], ..back }, Scenario { step_entries: vec![], ..s.clone() }, "{}", path.display());
    }
}
