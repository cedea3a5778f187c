//! The timeline from synthetic event streams: a device that stops at the
//! kexec (the broken controls), one that keeps doing DMA while no agent runs
//! (a persistent update), and updates without any device (pkernfs).

use super::*;

const MS: u64 = 1_000_000;
/// Time zero of the synthetic runs, in the harness clock.
const START: u64 = 7_000 * MS;

fn at(ms: u64) -> u64 {
    START + ms * MS
}

/// A frame encoded every 5 ms in `[from, to)` (ms since start) that the
/// device DMAs at once when `dma(encoded_ms)` says so; the scanner sees it at
/// its next 50 ms poll.
fn stream(from: u64, to: u64, dma: impl Fn(u64) -> bool) -> Vec<Completion> {
    (from..to)
        .step_by(5)
        .filter(|t| dma(*t))
        .map(|t| Completion { not_before_ns: at(t), seen_ns: at((t / 50 + 1) * 50) })
        .collect()
}

fn update(kernel: &str, kexec: u64, down: u64, up: u64, back: u64) -> UpdateEvents {
    UpdateEvents {
        kernel: kernel.into(),
        kexec_started_ns: at(kexec),
        agent_down_ns: Some(at(down)),
        kernel_up_ns: Some(at(up)),
        agent_up_ns: Some(at(back)),
        kernel_up_from: KernelUpFrom::Banner,
    }
}

#[test]
fn device_stopped_at_kexec_has_no_dma_after_and_none_while_agent_down() {
    // Frames flow from 1 s; the kexec is asked for at 2 s and the device is
    // dead from then on (bus master cleared): nothing more lands.
    let dma = stream(1000, 9000, |t| t < 2000);
    let t = timeline(START, &[update("stock", 2000, 2003, 3100, 6400)], Some(&dma));
    assert_eq!(t.len(), 1);
    let u = &t[0];
    assert_eq!((u.index, u.kernel.as_str()), (1, "stock"));
    assert_eq!(u.kexec_started, 2000);
    assert_eq!((u.agent_down, u.kernel_up, u.agent_up), (Some(2003), Some(3100), Some(6400)));
    assert_eq!(u.kexec_transition_ms, Some(1100));
    assert_eq!(u.agent_downtime_ms, Some(4397));
    // Frames encoded up to 1995 ms are seen by the 2000 ms scan at the latest,
    // which is not *before* the kexec: the last one seen before is at 1950.
    assert_eq!(u.last_dma_before, Some(1950));
    assert_eq!(u.first_dma_after, None, "the device stopped");
    assert_eq!(u.dma_while_agent_down, Some(0));
}

#[test]
fn frames_landing_while_the_old_kernel_shuts_down_are_not_agent_down_dma() {
    // A stock kexec lets DMA through until the old kernel clears bus master
    // (here 40 ms after the request): those frames are DMA after the kexec,
    // but they prove nothing about persistence.
    let dma = stream(1000, 9000, |t| t < 2040);
    let u = &timeline(START, &[update("stock", 2000, 2003, 3100, 6400)], Some(&dma))[0];
    assert_eq!(u.first_dma_after, Some(2050), "frame encoded at 2000 ms, seen at the 2050 ms scan");
    assert_eq!(u.dma_while_agent_down, Some(0));
}

#[test]
fn persistent_update_counts_dma_while_no_agent_runs() {
    // The device keeps receiving through the whole update.
    let dma = stream(1000, 9000, |_| true);
    let u = &timeline(START, &[update("lulab", 2000, 2003, 3100, 6400)], Some(&dma))[0];
    assert_eq!(u.last_dma_before, Some(1950));
    assert_eq!(u.first_dma_after, Some(2050));
    // Encoded in [3100, 6400) and seen by 6400: 3100, 3105, …, 6345 (the
    // frames from 6350 on are only seen at the 6400 ms scan — still in).
    let expected = (3100..6400).step_by(5).filter(|t| (t / 50 + 1) * 50 <= 6400).count() as u64;
    assert_eq!(u.dma_while_agent_down, Some(expected));
    assert!(expected > 600, "{expected}");
}

#[test]
fn frames_that_cannot_be_placed_inside_the_window_are_left_out() {
    let dma = [
        // Encoded before the new kernel's first line, seen after it: maybe
        // DMAed by the old kernel's device, not counted.
        Completion { not_before_ns: at(3090), seen_ns: at(3150) },
        // Inside.
        Completion { not_before_ns: at(3200), seen_ns: at(3250) },
        // Encoded inside, first seen after the agent was back: not counted.
        Completion { not_before_ns: at(6390), seen_ns: at(6450) },
    ];
    let u = &timeline(START, &[update("lulab", 2000, 2003, 3100, 6400)], Some(&dma))[0];
    assert_eq!(u.dma_while_agent_down, Some(1));
    assert_eq!(u.last_dma_before, None, "nothing seen before the kexec");
    assert_eq!(u.first_dma_after, Some(3150));
}

#[test]
fn without_a_device_every_dma_field_is_null_and_transitions_remain() {
    // pkernfs-kexec: three updates, no device.
    let ev = [update("lulab", 5000, 5002, 5800, 9000), update("lulab", 12000, 12001, 12700, 16000), update("lulab", 20000, 20001, 20600, 24000)];
    let t = timeline(START, &ev, None);
    assert_eq!(t.iter().map(|u| u.index).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(t.iter().map(|u| u.kexec_transition_ms).collect::<Vec<_>>(), [Some(800), Some(700), Some(600)]);
    for u in &t {
        assert_eq!((u.last_dma_before, u.first_dma_after, u.dma_while_agent_down), (None, None, None), "{u:?}");
    }
    let v = serde_json::to_value(&t[0]).unwrap();
    assert!(v["dma_while_agent_down"].is_null() && v["first_dma_after"].is_null(), "{v}");
}

#[test]
fn first_dma_after_belongs_to_its_own_update() {
    // DMA stops at the first update and comes back only after the second.
    let dma = stream(1000, 30000, |t| !(2000..13000).contains(&t));
    let ev = [update("lulab", 2000, 2001, 2600, 6000), update("lulab", 12000, 12001, 12600, 16000)];
    let t = timeline(START, &ev, Some(&dma));
    assert_eq!(t[0].first_dma_after, None, "nothing before the next update's kexec");
    assert_eq!(t[0].dma_while_agent_down, Some(0));
    assert_eq!(t[1].last_dma_before, Some(2000), "frames up to 1995 ms, seen by the 2000 ms scan");
    assert_eq!(t[1].first_dma_after, Some(13050));
    assert_eq!(t[1].dma_while_agent_down, Some((13000..16000).step_by(5).filter(|t| (t / 50 + 1) * 50 <= 16000).count() as u64));
}

#[test]
fn an_update_that_never_came_back_has_nulls_not_zeroes() {
    let ev = UpdateEvents { kernel: "lulab".into(), kexec_started_ns: at(2000), agent_down_ns: Some(at(2001)), ..Default::default() };
    let dma = stream(1000, 9000, |t| t < 2000);
    let u = &timeline(START, &[ev], Some(&dma))[0];
    assert_eq!((u.kernel_up, u.agent_up, u.agent_downtime_ms, u.kexec_transition_ms), (None, None, None, None));
    assert_eq!(u.dma_while_agent_down, None);
    assert_eq!(u.first_dma_after, None);
    assert_eq!(u.last_dma_before, Some(1950));
}

#[test]
fn completions_come_from_the_scanners_sightings_in_sighting_order() {
    use crate::oracle::rx_scan::Delivery;
    let mut s = Sightings::default();
    s.delivered.insert(0, Delivery { slot: 0, sent_ns: 10, seen_ns: 300 });
    s.delivered.insert(1, Delivery { slot: 1, sent_ns: 20, seen_ns: 200 });
    let c = Completion::from_sightings(&s);
    assert_eq!(c, [Completion { not_before_ns: 20, seen_ns: 200 }, Completion { not_before_ns: 10, seen_ns: 300 }]);
}

/// The stock kexec under load of the suite issue: the reply to `kexec_exec`
/// was lost. The milestone is still there, bounded by the request, and the
/// report says so; the downtime is then an upper bound, never missing.
#[test]
fn a_lost_kexec_reply_is_bounded_by_the_request_and_says_so() {
    let mut ev = update("stock", 2000, 0, 12000, 18000);
    ev.agent_down_ns = None;
    let dma = stream(1000, 20000, |t| t < 2000);
    let u = &timeline(START, &[ev], Some(&dma))[0];
    assert_eq!((u.agent_down, u.agent_down_from), (Some(2000), AgentDownFrom::KexecRequest));
    assert_eq!(u.agent_downtime_ms, Some(16000));
    assert_eq!(u.dma_while_agent_down, Some(0));
    let v = serde_json::to_value(u).unwrap();
    assert_eq!((v["agent_down_from"].as_str(), v["kernel_up_from"].as_str()), (Some("kexec_request"), Some("banner")), "{v}");
    // A reply that arrived is named as such.
    let u = &timeline(START, &[update("lulab", 2000, 2003, 3100, 6400)], Some(&dma))[0];
    assert_eq!((u.agent_down, u.agent_down_from), (Some(2003), AgentDownFrom::Reply));
}

#[test]
fn reports_from_before_the_sources_read_as_reply_and_banner() {
    let old = r#"{"index":1,"kernel":"stock","kexec_started":1,"kernel_up":2,"agent_down":1,"agent_up":3,
        "agent_downtime_ms":2,"last_dma_before":null,"first_dma_after":null,"dma_while_agent_down":null,"kexec_transition_ms":1}"#;
    let u: UpdateTimeline = serde_json::from_str(old).unwrap();
    assert_eq!((u.agent_down_from, u.kernel_up_from), (AgentDownFrom::Reply, KernelUpFrom::Banner));
}
