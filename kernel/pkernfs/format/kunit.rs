// SPDX-License-Identifier: GPL-2.0

//! In-kernel KUnit tests (`pkernfs_format`) of the allocator and metadata,
//! on buffers allocated in the kernel (vmalloc). The harness runs the same
//! code through property tests; these prove it behaves the same when built
//! by the kernel's toolchain, flags and overflow checks.

#[kernel::macros::kunit_tests(pkernfs_format)]
mod tests {
    use super::super::*;
    use kernel::prelude::*;

    /// A zeroed in-kernel buffer of `len` bytes.
    fn buffer(len: usize) -> Result<VVec<u8>, FsError> {
        VVec::from_elem(0u8, len, GFP_KERNEL).map_err(|_| FsError::NoSpace)
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn format_open_check() -> Result<(), FsError> {
        let mut v = buffer(4 << 20)?;
        Image::format(&mut v, 1)?;
        let img = Image::open(&mut v)?;
        let r = img.check()?;
        assert_eq!((r.inodes, r.dirs, r.files), (2, 2, 0));
        assert_eq!(img.stat(img.lookup(ROOT_INO, IOMMU_DIR)?)?.kind, Kind::Dir);
        Ok(())
    }

    #[test]
    fn allocator_gives_aligned_chunks_and_takes_them_back() -> Result<(), FsError> {
        let mut v = buffer(16 << 20)?;
        let mut img = Image::format(&mut v, 1)?;
        let free0 = img.check()?.free_blocks;
        let ino = img.create(ROOT_INO, b"guest-ram", Kind::File, 0o600, 2)?;
        img.set_size(ino, 4 << 20, 3)?;
        let (at, run) = img.map(ino, 0)?.ok_or(FsError::Invalid)?;
        assert_eq!(at % (2 << 20), 0);
        assert_eq!(run, 4 << 20);
        assert_eq!(img.check()?.free_blocks, free0 - 1024);
        img.set_pinned(ino, true)?;
        assert_eq!(img.unlink(ROOT_INO, b"guest-ram"), Err(FsError::Busy));
        assert_eq!(img.set_size(ino, 0, 4), Err(FsError::Busy));
        img.set_pinned(ino, false)?;
        img.unlink(ROOT_INO, b"guest-ram")?;
        assert_eq!(img.check()?.free_blocks, free0);
        Ok(())
    }

    #[test]
    fn files_and_directories_survive_reopen() -> Result<(), FsError> {
        let mut v = buffer(4 << 20)?;
        let mut img = Image::format(&mut v, 1)?;
        let iommu = img.lookup(ROOT_INO, IOMMU_DIR)?;
        let dom = img.create(iommu, b"dom-0", Kind::IommuDomain, 0o600, 2)?;
        img.write(dom, 4090, b"page tables", 3)?;
        let d = img.create(ROOT_INO, b"d", Kind::Dir, 0o755, 2)?;
        img.rename(iommu, b"dom-0", d, b"dom-1")?;
        let img = Image::open(&mut v)?;
        let d = img.lookup(ROOT_INO, b"d")?;
        let dom = img.lookup(d, b"dom-1")?;
        let mut buf = [0u8; 11];
        assert_eq!(img.read(dom, 4090, &mut buf)?, 11);
        assert_eq!(&buf, b"page tables");
        assert_eq!(img.stat(dom)?.size, 4101);
        assert_eq!(img.readdir(ROOT_INO, 0)?.map(|e| e.1), Some(iommu));
        Ok(())
    }

    #[test]
    fn corruption_is_refused_by_name_and_not_written() -> Result<(), FsError> {
        let mut v = buffer(1 << 20)?;
        let ino = {
            let mut img = Image::format(&mut v, 1)?;
            img.create(ROOT_INO, b"f", Kind::File, 0o644, 2)?
        };
        let g = Geometry::for_len(v.len())?;
        let inode_byte = (g.itable_start * BLOCK_SIZE + (ino as u64 - 1) * INODE_SIZE + 2) as usize;
        let cases = [
            (0usize, FsError::SuperblockMagic),
            (20, FsError::SuperblockChecksum),
            (inode_byte, FsError::InodeChecksum { ino }),
            ((2 * BLOCK_SIZE) as usize + 100, FsError::AllocatorChecksum),
        ];
        for (at, want) in cases {
            v[at] ^= 0x10;
            let sum = crc32(&v);
            assert_eq!(Image::open(&mut v).err(), Some(want));
            assert_eq!(crc32(&v), sum);
            v[at] ^= 0x10;
        }
        Image::open(&mut v)?;
        Ok(())
    }

    #[test]
    fn arbitrary_bytes_are_refused_without_panic() -> Result<(), FsError> {
        let mut v = buffer(256 << 10)?;
        let mut x = 0x1234_5678u32;
        for b in v.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        v[..8].copy_from_slice(b"PKERNFS1");
        v[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        assert!(Image::open(&mut v).is_err());
        Ok(())
    }
}
