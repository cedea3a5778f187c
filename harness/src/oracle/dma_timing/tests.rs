use super::*;

const MS: u64 = 1_000_000;

fn update(kexec_ms: u64, agent_up_ms: Option<u64>) -> Span {
    Span { kexec_ns: kexec_ms * MS, agent_up_ns: agent_up_ms.map(|m| m * MS) }
}

#[test]
fn trace_lines_move_onto_the_harness_clock() {
    // Realtime 1796530736.046376 s; the harness clock started 1796530700 s of realtime earlier.
    let offset = 1_796_530_700 * 1_000_000_000i64;
    let text = "7398@1796530736.046376:e1000e_rx_desc_buff_write addr: 0x100800, offset: 0, from: 0x7f00, length: 256\n\
                7398@1796530736.046380:e1000e_rx_set_rdt Setting RDT[0] = 17\n\
                e1000e_rx_desc_buff_write addr: 0x100000, offset: 0, from: 0x7f00, length: 256\n\
                7398@1796530736.046390:vtd_dmar_fault sid 0x10\n";
    let t = read_trace(text.as_bytes(), offset);
    assert_eq!(t.writes, [(36_046_376_000, 0x100800)], "an unstamped line is skipped");
    assert_eq!(t.rdt, [36_046_380_000]);
}

#[test]
fn each_frame_is_timed_by_the_last_write_of_its_buffer_before_it_was_seen() {
    let base = 0x10_0000;
    // Slot 1 written at 10.2 ms and again (reused) at 900 ms.
    let writes = [(10_200_000, base + 2048), (900 * MS, base + 2048), (12 * MS, base)];
    let found = [
        Found { slot: 1, sent_ns: 10 * MS, seen_ns: 50 * MS },   // 200 µs
        Found { slot: 1, sent_ns: 899 * MS, seen_ns: 950 * MS }, // 1000 µs, the reuse
        Found { slot: 0, sent_ns: 11 * MS, seen_ns: 60 * MS },   // 1000 µs
        Found { slot: 2, sent_ns: 11 * MS, seen_ns: 60 * MS },   // never written: unmatched
        Found { slot: 0, sent_ns: 20 * MS, seen_ns: 60 * MS },   // the write predates the send: unmatched
    ];
    let (t, _) = compute(&writes, &[], base, 2048, &found, &[], 0, 1000 * MS);
    assert_eq!((t.frames_timed, t.frames_unmatched, t.dma_writes), (3, 2, 3));
    let p = t.latency.unwrap();
    assert_eq!((p.frames, p.p50_us, p.max_us), (3, 1000, 1000));
    assert_eq!(t.latency_before.unwrap().frames, 3, "no update: everything is before");
}

#[test]
fn frames_fall_before_during_or_after_an_update() {
    let base = 0;
    let writes: Vec<(u64, u64)> = (0..30).map(|i| (i * 100 * MS + MS, (i % 8) * 2048)).collect();
    let found: Vec<Found> = (0..30).map(|i| Found { slot: (i % 8) as u32, sent_ns: i * 100 * MS, seen_ns: i * 100 * MS + 40 * MS }).collect();
    let (t, _) = compute(&writes, &[], base, 2048, &found, &[update(1000, Some(2000))], 0, 3000 * MS);
    let n = |p: &Option<Percentiles>| p.as_ref().map_or(0, |p| p.frames);
    assert_eq!((n(&t.latency_before), n(&t.latency_during), n(&t.latency_after)), (10, 10, 10));
}

#[test]
fn the_blackout_is_the_longest_gap_up_to_the_first_refill() {
    // Writes every 5 ms, none from 1000 to 1700 ms (the jump), the new agent
    // up at 1500 ms refills at 1600 ms; writes resume at 1700 ms.
    let mut times: Vec<u64> = (0..200).map(|i| i * 5).collect();
    times.extend((340..400).map(|i| i * 5));
    let writes: Vec<(u64, u64)> = times.iter().map(|&ms| (ms * MS, 0)).collect();
    let (t, _) = compute(&writes, &[400 * MS, 1600 * MS], 0, 2048, &[], &[update(990, Some(1500))], 0, 2500 * MS);
    let b = &t.blackouts[0];
    assert_eq!((b.blackout_us, b.from_ms, b.to_ms, b.to_end_of_run, b.first_refill_ms), (705_000, 995, 1700, false, Some(1600)));
}

#[test]
fn a_device_that_never_writes_again_has_a_blackout_to_the_end_of_the_run() {
    let writes: Vec<(u64, u64)> = (0..100).map(|i| (i * 10 * MS, 0)).collect();
    // The stock kexec: the agent comes back but the device never writes, no refill traced.
    let (t, _) = compute(&writes, &[], 0, 2048, &[], &[update(500, Some(1500))], 0, 4000 * MS);
    let b = &t.blackouts[0];
    assert_eq!((b.from_ms, b.to_ms, b.to_end_of_run, b.blackout_us), (990, 4000, true, 3_010_000));
    // No write at all: nothing to measure, and said so by zeros rather than a made-up gap.
    let (t, _) = compute(&[], &[], 0, 2048, &[], &[update(500, None)], 0, 4000 * MS);
    assert_eq!(t.blackouts[0].blackout_us, 0);
}

#[test]
fn percentiles_take_the_nearest_rank() {
    let p = Percentiles::of((1..=1000).collect()).unwrap();
    assert_eq!((p.p50_us, p.p99_us, p.p999_us, p.max_us), (500, 990, 999, 1000));
    assert!(Percentiles::of(vec![]).is_none());
}

#[test]
fn nvme_commands_are_timed_from_taken_to_completed() {
    let text = "9@100.000100:pci_nvme_io_cmd cid 7 nsid 0x1 sqid 1 opc 0x2 opname 'NVME_NVM_CMD_READ'\n\
                9@100.000200:pci_nvme_io_cmd cid 8 nsid 0x1 sqid 1 opc 0x2 opname 'NVME_NVM_CMD_READ'\n\
                9@100.000300:pci_nvme_enqueue_req_completion cid 7 cqid 0 dw0 0x0 dw1 0x0 status 0x0\n\
                9@100.001100:pci_nvme_enqueue_req_completion cid 7 cqid 1 dw0 0x0 dw1 0x0 status 0x0\n\
                9@100.002100:pci_nvme_io_cmd cid 7 nsid 0x1 sqid 1 opc 0x2 opname 'NVME_NVM_CMD_READ'\n\
                9@100.005100:pci_nvme_enqueue_req_completion cid 7 cqid 1 dw0 0x0 dw1 0x0 status 0x0\n";
    let t = read_trace(text.as_bytes(), 0);
    let (cmds, open) = (t.nvme, t.nvme_open);
    let s = |us: u64| 100_000_000_000 + us * 1000;
    assert_eq!(cmds, [(s(100), s(1100)), (s(2100), s(5100))], "an id is reused once completed; admin completions skipped");
    assert_eq!(open, 1, "cid 8 never completed");
    let (t, points) = nvme_timing(&cmds, open, &[update(100_002, Some(100_010))]);
    assert_eq!((t.commands_timed, t.latency_before.unwrap().max_us, t.latency_during.unwrap().max_us), (2, 1000, 3000));
    assert_eq!(points, [(s(1100), 1000), (s(5100), 3000)], "each command's completion time and latency, for the plots");
}
