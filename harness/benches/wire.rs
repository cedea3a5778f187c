//! The harness's own round trips: decoding one test frame out of an RX
//! buffer (the scanner does it for every frame), and one QMP command answered
//! by a real QEMU (`-machine none`: no guest, so only QEMU's monitor and the
//! socket are measured). Without QEMU the QMP bench says so and is skipped.

use std::hint::black_box;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lulab::traffic::frame;

fn frame_parsing(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame");
    for size in [64usize, 1514] {
        let f = frame::encode(7, 123_456, 42, frame::payload_len_for(size) as u16);
        g.throughput(Throughput::Bytes(f.len() as u64));
        g.bench_function(format!("decode_{size}B"), |b| b.iter(|| black_box(frame::decode(black_box(&f), 7).expect("decode"))));
    }
    g.finish();
}

/// A QEMU with only its monitor, killed on drop.
struct Monitor(Child);

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn qmp_round_trip(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let sock = dir.path().join("qmp.sock");
    let child = Command::new(lulab::setup::qemu_binary())
        .args(["-machine", "none", "-display", "none", "-nodefaults", "-S", "-qmp"])
        .arg(format!("unix:{},server=on,wait=off", sock.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(child) = child else {
        eprintln!("qmp round trip: SKIP: {} does not start", lulab::setup::qemu_binary().to_string_lossy());
        return;
    };
    let _qemu = Monitor(child);
    let log = dir.path().join("qmp.log");
    let mut qmp = lulab::qmp::connect_when_ready(&sock, &log, Instant::now() + Duration::from_secs(20), || Ok(())).expect("QMP of a QEMU with -machine none");
    let mut g = c.benchmark_group("qmp");
    g.bench_function("query_status", |b| b.iter(|| black_box(qmp.execute_raw("query-status", serde_json::Value::Null, Duration::from_secs(5)).expect("query-status"))));
    g.finish();
}

criterion_group!(benches, frame_parsing, qmp_round_trip);
criterion_main!(benches);
