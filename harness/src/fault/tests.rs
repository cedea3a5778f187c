use super::*;
use crate::journal::{Entry, Event};
use crate::scenario::{Scenario, ScenarioError};

const HEAD: &str = "description = \"d\"\nexpect = \"broken\"\nexpect_reasons = [\"dma.lost\"]\n\n[rx]\nring_size = 256\nrate_fps = 100.0\nframe_size = 256\nframes = 100\n\n[[steps]]\ndo = \"boot\"\n\n[[steps]]\ndo = \"start_dma\"\n\n[[steps]]\ndo = \"inject\"\n";

fn parse(fault: &str, tail: &str) -> Result<Scenario, ScenarioError> {
    Scenario::parse(&format!("{HEAD}\n[[steps]]\ndo = \"fault\"\n{fault}\n{tail}"), "f.toml")
}

fn err(fault: &str, tail: &str) -> String {
    parse(fault, tail).unwrap_err().to_string()
}

const UPDATE: &str = "\n[[steps]]\ndo = \"live_update\"\n";

#[test]
fn a_fault_step_parses_with_its_moment() {
    let s = parse("fault = \"link_flap\"\nduration_ms = 500\nat = \"kernel_up\"", UPDATE).unwrap();
    let crate::scenario::Step::Fault(f) = &s.steps[3] else { panic!("{:?}", s.steps[3]) };
    assert_eq!((f.kind, f.at, f.duration_ms), (FaultKind::LinkFlap, Some(Moment::KernelUp), Some(500)));
}

#[test]
fn an_unknown_kind_is_refused_naming_it_and_its_line() {
    let e = err("fault = \"cosmic_ray\"", "");
    assert!(e.starts_with("f.toml:22: steps[3]") && e.contains("cosmic_ray") && e.contains("link_flap"), "{e}");
}

#[test]
fn an_unknown_field_is_refused_naming_it_and_its_line() {
    let e = err("fault = \"qemu_kill\"\nsevere = true", "");
    assert!(e.starts_with("f.toml:23: steps[3]") && e.contains("severe"), "{e}");
}

#[test]
fn a_parameter_the_kind_does_not_take_or_lacks_names_the_field_and_line() {
    let e = err("fault = \"qemu_kill\"\nduration_ms = 5", "");
    assert!(e.contains("f.toml:23") && e.contains("steps[3].duration_ms") && e.contains("takes no"), "{e}");
    let e = err("fault = \"link_flap\"", "");
    assert!(e.contains("steps[3].duration_ms") && e.contains("needs how long"), "{e}");
    let e = err("fault = \"vm_pause\"\nduration_ms = 999999", "");
    assert!(e.contains("1..=5000"), "{e}");
    let e = err("fault = \"canary_write\"", "");
    assert!(e.contains("steps[3].engine"), "{e}");
    let e = err("fault = \"canary_write\"\nengine = \"nvme\"", "");
    assert!(e.contains("[nvme]"), "{e}");
}

#[test]
fn a_moment_needs_a_later_live_update_and_a_fault_that_can_hit_there() {
    let e = err("fault = \"link_flap\"\nduration_ms = 5\nat = \"init\"", "");
    assert!(e.contains("steps[3].at") && e.contains("no `live_update` step follows") && e.contains("f.toml:24"), "{e}");
    let e = err("fault = \"bus_master_off\"\nat = \"kernel_up\"", UPDATE);
    assert!(e.contains("cannot be aimed at \"kernel_up\""), "{e}");
    let e = err("fault = \"device_reset\"\nat = \"handed_over\"", UPDATE);
    assert!(e.contains("cannot be aimed at \"handed_over\""), "{e}");
    let e = err("fault = \"device_reset\"\nat = \"resume\"", UPDATE);
    assert!(e.contains("cannot be aimed at \"resume\""), "{e}");
}

#[test]
fn the_resume_moment_needs_a_persistent_engine_and_an_update_that_resumes() {
    let e = err("fault = \"link_flap\"\nduration_ms = 5\nat = \"resume\"", UPDATE);
    assert!(e.contains("steps[3].at") && e.contains("needs rx.persist or nvme.persist"), "{e}");
    let persistent = |tail: &str| {
        let text = format!("{HEAD}\n[[steps]]\ndo = \"fault\"\nfault = \"link_flap\"\nduration_ms = 5\nat = \"resume\"\n{tail}")
            .replace("frames = 100\n", "frames = 100\npersist = true\n")
            .replace("[[steps]]\ndo = \"boot\"", "[pkernfs]\nsize_mib = 64\nbase_mib = 512\n\n[[steps]]\ndo = \"boot\"");
        Scenario::parse(&text, "f.toml")
    };
    persistent(UPDATE).unwrap();
    let e = persistent("\n[[steps]]\ndo = \"live_update\"\nresume = false\n\n[[steps]]\ndo = \"live_update\"\n").unwrap_err().to_string();
    assert!(e.contains("a following `live_update` that resumes"), "{e}");
    // Pausing the VM works at every moment: the harness ends it while it waits for a reply.
    parse("fault = \"vm_pause\"\nduration_ms = 5\nat = \"kexec\"", UPDATE).unwrap();
}

#[test]
fn after_frames_counts_the_injector_and_is_checked() {
    let s = parse("fault = \"canary_write\"\nengine = \"rx\"\nafter_frames = 50", "").unwrap();
    let crate::scenario::Step::Fault(f) = &s.steps[3] else { panic!("{:?}", s.steps[3]) };
    assert_eq!((f.after_frames, f.at), (Some(50), None));
    let e = err("fault = \"canary_write\"\nengine = \"rx\"\nafter_frames = 50\nat = \"init\"", UPDATE);
    assert!(e.contains("steps[3].after_frames") && e.contains("not both"), "{e}");
    let e = err("fault = \"canary_write\"\nengine = \"rx\"\nafter_frames = 101", "");
    assert!(e.contains("after_frames: 101 must be in 1..=100"), "{e}");
    let e = err("fault = \"canary_write\"\nengine = \"rx\"\nafter_frames = 0", "");
    assert!(e.contains("must be in 1..=100"), "{e}");
    let e = err("fault = \"bus_master_off\"\nafter_frames = 10", "");
    assert!(e.contains("needs a running agent"), "{e}");
    let no_inject = format!("{HEAD}\n[[steps]]\ndo = \"fault\"\nfault = \"canary_write\"\nengine = \"rx\"\nafter_frames = 10\n").replace("[[steps]]\ndo = \"inject\"\n", "");
    let e = Scenario::parse(&no_inject, "f.toml").unwrap_err().to_string();
    assert!(e.contains("no `inject` step"), "{e}");
}

#[test]
fn the_expected_verdict_follows_from_the_faults() {
    // canary_write breaks a run: expecting intact contradicts it.
    let text = format!("{HEAD}\n[[steps]]\ndo = \"fault\"\nfault = \"canary_write\"\nengine = \"rx\"\n")
        .replace("expect = \"broken\"\nexpect_reasons = [\"dma.lost\"]", "expect = \"intact\"");
    let e = Scenario::parse(&text, "f.toml").unwrap_err().to_string();
    assert!(e.contains("f.toml:2") && e.contains("its faults make this run broken, not intact"), "{e}");
    // qemu_kill makes it an error, whatever else.
    let e = err("fault = \"qemu_kill\"", "");
    assert!(e.contains("make this run error, not broken"), "{e}");
    // A pause or a link flap does not decide the verdict.
    assert!(parse("fault = \"vm_pause\"\nduration_ms = 5", "").is_ok());
    assert!(parse("fault = \"link_flap\"\nduration_ms = 5", "").is_ok());
}

#[test]
fn combined_takes_the_gravest_verdict_and_every_broken_reason() {
    use crate::report::Reason;
    let (v, r) = Expectation::combined(&[Expectation::Intact, Expectation::Broken(&[Reason::DmaLost])]);
    assert_eq!((v, r), (Verdict::Broken, vec![Reason::DmaLost]));
    let (v, _) = Expectation::combined(&[Expectation::Error, Expectation::Broken(&[Reason::MemoryChanged])]);
    assert_eq!(v, Verdict::Error);
    assert_eq!(Expectation::combined(&[]).0, Verdict::Intact);
}

#[test]
fn every_kind_and_moment_is_documented() {
    let doc = std::fs::read_to_string(crate::workspace_root().join("scenarios/README.md")).unwrap();
    for k in FaultKind::ALL {
        assert!(doc.contains(&format!("`{k}`")), "scenarios/README.md does not document fault kind `{k}`");
    }
    for m in Moment::ALL {
        assert!(doc.contains(&format!("`{}`", m.name())), "scenarios/README.md does not document moment `{}`", m.name());
    }
}

#[test]
fn hits_say_when_each_fault_hit_and_ended_and_which_never_came() {
    let e = |ms: u64, event: Event| Entry { ms, ns: ms * 1_000_000, event };
    let journal = vec![
        e(10, Event::FaultArmed { step: 3, kind: FaultKind::LinkFlap, at: Moment::KernelUp, update: 1 }),
        e(11, Event::FaultArmed { step: 4, kind: FaultKind::QemuKill, at: Moment::AgentUp, update: 1 }),
        e(20, Event::FaultInjected { step: 5, kind: FaultKind::VmPause, at: None, update: None, after_frames: None, detail: "stop".into() }),
        e(25, Event::FaultEnded { step: 5, kind: FaultKind::VmPause }),
        e(40, Event::FaultInjected { step: 3, kind: FaultKind::LinkFlap, at: Some(Moment::KernelUp), update: Some(1), after_frames: None, detail: "down".into() }),
        e(45, Event::FaultEnded { step: 3, kind: FaultKind::LinkFlap }),
        e(50, Event::FaultArmedAfterFrames { step: 6, kind: FaultKind::CanaryWrite, after_frames: 900 }),
        e(51, Event::FaultArmedAfterFrames { step: 7, kind: FaultKind::CanaryWrite, after_frames: 5000 }),
        e(60, Event::FaultInjected { step: 6, kind: FaultKind::CanaryWrite, at: None, update: None, after_frames: Some(900), detail: "w (903 frames written)".into() }),
    ];
    let hits = from_journal(&journal);
    assert_eq!(hits.len(), 5);
    let counted = hits.iter().find(|h| h.step == 6).unwrap();
    assert_eq!((counted.injected_ms, counted.after_frames, counted.at), (Some(60), Some(900), None));
    let never = hits.iter().find(|h| h.step == 7).unwrap();
    assert_eq!((never.injected_ms, never.after_frames), (None, Some(5000)));
    let flap = hits.iter().find(|h| h.step == 3).unwrap();
    assert_eq!((flap.injected_ms, flap.ended_ms, flap.at), (Some(40), Some(45), Some(Moment::KernelUp)));
    let kill = hits.iter().find(|h| h.step == 4).unwrap();
    assert_eq!((kill.injected_ms, kill.update), (None, Some(1)));
    let pause = hits.iter().find(|h| h.step == 5).unwrap();
    assert_eq!((pause.injected_ms, pause.ended_ms, pause.at), (Some(20), Some(25), None));
}

#[test]
fn every_fault_scenario_is_in_the_catalogue_table() {
    let root = crate::workspace_root();
    let doc = std::fs::read_to_string(root.join("scenarios/README.md")).unwrap();
    let table = doc.split("### The fault catalogue").nth(1).expect("scenarios/README.md has a fault catalogue");
    for f in crate::scenario::catalogue::files(&root.join("scenarios")).unwrap() {
        let s = Scenario::load(&f).unwrap();
        if !s.steps.iter().any(|s| matches!(s, crate::scenario::Step::Fault(_))) {
            continue;
        }
        let stem = f.file_stem().unwrap().to_string_lossy().to_string();
        assert!(table.contains(&format!("`{stem}`")), "{stem} is missing from the fault catalogue in scenarios/README.md");
    }
}

#[test]
fn a_fault_on_the_e1000e_needs_an_rx_table() {
    let head = "description = \"d\"\nexpect = \"broken\"\nexpect_reasons = [\"dma.stalled\"]\n\n[[steps]]\ndo = \"boot\"\n";
    for (fault, does) in [("link_flap\"\nduration_ms = 5", "flaps the link of"), ("bus_master_off\"", "stops"), ("device_reset\"", "resets")] {
        let text = format!("{head}\n[[steps]]\ndo = \"fault\"\nfault = \"{fault}\n");
        let e = Scenario::parse(&text, "f.toml").unwrap_err().to_string();
        assert!(e.contains("steps[1]") && e.contains(&format!("{does} the e1000e: needs an [rx] table")), "{e}");
    }
}

#[test]
fn a_shaping_fault_comes_before_what_it_shapes_and_checks_what_it_needs() {
    let before_start = |fault: &str| HEAD.replace("[[steps]]\ndo = \"start_dma\"", &format!("[[steps]]\ndo = \"fault\"\n{fault}\n\n[[steps]]\ndo = \"start_dma\""));
    let s = Scenario::parse(&before_start("fault = \"unmapped_slots\"\nslots = 8"), "f.toml").unwrap();
    assert!(s.plan().unwrap().steps[2].before.describe().ends_with("unmapped_slots in effect"));
    // After the engines started it shapes nothing: no `start_dma` follows.
    let e = err("fault = \"unmapped_slots\"\nslots = 8", "");
    assert!(e.starts_with("f.toml:22: steps[3].fault") && e.contains("shapes a later `start_dma`, and none follows"), "{e}");
    let e = Scenario::parse(&before_start("fault = \"unmapped_slots\"\nslots = 256"), "f.toml").unwrap_err().to_string();
    assert!(e.contains("steps[1].slots: 256 must be in 1..256 (rx.ring_size)"), "{e}");
    let e = Scenario::parse(&before_start("fault = \"unmapped_slots\""), "f.toml").unwrap_err().to_string();
    assert!(e.contains("steps[1].slots: fault = \"unmapped_slots\" needs how many"), "{e}");
    let e = Scenario::parse(&before_start("fault = \"unmapped_slots\"\nslots = 8\nat = \"kexec\""), "f.toml").unwrap_err().to_string();
    assert!(e.contains("takes no `at`") || e.contains("no `live_update` step follows"), "{e}");
    let e = Scenario::parse(&before_start("fault = \"cross_device_mapping\""), "f.toml").unwrap_err().to_string();
    assert!(e.contains("needs an [nvme] table"), "{e}");
    let e = Scenario::parse(&before_start("fault = \"resume_iova_skew\"\nskew = 4096"), "f.toml").unwrap_err().to_string();
    assert!(e.contains("persist = true"), "{e}");
    let e = Scenario::parse(&before_start("fault = \"root_table_copy\""), "f.toml").unwrap_err().to_string();
    assert!(e.contains("kernel = \"lulab\""), "{e}");
    // A fault that changes the engines' start cannot come after it.
    let twice = HEAD.replace("[[steps]]\ndo = \"inject\"", "[[steps]]\ndo = \"fault\"\nfault = \"unmapped_slots\"\nslots = 8\n\n[[steps]]\ndo = \"inject\"");
    let e = Scenario::parse(&format!("{twice}\n[[steps]]\ndo = \"start_dma\"\n"), "f.toml").unwrap_err().to_string();
    assert!(e.contains("steps[2].fault: \"unmapped_slots\" changes how the engines start, and they already run"), "{e}");
}

#[test]
fn a_fault_injected_outside_its_moment_is_named() {
    use crate::oracle::timeline::UpdateTimeline;
    let u = UpdateTimeline { index: 1, kexec_started: 1000, agent_down: Some(1100), agent_up: Some(5000), ..Default::default() };
    let hit = |at: Moment, ms: u64| FaultHit { step: 4, kind: FaultKind::VmPause, at: Some(at), update: Some(1), after_frames: None, injected_ms: Some(ms), ended_ms: None, detail: String::new() };
    let good = [hit(Moment::HandedOver, 1050), hit(Moment::KernelUp, 3000), hit(Moment::Resume, 5010), hit(Moment::Kexec, 1000)];
    assert!(outside_their_moment(&good, std::slice::from_ref(&u)).is_empty());
    // The negative controls: a resume before the new agent answered, a hand-over after the old one went.
    let bad = outside_their_moment(&[hit(Moment::Resume, 4000), hit(Moment::HandedOver, 1200)], std::slice::from_ref(&u));
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert!(bad[0].contains("step 5 (vm_pause at resume) injected at 4000 ms"), "{bad:?}");
    assert_eq!(outside_their_moment(&[hit(Moment::Init, 3000)], &[]).len(), 1, "an update missing from the timeline is named");
}

#[test]
fn a_fault_whose_moment_or_count_never_came_is_listed() {
    let mut faults = Faults::new(crate::journal::Journal::create(None, 0).unwrap());
    assert!(faults.never_fired().is_empty());
    let step = |kind: &str, extra: &str| -> FaultStep { toml::from_str(&format!("fault = \"{kind}\"\n{extra}")).unwrap() };
    faults.arm(3, Moment::Resume, build(&step("link_flap", "duration_ms = 5")).unwrap());
    faults.arm_after_frames(5, 900, build(&step("canary_write", "engine = \"rx\"")).unwrap());
    assert_eq!(faults.never_fired(), ["step 4 (link_flap at `resume`)", "step 6 (canary_write after 900 frames)"]);
}

#[test]
fn agent_kill_lasts_as_a_step_and_not_at_a_moment_and_keeps_no_nvme() {
    parse("fault = \"agent_kill\"\nduration_ms = 3000", "").unwrap();
    parse("fault = \"agent_kill\"\nat = \"handed_over\"", UPDATE).unwrap();
    let e = err("fault = \"agent_kill\"", "");
    assert!(e.contains("steps[3].duration_ms") && e.contains("needs how long"), "{e}");
    let e = err("fault = \"agent_kill\"\nduration_ms = 5\nat = \"handed_over\"", UPDATE);
    assert!(e.contains("steps[3].duration_ms") && e.contains("for agent_kill as a step"), "{e}");
    let e = err("fault = \"agent_kill\"\nat = \"kexec\"", UPDATE);
    assert!(e.contains("cannot be aimed at \"kexec\""), "{e}");
    let e = err("fault = \"agent_kill\"\nduration_ms = 5\nafter_frames = 10", "");
    assert!(e.contains("needs a running agent"), "{e}");
    let nvme = "\n[nvme]\nlba_count = 64\nblocks_per_cmd = 8\nqueue_depth = 4\npersist = true\n";
    let head = HEAD.replacen("\n[[steps]]", &format!("{nvme}\n[[steps]]"), 1);
    let text = format!("{head}\n[[steps]]\ndo = \"fault\"\nfault = \"agent_kill\"\nduration_ms = 5\n");
    let e = Scenario::parse(&text, "f.toml").map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("persistent NVMe engine has no fd keeper"), "{e}");
}
