//! The host-side reader on a real RAM file: snapshot, diff, corruption.

use lulab_proto::PhysRange;

use super::super::format::{FsError, Image, Kind, ROOT_INO};
use super::super::host::{corrupt_carveout, CorruptTarget, PkernfsError, PkernfsSnapshot};
use crate::guest_memory::GuestMemory;

#[test]
fn snapshot_diff_and_corruption_through_the_ram_file() {
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().set_len(32 << 20).unwrap();
    let mut mem = GuestMemory::open(f.path(), 32 << 20).unwrap();
    let range = PhysRange { gpa: 16 << 20, len: 8 << 20 };
    let mut v = vec![0u8; 8 << 20];
    let ino = {
        let mut img = Image::format(&mut v, 1).unwrap();
        let ino = img.create(ROOT_INO, b"guest-ram", Kind::File, 0o600, 1).unwrap();
        img.write(ino, 0, &[7u8; 3 * 4096], 1).unwrap();
        ino
    };
    mem.write(range.gpa, &v).unwrap();
    let before = PkernfsSnapshot::read(&mem, range).unwrap();
    let ram = before.file("/guest-ram").unwrap();
    assert_eq!((ram.size, ram.page_hashes.len()), (3 * 4096, 3));
    assert!(before.file("/iommu").is_some());

    let (at, _) = Image::open(&mut v).unwrap().map(ino, 4096).unwrap().unwrap();
    mem.write(range.gpa + at, &[8]).unwrap();
    let after = PkernfsSnapshot::read(&mem, range).unwrap();
    assert_eq!(after.diff(&before), ["/guest-ram: 1 pages changed (first page 1)"]);

    let c = corrupt_carveout(&mut mem, range, CorruptTarget::Inode(ino)).unwrap();
    assert_eq!(c.expected, FsError::InodeChecksum { ino });
    match PkernfsSnapshot::read(&mem, range) {
        Err(PkernfsError::Format { err, .. }) => assert_eq!(err, c.expected),
        other => panic!("{other:?}"),
    }
}

#[test]
fn file_offsets_map_to_carveout_addresses() {
    use crate::pkernfs::host::file_ranges;
    let mut bytes = vec![0u8; 8 << 20];
    let mut img = Image::format(&mut bytes, 1).unwrap();
    let ino = img.create(ROOT_INO, b"guest-ram", Kind::File, 0o600, 1).unwrap();
    img.set_size(ino, 1 << 20, 1).unwrap();
    let r = file_ranges(&img, 1 << 30, "/guest-ram", 4096, 8192).unwrap();
    let total: u64 = r.iter().map(|r| r.len).sum();
    assert_eq!(total, 8192);
    assert!(r.iter().all(|r| r.gpa >= 1 << 30 && r.gpa + r.len <= (1 << 30) + (8 << 20)));
    let (first, _) = img.map(ino, 4096).unwrap().unwrap();
    assert_eq!(r[0].gpa, (1 << 30) + first);
    assert!(file_ranges(&img, 1 << 30, "/missing", 0, 4096).is_err());
    assert!(file_ranges(&img, 1 << 30, "/guest-ram", 2 << 20, 4096).is_err());
}

#[test]
fn iommu_files_are_listed_per_unit_with_their_addresses() {
    use crate::pkernfs::format::IOMMU_DIR;
    use crate::pkernfs::host::iommu_files;
    let mut bytes = vec![0u8; 8 << 20];
    let mut img = Image::format(&mut bytes, 1).unwrap();
    let top = img.lookup(ROOT_INO, IOMMU_DIR).unwrap();
    let unit = img.create(top, b"dmar-fed90000", Kind::Dir, 0o500, 1).unwrap();
    let root = img.create(unit, b"root-pgtables", Kind::IommuRoot, 0o400, 1).unwrap();
    img.set_size(root, 257 * 4096, 1).unwrap();
    let dom = img.create(unit, b"dom-3", Kind::IommuDomain, 0o400, 1).unwrap();
    img.set_size(dom, 4096, 1).unwrap();
    let ram = img.create(ROOT_INO, b"guest-ram", Kind::File, 0o600, 1).unwrap();
    img.set_size(ram, 4096, 1).unwrap();
    let files = iommu_files(&img, 1 << 30).unwrap();
    let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["/iommu/dmar-fed90000/root-pgtables", "/iommu/dmar-fed90000/dom-3"], "regular files are not the IOMMU's");
    let (at, _) = img.map(root, 0).unwrap().unwrap();
    assert_eq!((files[0].kind.as_str(), files[0].gpa, files[0].len), ("iommu-root", (1 << 30) + at, 257 * 4096));
    assert_eq!(files[1].kind, "iommu-domain");
}
