use proptest::prelude::*;

use super::*;
use crate::oracle::rx_scan::{Corruption, Delivery};
use crate::traffic::inject::SentFrame;

fn log(sent: u64, unwritten: u64) -> SentLog {
    let frames = (0..sent)
        .map(|seq| SentFrame { seq, due_ns: seq, written_ns: (seq + unwritten < sent).then_some(seq + 1) })
        .collect();
    SentLog { run_id: 1, frame_size: 128, frames, ..SentLog::default() }
}

fn deliver(seen: &mut Sightings, seqs: impl IntoIterator<Item = u64>) {
    for s in seqs {
        seen.delivered.insert(s, Delivery { slot: (s % 256) as u32, sent_ns: 1_000, seen_ns: 1_000 + s * 1_000 });
    }
}

fn corrupt(seen: &mut Sightings, slot: u32, claimed: Option<u64>) {
    seen.corrupted.insert((slot, slot as u64), Corruption { slot, claimed_seq: claimed, error: "x".into() });
}

fn sum(r: &LedgerReport) -> u64 {
    r.delivered + r.corrupted + r.dropped_by_device + r.dropped_by_qemu + r.queued_on_host + r.lost
}

#[test]
fn all_delivered_is_intact() {
    let mut seen = Sightings::default();
    deliver(&mut seen, 0..100);
    let r = Ledger::account(&log(100, 0), &seen, &DeviceEvidence::default());
    assert_eq!((r.delivered, r.lost, r.corrupted), (100, 0, 0));
    assert!(r.intact());
    assert_eq!(r.latency.count, 100);
    assert_eq!(r.latency.min_us, 0);
    assert_eq!(r.latency.max_us, 99);
}

#[test]
fn gap_is_lost_and_named() {
    let mut seen = Sightings::default();
    deliver(&mut seen, (0..100).filter(|s| *s != 42));
    let r = Ledger::account(&log(100, 0), &seen, &DeviceEvidence::default());
    assert_eq!((r.delivered, r.lost), (99, 1));
    assert_eq!(r.first_lost_seqs, vec![42]);
    assert!(!r.intact());
}

#[test]
fn unwritten_tail_is_queued_not_lost() {
    let mut seen = Sightings::default();
    deliver(&mut seen, 0..90);
    let r = Ledger::account(&log(100, 10), &seen, &DeviceEvidence::default());
    assert_eq!((r.queued_on_host, r.lost), (10, 0));
}

#[test]
fn socket_backlog_needs_the_written_to_guest_count() {
    let mut seen = Sightings::default();
    deliver(&mut seen, 0..80);
    let no_trace = Ledger::account(&log(100, 10), &seen, &DeviceEvidence::default());
    assert_eq!((no_trace.queued_on_host, no_trace.lost), (10, 10));
    let ev = DeviceEvidence { written_to_guest: Some(80), ..DeviceEvidence::default() };
    let traced = Ledger::account(&log(100, 10), &seen, &ev);
    assert_eq!((traced.queued_on_host, traced.lost), (20, 0));
    // The device wrote 85 frames but only 80 were found: 5 lost after DMA.
    let ev = DeviceEvidence { written_to_guest: Some(85), ..DeviceEvidence::default() };
    let r = Ledger::account(&log(100, 10), &seen, &ev);
    assert_eq!((r.queued_on_host, r.lost), (15, 5));
    assert_eq!(r.first_lost_seqs, vec![80, 81, 82, 83, 84]);
}

#[test]
fn drops_need_evidence_and_are_capped() {
    let mut seen = Sightings::default();
    deliver(&mut seen, 0..95);
    let ev = DeviceEvidence { trace_drops: 3, ..DeviceEvidence::default() };
    let r = Ledger::account(&log(100, 0), &seen, &ev);
    assert_eq!((r.dropped_by_device, r.lost), (3, 2));
    // The agent's MPC (read inside the guest) is reported but excuses nothing:
    // without QEMU's trace the missing frames are lost.
    let ev = DeviceEvidence::default().with_counters(&[("MPC".into(), 1000), ("RNBC".into(), 7)]);
    let r = Ledger::account(&log(100, 0), &seen, &ev);
    assert_eq!((r.dropped_by_device, r.lost), (0, 5));
    assert_eq!((r.evidence.missed_packets, r.evidence.no_buffers), (1000, 7));
}

#[test]
fn corruption_is_attributed_or_absorbs_a_loss() {
    let mut seen = Sightings::default();
    deliver(&mut seen, (0..10).filter(|s| *s != 3 && *s != 7));
    corrupt(&mut seen, 3, Some(3)); // checksum bad, seq readable
    corrupt(&mut seen, 7, Some(1 << 40)); // seq field itself damaged
    let r = Ledger::account(&log(10, 0), &seen, &DeviceEvidence::default());
    assert_eq!((r.delivered, r.corrupted, r.lost), (8, 2, 0));
    // Damage claiming a delivered seq does not un-deliver it.
    corrupt(&mut seen, 9, Some(0));
    let r = Ledger::account(&log(10, 0), &seen, &DeviceEvidence::default());
    assert_eq!((r.delivered, r.corrupted), (8, 2));
}

#[test]
fn unexpected_seqs_are_reported_not_counted() {
    let mut seen = Sightings::default();
    deliver(&mut seen, [0, 1, 500]);
    let r = Ledger::account(&log(2, 0), &seen, &DeviceEvidence::default());
    assert_eq!((r.delivered, r.unexpected), (2, 1));
    assert!(!r.intact());
}

#[test]
fn evidence_from_trace() {
    let t = crate::oracle::trace::TraceSummary::from_text(
        "e1000e_rx_written_to_guest x\ne1000x_rx_disabled RCTL = 0\ne1000x_rx_can_recv_disabled link_up: 1\npci_cfg_write e1000e 00:02.0 @0x4 <- 0x103\n",
    );
    let e = DeviceEvidence::from_trace(&t);
    assert_eq!((e.written_to_guest, e.trace_drops, e.backpressure_events), (Some(1), 1, 1));
    assert!(e.notes.iter().any(|n| n.contains("bus master disabled on 00:02.0")));
    let silent = DeviceEvidence::from_trace(&crate::oracle::trace::TraceSummary::default());
    assert_eq!(silent.written_to_guest, None);
    assert_eq!(silent.rx_traced().written_to_guest, Some(0));
}

/// A link flap during an update, as QEMU 10 handles it: of 100 frames
/// (written at 1..=100 ns), 10 were freed by the net layer while the link
/// was down, 5 dropped by the device (traced) once it was back, the stream
/// went on (90..100 delivered), and 5 taken at the end wait in QEMU's queue.
#[test]
fn frames_qemu_took_and_freed_in_a_link_down_window_are_dropped_by_qemu() {
    let mut seen = Sightings::default();
    deliver(&mut seen, (0..80).chain(95..98));
    let taken: std::collections::BTreeSet<u64> = (0..100).collect();
    // Frames 80..90 freed while the link was down (written at 81..=90 ns,
    // inside the window), 90..95 dropped by the device after it, 98..100
    // taken after the last one written: still queued.
    // The device wrote 83 (80 + 3) and dropped 5: 12 never reached it.
    let dev = || DeviceEvidence { trace_drops: 5, written_to_guest: Some(83), ..DeviceEvidence::default() };
    let ev = dev().with_capture(Some(taken.clone()), vec![(85, 90)]);
    let r = Ledger::account(&log(100, 0), &seen, &ev);
    assert_eq!((r.dropped_by_device, r.dropped_by_qemu, r.queued_on_host, r.lost), (5, 10, 2, 0), "{r:?}");
    assert!(r.intact());
    assert_eq!(sum(&r), 100);
    // The same frames freed with no window: QEMU lost them.
    let ev = dev().with_capture(Some(taken.clone()), Vec::new());
    let r = Ledger::account(&log(100, 0), &seen, &ev);
    assert_eq!((r.dropped_by_qemu, r.queued_on_host, r.lost), (0, 2, 10), "{r:?}");
    assert_eq!(r.first_lost_seqs.len(), FIRST_LOST);
    assert!(r.first_lost_seqs.iter().all(|s| (80..95).contains(s)), "{:?}", r.first_lost_seqs);
    // A window that ended before those frames were written does not cover them.
    let ev = DeviceEvidence { written_to_guest: Some(83), ..DeviceEvidence::default() }.with_capture(Some(taken), vec![(10, 20)]);
    let r = Ledger::account(&log(100, 0), &seen, &ev);
    assert_eq!((r.dropped_by_qemu, r.lost), (0, 15), "{r:?}");
}

/// A device that stopped (a stock kexec): QEMU took the frames after the
/// last one written and holds them in its queue; none is lost.
#[test]
fn the_tail_qemu_took_after_the_last_written_frame_is_queued() {
    let mut seen = Sightings::default();
    deliver(&mut seen, 0..2047);
    let taken: std::collections::BTreeSet<u64> = (0..2048).collect();
    let ev = DeviceEvidence { written_to_guest: Some(2047), ..DeviceEvidence::default() }.with_capture(Some(taken.clone()), Vec::new());
    let r = Ledger::account(&log(2661, 0), &seen, &ev);
    assert_eq!((r.queued_on_host, r.lost), (614, 0), "{r:?}");
    // Frames the device wrote to an unmapped IOVA (VT-d faults) reached it:
    // not queued, lost.
    let ev = DeviceEvidence { written_to_guest: Some(2048), ..DeviceEvidence::default() }.with_capture(Some(taken), Vec::new());
    let r = Ledger::account(&log(2661, 0), &seen, &ev);
    assert_eq!((r.queued_on_host, r.lost), (613, 1), "{r:?}");
}

#[test]
fn windows_come_from_link_flaps_and_pauses_in_the_journal() {
    use crate::fault::FaultKind;
    use crate::journal::{Entry, Event};
    let at = |ns, event| Entry { ms: 0, ns, event };
    let injected = |step, kind| Event::FaultInjected { step, kind, at: None, update: None, after_frames: None, detail: String::new() };
    let j = vec![
        at(10, injected(2, FaultKind::LinkFlap)),
        at(15, injected(3, FaultKind::CanaryWrite)),
        at(20, Event::FaultEnded { step: 2, kind: FaultKind::LinkFlap }),
        at(30, injected(4, FaultKind::VmPause)),
    ];
    assert_eq!(qemu_drop_windows(&j), [(10, 20), (30, u64::MAX)]);
}

proptest! {
    #[test]
    fn arithmetic_always_balances(
        sent in 0u64..300,
        unwritten_frac in 0u64..100,
        delivered_mask in prop::collection::vec(any::<bool>(), 300),
        corrupt_claims in prop::collection::vec(prop::option::of(0u64..400), 0..20),
        written_to_guest in prop::option::of(0u64..400),
        trace_drops in 0u64..50,
        mpc in 0u64..50,
        taken_mask in prop::option::of(prop::collection::vec(any::<bool>(), 300)),
        window in prop::option::of((0u64..300, 0u64..300)),
    ) {
        let unwritten = sent * unwritten_frac / 100;
        let mut seen = Sightings::default();
        deliver(&mut seen, (0..sent).filter(|s| delivered_mask[*s as usize]));
        for (i, c) in corrupt_claims.iter().enumerate() {
            corrupt(&mut seen, i as u32, *c);
        }
        let taken = taken_mask.map(|m| (0..sent).filter(|s| m[*s as usize]).collect());
        let ev = DeviceEvidence { written_to_guest, trace_drops, missed_packets: mpc, ..DeviceEvidence::default() }
            .with_capture(taken, window.into_iter().collect());
        let r = Ledger::account(&log(sent, unwritten), &seen, &ev);
        prop_assert_eq!(sum(&r), r.sent);
        prop_assert_eq!(r.sent, sent);
        prop_assert!(r.dropped_by_device <= ev.drops());
        prop_assert!(r.corrupted <= corrupt_claims.len() as u64);
        prop_assert!(r.first_lost_seqs.len() as u64 <= r.lost.min(FIRST_LOST as u64));
        for s in &r.first_lost_seqs {
            prop_assert!(!seen.delivered.contains_key(s));
        }
    }
}
