//! Unit tests: the basic operations, and each corruption refused by name.

use super::super::corrupt::*;
use super::super::format::*;
use super::{file_with, fresh};

#[test]
fn format_makes_root_and_iommu_and_checks() {
    let mut v = fresh(8);
    let img = Image::open(&mut v).unwrap();
    let r = img.check().unwrap();
    assert_eq!((r.inodes, r.dirs, r.files), (2, 2, 0));
    let iommu = img.lookup(ROOT_INO, b"iommu").unwrap();
    assert_eq!(img.stat(iommu).unwrap().kind, Kind::Dir);
    assert_eq!(img.stat(ROOT_INO).unwrap().nlink, 3);
}

#[test]
fn write_read_truncate_round_trip() {
    let mut v = fresh(16);
    let mut img = Image::open(&mut v).unwrap();
    let ino = file_with(&mut img, b"a", 10_000).unwrap();
    let mut buf = vec![0u8; 10_000];
    assert_eq!(img.read(ino, 0, &mut buf).unwrap(), 10_000);
    assert!(buf.iter().enumerate().all(|(i, b)| *b == (i * 7 + 3) as u8));
    img.set_size(ino, 5, 4).unwrap();
    img.set_size(ino, 9000, 5).unwrap();
    assert_eq!(img.read(ino, 0, &mut buf).unwrap(), 9000);
    assert!(buf[5..9000].iter().all(|b| *b == 0));
    img.check().unwrap();
}

#[test]
fn large_files_get_2mib_aligned_extents() {
    let mut v = fresh(64);
    let mut img = Image::open(&mut v).unwrap();
    let ino = img.create(ROOT_INO, b"ram", Kind::File, 0o600, 1).unwrap();
    img.set_size(ino, 20 << 20, 2).unwrap();
    let (at, run) = img.map(ino, 0).unwrap().unwrap();
    assert_eq!(at % (2 << 20), 0, "first extent 2 MiB-aligned");
    assert_eq!(run, 20 << 20, "one contiguous extent");
    assert_eq!(img.map(ino, 20 << 20).unwrap(), None);
    img.check().unwrap();
}

#[test]
fn fragmented_files_spill_into_extent_blocks() {
    let mut v = fresh(32);
    let mut img = Image::open(&mut v).unwrap();
    // Interleave two files block by block: each extent is one block.
    let a = img.create(ROOT_INO, b"a", Kind::File, 0o600, 1).unwrap();
    let b = img.create(ROOT_INO, b"b", Kind::File, 0o600, 1).unwrap();
    for i in 0..600u64 {
        img.write(a, i * 4096, &[1; 4096], 2).unwrap();
        img.write(b, i * 4096, &[2; 4096], 2).unwrap();
    }
    let r = img.check().unwrap();
    assert!(r.extent_blocks >= 4, "{r:?}");
    img.set_size(a, 4096 * 3, 3).unwrap();
    let r2 = img.check().unwrap();
    assert!(r2.extent_blocks < r.extent_blocks);
    img.unlink(ROOT_INO, b"b").unwrap();
    assert_eq!(img.check().unwrap().extent_blocks, 0);
}

#[test]
fn pinned_files_refuse_unlink_and_shrink() {
    let mut v = fresh(8);
    let mut img = Image::open(&mut v).unwrap();
    let ino = file_with(&mut img, b"dom-0", 8192).unwrap();
    img.set_pinned(ino, true).unwrap();
    assert_eq!(img.unlink(ROOT_INO, b"dom-0"), Err(FsError::Busy));
    assert_eq!(img.set_size(ino, 0, 1), Err(FsError::Busy));
    img.set_size(ino, 1 << 20, 1).unwrap();
    img.set_pinned(ino, false).unwrap();
    img.unlink(ROOT_INO, b"dom-0").unwrap();
    assert_eq!(img.check().unwrap().files, 0);
}

#[test]
fn namespace_errors() {
    let mut v = fresh(8);
    let mut img = Image::open(&mut v).unwrap();
    let d = img.create(ROOT_INO, b"d", Kind::Dir, 0o755, 1).unwrap();
    let e = img.create(d, b"e", Kind::Dir, 0o755, 1).unwrap();
    assert_eq!(img.create(ROOT_INO, b"d", Kind::File, 0, 1), Err(FsError::Exists));
    assert_eq!(img.create(ROOT_INO, &[b'x'; 241], Kind::File, 0, 1), Err(FsError::NameTooLong));
    assert_eq!(img.create(ROOT_INO, b"a/b", Kind::File, 0, 1), Err(FsError::Invalid));
    assert_eq!(img.rmdir(ROOT_INO, b"d"), Err(FsError::NotEmpty));
    assert_eq!(img.unlink(ROOT_INO, b"d"), Err(FsError::IsDir));
    assert_eq!(img.rename(ROOT_INO, b"d", e, b"loop"), Err(FsError::Invalid));
    assert_eq!(img.lookup(ROOT_INO, b"nope"), Err(FsError::NotFound));
    assert_eq!(img.create(e, b"x", Kind::File, 0, 1).and_then(|x| img.lookup(x, b"y")), Err(FsError::NotDir));
    img.rename(d, b"e", ROOT_INO, b"e2").unwrap();
    assert_eq!(img.stat(ROOT_INO).unwrap().nlink, 5);
    img.check().unwrap();
}

#[test]
fn readdir_lists_every_entry_once() {
    let mut v = fresh(8);
    let mut img = Image::open(&mut v).unwrap();
    for i in 0..40 {
        img.create(ROOT_INO, format!("f{i}").as_bytes(), Kind::File, 0o644, 1).unwrap();
    }
    let (mut pos, mut n) = (0, 0);
    while let Some((next, _, _, _)) = img.readdir(ROOT_INO, pos).unwrap() {
        pos = next;
        n += 1;
    }
    assert_eq!(n, 41);
}

fn refused(mut v: Vec<u8>, expected: FsError) {
    let copy = v.clone();
    assert_eq!(Image::open(&mut v).err(), Some(expected));
    assert!(v == copy, "open wrote to a refused image");
}

#[test]
fn superblock_magic_version_checksum_are_named() {
    for (f, want) in [
        (corrupt_superblock_magic as fn(&mut [u8]) -> anyhow::Result<Corruption>, "magic"),
        (corrupt_superblock_version, "version"),
        (corrupt_superblock, "checksum"),
    ] {
        let mut v = fresh(8);
        let c = f(&mut v).unwrap();
        assert!(c.expected.describe().contains(want), "{:?}", c.expected);
        refused(v, c.expected);
    }
    let mut v = fresh(8);
    v.truncate(4 << 20);
    refused(v, FsError::SuperblockGeometry);
}

#[test]
fn inode_checksum_is_named() {
    let mut v = fresh(8);
    let ino = file_with(&mut Image::open(&mut v).unwrap(), b"f", 100).unwrap();
    let c = corrupt_inode(&mut v, ino).unwrap();
    assert_eq!(c.expected, FsError::InodeChecksum { ino });
    refused(v, c.expected);
}

#[test]
fn allocator_checksum_and_mismatch_are_named() {
    let mut v = fresh(8);
    let c = corrupt_allocator(&mut v).unwrap();
    assert_eq!(c.expected, FsError::AllocatorChecksum);
    refused(v, c.expected);

    let mut v = fresh(8);
    let ino = file_with(&mut Image::open(&mut v).unwrap(), b"f", 100).unwrap();
    let (at, _) = Image::open(&mut v).unwrap().map(ino, 0).unwrap().unwrap();
    let c = corrupt_allocator_consistently(&mut v, at / BLOCK_SIZE).unwrap();
    refused(v, c.expected);
    let mut v = fresh(8);
    let c = corrupt_allocator_consistently(&mut v, 1000).unwrap();
    refused(v, FsError::AllocatorMismatch { block: 1000 });
    let _ = c;
}

#[test]
fn errno_values() {
    assert_eq!(FsError::NotFound.errno(), 2);
    assert_eq!(FsError::Busy.errno(), 16);
    assert_eq!(FsError::NoSpace.errno(), 28);
    assert_eq!(FsError::InodeChecksum { ino: 3 }.errno(), 117);
    assert!(FsError::SuperblockMagic.is_corruption());
}

#[test]
fn no_space_is_clean() {
    let mut v = fresh(1);
    let mut img = Image::open(&mut v).unwrap();
    let ino = img.create(ROOT_INO, b"big", Kind::File, 0o600, 1).unwrap();
    assert_eq!(img.set_size(ino, 2 << 20, 2), Err(FsError::NoSpace));
    assert_eq!(img.stat(ino).unwrap().size, 0);
    let r = img.check().unwrap();
    assert_eq!(r.data_blocks, 1, "only the root directory's block");
    img.set_size(ino, 100 << 10, 2).unwrap();
    img.check().unwrap();
}

#[test]
fn checksummed_nonsense_in_an_inode_is_refused_without_overflow() {
    // A directory claiming 2^63 data blocks, with a valid checksum.
    let mut v = fresh(8);
    let g = Geometry::for_len(v.len()).unwrap();
    let o = (g.itable_start * BLOCK_SIZE) as usize; // inode 1: the root
    v[o + 48..o + 56].copy_from_slice(&(1u64 << 63).to_le_bytes());
    v[o + 8..o + 12].fill(0);
    let crc = crc32(&v[o..o + INODE_SIZE as usize]);
    v[o + 8..o + 12].copy_from_slice(&crc.to_le_bytes());
    refused(v, FsError::InodeTable { ino: ROOT_INO });
}

/// Rewrites the directory entry named `from` to `to` (same length) and
/// re-checksums it, so only the structural duplicate-name check can object.
fn rename_dirent_raw(v: &mut [u8], from: &[u8], to: &[u8]) {
    use super::super::format::{crc32, DIRENT_SIZE};
    const NAME_OFF: usize = 16;
    let size = DIRENT_SIZE as usize;
    let at = (0..v.len() / size)
        .map(|i| i * size)
        .find(|&o| v[o + 9] as usize == from.len() && &v[o + NAME_OFF..o + NAME_OFF + from.len()] == from)
        .expect("the entry is in the image");
    v[at + NAME_OFF..at + NAME_OFF + to.len()].copy_from_slice(to);
    v[at + 4..at + 8].fill(0);
    let c = crc32(&v[at..at + size]);
    v[at + 4..at + 8].copy_from_slice(&c.to_le_bytes());
}

#[test]
fn duplicate_names_in_a_directory_are_refused_among_many() {
    let mut v = vec![0u8; 64 << 20];
    let mut img = Image::format(&mut v, 1).unwrap();
    for i in 0..400u32 {
        img.create(ROOT_INO, format!("f{i:04}").as_bytes(), Kind::File, 0o644, 2).unwrap();
    }
    img.check().expect("400 distinct names (hash collisions among them) pass");
    rename_dirent_raw(&mut v, b"f0399", b"f0007");
    let err = Image::open(&mut v).map(|_| ()).expect_err("a duplicate name is refused");
    assert!(matches!(err, FsError::DirentTarget { ino } if ino == ROOT_INO), "{err:?}");
}
