// SPDX-License-Identifier: GPL-2.0

//! pkernfs: a persistent in-memory filesystem for live update (lulab).
//!
//! At boot it maps the RAM carve-out given on the command line
//! (`memmap=64M!1G pkernfs=64M@1G`, see `carveout.c`) and registers the
//! filesystem type; `mount -t pkernfs none /mnt` opens the image on the
//! carve-out (formatting it only if it is blank, refusing it if corrupted).
//! The VFS objects live in a thin C shim (`vfs.c`, 7.3 has no Rust
//! abstraction for writing a filesystem); every operation is forwarded to
//! `ops.rs`, which runs the on-memory format (`layout::format`, shared with
//! the harness) under one mutex.

use core::ffi::{c_int, c_void};

use kernel::prelude::*;

// `pub` items: the same file is a public module of the harness (host side).
#[allow(unreachable_pub)]
mod iommu;
mod layout;
mod ops;

extern "C" {
    /// `carveout.c`: the memremapped carve-out, or NULL (reason logged).
    fn pkernfs_carveout_map(base: *mut u64, size: *mut u64) -> *mut c_void;
    /// `vfs.c`: `register_filesystem` of the pkernfs type.
    fn pkernfs_vfs_register() -> c_int;
}

module! {
    type: Pkernfs,
    name: "pkernfs",
    authors: ["lulab"],
    description: "Persistent kernel filesystem for live update",
    license: "GPL",
}

/// Version announced at boot; the harness looks for this line.
const VERSION: &str = "0.1";

struct Pkernfs;

impl kernel::Module for Pkernfs {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let (mut phys, mut len) = (0u64, 0u64);
        // SAFETY: both out-pointers are valid locals; called once, after the
        // command line was parsed.
        let va = unsafe { pkernfs_carveout_map(&mut phys, &mut len) };
        ops::init(va.cast(), phys, if va.is_null() { 0 } else { len });
        // SAFETY: the state `ops` needs is initialised above; the type is
        // registered once and never unregistered (built in).
        let err = unsafe { pkernfs_vfs_register() };
        if err != 0 {
            return Err(Error::from_errno(err));
        }
        pr_info!(
            "lulab pkernfs v{} loaded (format {}, block {} KiB)\n",
            VERSION,
            layout::FORMAT_VERSION,
            layout::BLOCK_SIZE / 1024
        );
        Ok(Pkernfs)
    }
}

#[cfg(CONFIG_PKERNFS_KUNIT_TEST)]
#[kunit_tests(pkernfs_layout)]
mod tests {
    use super::layout::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn header_round_trips() {
        let h = Header { version: FORMAT_VERSION, size: 64 << 20 };
        assert_eq!(Header::decode(&h.encode()), Ok(h));
    }

    #[test]
    fn corrupted_header_is_refused() {
        let mut b = Header { version: FORMAT_VERSION, size: 64 << 20 }.encode();
        b[20] ^= 1;
        assert_eq!(Header::decode(&b), Err(HeaderError::BadChecksum));
        b[0] ^= 1;
        assert_eq!(Header::decode(&b), Err(HeaderError::BadMagic));
        assert_eq!(Header::decode(&b[..8]), Err(HeaderError::Short));
    }

    #[test]
    fn alignment_and_block_counts() {
        assert_eq!(align_up(1, 4096), Some(4096));
        assert_eq!(align_up(4096, 4096), Some(4096));
        assert_eq!(align_up(5, 3), None);
        assert_eq!(align_up(u64::MAX, 2), None);
        assert_eq!(blocks_for(0), 0);
        assert_eq!(blocks_for(1), 1);
        assert_eq!(blocks_for(BLOCK_SIZE + 1), 2);
    }
}
