//! pkernfs mount cost: `Image::open` (which validates everything: superblock,
//! allocator checksums, every inode, extent and entry, block ownership and
//! the tree) on images of several sizes and file counts. The question the
//! issue asks: is mount time after kexec flat in file data size? Also the
//! host-side snapshot (check + per-page hashes of all data) for comparison.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use lulab::pkernfs::format::{Image, Kind, ROOT_INO};
use lulab::pkernfs::host::PkernfsSnapshot;

/// An image of `mib` MiB with `files` small files in directories of 100, and
/// one large file taking about half of the carve-out (the guest RAM).
fn image(mib: usize, files: usize) -> Vec<u8> {
    let mut v = vec![0u8; mib << 20];
    let mut img = Image::format(&mut v, 1).expect("format");
    let ram = img.create(ROOT_INO, b"guest-ram", Kind::File, 0o600, 1).expect("guest-ram");
    img.set_size(ram, ((mib as u64) << 20) / 2, 1).expect("size guest-ram");
    let mut dir = ROOT_INO;
    for i in 0..files {
        if i % 100 == 0 {
            dir = img.create(ROOT_INO, format!("d{}", i / 100).as_bytes(), Kind::Dir, 0o755, 1).expect("dir");
        }
        let f = img.create(dir, format!("f{i}").as_bytes(), Kind::File, 0o644, 1).expect("file");
        img.write(f, 0, &[i as u8; 5000], 1).expect("write");
    }
    let r = img.check().expect("check");
    eprintln!("image {mib} MiB, {files} files: {r:?}");
    v
}

fn open_and_check(c: &mut Criterion) {
    let mut g = c.benchmark_group("pkernfs_open");
    g.sample_size(10);
    for (mib, files) in [(64, 100), (256, 100), (1024, 100), (1024, 1000), (1024, 6000)] {
        let mut v = image(mib, files);
        g.bench_function(BenchmarkId::new(format!("{mib}MiB"), format!("{files}files")), |b| {
            b.iter(|| black_box(Image::open(black_box(&mut v)).expect("open").geometry()))
        });
    }
    g.finish();
}

fn snapshot(c: &mut Criterion) {
    let mut g = c.benchmark_group("pkernfs_snapshot");
    g.sample_size(10);
    let v = image(256, 1000);
    g.bench_function(BenchmarkId::new("256MiB", "1000files"), |b| {
        b.iter(|| black_box(PkernfsSnapshot::from_bytes(black_box(&v)).expect("snapshot").files.len()))
    });
    g.finish();
}

criterion_group!(benches, open_and_check, snapshot);
criterion_main!(benches);
