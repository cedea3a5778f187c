//! Oracle overhead: page hashing throughput against a plain copy of the same
//! memory (the ratio is what reports quote; absolute GB/s vary by machine),
//! at 32 MiB and over a whole 1 GiB RAM file (the ratio printed), and one
//! scan of a full 4096-descriptor RX ring.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lulab::guest_memory::GuestMemory;
use lulab::oracle::memory::hash_pages;
use lulab::oracle::rx_scan::{RxRing, RxScanner, DESC_LEN, STATUS_DD, STATUS_EOP};
use lulab::traffic::frame;
use lulab_proto::{DmaRegion, PhysRange};

const RAM: u64 = 64 << 20;

fn ram() -> (tempfile::NamedTempFile, GuestMemory) {
    ram_of(RAM)
}

/// A RAM file of `size` bytes of noise (a 1 MiB pattern repeated).
fn ram_of(size: u64) -> (tempfile::NamedTempFile, GuestMemory) {
    let f = tempfile::NamedTempFile::new().expect("temp RAM file");
    f.as_file().set_len(size).expect("size RAM file");
    let mut m = GuestMemory::open(f.path(), size).expect("map RAM file");
    let noise: Vec<u8> = (0..1usize << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    for off in (0..size).step_by(noise.len()) {
        m.write(off, &noise[..noise.len().min((size - off) as usize)]).expect("fill RAM");
    }
    (f, m)
}

/// Hashing every page of a 1 GiB RAM file against copying it, and the
/// ratio of their times measured side by side (three alternating rounds).
fn whole_ram_file(c: &mut Criterion) {
    const GIB: u64 = 1 << 30;
    let (_f, mem) = ram_of(GIB);
    let range = [PhysRange { gpa: 0, len: GIB }];
    let mut dst = vec![0u8; GIB as usize];
    let mut g = c.benchmark_group("memory_oracle_1GiB");
    g.throughput(Throughput::Bytes(GIB));
    g.sample_size(10);
    g.bench_function("xxh3_pages", |b| b.iter(|| black_box(hash_pages(&mem, black_box(&range)).expect("hash"))));
    g.bench_function("memcpy", |b| b.iter(|| mem.read(0, black_box(&mut dst)).expect("copy")));
    g.finish();
    let (mut hash, mut copy) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..3 {
        let t = Instant::now();
        black_box(hash_pages(&mem, &range).expect("hash"));
        hash += t.elapsed();
        let t = Instant::now();
        mem.read(0, black_box(&mut dst)).expect("copy");
        copy += t.elapsed();
    }
    println!("1 GiB RAM file: page hashing takes {:.2}× the time of a memcpy ({:.0} ms vs {:.0} ms per pass)", hash.as_secs_f64() / copy.as_secs_f64(), hash.as_secs_f64() * 1000.0 / 3.0, copy.as_secs_f64() * 1000.0 / 3.0);
}

fn hashing_vs_copy(c: &mut Criterion) {
    let (_f, mem) = ram();
    let len = 32u64 << 20;
    let range = [PhysRange { gpa: 0, len }];
    let mut g = c.benchmark_group("memory_oracle");
    g.throughput(Throughput::Bytes(len));
    g.sample_size(20);
    g.bench_function(BenchmarkId::new("xxh3_pages", "32MiB"), |b| {
        b.iter(|| black_box(hash_pages(&mem, black_box(&range)).expect("hash")))
    });
    let mut dst = vec![0u8; len as usize];
    g.bench_function(BenchmarkId::new("memcpy", "32MiB"), |b| {
        b.iter(|| mem.read(0, black_box(&mut dst)).expect("copy"))
    });
    g.finish();
}

fn ring_scan(c: &mut Criterion) {
    const N: u32 = 4096;
    const BUF: u32 = 2048;
    let (_f, mut mem) = ram();
    let ring =
        DmaRegion { iova: 0, len: u64::from(N) * 16, phys: vec![PhysRange { gpa: 0x10_0000, len: u64::from(N) * 16 }] };
    let bytes = u64::from(N * BUF);
    let buffers = DmaRegion { iova: 0x100_0000, len: bytes, phys: vec![PhysRange { gpa: 0x100_0000, len: bytes }] };
    for seq in 0..u64::from(N) {
        let f = frame::encode(1, seq, 0, frame::payload_len_for(1514) as u16);
        mem.write_region(&buffers, seq * u64::from(BUF), &f).expect("buffer");
        let mut d = [0u8; DESC_LEN];
        d[8..10].copy_from_slice(&(f.len() as u16).to_le_bytes());
        d[12] = STATUS_DD | STATUS_EOP;
        mem.write_region(&ring, seq * DESC_LEN as u64, &d).expect("descriptor");
    }
    let rx = RxRing { ring, buffers, ring_size: N, buf_size: BUF };
    let mut g = c.benchmark_group("ledger");
    g.throughput(Throughput::Elements(u64::from(N)));
    g.sample_size(20);
    g.bench_function("scan_4096_descriptors", |b| {
        b.iter(|| {
            let mut s = RxScanner::new(rx.clone(), 1);
            black_box(s.scan(&mem).expect("scan"))
        })
    });
    g.finish();
}

criterion_group!(benches, hashing_vs_copy, whole_ram_file, ring_scan);
criterion_main!(benches);
