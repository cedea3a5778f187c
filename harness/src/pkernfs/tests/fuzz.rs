//! Fuzzing `open`: arbitrary bytes, and valid images with a few bytes
//! changed (raw, or changed and then re-checksummed so the structural checks
//! behind the checksums are exercised). `open` must never panic; when it
//! refuses, the bytes are unchanged; when it accepts, `check` passes and
//! every operation on the image still returns instead of panicking.

use proptest::prelude::*;

use super::super::format::{crc32, reseal_allocator, Geometry, Image, Kind, BLOCK_SIZE, INODE_SIZE, ROOT_INO};

/// A 1 MiB image with files, a subdirectory and a fragmented file whose
/// extents spill into an extent block.
fn sample() -> Vec<u8> {
    let mut v = vec![0u8; 1 << 20];
    let mut img = Image::format(&mut v, 1).unwrap();
    let d = img.create(ROOT_INO, b"d", Kind::Dir, 0o755, 2).unwrap();
    let a = img.create(d, b"a", Kind::File, 0o644, 2).unwrap();
    let b = img.create(ROOT_INO, b"b", Kind::IommuDomain, 0o600, 2).unwrap();
    for i in 0..12u64 {
        img.write(a, i * 4096, &[i as u8; 4096], 3).unwrap();
        img.write(b, i * 4096, &[!(i as u8); 100], 3).unwrap();
    }
    v
}

/// Recomputes the superblock, inode, extent-block and allocator checksums.
fn reseal(v: &mut [u8]) {
    let Ok(g) = Geometry::for_len(v.len()) else { return };
    seal(&mut v[..128], 12);
    for ino in 0..g.inode_count as usize {
        let o = (g.itable_start * BLOCK_SIZE) as usize + ino * INODE_SIZE as usize;
        seal(&mut v[o..o + INODE_SIZE as usize], 8);
    }
    for blk in v.chunks_mut(BLOCK_SIZE as usize).skip(g.data_start as usize) {
        if blk[..4] == *b"PKEX" {
            seal(blk, 4);
        }
    }
    let _ = reseal_allocator(v);
}

fn seal(rec: &mut [u8], at: usize) {
    rec[at..at + 4].fill(0);
    let c = crc32(rec);
    rec[at..at + 4].copy_from_slice(&c.to_le_bytes());
}

/// Opens `v`; the contract on refusal and acceptance; pokes at an accepted image.
fn exercise(mut v: Vec<u8>) {
    let before = v.clone();
    match Image::open(&mut v) {
        Err(e) => {
            assert!(!e.describe().is_empty());
            assert!(v == before, "open wrote to a refused image ({e:?})");
        }
        Ok(mut img) => {
            img.check().expect("an opened image checks");
            let mut pos = 0;
            while let Ok(Some((next, ino, _, _))) = img.readdir(ROOT_INO, pos) {
                let _ = img.stat(ino);
                let _ = img.read(ino, 0, &mut [0u8; 64]);
                pos = next;
            }
            let _ = img.create(ROOT_INO, b"new", Kind::File, 0o644, 9).and_then(|i| img.write(i, 5000, b"x", 9));
            img.check().expect("still consistent after operations");
        }
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(128)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..70_000), magic in any::<bool>()) {
        let mut v = bytes;
        if magic && v.len() >= 12 {
            // Get past the magic and version checks.
            v[..8].copy_from_slice(b"PKERNFS1");
            v[8..12].copy_from_slice(&2u32.to_le_bytes());
        }
        exercise(v);
    }

    #[test]
    fn flipped_images_are_refused_or_consistent(
        flips in proptest::collection::vec((0usize..(1 << 20), any::<u8>(), any::<bool>()), 1..4),
        resealed in any::<bool>(),
    ) {
        let mut v = sample();
        let meta = (Geometry::for_len(v.len()).unwrap().data_start * BLOCK_SIZE) as usize;
        for (off, x, in_meta) in flips {
            let i = if in_meta { off % meta } else { off };
            v[i] ^= x.max(1);
        }
        if resealed {
            reseal(&mut v);
        }
        exercise(v);
    }
}
