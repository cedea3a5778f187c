use super::*;

pub(crate) fn sample() -> Report {
    Report {
        isolation: None,
        schema: SCHEMA,
        scenario: "stock-kexec-rx".into(),
        description: "RX through a stock-kernel kexec (negative control)".into(),
        expect: Verdict::Broken,
        outcome: Verdict::Broken,
        as_expected: true,
        reasons: vec!["412 frames lost (sent but never DMAed)".into(), "VT-d translation switched off 1 time(s)".into()],
        findings: vec![
            Finding::new(Reason::DmaLost, "412 frames lost (sent but never DMAed)"),
            Finding::new(Reason::IommuTranslationOff, "VT-d translation switched off 1 time(s)"),
        ],
        expect_reasons: vec![Reason::DmaLost, Reason::DmaStalled, Reason::IommuTranslationOff],
        versions: Versions { qemu: "10.0.2".into(), kernel: "6.12.95+deb12-amd64".into(), lulab: "0.1.0".into() },
        dma: DmaSection {
            sent: 800,
            delivered: 388,
            lost: 412,
            queued_on_host: 400,
            backpressure_events: 17,
            first_lost_seqs: vec![388, 389, 390],
            latency_us: LatencySection { count: 388, min: 90, p50: 150, p99: 900, max: 1200 },
            ..Default::default()
        },
        nvme: NvmeSection { blocks_read: 512, corrupted: 0, lost: 0, ..Default::default() },
        iommu: IommuSection { translation_disabled: 1, root_tables: vec!["0x40800000".into()], ..Default::default() },
        memory: MemorySection { pages_checked: 1030, unexpected_changes: 3, dma_pages_changed: 40, first_unexpected: vec!["0x3e000000".into()], cpu_writes_outside_allowed: None },
        live_updates: 1,
        updates: vec![UpdateTimeline {
            index: 1,
            kernel: "stock".into(),
            kexec_started: 12000,
            kernel_up: Some(13100),
            agent_down: Some(12003),
            agent_up: Some(16400),
            agent_downtime_ms: Some(4397),
            last_dma_before: Some(11950),
            first_dma_after: None,
            dma_while_agent_down: Some(0),
            kexec_transition_ms: Some(1100),
            // The stock kernel never refilled: the breakdown ends with the agent back.
            downtime: Some(crate::oracle::downtime::Downtime {
                total_ms: Some(4400),
                shutdown_ms: Some(3),
                kexec_jump_ms: Some(1097),
                kernel_boot_ms: Some(2900),
                agent_start_ms: Some(400),
                readopt_ms: None,
                first_refill_ms: None,
            }),
            ..Default::default()
        }],
        kunit: None,
        pkernfs: None,
        luo: None,
        guest_ram: None,
        sections: [("kernel_splats".to_string(), serde_json::json!([])), ("dma_timing".to_string(), serde_json::to_value(timing()).unwrap())].into_iter().collect(),
        faults: Vec::new(),
        timings_ms: [("boot".to_string(), 9000), ("kexec_to_agent".to_string(), 4000)].into_iter().collect(),
        run_dir: "/work/reports/x".into(),
        agent_reconnects: Vec::new(),
    }
}

/// The `dma_timing` section of [`sample`]: the stock kernel's blackout runs to the end of the run.
fn timing() -> crate::oracle::dma_timing::DmaTiming {
    use crate::oracle::dma_timing::{Blackout, DmaTiming, Percentiles};
    let p = |frames, p50_us, max_us| Some(Percentiles { frames, p50_us, p99_us: max_us, p999_us: max_us, max_us });
    DmaTiming {
        frames_timed: 388,
        frames_unmatched: 0,
        dma_writes: 388,
        frame_interval_us: 5000,
        latency: p(388, 180, 2100),
        latency_before: p(380, 170, 900),
        latency_during: p(8, 1500, 2100),
        latency_after: None,
        blackouts: vec![Blackout { index: 1, blackout_us: 9_400_000, from_ms: 12010, to_ms: 21410, to_end_of_run: true, first_refill_ms: None }],
        clock_offset_ns: (1_796_000_000_000_000_000, 1_796_000_000_000_004_000),
        nvme: None,
    }
}

/// A run directory holding [`sample`]'s report and DMA samples.
fn sample_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lulab-report-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let samples = crate::oracle::dma_timing::Samples {
        frames: (0..388).map(|i| [i * 30_000, 150 + i % 7 * 20]).collect(),
        nvme: Vec::new(),
        updates: vec![(12_000_000, Some(16_400_000))],
        frame_interval_us: 5000,
    };
    std::fs::write(dir.join(crate::oracle::dma_timing::SAMPLES_FILE), serde_json::to_string(&samples).unwrap()).unwrap();
    dir
}

#[test]
fn report_html_is_one_page_with_the_plots_inline() {
    let dir = sample_dir("html");
    sample().write(&dir).unwrap();
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.contains("<title>lulab: stock-kexec-rx</title>"), "{html:.200}");
    assert_eq!(html.matches("<svg").count(), 3, "latency over time, histogram, blackouts");
    assert!(html.find("<h2>Plots</h2>") < html.find("<h2>DMA ledger"), "plots come after the verdict, before the evidence");
    assert!(html.contains("<table>") && html.contains("<td><strong>broken</strong></td>"), "report.md's tables become HTML tables");
    for external in ["<script", "src=\"http", "href=\"http", "@import", "url("] {
        assert!(!html.contains(external), "self-contained: no {external}");
    }
    // Without samples (e.g. no DMA engine) the blackout plot is the only one.
    std::fs::remove_file(dir.join(crate::oracle::dma_timing::SAMPLES_FILE)).unwrap();
    sample().write(&dir).unwrap();
    assert_eq!(std::fs::read_to_string(dir.join("report.html")).unwrap().matches("<svg").count(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_run_directory_without_timing_inputs_regenerates_as_judged() {
    let dir = sample_dir("regen");
    sample().write(&dir).unwrap();
    for f in ["report.md", "report.html"] {
        std::fs::remove_file(dir.join(f)).unwrap();
    }
    assert_eq!(Report::regenerate(&dir).unwrap(), sample());
    assert!(dir.join("report.md").exists() && dir.join("report.html").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn report_json_reads_back_as_written() {
    let dir = std::env::temp_dir().join(format!("lulab-report-rt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let r = sample();
    r.write(&dir).unwrap();
    assert_eq!(Report::read(&dir).unwrap(), r);
    assert_eq!(Report::read(&dir.join("report.json")).unwrap(), r);
    std::fs::write(dir.join("report.json"), "{\n  \"schema\": 4,\n  oops\n}").unwrap();
    let e = format!("{:#}", Report::read(&dir).unwrap_err());
    assert!(e.contains("report.json") && e.contains("line 3"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn report_json_snapshot() {
    insta::assert_json_snapshot!(sample(), {
        ".timings_ms.*" => "[ms]",
        ".dma.latency_us.*" => "[us]",
        ".run_dir" => "[run_dir]",
        ".dma_timing.latency" => "[percentiles]",
        ".dma_timing.latency_before" => "[percentiles]",
        ".dma_timing.latency_during" => "[percentiles]",
        ".dma_timing.blackouts[].blackout_us" => "[us]",
        ".dma_timing.blackouts[].from_ms" => "[ms]",
        ".dma_timing.blackouts[].to_ms" => "[ms]",
        ".dma_timing.clock_offset_ns" => "[ns]",
    });
}

#[test]
fn report_md_snapshot() {
    let mut r = sample();
    r.timings_ms.values_mut().for_each(|v| *v = 0);
    r.dma.latency_us = LatencySection::default();
    r.run_dir = "[run_dir]".into();
    // Timings as a run would redact them: every µs and ms of the DMA timing zeroed.
    let mut t = timing();
    for p in [&mut t.latency, &mut t.latency_before, &mut t.latency_during].into_iter().flatten() {
        (p.p50_us, p.p99_us, p.p999_us, p.max_us) = (0, 0, 0, 0);
    }
    for b in &mut t.blackouts {
        (b.blackout_us, b.from_ms, b.to_ms) = (0, 0, 0);
    }
    r.sections.insert("dma_timing".into(), serde_json::to_value(t).unwrap());
    insta::assert_snapshot!(r.markdown());
}

#[test]
fn stable_field_names_are_present() {
    let v = serde_json::to_value(sample()).unwrap();
    for k in ["schema", "scenario", "expect", "outcome", "as_expected", "versions", "dma", "nvme", "iommu", "memory", "live_updates", "updates", "timings_ms"] {
        assert!(v.get(k).is_some(), "report.json lacks {k}");
    }
    for (sec, keys) in [
        ("versions", &["qemu", "kernel", "lulab"][..]),
        ("dma", &["sent", "delivered", "corrupted", "dropped_by_device", "lost"][..]),
        ("nvme", &["blocks_read", "corrupted", "lost"][..]),
        ("iommu", &["faults"][..]),
        ("memory", &["pages_checked", "unexpected_changes"][..]),
    ] {
        for k in keys {
            assert!(v[sec].get(*k).is_some(), "report.json lacks {sec}.{k}");
        }
    }
    let update = &v["updates"][0];
    for k in [
        "index",
        "kernel",
        "kexec_started",
        "kernel_up",
        "agent_down",
        "agent_up",
        "agent_downtime_ms",
        "last_dma_before",
        "first_dma_after",
        "dma_while_agent_down",
        "kexec_transition_ms",
        "agent_down_from",
        "kernel_up_from",
    ] {
        assert!(update.get(k).is_some(), "report.json lacks updates[0].{k}");
    }
}

#[test]
fn timeline_renders_in_event_order_and_says_what_never_happened() {
    let mut r = sample();
    let md = r.markdown();
    assert!(md.contains("### Update 1 → stock"), "{md}");
    let order: Vec<usize> = ["| last DMA seen before the kexec | 11950 | −50 |", "| kexec requested | 12000 | 0 |", "| agent's last reply | 12003 | +3 |", "| first DMA after the kexec | never | — |"]
        .iter()
        .map(|row| md.find(row).unwrap_or_else(|| panic!("{row} missing:\n{md}")))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{md}");
    assert!(md.contains("frames DMAed with no agent running: 0"), "{md}");
    // Without an RX stream there is no DMA to speak of (pkernfs-kexec).
    r.dma = DmaSection::default();
    r.updates[0].last_dma_before = None;
    r.updates[0].dma_while_agent_down = None;
    let md = r.markdown();
    assert!(!md.contains("DMA seen") && md.contains("no agent running: no RX stream"), "{md}");
    // No live update, no section.
    r.updates.clear();
    assert!(!r.markdown().contains("## Live updates"));
}

#[test]
fn pkernfs_section_serialises_and_renders() {
    let mut r = sample();
    r.pkernfs = Some(PkernfsSection {
        files: 2,
        refusals: vec![PkernfsRefusal {
            corrupted: "superblock".into(),
            named_structure: Some("superblock".into()),
            errno: Some("EUCLEAN".into()),
            untouched: true,
            restored: true,
            remounted: Some(true),
            ..Default::default()
        }],
        untouched: vec![UntouchedCheck { live_updates: 1, kernel: "stock".into(), identical: true, iomem: vec![], system_ram: false }],
        mounts: vec![PkernfsMount {
            live_updates: 2,
            kernel: "lulab".into(),
            carveout_mib: 256,
            files: 500,
            data_bytes: 163_840_000,
            mount_us: 1234,
            files_found: Some(500),
        }],
        ..Default::default()
    });
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["pkernfs"]["refusals"][0]["errno"], "EUCLEAN");
    assert_eq!(v["pkernfs"]["untouched"][0]["kernel"], "stock");
    let md = r.markdown();
    assert!(md.contains("| superblock | superblock | EUCLEAN | true | true / Some(true) |"), "{md}");
    assert!(md.contains("| 1 | stock | true | false |"), "{md}");
    assert_eq!(v["pkernfs"]["mounts"][0]["mount_us"], 1234);
    assert_eq!(v["pkernfs"]["mounts"][0]["carveout_mib"], 256);
    assert!(md.contains("| 256 MiB | 500 | 156.2 MiB | 2 | 1234 | 500 |"), "{md}");
    // A pkernfs section written before `mounts` existed reads back with none.
    let mut old = serde_json::to_value(r.pkernfs.as_ref().unwrap()).unwrap();
    old.as_object_mut().unwrap().remove("mounts");
    let back: PkernfsSection = serde_json::from_value(old).unwrap();
    assert!(back.mounts.is_empty() && back.files == 2);
}

#[test]
fn mount_table_shows_sizes_in_readable_units_and_missing_counts_as_a_dash() {
    let row = |files, data_bytes, files_found| PkernfsMount {
        live_updates: 1,
        kernel: "lulab".into(),
        carveout_mib: 64,
        files,
        data_bytes,
        mount_us: 7,
        files_found,
    };
    let t = mount_table(&[row(10, 40_960, Some(10)), row(1, 100, None)]);
    assert!(t.contains("| 64 MiB | 10 | 40.0 KiB | 1 | 7 | 10 |"), "{t}");
    assert!(t.contains("| 64 MiB | 1 | 100 B | 1 | 7 | — |"), "{t}");
}

#[test]
fn reports_compare_side_by_side() {
    let ours = sample();
    let mut upstream = sample();
    upstream.scenario = "luo-memfd-rx".into();
    upstream.luo = Some(LuoSection::new(Vec::new()));
    let t = compare::side_by_side(&[&ours, &upstream]);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines[0], "| | stock-kexec-rx | luo-memfd-rx |");
    assert_eq!(lines[1], "|---|---|---|");
    assert!(lines.contains(&"| guest RAM kept by | anonymous memory | memfd preserved by LUO |"), "{t}");
    assert!(lines.contains(&"| LUO: memory survived | — | false |"), "{t}");
    assert!(lines.iter().skip(2).all(|l| l.matches('|').count() == 4), "{t}");
}

#[test]
fn isolation_and_nvme_restarts_are_rendered_and_read_back() {
    use crate::oracle::isolation::{DeviceIsolation, IsolationSection, Phases};
    let mut r = sample();
    r.nvme.restarts = vec![NvmeRestart { live_update: 1, verified_at_kexec: 4480, resumed_at_lba: 4416 }];
    let translations = Phases { before_update: 500, during_update: 120, after_update: 394 };
    let breaches = Phases { before_update: 2, during_update: 0, after_update: 1 };
    let nvme = DeviceIsolation { unowned: 111, own_pages: 900, into_other_devices: 3, translations, breaches, ..Default::default() };
    let nic = DeviceIsolation { persistent: true, own_pages: 7000, translations: Phases { before_update: 7000, ..Default::default() }, ..Default::default() };
    r.isolation = Some(IsolationSection {
        translations: [("0000:00:02.0".to_string(), 7000), ("0000:00:03.0".to_string(), 1014)].into_iter().collect(),
        foreign: 3,
        cross_device: 3,
        examples: vec!["0000:00:03.0 IOVA 0x20000000 -> 0x40a00000 (0000:00:02.0's page)".into()],
        devices: [("0000:00:02.0".to_string(), nic), ("0000:00:03.0".to_string(), nvme)].into_iter().collect(),
        updates: 1,
    });
    let md = r.markdown();
    assert!(md.contains("| 0000:00:03.0 | false | 1014 (500 / 120 / 394) | 900 | 111 | 0 | 3 | 2 / 0 / 1 |"), "{md}");
    assert!(md.contains("3 breaches (3 into another device's guest RAM) over 1 live update(s)"), "{md}");
    assert!(md.contains("4480 blocks in place at the kexec") && md.contains("from LBA 4416"), "{md}");
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.contains(r#""restarts":[{"live_update":1,"verified_at_kexec":4480,"resumed_at_lba":4416}]"#), "{json}");
    assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), r);
    // An older report.json: no per-device section, no restarts.
    let old = json.replace(r#","restarts":[{"live_update":1,"verified_at_kexec":4480,"resumed_at_lba":4416}]"#, "");
    let old = old[..old.find(r#","devices""#).unwrap()].to_string() + &old[old.find(r#","kunit""#).unwrap() - 1..];
    let back: Report = serde_json::from_str(&old).unwrap();
    assert!(back.nvme.restarts.is_empty() && back.isolation.unwrap().devices.is_empty());
}

/// A recorded live update (`harness/tests/fixtures/report-run`: its report,
/// DMA timing inputs and the timing events of QEMU's trace).
fn recorded_run(name: &str) -> std::path::PathBuf {
    let from = crate::workspace_root().join("harness/tests/fixtures/report-run");
    let dir = std::env::temp_dir().join(format!("lulab-report-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("host")).unwrap();
    for f in ["report.json", crate::oracle::dma_timing::INPUTS_FILE, "host/trace.log", crate::journal::FILE] {
        std::fs::copy(from.join(f), dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    dir
}

#[test]
fn lulab_report_times_a_recorded_run_again_as_the_run_did() {
    let dir = recorded_run("regen-recorded");
    let judged = Report::read(&dir).unwrap();
    let mut again = Report::regenerate(&dir).unwrap();
    assert_eq!(again.sections.get("dma_timing"), judged.sections.get("dma_timing"), "the same timing from the same trace");
    // The run predates the downtime breakdown: regenerating adds it from the journal and the trace.
    let d = again.updates[0].downtime.take().expect("a downtime breakdown from journal.jsonl");
    assert_eq!(d.parts().map(|p| p.1), [Some(32), Some(4813), Some(21033), Some(304), Some(665), Some(215)], "{d:?}");
    assert_eq!(d.total_ms, Some(58045 - 30983), "kexec request → the first refill QEMU traced");
    assert_eq!(again.updates, judged.updates, "blackouts in updates[] too");
    assert_eq!(again, judged);
    assert!(std::fs::read_to_string(dir.join("report.md")).unwrap().contains("Downtime 27062 ms from the kexec request: shutdown 32 · kexec jump 4813"));
    let samples = crate::oracle::dma_timing::Samples::read(&dir).unwrap().expect("dma-samples.json written");
    let timed = judged.sections["dma_timing"]["frames_timed"].as_u64().unwrap();
    assert_eq!(samples.frames.len() as u64, timed);
    assert_eq!(samples.updates.len() as u32, judged.live_updates);
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 3);
    // Without QEMU's trace nothing can be timed: a clear error naming the file.
    std::fs::remove_file(dir.join("host/trace.log")).unwrap();
    let e = format!("{:#}", Report::regenerate(&dir).unwrap_err());
    assert!(e.contains("trace.log"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
